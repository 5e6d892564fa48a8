"""Pooling over windows of an image: the maximum, the mean, and the mean over a fixed grid of windows."""

import math

import torch
from torch.nn.functional import adaptive_avg_pool2d, avg_pool2d, fold, max_pool2d

from manualbp.autograd.conv import pair


class MaxPool2d(torch.autograd.Function):
    r"""y_l = max over window l of x: each output is one of its inputs, the window's argmax i*(l).

    Within a window, y_l = x_{i*(l)}, so ∂y_l/∂x_i = 1 if i = i*(l) and 0 otherwise (at a tie PyTorch's kernel
    picks one index, and we follow its choice). By the chain rule, summing over every window an input wins (windows
    overlap when stride < kernel):

        ∂C/∂x_i = Σ_{l : i*(l) = i} g_l

    a scatter-add of g to the argmax indices, which the forward kernel returns (``return_indices``): they index the
    flattened H · W plane of each example and channel. Forward mode reads the tangent at the same indices:

        ẏ_l = ẋ_{i*(l)}

    Padding positions are −∞ and never win; dilation and ceil_mode only change which windows there are, and so
    live entirely in the indices.

    Shapes:
        x and grad_input: ``(N, C, H, W)``; y, indices and grad_output: ``(N, C, H_out, W_out)``.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(x, kernel_size, stride, padding, dilation, ceil_mode):
        return max_pool2d(x, kernel_size, stride, padding, dilation, ceil_mode, return_indices=True)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x = inputs[0]
        _, indices = output
        ctx.mark_non_differentiable(indices)
        ctx.save_for_backward(indices)
        ctx.save_for_forward(indices)
        ctx.input_shape = x.shape

    @staticmethod
    def backward(ctx, grad_output, _):
        return MaxPool2d.gradients(grad_output, *ctx.saved_tensors, ctx.input_shape)

    @staticmethod
    def jvp(ctx, x_tangent, *_):
        return MaxPool2d.tangent(x_tangent, *ctx.saved_tensors, ctx.input_shape)

    @staticmethod
    def gradients(grad_output, indices, input_shape, needs_input_grad=None):
        """∂C/∂x (and None for the five options); ``input_shape``: x's ``(N, C, H, W)``."""
        n, c, height, width = input_shape
        grad_x = grad_output.new_zeros(n, c, height * width)
        # ∂C/∂x_i = Σ of g over the windows that i won
        windows = indices.shape[2] * indices.shape[3]  # spelled out, not -1: with N = 0 a -1 would be ambiguous
        grad_x = grad_x.scatter_add(2, indices.reshape(n, c, windows), grad_output.reshape(n, c, windows))
        return grad_x.reshape(n, c, height, width), None, None, None, None, None

    @staticmethod
    def tangent(x_tangent, indices, input_shape):
        """ẏ and None for the indices, which have no tangent."""
        n, c, height, width = input_shape
        windows = indices.shape[2] * indices.shape[3]
        # ẏ_l = ẋ_{i*(l)}
        y_tangent = x_tangent.reshape(n, c, height * width).gather(2, indices.reshape(n, c, windows))
        return y_tangent.reshape(indices.shape), None


class AvgPool2d(torch.autograd.Function):
    r"""y_l = (1/d_l) Σ_{i in window l} x_i: a fixed linear map, so its Jacobian is a constant.

    ∂y_l/∂x_i = 1/d_l for every input i of window l (padding positions are zeros, not inputs), so

        ∂C/∂x_i = Σ_{l : i in window l} g_l / d_l

    Written with the columns of im2col (see ``Conv2d``): every position of window l receives g_l / d_l, and ``fold``
    sums what each input pixel receives from the windows that cover it. The divisor d_l is the window's size
    kh · kw, or with ``count_include_pad=False`` the number of real (non-padding) inputs it covers, clipped by
    ceil_mode's extra windows as PyTorch clips them, or ``divisor_override``; ``divisors`` computes it. ceil_mode
    may add a last row or column of windows that runs past the padded input: fold then runs on an input enlarged
    by that overhang, which is cut off again.

    Forward mode: a linear map's jvp is the map itself, ẏ = avg_pool2d(ẋ).

    Shapes:
        x and grad_input: ``(N, C, H, W)``; y and grad_output: ``(N, C, H_out, W_out)``; the divisors
        ``(H_out, W_out)``. kernel_size, stride, padding: ints or pairs of ints, stride None for kernel_size, as
        ``torch.nn.functional.avg_pool2d`` takes them.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(x, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override):
        return avg_pool2d(x, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, kernel_size, stride, padding, *rest = inputs
        ctx.input_shape = x.shape
        kernel_size = pair(kernel_size)
        stride = kernel_size if stride is None else pair(stride)  # PyTorch's default: windows side by side
        ctx.arguments = kernel_size, stride, pair(padding), *rest

    @staticmethod
    def backward(ctx, grad_output):
        return AvgPool2d.gradients(grad_output, ctx.input_shape, *ctx.arguments)

    @staticmethod
    def jvp(ctx, x_tangent, *_):
        return AvgPool2d.tangent(x_tangent, *ctx.arguments)

    @staticmethod
    def gradients(
        grad_output,
        input_shape,
        kernel_size,
        stride,
        padding,
        ceil_mode,
        count_include_pad,
        divisor_override,
        needs_input_grad=None,
    ):
        """∂C/∂x (and None for the six options); kernel_size, stride and padding as pairs."""
        n, c, height, width = input_shape
        h_out, w_out = grad_output.shape[2:]
        d = divisors((height, width), (h_out, w_out), kernel_size, stride, padding, count_include_pad)
        d = d if divisor_override is None else torch.full_like(d, divisor_override)
        share = (grad_output / d.to(grad_output)).reshape(n, c, 1, h_out * w_out)  # g_l / d_l
        patch = math.prod(kernel_size)  # sizes spelled out, none left to -1: with N = 0 a -1 would be ambiguous
        cols = share.expand(n, c, patch, h_out * w_out).reshape(n, c * patch, h_out * w_out)
        # the overhang of ceil_mode's last windows past the padded input (0 without ceil_mode)
        over_h = max(0, (h_out - 1) * stride[0] + kernel_size[0] - height - 2 * padding[0])
        over_w = max(0, (w_out - 1) * stride[1] + kernel_size[1] - width - 2 * padding[1])
        # ∂C/∂x_i = Σ_{l : i in window l} g_l / d_l: fold sums what each input receives from its windows
        grad_x = fold(cols, (height + over_h, width + over_w), kernel_size, 1, padding, stride)
        if over_h or over_w:
            grad_x = grad_x.narrow(2, 0, height).narrow(3, 0, width)  # the overhang reaches no input
        return grad_x, None, None, None, None, None, None

    @staticmethod
    def tangent(x_tangent, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override):
        """ẏ = avg_pool2d(ẋ): a linear map's jvp is the map itself."""
        return avg_pool2d(x_tangent, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)


def divisors(input_size, output_size, kernel_size, stride, padding, count_include_pad):
    """d_l for every window, as PyTorch's kernel counts it: a window clipped to the padded input (ceil_mode's last
    windows may run past it), then, without ``count_include_pad``, to the input itself; a window of padding alone
    counts 1 (its output is 0 and its gradient reaches no input)."""
    counts = []
    for size, out, k, s, p in zip(input_size, output_size, kernel_size, stride, padding, strict=True):
        start = torch.arange(out) * s - p
        end = torch.clamp(start + k, max=size + p)
        if not count_include_pad:
            start, end = start.clamp(min=0), end.clamp(max=size)
        counts.append((end - start).clamp(min=1))
    return counts[0][:, None] * counts[1][None, :]


class AdaptiveAvgPool2d(torch.autograd.Function):
    r"""y = P_h x P_wᵀ: the mean over an (H_out, W_out) grid of windows that tile the input.

    Row window i spans [⌊i·H/H_out⌋, ⌈(i+1)·H/H_out⌉) (and columns likewise), so the pooling is separable: with
    P_h the (H_out, H) matrix holding 1/(window length) over row window i, and P_w likewise,

        y[n, c] = P_h x[n, c] P_wᵀ

    a product of matrices, whose derivative by the rule for matrix products (as in Linear) is

        ∂C/∂x[n, c] = P_hᵀ g[n, c] P_w

    The windows may overlap when H is not a multiple of H_out; the sum in the product handles that. Forward mode:
    the map is linear, ẏ = adaptive_avg_pool2d(ẋ).

    Shapes:
        x and grad_input: ``(N, C, H, W)``; y and grad_output: ``(N, C, H_out, W_out)``; P_h ``(H_out, H)``;
        P_w ``(W_out, W)``.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(x, output_size):
        return adaptive_avg_pool2d(x, output_size)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, _ = inputs
        ctx.input_shape = x.shape
        ctx.output_size = tuple(output.shape[-2:])  # the sizes that an int or a None in output_size stood for

    @staticmethod
    def backward(ctx, grad_output):
        return AdaptiveAvgPool2d.gradients(grad_output, ctx.input_shape, ctx.output_size)

    @staticmethod
    def jvp(ctx, x_tangent, _):
        return AdaptiveAvgPool2d.tangent(x_tangent, ctx.output_size)

    @staticmethod
    def gradients(grad_output, input_shape, output_size, needs_input_grad=None):
        """∂C/∂x (and None for output_size); ``output_size``: the pair of sizes y has."""
        height, width = input_shape[2:]
        p_h = averaging_matrix(output_size[0], height, grad_output)
        p_w = averaging_matrix(output_size[1], width, grad_output)
        return p_h.t().matmul(grad_output).matmul(p_w), None  # ∂C/∂x = P_hᵀ g P_w

    @staticmethod
    def tangent(x_tangent, output_size):
        """ẏ = adaptive_avg_pool2d(ẋ): the map is linear."""
        return adaptive_avg_pool2d(x_tangent, output_size)


def averaging_matrix(out, size, like):
    """P: ``(out, size)``, row i the mean over [⌊i·size/out⌋, ⌈(i+1)·size/out⌉), in ``like``'s dtype and device."""
    i = torch.arange(out)
    start = torch.div(i * size, out, rounding_mode="floor")
    end = torch.div((i + 1) * size + out - 1, out, rounding_mode="floor")
    position = torch.arange(size)
    inside = (position[None, :] >= start[:, None]) & (position[None, :] < end[:, None])
    return inside.to(like) / (end - start)[:, None].to(like)
