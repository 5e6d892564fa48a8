"""``Dropout``: y = x · m for a random mask m in training, the identity in eval; the twin of ``torch.nn``'s."""

import torch

from manualbp import functional as F
from manualbp.nn.module import HandDerived

__all__ = ["Dropout"]


class Dropout(HandDerived, torch.nn.Dropout):
    r"""y = x · m, m_i = 1/(1 − p) with probability 1 − p, else 0; ∂C/∂x = g · m, the mask saved for backward.

    On the CPU the mask is the one ``torch.nn.Dropout`` draws from the same generator state.

    Args:
        p: the probability that a value is dropped. Default: 0.5.
        inplace: also write the result into the input. Default: False.

    Shape: input and output ``(*)``.

    Examples::

        >>> manualbp.nn.Dropout(0.5).eval()(torch.ones(3))
        tensor([1., 1., 1.])
    """

    def forward(self, input):
        return F.dropout(input, self.p, self.training, self.inplace)
