"""``dropout``: the mask drawn as PyTorch draws it, the gradient by manualbp's Function."""

import torch

from manualbp import fast
from manualbp.functional._checks import _check_tensors, _maybe_inplace

__all__ = ["dropout"]


def dropout(input, p=0.5, training=True, inplace=False):
    """y = x · m, m_i = 1/(1 − p) with probability 1 − p, else 0; the identity when not training.
    See ``manualbp.autograd.Dropout``.

    On the CPU the mask is drawn as PyTorch's dropout draws it (``bernoulli_(1 − p)`` on an ``empty_like`` of the
    input, then divided by 1 − p), so the same generator state gives the same mask and the same output, to the
    bit. On CUDA PyTorch runs a fused kernel with its own draws: the masks there differ.
    """
    _check_tensors("dropout", input=input)
    if not 0 <= p <= 1:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
    if not training or p == 0 or input.numel() == 0:
        return input  # as PyTorch: no draw, no node
    # at p = 1 every value is dropped and PyTorch draws nothing: neither do we
    mask = input.new_zeros(()) if p == 1 else torch.empty_like(input).bernoulli_(1 - p).div_(1 - p)
    return _maybe_inplace(fast.dropout(input, mask), input, inplace)
