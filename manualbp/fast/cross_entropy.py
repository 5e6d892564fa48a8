"""The cheapest way to read the class-index targets that choose cross-entropy's plain case."""

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
