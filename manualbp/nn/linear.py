"""``Linear``: z = x Wᵀ + b, the drop-in twin of ``torch.nn.Linear``."""

import torch

from manualbp import functional as F
from manualbp.fast.torch_internals import parameter
from manualbp.nn.module import HandDerived

__all__ = ["Linear"]


class Linear(HandDerived, torch.nn.Linear):
    r"""z = x Wᵀ + b, with the backward pass ∂C/∂x = g W, ∂C/∂W = gᵀ x, ∂C/∂b = Σ g derived by hand.

    Args:
        in_features: size of each input example.
        out_features: size of each output example.
        bias: if False, the layer learns no additive bias. Default: True.
        device, dtype: where and in what precision to create the parameters.

    Shape:
        - Input: ``(*, in_features)``, any number of leading dimensions.
        - Output: ``(*, out_features)``.

    Attributes:
        weight: ``(out_features, in_features)``, initialised from U(−√k, √k) with k = 1/in_features
            (``torch.nn.Linear``'s kaiming-uniform, a = √5).
        bias: ``(out_features,)``, initialised from U(−√k, √k).

    Examples::

        >>> layer = manualbp.nn.Linear(20, 30)
        >>> layer(torch.randn(128, 20)).shape
        torch.Size([128, 30])
    """

    def forward(self, input):
        # the parameters read without Module.__getattr__'s cost (see manualbp.fast.torch_internals.parameter)
        return F.linear(input, parameter(self, "weight"), parameter(self, "bias"))
