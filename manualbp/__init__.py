"""manualbp: backpropagation derived by hand, as PyTorch autograd Functions and drop-in ``torch.nn`` layers.

Two tiers, as in llm.c's ``train_gpt2.c`` beside ``train_gpt2.cu``:

- ``manualbp.autograd``, the reference tier: the ``torch.autograd.Function`` subclasses, each backward beside
  its forward in its class, with its derivation. Read this to learn the math.
- ``manualbp.fast``, the fast tier: how the public API runs those same Functions at less cost (a cheaper call
  route, fused Linear + activation nodes, cross-entropy's common case). It derives nothing, and is proven equal
  to the reference tier bit for bit.

The public API uses the fast tier:

- ``manualbp.functional``: ``torch.nn.functional``'s signatures, with argument checks.
- ``manualbp.nn``: drop-in modules.
- ``manualbp.convert``: swap the layers of any model for manualbp's, in place, and back.
- ``python -m manualbp.check``: both tiers' gradients against PyTorch autograd on this machine.
- ``manualbp.verify``: the same proof, and more, for anyone's own ``torch.autograd.Function``
  (``manualbp.testing.assert_verified`` in a test suite).

The MNIST trainer (``train.py``) is an application of the library, in the package ``manualbp_trainer``.
"""

from manualbp import autograd, fast, functional, nn
from manualbp.convert import convert
from manualbp.verify import verify

__version__ = "0.1.0"

__all__ = ["autograd", "convert", "fast", "functional", "nn", "verify"]
