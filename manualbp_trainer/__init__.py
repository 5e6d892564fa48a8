"""manualbp_trainer: the application that trains an MLP or a small CNN on MNIST with manualbp's layers (``train.py``).

It uses only manualbp's public API (``manualbp.nn``, ``manualbp.functional``, ``manualbp.convert``), as any user's
code would. A run flows through one module per stage:

- ``data``: the IDX files or torchvision's download, as whole tensors on the device;
- ``model``: the MLP and the CNN, from manualbp's layers or torch.nn's with the same initial weights;
- ``loop``: the state of a run and the plain verbs over it: ``train_epoch``, ``evaluate``, ``save_checkpoint``,
  and ``train``, which loops over the epochs;
- ``summaries`` and ``checkpoint``: what a run leaves behind: TensorBoard events and an atomically written
  ``checkpoint.pt``;
- ``cli``: the command line: parse and check the flags, pick the run directory, handle Ctrl-C, report in one line;
- ``distributed``: the same run as several processes under torchrun.
"""
