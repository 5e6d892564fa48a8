"""``embedding``: rows of a weight picked by index."""

import torch

from manualbp import fast
from manualbp.functional._checks import _check_tensors

__all__ = ["embedding"]


def embedding(input, weight, padding_idx=None, max_norm=None, norm_type=2.0, scale_grad_by_freq=False, sparse=False):
    """a = W[i], a row of ``weight`` per index. See ``manualbp.autograd.Embedding`` (the backward: a scatter-add).

    Args:
        input: ``(*)``, indices into the table (int64 or int32).
        weight: ``(num_embeddings, embedding_dim)``.
        padding_idx: a row that gets no gradient (negative counts from the end), or None.
        max_norm, norm_type: rescale, in place and without gradient, each looked-up row whose ``norm_type``-norm
            exceeds ``max_norm`` (as PyTorch does, before the lookup).
        scale_grad_by_freq: divide each row's gradient by how often its index occurs in ``input``.
        sparse: not supported (NotImplementedError).

    Returns:
        ``(*, embedding_dim)``.
    """
    _check_tensors("embedding", ("input", "weight"), input=input, weight=weight)
    if sparse:
        raise NotImplementedError(
            "embedding: sparse gradients are not implemented in manualbp (its gradient is a dense table); use "
            "torch.nn.functional.embedding for them"
        )
    if weight.dim() != 2:
        raise RuntimeError(f"embedding: weight must be 2-D (num_embeddings, embedding_dim), got {list(weight.shape)}")
    if input.dtype not in (torch.int64, torch.int32):
        raise RuntimeError(f"embedding: expected indices of dtype int64 or int32, got {input.dtype}")
    if padding_idx is not None:
        if not -weight.shape[0] <= padding_idx < weight.shape[0]:
            raise AssertionError(
                f"embedding: padding_idx must be within num_embeddings ({weight.shape[0]}), got {padding_idx}"
            )
        padding_idx = padding_idx % weight.shape[0]
    if max_norm is not None:
        with torch.no_grad():  # PyTorch's own renormalisation of the table: in place, not differentiated
            torch.embedding_renorm_(weight, input.contiguous(), max_norm, norm_type)
    return fast.embedding(input, weight, padding_idx, bool(scale_grad_by_freq))
