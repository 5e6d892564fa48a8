"""``Embedding``: a = W[i], the drop-in twin of ``torch.nn.Embedding``."""

import torch

from manualbp import functional as F
from manualbp.nn.module import HandDerived

__all__ = ["Embedding"]


class Embedding(HandDerived, torch.nn.Embedding):
    r"""A lookup table, a = W[i], whose backward scatter-adds the rows of g into ∂C/∂W
    (``manualbp.autograd.Embedding``).

    Args:
        num_embeddings, embedding_dim: the table's shape.
        padding_idx: a row that gets no gradient (and is initialised to zeros), or None.
        max_norm, norm_type: rescale looked-up rows whose norm exceeds max_norm, in place.
        scale_grad_by_freq: divide each row's gradient by how often its index occurs in the batch.
        sparse: not supported by manualbp (NotImplementedError when called).

    Shape: input ``(*)`` of int64 or int32 indices; output ``(*, embedding_dim)``.

    Attributes:
        weight: ``(num_embeddings, embedding_dim)``, initialised from N(0, 1).

    Examples::

        >>> manualbp.nn.Embedding(10, 3)(torch.tensor([[1, 2], [4, 5]])).shape
        torch.Size([2, 2, 3])
    """

    def forward(self, input):
        return F.embedding(
            input, self.weight, self.padding_idx, self.max_norm, self.norm_type, self.scale_grad_by_freq, self.sparse
        )
