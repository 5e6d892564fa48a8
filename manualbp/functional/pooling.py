"""Pooling: ``max_pool2d``, ``avg_pool2d``, ``adaptive_avg_pool2d``."""

from manualbp import fast
from manualbp.functional._checks import _batched_image, _check_tensors, _pair, _unset

__all__ = ["adaptive_avg_pool2d", "avg_pool2d", "max_pool2d"]


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
    """y = the maximum over each window; the gradient goes to the argmax. See ``manualbp.autograd.MaxPool2d``.

    Input ``(N, C, H, W)`` or ``(C, H, W)``; ``stride`` defaults to ``kernel_size``. With ``return_indices`` also
    returns the argmax of each window, an index into the flattened H · W plane, as PyTorch does.
    """
    _check_tensors("max_pool2d", input=input)
    batched = _batched_image("max_pool2d", input)
    kernel_size = _pair("max_pool2d", "kernel_size", kernel_size, 1)
    stride = kernel_size if _unset(stride) else _pair("max_pool2d", "stride", stride, 1)
    padding, dilation = _pair("max_pool2d", "padding", padding, 0), _pair("max_pool2d", "dilation", dilation, 1)
    output, indices = fast.max_pool2d(batched, kernel_size, stride, padding, dilation, bool(ceil_mode))
    if input.dim() == 3:
        output, indices = output.squeeze(0), indices.squeeze(0)
    return (output, indices) if return_indices else output


def avg_pool2d(
    input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True, divisor_override=None
):
    """y = the mean over each window. See ``manualbp.autograd.AvgPool2d``.

    Input ``(N, C, H, W)`` or ``(C, H, W)``; ``stride`` defaults to ``kernel_size``; ``count_include_pad`` counts
    padding zeros in the divisor; ``divisor_override`` (a nonzero int) replaces the divisor.
    """
    _check_tensors("avg_pool2d", input=input)
    batched = _batched_image("avg_pool2d", input)
    kernel_size = _pair("avg_pool2d", "kernel_size", kernel_size, 1)
    stride = kernel_size if _unset(stride) else _pair("avg_pool2d", "stride", stride, 1)
    padding = _pair("avg_pool2d", "padding", padding, 0)
    if divisor_override is not None and (not isinstance(divisor_override, int) or divisor_override == 0):
        raise RuntimeError(f"avg_pool2d: divisor_override must be a nonzero int or None, got {divisor_override!r}")
    arguments = (kernel_size, stride, padding, bool(ceil_mode), bool(count_include_pad), divisor_override)
    output = fast.avg_pool2d(batched, *arguments)
    return output if input.dim() == 4 else output.squeeze(0)


def adaptive_avg_pool2d(input, output_size):
    """y = the mean over an ``output_size`` grid of windows tiling the input. See
    ``manualbp.autograd.AdaptiveAvgPool2d``. ``output_size``: an int or a pair, None keeping the input's size."""
    _check_tensors("adaptive_avg_pool2d", input=input)
    batched = _batched_image("adaptive_avg_pool2d", input, ValueError)
    if isinstance(output_size, int) or output_size is None:
        output_size = (output_size, output_size)
    if len(output_size) != 2:
        raise RuntimeError(f"adaptive_avg_pool2d: output_size must be an int or a pair, got {output_size!r}")
    output_size = tuple(size if size is not None else batched.shape[2 + i] for i, size in enumerate(output_size))
    output = fast.adaptive_avg_pool2d(batched, output_size)
    return output if input.dim() == 4 else output.squeeze(0)
