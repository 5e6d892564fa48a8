"""The losses C(a, y), drop-in twins of ``torch.nn``'s."""

import torch

from manualbp import functional as F
from manualbp.nn.module import HandDerived

__all__ = ["CrossEntropyLoss", "MSELoss"]


class MSELoss(HandDerived, torch.nn.MSELoss):
    r"""The quadratic cost C = Σ(a − y)² (``reduction="sum"``) or its mean (default), with ∂C/∂a = 2(a − y).

    Args:
        size_average, reduce: deprecated, as in PyTorch; use ``reduction``.
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"``.

    Shape: input ``(*)``; target the same shape; output ``()``, or ``(*)`` for ``"none"``.

    Examples::

        >>> manualbp.nn.MSELoss(reduction="sum")(torch.tensor([1.0, 2.0]), torch.tensor([0.0, 0.0]))
        tensor(5.)
    """

    def forward(self, input, target):
        return F.mse_loss(input, target, reduction=self.reduction)


class CrossEntropyLoss(HandDerived, torch.nn.CrossEntropyLoss):
    r"""Softmax cross-entropy from logits, with ∂C/∂z = softmax(z) − onehot(y) (divided by N for the mean).

    The plain case (class indices, the mean, no weights, no smoothing, no target equal to ``ignore_index``) runs
    ``manualbp.autograd.OneHotCrossEntropyLoss``; every other case ``manualbp.autograd.CrossEntropyLoss``, which
    derives what each option adds (``manualbp.functional.cross_entropy`` chooses).

    Args:
        weight: optional per-class weights, ``(C,)``.
        size_average, reduce: deprecated, as in PyTorch; use ``reduction``.
        ignore_index: a target value that counts for nothing. Default: −100.
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"``.
        label_smoothing: ε in [0, 1]. Default: 0.

    Shape: input ``(C,)``, ``(N, C)`` or ``(N, C, d₁, …)``; target ``()``, ``(N,)`` or ``(N, d₁, …)`` of class
    indices; output ``()``, or the target's shape for ``"none"``.

    Examples::

        >>> loss = manualbp.nn.CrossEntropyLoss()
        >>> loss(torch.zeros(2, 4), torch.tensor([0, 3]))  # log 4
        tensor(1.3863)
    """

    def forward(self, input, target):
        return F.cross_entropy(
            input,
            target,
            weight=self.weight,
            ignore_index=self.ignore_index,
            reduction=self.reduction,
            label_smoothing=self.label_smoothing,
        )
