"""The cheapest way to read the class-index targets that choose cross-entropy's plain case."""

import functools

import torch

from manualbp.fast.torch_internals import is_functorch_wrapped

# Up to this many targets, reading them into Python and taking min and max there costs less than a reduction
# kernel and two reads of its results (measured in a training step: ~0 µs against ~8 µs at a batch of 100)
READ_AS_LIST = 256


def target_range(target):
    """``(lowest, highest)`` class index in ``target`` (1-D, non-empty), or None where its values cannot be read
    without cost or at all: on a GPU (reading would stall every step) and under torch.compile or torch.func
    (there are no concrete values)."""
    if not target.is_cpu or torch.compiler.is_compiling() or is_functorch_wrapped(target):
        return None
    if target.numel() <= READ_AS_LIST:
        values = target.tolist()
        return min(values), max(values)
    low, high = torch.aminmax(target)
    return low.item(), high.item()


@functools.lru_cache(maxsize=16)
def _row_share(dtype, device, rows):
    """g/N at g = 1 (the upstream gradient of ``loss.backward()``, shared by N rows) and −g/N as a column, as
    ``OneHotCrossEntropyLoss.gradients`` computes them from a tensor g = 1: made once per batch size, not per call
    (they are only read)."""
    share = torch.ones((), dtype=dtype, device=device) / rows
    return share, (-share).expand(rows, 1)


def one_hot_gradient_at_one(target, log_probs):
    """∂C/∂z = (softmax(z) − onehot(t)) / N, ``OneHotCrossEntropyLoss.gradients`` at an upstream gradient of 1:
    the same operations (p · g/N, then −g/N added at each row's target class) on the same numbers, so the same
    bits (``tests/library/test_mlp_loss.py``), in two passes where the reference's general g takes five (its g/N
    and −g/N made once per batch size, and p · g/N in place on eᴸ's new tensor)."""
    share, minus_share = _row_share(log_probs.dtype, log_probs.device, target.shape[0])
    return log_probs.exp().mul_(share).scatter_add_(1, target.unsqueeze(1), minus_share)
