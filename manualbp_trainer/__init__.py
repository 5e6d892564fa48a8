"""manualbp_trainer: the application that trains an MLP, a small CNN or a small vision transformer on MNIST with
manualbp's layers (``train.py``).

It uses only manualbp's public API (``manualbp.nn``, ``manualbp.functional``, ``manualbp.convert``), as any user's
code would. A run flows through one module per stage:

- ``data``: the IDX files or torchvision's download, as whole tensors on the device;
- ``config``: what defines a run (``Config``, the presets), with no torch import, for ``--help``;
- ``model``: ``MODELS``, one ``ModelSpec`` per kind (MLP, CNN, ViT), which every other module reads instead of
  asking which kind it is, and ``networks``: the networks themselves, from manualbp's layers or torch.nn's with the
  same initial weights;
- ``loop``: the state of a run and the plain verbs over it: ``train_epoch``, ``evaluate``, ``save_checkpoint``,
  and ``train``, which loops over the epochs;
- ``logbook``, ``summaries`` and ``checkpoint``: what a run shows and leaves behind: TensorBoard events, the
  progress bar, and an atomically written ``checkpoint.pt``; ``pictures`` computes the backprop figures'
  numbers, ``drawing`` draws them (numpy and matplotlib only) and ``picture_writer`` has a worker process draw
  them while the run trains on;
- ``cli``: the flags, and ``launch``: check them, lock and pick the run directory, stop cleanly on Ctrl-C or
  SIGTERM, report in one line;
- ``distributed``: the same run as several processes under torchrun.
"""
