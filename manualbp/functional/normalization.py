"""Normalization: ``layer_norm``, ``group_norm`` and ``batch_norm``."""

import math

from manualbp import fast
from manualbp.functional._checks import _as_dtype, _autocast_normalization, _check_same, _check_tensors

__all__ = ["batch_norm", "group_norm", "layer_norm"]


def layer_norm(input, normalized_shape, weight=None, bias=None, eps=1e-5):
    """y = γ ⊙ x̂ + β, x̂ = (x − μ) σ⁻¹ over the last ``len(normalized_shape)`` dimensions.
    See ``manualbp.autograd.LayerNorm`` for the compact backward.

    Args:
        input: ``(*, *normalized_shape)``.
        normalized_shape: an int or a sequence of ints, the trailing shape normalised over.
        weight, bias: ``normalized_shape`` or None.
        eps: added to the variance: σ⁻¹ = 1/√(v + ε).
    """
    _check_tensors("layer_norm", input=input, weight=weight, bias=bias)
    normalized_shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    count = len(normalized_shape)
    if count == 0 or tuple(input.shape[input.dim() - count :]) != normalized_shape or input.dim() < count:
        raise RuntimeError(
            f"layer_norm: given normalized_shape={list(normalized_shape)}, expected input with shape "
            f"[*, {', '.join(map(str, normalized_shape))}], but got input of size {list(input.shape)}"
        )
    for name, tensor in (("weight", weight), ("bias", bias)):
        if tensor is not None and tuple(tensor.shape) != normalized_shape:
            raise RuntimeError(
                f"layer_norm: expected {name} to be of shape {list(normalized_shape)}, got {list(tensor.shape)}"
            )
    (input, weight, bias), result_dtype = _autocast_normalization(input, weight, bias)
    _check_same("layer_norm", "dtype", input=input, weight=weight, bias=bias)
    _check_same("layer_norm", "device", input=input, weight=weight, bias=bias)
    return _as_dtype(fast.layer_norm(input, normalized_shape, weight, bias, float(eps)), result_dtype)


def group_norm(input, num_groups, weight=None, bias=None, eps=1e-5):
    """y = γ x̂ + β, x̂ = (x − μ) σ⁻¹, μ and σ⁻¹ over each example's groups of C/num_groups consecutive channels (and
    their positions); γ and β per channel. See ``manualbp.autograd.GroupNorm`` for the compact backward.

    Args:
        input: ``(N, C, *)``, C divisible by ``num_groups``.
        num_groups: the number of groups G the C channels are split into.
        weight, bias: ``(C,)`` or None.
        eps: added to the variance.
    """
    _check_tensors("group_norm", input=input, weight=weight, bias=bias)
    if isinstance(num_groups, bool) or not isinstance(num_groups, int):
        raise TypeError(f"group_norm: num_groups must be an int, got {type(num_groups).__name__}")
    if input.dim() < 2:
        raise RuntimeError(f"group_norm: expected an input (N, C, *) of 2 or more dimensions, got {input.dim()}-D")
    if num_groups <= 0:
        raise RuntimeError(f"group_norm: expected num_groups to be greater than 0, got {num_groups}")
    batch, channels, positions = input.shape[0], input.shape[1], math.prod(input.shape[2:])
    if batch * (channels // num_groups) * positions == 1:  # torch's check, a ValueError, before its kernel's
        raise ValueError(
            f"group_norm: expected more than one value per group or more than one example, got input of size "
            f"{list(input.shape)} with num_groups={num_groups}"
        )
    if channels == 0:
        raise RuntimeError(f"group_norm: expected at least one channel, got input of shape {list(input.shape)}")
    if channels % num_groups != 0:
        raise RuntimeError(
            f"group_norm: expected a number of channels (input.shape[1]) divisible by num_groups={num_groups}, "
            f"but got input of shape {list(input.shape)}"
        )
    if positions == 0:
        raise RuntimeError(
            f"group_norm: expected at least one position per channel, got input of shape {list(input.shape)}"
        )
    for name, tensor in (("weight", weight), ("bias", bias)):
        if tensor is not None and tuple(tensor.shape) != (channels,):
            raise RuntimeError(
                f"group_norm: expected {name} of shape [{channels}] (one per channel), got {list(tensor.shape)}"
            )
    (input, weight, bias), result_dtype = _autocast_normalization(input, weight, bias)
    _check_same("group_norm", "dtype", input=input, weight=weight, bias=bias)
    _check_same("group_norm", "device", input=input, weight=weight, bias=bias)
    return _as_dtype(fast.group_norm(input, num_groups, weight, bias, float(eps)), result_dtype)


def batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1, eps=1e-5):
    """y = γ x̂ + β, x̂ = (x − μ) σ⁻¹ per channel over the batch and positions. See ``manualbp.autograd.BatchNorm``.

    In training, μ and v are the batch's, and ``running_mean``/``running_var`` (if given) are moved towards them
    in place by ``momentum``, as PyTorch moves them; in eval the running statistics are used.

    Args:
        input: ``(N, C, *)``.
        running_mean, running_var, weight, bias: ``(C,)`` or None.
    """
    _check_tensors("batch_norm", input=input, running_mean=running_mean, running_var=running_var)
    _check_tensors("batch_norm", (), weight=weight, bias=bias)
    if input.dim() < 2:
        raise ValueError(f"batch_norm: expected an input (N, C, *) of 2 or more dimensions, got {input.dim()}-D")
    if not training and (running_mean is None or running_var is None):
        raise RuntimeError("batch_norm: running_mean and running_var must be given in evaluation mode")
    channels = input.shape[1]
    tensors = {"running_mean": running_mean, "running_var": running_var, "weight": weight, "bias": bias}
    for name, value in tensors.items():
        if value is not None and tuple(value.shape) != (channels,):
            raise RuntimeError(f"batch_norm: {name} must have shape ({channels},), got {tuple(value.shape)}")
    return fast.batch_norm(input, weight, bias, running_mean, running_var, bool(training), momentum, eps)
