"""``Conv1d`` and ``Conv2d``: z = W ⋆ x + b, drop-in twins of ``torch.nn``'s."""

import torch

from manualbp import functional as F
from manualbp.nn.module import HandDerived

__all__ = ["Conv1d", "Conv2d"]


class Conv2d(HandDerived, torch.nn.Conv2d):
    r"""z = W ⋆ x + b, with ∂C/∂x, ∂C/∂W and ∂C/∂b derived by hand through im2col (``manualbp.autograd.Conv2d``).

    Args, Shape and Attributes: those of ``torch.nn.Conv2d`` (in_channels, out_channels, kernel_size, stride,
    padding incl. ``"same"``/``"valid"``, dilation, groups, bias, padding_mode, device, dtype); input
    ``(N, C_in, H, W)`` or ``(C_in, H, W)``, weight ``(C_out, C_in / groups, kh, kw)``. A ``padding_mode`` other
    than ``"zeros"`` pads the input with ``torch.nn.functional.pad`` first, as ``torch.nn.Conv2d`` does.

    Examples::

        >>> layer = manualbp.nn.Conv2d(3, 8, 3, padding="same")
        >>> layer(torch.randn(2, 3, 16, 16)).shape
        torch.Size([2, 8, 16, 16])
    """

    def forward(self, input):
        if self.padding_mode != "zeros":
            padded = torch.nn.functional.pad(input, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            return F.conv2d(padded, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)
        return F.conv2d(input, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)


class Conv1d(HandDerived, torch.nn.Conv1d):
    r"""z = W ⋆ x + b along one axis: ``Conv2d``'s derivation on an image of height 1.

    Args, Shape and Attributes: those of ``torch.nn.Conv1d``; input ``(N, C_in, L)`` or ``(C_in, L)``.

    Examples::

        >>> manualbp.nn.Conv1d(4, 6, 3)(torch.randn(2, 4, 10)).shape
        torch.Size([2, 6, 8])
    """

    def forward(self, input):
        if self.padding_mode != "zeros":
            padded = torch.nn.functional.pad(input, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            return F.conv1d(padded, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)
        return F.conv1d(input, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)
