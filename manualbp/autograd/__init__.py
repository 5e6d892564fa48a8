"""The reference tier: every hand-derived ``torch.autograd.Function`` of manualbp, each backward beside its forward.

Each Function has the shape of PyTorch's "Extending torch.autograd" note: ``forward`` (no ctx), ``setup_context``
and ``backward``, top to bottom in its class, with the derivation in its docstring. Nothing here exists for speed:
``manualbp.fast`` holds the plumbing (cheaper calls, fused nodes, special cases), reuses these backward passes
and is tested bit for bit against them. Each Function trusts its inputs; ``manualbp.functional`` is the checked,
``torch.nn.functional``-shaped way in.

- ``linear.py``: ``Linear``, z = x Wᵀ + b.
- ``activation.py``: ``ReLU``, ``LeakyReLU``, ``Sigmoid``, ``Tanh``, ``GELU``, a = f(z).
- ``mse.py``: ``MSELoss``, C = Σ(a − y)².
- ``cross_entropy.py``: ``OneHotCrossEntropyLoss``, the plain case, ∂C/∂z = (softmax(z) − onehot(t))/N; then
  ``CrossEntropyLoss``, PyTorch's every option (weights, smoothing, ``ignore_index``, class probabilities).
- ``conv.py``: ``Conv2d``, z = W ⋆ x + b (derived through im2col and Linear's rule).
- ``pooling.py``: ``MaxPool2d``, ``AvgPool2d``, ``AdaptiveAvgPool2d``.
- ``normalization.py``: x̂ = (x − μ)σ⁻¹ over given axes and y = γ x̂ + β, derived once for the three norms below.
- ``batch_norm.py``: ``BatchNorm``, normalised per channel over the batch, with running statistics.
- ``dropout.py``: ``Dropout``, y = x · m for a mask m drawn outside the Function.
- ``softmax.py``: ``Softmax``, ``LogSoftmax``, along one dimension.
- ``layer_norm.py``: ``LayerNorm``, normalised per example over its last dimensions.
- ``group_norm.py``: ``GroupNorm``, normalised per example over each group of channels.
- ``sparse.py``: ``Embedding``, a = W[i], whose backward is a scatter-add of rows.
- ``attention.py``: ``ScaledDotProductAttention``, O = softmax(q kᵀ·scale + mask) v.
- ``mlp.py``: ``MLP``, a whole multilayer perceptron as one Function, its backward the textbook backprop loop.
"""

from manualbp.autograd.activation import GELU, LeakyReLU, ReLU, Sigmoid, Tanh
from manualbp.autograd.attention import ScaledDotProductAttention
from manualbp.autograd.batch_norm import BatchNorm
from manualbp.autograd.conv import Conv2d
from manualbp.autograd.cross_entropy import CrossEntropyLoss, OneHotCrossEntropyLoss
from manualbp.autograd.dropout import Dropout
from manualbp.autograd.group_norm import GroupNorm
from manualbp.autograd.layer_norm import LayerNorm
from manualbp.autograd.linear import Linear
from manualbp.autograd.mlp import MLP
from manualbp.autograd.mse import MSELoss
from manualbp.autograd.pooling import AdaptiveAvgPool2d, AvgPool2d, MaxPool2d
from manualbp.autograd.softmax import LogSoftmax, Softmax
from manualbp.autograd.sparse import Embedding

__all__ = [
    "GELU",
    "MLP",
    "AdaptiveAvgPool2d",
    "AvgPool2d",
    "BatchNorm",
    "Conv2d",
    "CrossEntropyLoss",
    "Dropout",
    "LeakyReLU",
    "Linear",
    "MSELoss",
    "MaxPool2d",
    "OneHotCrossEntropyLoss",
    "ReLU",
    "Sigmoid",
    "Embedding",
    "GroupNorm",
    "LayerNorm",
    "LogSoftmax",
    "ScaledDotProductAttention",
    "Softmax",
    "Tanh",
]
