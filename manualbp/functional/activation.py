"""The element-wise activations and softmax, ``torch.nn.functional``'s signatures."""

import warnings

import torch

from manualbp import fast
from manualbp.functional._checks import _as_dtype, _autocast_normalization, _check_tensors, _maybe_inplace

__all__ = ["gelu", "leaky_relu", "log_softmax", "relu", "sigmoid", "softmax", "tanh"]


def relu(input, inplace=False):
    """a = max(z, 0). See ``manualbp.autograd.ReLU``.

    With ``inplace=True`` the result is also written into ``input`` (as ``torch.nn.functional.relu`` does),
    and the gradient still flows through manualbp's backward.
    """
    return _maybe_inplace(fast.relu(input), input, inplace)


def leaky_relu(input, negative_slope=0.01, inplace=False):
    """a = z if z > 0 else negative_slope·z. See ``manualbp.autograd.LeakyReLU``.

    ``negative_slope`` is a number (a bool or a 0-D tensor counts, as in PyTorch)."""
    if isinstance(negative_slope, torch.Tensor) and negative_slope.dim() == 0:
        negative_slope = negative_slope.item()
    if not isinstance(negative_slope, (int, float)):
        raise TypeError(f"leaky_relu: negative_slope must be a number, got {type(negative_slope).__name__}")
    return _maybe_inplace(fast.leaky_relu(input, float(negative_slope)), input, inplace)


def sigmoid(input):
    """a = 1 / (1 + e⁻ᶻ). See ``manualbp.autograd.Sigmoid``."""
    return fast.sigmoid(input)


def tanh(input):
    """a = tanh(z). See ``manualbp.autograd.Tanh``."""
    return fast.tanh(input)


def gelu(input, approximate="none"):
    """a = z·Φ(z), exact (``approximate="none"``) or its tanh approximation. See ``manualbp.autograd.GELU``."""
    if approximate not in ("none", "tanh"):
        raise RuntimeError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    return fast.gelu(input, approximate)


def softmax(input, dim=None, _stacklevel=3, dtype=None):
    """p = softmax(z) along ``dim``. See ``manualbp.autograd.Softmax``.

    ``dim=None`` picks a dimension as PyTorch's deprecated implicit choice does (0 for 0-, 1- and 3-D inputs, 1
    otherwise), with its warning; ``dtype`` casts the input first (a differentiable cast, outside the Function).
    """
    dim = _softmax_dim("softmax", input, dim, _stacklevel)
    return _normalized_along(fast.softmax, input, dim, dtype)


def log_softmax(input, dim=None, _stacklevel=3, dtype=None):
    """ℓ = log softmax(z) along ``dim``. See ``manualbp.autograd.LogSoftmax``; ``dim`` and ``dtype`` as in
    ``softmax``."""
    dim = _softmax_dim("log_softmax", input, dim, _stacklevel)
    return _normalized_along(fast.log_softmax, input, dim, dtype)


def _normalized_along(function, input, dim, dtype):
    """``function(input, dim)`` for softmax and log_softmax: in ``dtype`` if one is asked for (kept under autocast
    too), else as autocast runs them (``_autocast_normalization``)."""
    if dtype is not None:
        return function(input.to(dtype), dim)
    (input,), result_dtype = _autocast_normalization(input)
    return _as_dtype(function(input, dim), result_dtype)


def _softmax_dim(function, input, dim, stacklevel):
    """The dimension to normalise over, checked as PyTorch checks it (TypeError, IndexError)."""
    _check_tensors(function, input=input)
    if dim is None:
        warnings.warn(
            f"Implicit dimension choice for {function} has been deprecated. Change the call to include dim=X as an "
            "argument.",
            stacklevel=stacklevel,
        )
        return 0 if input.dim() in (0, 1, 3) else 1
    if isinstance(dim, bool) or not isinstance(dim, int):
        raise TypeError(f"{function}: dim must be an int, got {type(dim).__name__}")
    span = max(input.dim(), 1)
    if not -span <= dim < span:
        raise IndexError(f"Dimension out of range (expected to be in range of [{-span}, {span - 1}], but got {dim})")
    return dim
