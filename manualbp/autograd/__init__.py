"""The hand-derived ``torch.autograd.Function`` subclasses: every backward pass of manualbp lives here.

Each Function trusts its inputs; ``manualbp.functional`` is the checked, ``torch.nn.functional``-shaped way in.
"""

from manualbp.autograd.activations import GELU, LeakyReLU, ReLU, Sigmoid, Tanh
from manualbp.autograd.fused import LinearActivation
from manualbp.autograd.linear import Linear
from manualbp.autograd.losses import CrossEntropyLoss, MSELoss

__all__ = [
    "GELU",
    "CrossEntropyLoss",
    "LeakyReLU",
    "Linear",
    "LinearActivation",
    "MSELoss",
    "ReLU",
    "Sigmoid",
    "Tanh",
]
