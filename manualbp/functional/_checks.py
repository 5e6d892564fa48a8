"""The argument checks every functional shares: shapes, dtypes and devices, reductions, autocast."""

import operator

import torch

from manualbp.fast.torch_internals import any_autocast_enabled

_REDUCTIONS = ("none", "mean", "sum")

# What an operation raises for an operand it refuses (a shape, dtype, device, name or type), which a functional that
# calls its node unchecked catches in order to run its checks and name the operand. Only these: other exceptions
# pass through untouched, such as the one torch.utils.checkpoint raises to stop a recomputation early.
OPERAND_ERRORS = (RuntimeError, ValueError, IndexError, TypeError, AttributeError, KeyError)


def _check_tensors(function, required=("input",), error=TypeError, **tensors):
    """Raise ``error`` (TypeError, as ``torch.nn.functional`` mostly does) for an argument that is not a tensor;
    None stands for an absent optional argument, and is refused for the names in ``required``."""
    for name, value in tensors.items():
        if not isinstance(value, torch.Tensor) and (value is not None or name in required):
            raise error(f"{function}: {name} must be a Tensor, got {type(value).__name__}")


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


def _autocast_to_float32(input, *tensors):
    """Under autocast, losses run in float32, as PyTorch's own losses do. ``input`` is never None."""
    tensors = (input, *tensors)
    if not _autocast_enabled(input):
        return tensors
    return _float32(tensors)


def _autocast_normalization(input, *tensors):
    """Normalisation and softmax under autocast: ``(operands, result_dtype)``, the operands in float32 and the dtype
    PyTorch's autocast gives the result, float32 on CUDA (whose autocast list runs them in float32) and the input's
    own on the CPU (whose list leaves them alone). Without autocast the operands as they are, and None."""
    if not _autocast_enabled(input):
        return (input, *tensors), None
    return _float32((input, *tensors)), input.dtype if input.device.type == "cpu" else torch.float32


def _as_dtype(output, dtype):
    """``output`` cast to ``dtype`` (differentiably), or as it is for None: ``_autocast_normalization``'s result."""
    return output if dtype is None else output.to(dtype)


def _float32(tensors):
    return tuple(None if t is None else t.float() if t.is_floating_point() else t for t in tensors)


def _autocast_enabled(input):
    """Whether autocast is on for ``input``'s device. The first test (any device, 0.07 µs) spares the common
    case the second (0.4 µs, a per-call cost on every layer)."""
    return any_autocast_enabled() and torch.is_autocast_enabled(input.device.type)


def _maybe_inplace(output, input, inplace):
    # the copy is recorded by autograd, so a gradient into the modified input still reaches our backward
    return input.copy_(output) if inplace else output


def _pair(function, name, value, low):
    """``value`` (an int or a sequence of one or two ints, each ≥ ``low``; NumPy's integers count) as a pair."""
    pair = _ints(value)
    if pair is not None and len(pair) == 1:
        pair = pair * 2
    if pair is None or len(pair) != 2 or not all(v >= low for v in pair):
        raise RuntimeError(f"{function}: {name} must be an int ≥ {low} or a pair of them, got {value!r}")
    return pair


def _single(function, name, value, low):
    """``value`` (an int ≥ ``low`` or a 1-sequence of one; NumPy's integers count) as an int."""
    single = _ints(value)
    if single is None or len(single) != 1 or single[0] < low:
        raise RuntimeError(f"{function}: {name} must be an int ≥ {low} (or a 1-tuple of one), got {value!r}")
    return single[0]


def _ints(value):
    """``value``, an integer or a sequence of them, as a tuple of Python ints; None if it is neither."""
    if isinstance(value, int):  # the common cases first, without raising
        return (value,)
    if isinstance(value, tuple) and all(isinstance(v, int) for v in value):
        return value
    try:
        return (operator.index(value),)
    except TypeError:
        pass
    try:
        return tuple(operator.index(v) for v in value)
    except TypeError:
        return None


def _unset(stride):
    """Whether a pooling stride is left to default to the kernel size: None or empty, as PyTorch takes it."""
    return stride is None or (not isinstance(stride, int) and len(stride) == 0)


def _batched_image(function, input, error=RuntimeError):
    """A ``(C, H, W)`` or ``(N, C, H, W)`` input as ``(N, C, H, W)`` (a view); else ``error``, torch's type."""
    if input.dim() not in (3, 4):
        raise error(f"{function}: expected a 3-D (C, H, W) or 4-D (N, C, H, W) input, got {input.dim()}-D")
    return input if input.dim() == 4 else input.unsqueeze(0)
