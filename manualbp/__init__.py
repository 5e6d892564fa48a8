"""manualbp: backpropagation derived by hand, as PyTorch autograd Functions and drop-in ``torch.nn`` layers.

- ``manualbp.autograd``: the ``torch.autograd.Function`` subclasses, each backward beside its forward.
- ``manualbp.functional``: ``torch.nn.functional``'s signatures over them.
- ``manualbp.nn``: drop-in modules.
- ``manualbp.convert``: swap the layers of any model for manualbp's, in place, and back.
- ``python -m manualbp.check``: every gradient against PyTorch autograd on this machine.
"""

from manualbp import autograd, functional, nn
from manualbp.convert import convert

__version__ = "0.1.0"

__all__ = ["autograd", "convert", "functional", "nn"]
