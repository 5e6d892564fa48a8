"""Drop-in ``torch.nn`` modules whose gradients come from manualbp's hand-derived backward passes.

Each class subclasses its ``torch.nn`` twin, so constructor arguments, defaults, initialisation (same seed, same
weights), parameter names, ``state_dict``, ``repr`` and ``isinstance`` checks are PyTorch's own. Only
``forward`` changes: it calls ``manualbp.functional``, whose Functions hold the math. The modules add none.
One file per layer family, named as in ``torch/nn/modules/``.
"""

from manualbp.nn.activation import ACTIVATIONS, GELU, LeakyReLU, ReLU, Sigmoid, Tanh
from manualbp.nn.batchnorm import BatchNorm1d, BatchNorm2d
from manualbp.nn.container import Sequential
from manualbp.nn.conv import Conv1d, Conv2d
from manualbp.nn.dropout import Dropout
from manualbp.nn.linear import Linear
from manualbp.nn.loss import CrossEntropyLoss, MSELoss
from manualbp.nn.pooling import AdaptiveAvgPool2d, AvgPool2d, MaxPool2d

__all__ = [
    "ACTIVATIONS",
    "GELU",
    "AdaptiveAvgPool2d",
    "AvgPool2d",
    "BatchNorm1d",
    "BatchNorm2d",
    "Conv1d",
    "Conv2d",
    "CrossEntropyLoss",
    "Dropout",
    "LeakyReLU",
    "Linear",
    "MSELoss",
    "MaxPool2d",
    "ReLU",
    "Sequential",
    "Sigmoid",
    "Tanh",
]
