"""Drop-in ``torch.nn`` modules whose gradients come from manualbp's hand-derived backward passes.

Each class subclasses its ``torch.nn`` twin, so constructor arguments, defaults, initialisation (same seed, same
weights), parameter names, ``state_dict`` and ``isinstance`` checks are PyTorch's own. ``forward`` changes: it calls
``manualbp.functional``, whose Functions hold the math (the modules add none); and ``repr`` names the layer
``manualbp.Linear(…)`` (``HandDerived``), so that ``print(model)`` shows which layers are manualbp's.
One file per layer family, named as in ``torch/nn/modules/``.
"""

from manualbp.nn.activation import ACTIVATIONS, GELU, LeakyReLU, LogSoftmax, ReLU, Sigmoid, Softmax, Tanh
from manualbp.nn.attention import MultiheadAttention
from manualbp.nn.batchnorm import BatchNorm1d, BatchNorm2d
from manualbp.nn.container import Sequential
from manualbp.nn.conv import Conv1d, Conv2d
from manualbp.nn.dropout import Dropout
from manualbp.nn.group_norm import GroupNorm
from manualbp.nn.layer_norm import LayerNorm
from manualbp.nn.linear import Linear
from manualbp.nn.loss import CrossEntropyLoss, MSELoss
from manualbp.nn.mlp import MLP
from manualbp.nn.module import HandDerived
from manualbp.nn.pooling import AdaptiveAvgPool2d, AvgPool2d, MaxPool2d
from manualbp.nn.sparse import Embedding
from manualbp.nn.transformer import TransformerEncoder, TransformerEncoderLayer

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
    "Embedding",
    "GroupNorm",
    "HandDerived",
    "LayerNorm",
    "LeakyReLU",
    "Linear",
    "LogSoftmax",
    "MLP",
    "MSELoss",
    "MaxPool2d",
    "MultiheadAttention",
    "ReLU",
    "Sequential",
    "Sigmoid",
    "Softmax",
    "Tanh",
    "TransformerEncoder",
    "TransformerEncoderLayer",
]
