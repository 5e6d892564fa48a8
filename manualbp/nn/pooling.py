"""``MaxPool2d``, ``AvgPool2d`` and ``AdaptiveAvgPool2d``, drop-in twins of ``torch.nn``'s."""

import torch

from manualbp import functional as F
from manualbp.nn.module import HandDerived

__all__ = ["AdaptiveAvgPool2d", "AvgPool2d", "MaxPool2d"]


class MaxPool2d(HandDerived, torch.nn.MaxPool2d):
    r"""y = the maximum of each window; ∂C/∂x is g scattered to each window's argmax.

    Args and Shape: those of ``torch.nn.MaxPool2d`` (kernel_size, stride, padding, dilation, return_indices,
    ceil_mode); input ``(N, C, H, W)`` or ``(C, H, W)``.

    Examples::

        >>> manualbp.nn.MaxPool2d(2)(torch.randn(1, 3, 8, 8)).shape
        torch.Size([1, 3, 4, 4])
    """

    def forward(self, input):
        return F.max_pool2d(
            input, self.kernel_size, self.stride, self.padding, self.dilation, self.ceil_mode, self.return_indices
        )


class AvgPool2d(HandDerived, torch.nn.AvgPool2d):
    r"""y = the mean of each window; ∂C/∂x_i = Σ over the windows holding i of g / (the window's divisor).

    Args and Shape: those of ``torch.nn.AvgPool2d`` (kernel_size, stride, padding, ceil_mode, count_include_pad,
    divisor_override); input ``(N, C, H, W)`` or ``(C, H, W)``.

    Examples::

        >>> manualbp.nn.AvgPool2d(2)(torch.ones(1, 1, 4, 4))
        tensor([[[[1., 1.],
                  [1., 1.]]]])
    """

    def forward(self, input):
        return F.avg_pool2d(
            input,
            self.kernel_size,
            self.stride,
            self.padding,
            self.ceil_mode,
            self.count_include_pad,
            self.divisor_override,
        )


class AdaptiveAvgPool2d(HandDerived, torch.nn.AdaptiveAvgPool2d):
    r"""y = P_h x P_wᵀ, the mean over an ``output_size`` grid of windows; ∂C/∂x = P_hᵀ g P_w.

    Args and Shape: those of ``torch.nn.AdaptiveAvgPool2d``; input ``(N, C, H, W)`` or ``(C, H, W)``.

    Examples::

        >>> manualbp.nn.AdaptiveAvgPool2d(1)(torch.randn(2, 8, 5, 5)).shape
        torch.Size([2, 8, 1, 1])
    """

    def forward(self, input):
        return F.adaptive_avg_pool2d(input, self.output_size)
