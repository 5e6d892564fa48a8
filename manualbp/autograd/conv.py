"""The 2-D convolution, z = W ⋆ x + b, with its backward pass derived by hand through im2col and Linear's rule."""

import torch
from torch.nn.functional import conv2d, conv_transpose2d, unfold


class Conv2d(torch.autograd.Function):
    r"""z = W ⋆ x + b: each output channel o at each position l is one neuron over a patch of the input.

    **Which derivation, and why: im2col.** Cut the (zero-padded) input into the patches that the kernel visits,
    one column per output position l (``unfold``, "image to columns"): column l of example n holds the
    C_in/G · kh · kw numbers that position l sees. On those columns the convolution *is* the Linear layer, one
    matrix product per group g of channels:

        z[n, g, :, l] = W_g · cols[n, g, :, l] + b_g,     W_g: (C_out/G, C_in/G · kh · kw)

    so the derivation is Linear's (``manualbp.autograd.Linear``), with the positions l playing the part of extra
    rows of the batch, because W and b are shared by every position (weight sharing) and every example:

        ∂C/∂cols[n, g, :, l] = W_gᵀ g[n, g, :, l]              (∂C/∂a = Σ_j g_j W_jk, per position)
        ∂C/∂W_g = Σ_n Σ_l g[n, g, :, l] cols[n, g, :, l]ᵀ      (summed over examples and positions)
        ∂C/∂b_o = Σ_n Σ_l g[n, o, l]

    The last step is from the columns back to the image. unfold copies input pixel x[n, c, i, j] into every
    column whose patch covers it, so by the chain rule ("a quantity that reaches C along several paths gets the
    sum") ∂C/∂x[n, c, i, j] is the sum of ∂C/∂cols over those copies; padding positions are not inputs and drop
    out. That sum is ``fold``, unfold's adjoint. Written without columns, fold(W_gᵀ g) is the other textbook
    statement: **∂C/∂x is the transposed convolution of g with W** (each g[n, o, l] spreads back over its patch,
    weighted by W[o]), which PyTorch runs as one operation, ``conv_transpose2d``, with the forward pass's stride,
    padding, dilation and groups. That is what the code calls: the same sums as fold(W_gᵀ g), without building
    the columns (nine times the size of x for a 3×3 kernel), and on the CPU the same bits as PyTorch's own backward.

    So: im2col for the derivation, and for ∂C/∂W, where the columns are the product's operand; the transposed
    convolution for ∂C/∂x, where they would only be summed away again.

    Forward mode: z is linear in x and, separately, in W, so by the product rule

        ż = W ⋆ ẋ + Ẇ ⋆ x + ḃ

    three convolutions of the kind the forward pass runs.

    Shapes:
        x: ``(N, C_in, H, W)``; weight: ``(C_out, C_in / groups, kh, kw)``; bias: ``(C_out,)`` or None;
        z and grad_output: ``(N, C_out, H_out, W_out)``; cols: ``(N, C_in · kh · kw, H_out · W_out)``.
        stride, padding, dilation: ints or pairs of ints, as ``torch.nn.functional.conv2d`` takes them (padding
        symmetric and numeric; ``manualbp.functional.conv2d`` turns ``"valid"`` and ``"same"`` into numbers, padding
        an asymmetric ``"same"`` beforehand); groups: an int dividing C_in and C_out.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(x, weight, bias, stride, padding, dilation, groups):
        return conv2d(x, weight, bias, stride, padding, dilation, groups)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, weight, bias, stride, padding, dilation, groups = inputs
        ctx.save_for_backward(x, weight)
        ctx.save_for_forward(x, weight)
        ctx.has_bias = bias is not None
        if isinstance(padding, str):
            raise ValueError(
                f"Conv2d.apply: padding={padding!r} is not a number of rows; use manualbp.functional.conv2d, which "
                "turns 'valid' and 'same' into numbers"
            )
        ctx.arguments = pair(stride), pair(padding), pair(dilation), groups

    @staticmethod
    def backward(ctx, grad_output):
        return Conv2d.gradients(
            grad_output, *ctx.saved_tensors, ctx.has_bias, *ctx.arguments, needs_input_grad=ctx.needs_input_grad
        )

    @staticmethod
    def jvp(ctx, x_tangent, weight_tangent, bias_tangent, *_):
        return Conv2d.tangent(x_tangent, weight_tangent, bias_tangent, *ctx.saved_tensors, *ctx.arguments)

    @staticmethod
    def gradients(grad_output, x, weight, has_bias, stride, padding, dilation, groups, needs_input_grad=None):
        """∂C/∂x, ∂C/∂W, ∂C/∂b (and None for the four options) from g = ``grad_output``; stride, padding and dilation
        as pairs. ``needs_input_grad``: which of the inputs want a gradient (None: all)."""
        needs_x_grad, needs_weight_grad, needs_bias_grad = (needs_input_grad or (True,) * 3)[:3]
        grad_x = grad_weight = grad_bias = None
        if needs_x_grad:
            grad_x = Conv2d.input_gradient(grad_output, x.shape, weight, stride, padding, dilation, groups)
        if needs_weight_grad:
            grad_weight = Conv2d.weight_gradient(grad_output, x, weight.shape, stride, padding, dilation, groups)
        if has_bias and needs_bias_grad:
            grad_bias = grad_output.sum((0, 2, 3))  # ∂C/∂b = Σ over examples and positions of g
        return grad_x, grad_weight, grad_bias, None, None, None, None

    @staticmethod
    def input_gradient(grad_output, input_shape, weight, stride, padding, dilation, groups):
        """∂C/∂x = fold(W_gᵀ g): the transposed convolution of g with W. ``(N, C_in, H, W)``."""
        # the last stride step leaves (H + 2p − span) mod stride rows of the padded input unread (span: the dilated
        # kernel's d·(k − 1) + 1); ∂C/∂x is 0 on them, and conv_transpose2d appends them (its output_padding) so
        # that ∂C/∂x has x's shape. Columns likewise.
        left_over = [
            (size + 2 * pad - (dil * (k - 1) + 1)) % step
            for size, pad, dil, k, step in zip(
                input_shape[2:], padding, dilation, weight.shape[2:], stride, strict=True
            )
        ]
        return conv_transpose2d(grad_output, weight, None, stride, padding, left_over, groups, dilation)

    @staticmethod
    def weight_gradient(grad_output, x, weight_shape, stride, padding, dilation, groups):
        """∂C/∂W_g = Σ_n Σ_l g[n, g, :, l] cols[n, g, :, l]ᵀ. ``(C_out, C_in / groups, kh, kw)``."""
        n = x.shape[0]
        c_out, _, kh, kw = weight_shape
        # every size spelled out, none left to -1: with no examples (N = 0) a -1 would be ambiguous
        patch, positions = x.shape[1] // groups * kh * kw, grad_output.shape[2] * grad_output.shape[3]
        cols = unfold(x, (kh, kw), dilation, padding, stride).reshape(n, groups, patch, positions)
        g = grad_output.reshape(n, groups, c_out // groups, positions)  # (N, G, C_out/G, L): one row per neuron
        # the sum over positions l in each example's product, then over examples n
        return g.matmul(cols.transpose(2, 3)).sum(0).reshape(weight_shape)

    @staticmethod
    def tangent(x_tangent, weight_tangent, bias_tangent, x, weight, stride, padding, dilation, groups):
        """ż = W ⋆ ẋ + Ẇ ⋆ x + ḃ, any of the three tangents None for zero."""
        z_tangent = 0
        if x_tangent is not None:
            z_tangent = conv2d(x_tangent, weight, None, stride, padding, dilation, groups)  # W ⋆ ẋ
        if weight_tangent is not None:
            z_tangent = z_tangent + conv2d(x, weight_tangent, None, stride, padding, dilation, groups)  # + Ẇ ⋆ x
        if bias_tangent is not None:
            z_tangent = z_tangent + bias_tangent[:, None, None]  # + ḃ, at every position
        return z_tangent


def pair(value):
    """An int or a pair of ints, as PyTorch's 2-D layers take them (``stride=2`` for ``(2, 2)``), as a pair."""
    return (value, value) if isinstance(value, int) else tuple(value)
