"""``LayerNorm``: y = γ ⊙ x̂ + β, x̂ = (x − μ)σ⁻¹ over the last dimensions; the twin of ``torch.nn.LayerNorm``."""

import torch

from manualbp import functional as F
from manualbp.nn.module import HandDerived

__all__ = ["LayerNorm"]


class LayerNorm(HandDerived, torch.nn.LayerNorm):
    r"""y = γ ⊙ x̂ + β, x̂ = (x − μ) σ⁻¹ per example over its last dimensions, with the compact backward
    ∂C/∂x = σ⁻¹ (ĝ − mean ĝ − x̂ · mean(ĝ x̂)), ĝ = γ ⊙ g, derived by hand (``manualbp.autograd.LayerNorm``).

    Args:
        normalized_shape: the trailing shape to normalise over (an int for the last dimension).
        eps: added to the variance. Default: 1e-5.
        elementwise_affine: learn γ (initialised to ones). Default: True.
        bias: learn β too (initialised to zeros). Default: True.
        device, dtype: where and in what precision to create the parameters.

    Shape: input and output ``(*, *normalized_shape)``.

    Examples::

        >>> manualbp.nn.LayerNorm(4)(torch.randn(2, 3, 4)).shape
        torch.Size([2, 3, 4])
    """

    def forward(self, input):
        return F.layer_norm(input, self.normalized_shape, self.weight, self.bias, self.eps)
