"""``GroupNorm``: y = γ x̂ + β, x̂ = (x − μ)σ⁻¹ over groups of channels, the drop-in twin of ``torch.nn.GroupNorm``."""

import torch

from manualbp import functional as F
from manualbp.nn.module import HandDerived

__all__ = ["GroupNorm"]


class GroupNorm(HandDerived, torch.nn.GroupNorm):
    r"""y = γ x̂ + β, x̂ = (x − μ) σ⁻¹ per example over each group of num_channels/num_groups channels, with the
    compact backward ∂C/∂x = σ⁻¹ (ĝ − mean ĝ − x̂ · mean(ĝ x̂)) per group, ĝ = γ g, derived by hand
    (``manualbp.autograd.GroupNorm``).

    Args:
        num_groups: the number of groups to split the channels into (it must divide num_channels).
        num_channels: C, the number of channels the input has.
        eps: added to the variance. Default: 1e-5.
        affine: learn γ (initialised to ones) and β (zeros), one per channel. Default: True.
        bias: learn β too, when affine. Default: True.
        device, dtype: where and in what precision to create the parameters.

    Shape: input and output ``(N, C, *)``.

    Examples::

        >>> manualbp.nn.GroupNorm(2, 4)(torch.randn(3, 4, 5, 5)).shape
        torch.Size([3, 4, 5, 5])
    """

    def forward(self, input):
        return F.group_norm(input, self.num_groups, self.weight, self.bias, self.eps)
