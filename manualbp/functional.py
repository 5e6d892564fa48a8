"""``torch.nn.functional``'s signatures over manualbp's hand-derived Functions.

Each function checks its arguments (the public boundary), raising the exception type that
``torch.nn.functional`` raises with a message naming what was expected and what came, then runs the
``torch.autograd.Function`` of ``manualbp.autograd`` that holds the math, by the fast tier's route
(``manualbp.fast``: the same forward and backward, proven equal bit for bit).
"""

import warnings

import torch
from torch.nn import _reduction

from manualbp import autograd, fast
from manualbp.fast import apply

__all__ = [
    "cross_entropy",
    "gelu",
    "leaky_relu",
    "linear",
    "linear_activation",
    "mse_loss",
    "relu",
    "sigmoid",
    "tanh",
]

_REDUCTIONS = ("none", "mean", "sum")


def linear(input, weight, bias=None):
    """z = x Wᵀ + b. See ``manualbp.autograd.Linear`` for the derivation.

    Args:
        input: ``(*, in_features)``.
        weight: ``(out_features, in_features)``.
        bias: ``(out_features,)`` or None.

    Returns:
        ``(*, out_features)``.
    """
    return apply(autograd.Linear, *_linear_operands("linear", input, weight, bias))


def linear_activation(input, weight, bias=None, activation="relu"):
    """a = f(x Wᵀ + b) as one Function, for f = ``"relu"``, ``"sigmoid"`` or ``"tanh"``: the result and gradients
    of ``relu(linear(input, weight, bias))`` (and so on), with one node in the autograd graph rather than two.
    See ``manualbp.fast.LinearActivation``.
    """
    if activation not in fast.fused.ACTIVATIONS:
        raise ValueError(
            f"linear_activation: activation must be one of {sorted(fast.fused.ACTIVATIONS)}, got {activation!r}"
        )
    return apply(fast.LinearActivation, *_linear_operands("linear_activation", input, weight, bias), activation)


def _linear_operands(function, input, weight, bias):
    """Check the operands of a linear map, and cast them as autocast would; return ``(input, weight, bias)``."""
    if weight.dim() != 2:
        raise RuntimeError(
            f"{function}: weight must be 2-D (out_features, in_features), got shape {tuple(weight.shape)}"
        )
    if input.dim() == 0 or input.shape[-1] != weight.shape[1]:
        raise RuntimeError(
            f"{function}: input of shape {tuple(input.shape)} must end in in_features={weight.shape[1]} "
            f"to match weight of shape {tuple(weight.shape)}"
        )
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        raise RuntimeError(
            f"{function}: bias must have shape ({weight.shape[0]},) to match weight of shape "
            f"{tuple(weight.shape)}, got {tuple(bias.shape)}"
        )
    if _autocast_enabled(input):
        # what autocast does for torch's own linear: cast every operand to the autocast dtype, as an
        # ordinary (differentiable) cast outside the Function, so the backward runs in that dtype too
        dtype = torch.get_autocast_dtype(input.device.type)
        input, weight = input.to(dtype), weight.to(dtype)
        bias = None if bias is None else bias.to(dtype)
    dtype = input.dtype  # dtypes are singletons: `is` compares them
    if weight.dtype is not dtype or (bias is not None and bias.dtype is not dtype):
        _check_same(function, "dtype", input=input, weight=weight, bias=bias)
    if not _one_device(input, weight, bias):
        _check_same(function, "device", input=input, weight=weight, bias=bias)
    return input, weight, bias


def relu(input, inplace=False):
    """a = max(z, 0). See ``manualbp.autograd.ReLU``.

    With ``inplace=True`` the result is also written into ``input`` (as ``torch.nn.functional.relu`` does),
    and the gradient still flows through manualbp's backward.
    """
    return _maybe_inplace(apply(autograd.ReLU, input), input, inplace)


def leaky_relu(input, negative_slope=0.01, inplace=False):
    """a = z if z > 0 else negative_slope·z. See ``manualbp.autograd.LeakyReLU``."""
    if isinstance(negative_slope, bool) or not isinstance(negative_slope, (int, float)):
        raise TypeError(f"leaky_relu: negative_slope must be a number, got {type(negative_slope).__name__}")
    return _maybe_inplace(apply(autograd.LeakyReLU, input, float(negative_slope)), input, inplace)


def sigmoid(input):
    """a = 1 / (1 + e⁻ᶻ). See ``manualbp.autograd.Sigmoid``."""
    return apply(autograd.Sigmoid, input)


def tanh(input):
    """a = tanh(z). See ``manualbp.autograd.Tanh``."""
    return apply(autograd.Tanh, input)


def gelu(input, approximate="none"):
    """a = z·Φ(z), exact (``approximate="none"``) or its tanh approximation. See ``manualbp.autograd.GELU``."""
    if approximate not in ("none", "tanh"):
        raise RuntimeError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    return apply(autograd.GELU, input, approximate)


def mse_loss(input, target, size_average=None, reduce=None, reduction="mean", weight=None):
    """Mean (or summed) squared error. See ``manualbp.autograd.MSELoss`` for C = Σ(a − y)², ∂C/∂a = 2(a − y).

    Args:
        input: ``(*)``.
        target: ``(*)``, broadcast against ``input`` with a warning when the shapes differ (as PyTorch does).
        size_average, reduce: deprecated, as in PyTorch; use ``reduction``.
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"``.
        weight: optional, the shape of ``input``; weights each squared error (``"mean"`` divides by its sum).
    """
    if size_average is not None or reduce is not None:
        reduction = _reduction.legacy_get_string(size_average, reduce)
    _check_reduction(reduction)
    if target.shape != input.shape:
        warnings.warn(
            f"mse_loss: target size {tuple(target.shape)} differs from input size {tuple(input.shape)}; they "
            "will be broadcast, which is likely not what you want. Make them the same size.",
            stacklevel=2,
        )
        input, target = torch.broadcast_tensors(input, target)
    if weight is not None and weight.shape != input.shape:
        raise ValueError(
            f"mse_loss: weight must have the input's shape {tuple(input.shape)}, got {tuple(weight.shape)}"
        )
    input, target, weight = _autocast_to_float32(input, target, weight)
    if input.dtype != target.dtype:  # PyTorch promotes here rather than refusing
        dtype = torch.promote_types(input.dtype, target.dtype)
        input, target = input.to(dtype), target.to(dtype)
    if weight is not None:
        _check_same("mse_loss", "dtype", input=input, target=target, weight=weight)
    if not _one_device(input, target, weight):
        _check_same("mse_loss", "device", input=input, target=target, weight=weight)
    return apply(autograd.MSELoss, input, target, weight, reduction)


def cross_entropy(
    input,
    target,
    weight=None,
    size_average=None,
    ignore_index=-100,
    reduce=None,
    reduction="mean",
    label_smoothing=0.0,
):
    """Softmax cross-entropy from logits and class indices. See ``manualbp.autograd.CrossEntropyLoss``.

    Args:
        input: logits, ``(C,)``, ``(N, C)`` or ``(N, C, d₁, …, d_k)``.
        target: class indices in ``[0, C)``, ``()``, ``(N,)`` or ``(N, d₁, …, d_k)``; ``ignore_index`` marks
            entries that count for nothing.
        weight: optional per-class weights, ``(C,)``.
        size_average, reduce: deprecated, as in PyTorch; use ``reduction``.
        reduction: ``"mean"`` (default; divided by the summed weight of the targets), ``"sum"`` or ``"none"``.
        label_smoothing: ε in [0, 1]; the target becomes (1 − ε)·onehot + ε/C.

    Returns:
        ``()`` for ``"mean"`` and ``"sum"``; the target's shape for ``"none"``.
    """
    if size_average is not None or reduce is not None:
        reduction = _reduction.legacy_get_string(size_average, reduce)
    _check_reduction(reduction)
    if not 0.0 <= label_smoothing <= 1.0:
        raise RuntimeError(f"cross_entropy: label_smoothing must be between 0.0 and 1.0, got {label_smoothing}")
    if not input.is_floating_point():
        raise RuntimeError(f"cross_entropy: input must hold floating-point logits, got dtype {input.dtype}")
    if target.is_floating_point():
        raise NotImplementedError(
            "cross_entropy: manualbp takes class-index targets (an integer tensor); got a floating-point "
            f"target of dtype {target.dtype}. Pass target.argmax(1) for one-hot targets."
        )
    if target.dtype not in (torch.int64, torch.uint8):
        raise RuntimeError(f"cross_entropy: target must be int64 (class indices), got {target.dtype}")
    unbatched = input.dim() == 1
    if unbatched:
        input, target = input.unsqueeze(0), target.unsqueeze(0)
    if input.dim() < 1 or target.dim() != input.dim() - 1:
        raise ValueError(
            f"cross_entropy: for input of shape {tuple(input.shape)}, target must have shape "
            f"{(input.shape[0], *input.shape[2:])}, got {tuple(target.shape)}"
        )
    if input.shape[0] != target.shape[0]:
        raise ValueError(
            f"cross_entropy: expected input batch_size ({input.shape[0]}) to match target batch_size "
            f"({target.shape[0]})"
        )
    if input.dim() > 2 and target.shape[1:] != input.shape[2:]:
        raise RuntimeError(
            f"cross_entropy: expected target size {(input.shape[0], *input.shape[2:])}, got {tuple(target.shape)}"
        )
    num_classes = input.shape[1]
    if weight is not None and tuple(weight.shape) != (num_classes,):
        raise RuntimeError(
            f"cross_entropy: weight must have shape ({num_classes},), one per class, got {tuple(weight.shape)}"
        )
    rows = target if target.dim() == 1 else target.reshape(-1)
    if rows.dtype != torch.int64:
        rows = rows.long()
    span = None if rows.numel() == 0 else fast.target_range(rows)
    if span is not None:
        _check_targets(rows, num_classes, ignore_index, *span)
    input, weight = _autocast_to_float32(input, weight)
    if weight is not None:
        _check_same("cross_entropy", "dtype", input=input, weight=weight)
    if not _one_device(input, target, weight):
        _check_same("cross_entropy", "device", input=input, target=target, weight=weight)
    # fold every layout into (rows, classes): the Function then handles one case only
    logits = input if input.dim() == 2 else input.movedim(1, -1).reshape(-1, num_classes)
    one_hot = weight is None and label_smoothing == 0 and span is not None and not span[0] <= ignore_index <= span[1]
    function = fast.OneHotCrossEntropyLoss if one_hot else autograd.CrossEntropyLoss
    loss, _ = apply(function, logits, rows, weight, ignore_index, float(label_smoothing), reduction)
    if reduction == "none":
        loss = loss.reshape(target.shape[1:] if unbatched else target.shape)
    return loss


def _check_reduction(reduction):
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{reduction} is not a valid value for reduction: expected one of {_REDUCTIONS}")


def _one_device(input, other, optional):
    """Whether ``other`` and ``optional`` (None: absent) are on ``input``'s device; a cheap test that lets the
    common case skip ``_check_same``. All on the CPU is one device, found without building device objects."""
    if input.is_cpu and other.is_cpu and (optional is None or optional.is_cpu):
        return True
    return other.device == input.device and (optional is None or optional.device == input.device)


def _check_same(function, attribute, **tensors):
    """Raise if the given tensors (None skipped) disagree on ``attribute`` ("dtype" or "device")."""
    given = {name: getattr(t, attribute) for name, t in tensors.items() if t is not None}
    first = next(iter(given.values()))
    if any(value != first for value in given.values()):
        listed = ", ".join(f"{name} {value}" for name, value in given.items())
        raise RuntimeError(f"{function}: expected every tensor to have the same {attribute}, got {listed}")


def _check_targets(target, num_classes, ignore_index, low, high):
    """Raise if a class index in ``target`` (1-D, lowest ``low``, highest ``high``) is out of range."""
    if low >= 0 and high < num_classes:  # the common case: nothing more to read
        return
    bad = (target != ignore_index) & ((target < 0) | (target >= num_classes))
    if bad.any():
        raise IndexError(
            f"cross_entropy: target {target[bad][0].item()} is out of bounds: class indices must lie in "
            f"[0, {num_classes}) (or equal ignore_index={ignore_index})"
        )


def _autocast_to_float32(input, *tensors):
    """Under autocast, losses run in float32, as PyTorch's own losses do. ``input`` is never None."""
    tensors = (input, *tensors)
    if not _autocast_enabled(input):
        return tensors
    return tuple(None if t is None else t.float() if t.is_floating_point() else t for t in tensors)


def _autocast_enabled(input):
    """Whether autocast is on for ``input``'s device. The first test (any device, 0.07 µs) spares the common
    case the second (0.4 µs, a per-call cost on every layer)."""
    # the first test is private but costs 0.07 µs against 0.4 µs, on every layer's every call
    return torch._C._is_any_autocast_enabled() and torch.is_autocast_enabled(input.device.type)


def _maybe_inplace(output, input, inplace):
    # the copy is recorded by autograd, so a gradient into the modified input still reaches our backward
    return input.copy_(output) if inplace else output
