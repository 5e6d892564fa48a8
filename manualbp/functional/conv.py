"""The convolutions: ``conv2d`` and ``conv1d``."""

import torch

from manualbp import fast
from manualbp.functional._checks import _autocast_enabled, _check_same, _check_tensors, _pair, _single

__all__ = ["conv1d", "conv2d"]


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """z = W ⋆ x + b. See ``manualbp.autograd.Conv2d`` for the derivation.

    Args:
        input: ``(N, C_in, H, W)`` or unbatched ``(C_in, H, W)``.
        weight: ``(C_out, C_in / groups, kh, kw)``.
        bias: ``(C_out,)`` or None.
        stride, dilation: an int or a pair. padding: an int, a pair, ``"valid"`` (0) or ``"same"`` (output the
            size of the input; stride 1 only). An odd total of ``"same"`` padding puts the extra zero after the
            input, as PyTorch does, by padding the input before the Function.
        groups: splits the channels into that many independent convolutions.

    Returns:
        ``(N, C_out, H_out, W_out)`` (or unbatched).
    """
    _check_tensors("conv2d", ("input", "weight"), input=input, weight=weight, bias=bias)
    if _autocast_enabled(input):  # as for linear: every operand in the autocast dtype, cast outside the Function
        dtype = torch.get_autocast_dtype(input.device.type)
        input, weight = input.to(dtype), weight.to(dtype)
        bias = None if bias is None else bias.to(dtype)
    if input.dim() not in (3, 4) or weight.dim() != 4:
        raise RuntimeError(
            f"conv2d: expected a 3-D (unbatched) or 4-D input and a 4-D weight, got input of shape "
            f"{tuple(input.shape)} and weight of shape {tuple(weight.shape)}"
        )
    batched = input if input.dim() == 4 else input.unsqueeze(0)
    if not isinstance(groups, int) or groups < 1 or weight.shape[0] % groups:
        raise RuntimeError(
            f"conv2d: groups must be a positive int dividing out_channels={weight.shape[0]}, got {groups}"
        )
    if batched.shape[1] != weight.shape[1] * groups:
        raise RuntimeError(
            f"conv2d: input of shape {tuple(input.shape)} has {batched.shape[1]} channels, but weight of shape "
            f"{tuple(weight.shape)} with groups={groups} expects {weight.shape[1] * groups}"
        )
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        raise RuntimeError(f"conv2d: bias must have shape ({weight.shape[0]},), got {tuple(bias.shape)}")
    _check_same("conv2d", "dtype", input=input, weight=weight, bias=bias)
    _check_same("conv2d", "device", input=input, weight=weight, bias=bias)
    stride, dilation = _pair("conv2d", "stride", stride, 1), _pair("conv2d", "dilation", dilation, 1)
    if padding == "valid":
        padding = (0, 0)
    elif padding == "same":
        if stride != (1, 1):
            raise ValueError("conv2d: padding='same' is not supported for strided convolutions")
        total = [d * (k - 1) for d, k in zip(dilation, weight.shape[2:], strict=True)]
        padding = (total[0] // 2, total[1] // 2)
        extra_h, extra_w = total[0] - 2 * padding[0], total[1] - 2 * padding[1]
        if extra_h or extra_w:  # the odd zero goes after the input, as in PyTorch
            batched = torch.nn.functional.pad(batched, (0, extra_w, 0, extra_h))
    elif isinstance(padding, str):
        raise ValueError(f"conv2d: padding must be 'valid', 'same', an int or a pair, got {padding!r}")
    else:
        padding = _pair("conv2d", "padding", padding, 0)
    output = fast.conv2d(batched, weight, bias, stride, padding, dilation, groups)
    return output if input.dim() == 4 else output.squeeze(0)


def conv1d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """z = W ⋆ x + b along one axis: ``conv2d`` on an image of height 1 (the same derivation, one node
    ``Conv2dBackward``). Input ``(N, C_in, L)`` or ``(C_in, L)``, weight ``(C_out, C_in / groups, k)``; the other
    arguments an int (or a 1-tuple), padding also ``"valid"`` or ``"same"``."""
    _check_tensors("conv1d", ("input", "weight"), input=input, weight=weight, bias=bias)
    if input.dim() not in (2, 3) or weight.dim() != 3:
        raise RuntimeError(
            f"conv1d: expected a 2-D (unbatched) or 3-D input and a 3-D weight, got input of shape "
            f"{tuple(input.shape)} and weight of shape {tuple(weight.shape)}"
        )
    stride, dilation = _single("conv1d", "stride", stride, 1), _single("conv1d", "dilation", dilation, 1)
    padding = padding if isinstance(padding, str) else (0, _single("conv1d", "padding", padding, 0))
    output = conv2d(input.unsqueeze(-2), weight.unsqueeze(-2), bias, (1, stride), padding, (1, dilation), groups)
    return output.squeeze(-2)
