"""The 2-D convolution, z = W ⋆ x + b, with its backward pass derived by hand through im2col and Linear's rule."""

import torch
from torch.nn.functional import conv2d, fold, unfold


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
    out. That sum is exactly ``fold``, unfold's adjoint. The same sums, written without columns, are the other
    textbook statement: ∂C/∂x is the transposed convolution of g with W, ∂C/∂W the correlation of x with g. We
    take im2col because it reuses a derivation the reader has already followed, and stride, padding, dilation and
    groups then live only in which pixels ``unfold`` gathers (the same arguments for unfold and for fold).

    Forward mode: z is linear in x and, separately, in W, so by the product rule

        ż = W ⋆ ẋ + Ẇ ⋆ x + ḃ

    three convolutions of the kind the forward pass runs.

    Shapes:
        x: ``(N, C_in, H, W)``; weight: ``(C_out, C_in / groups, kh, kw)``; bias: ``(C_out,)`` or None;
        z and grad_output: ``(N, C_out, H_out, W_out)``; cols: ``(N, C_in · kh · kw, H_out · W_out)``.
        stride, padding, dilation: pairs of ints (padding symmetric; ``manualbp.functional.conv2d`` pads an
        asymmetric ``"same"`` beforehand); groups: an int dividing C_in and C_out.
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
        ctx.arguments = stride, padding, dilation, groups

    @staticmethod
    def backward(ctx, grad_output):
        x, weight = ctx.saved_tensors
        stride, padding, dilation, groups = ctx.arguments
        needs_x_grad, needs_weight_grad, needs_bias_grad = ctx.needs_input_grad[:3]
        n, c_in, height, width = x.shape
        c_out, _, kh, kw = weight.shape
        g = grad_output.reshape(n, groups, c_out // groups, -1)  # (N, G, C_out/G, L): one row per neuron
        weight_rows = weight.reshape(groups, c_out // groups, -1)  # W_g: (G, C_out/G, C_in/G · kh · kw)
        grad_x = grad_weight = grad_bias = None
        if needs_x_grad:
            grad_cols = weight_rows.transpose(1, 2).matmul(g)  # ∂C/∂cols = W_gᵀ g, at every position
            grad_cols = grad_cols.reshape(n, c_in * kh * kw, -1)
            # every copy of a pixel sends its gradient back to it: fold sums them
            grad_x = fold(grad_cols, (height, width), (kh, kw), dilation, padding, stride)
        if needs_weight_grad:
            cols = unfold(x, (kh, kw), dilation, padding, stride).reshape(n, groups, -1, g.shape[-1])
            # Σ_n Σ_l g colsᵀ as one product per group: examples and positions side by side, (N · L) columns
            g_rows = g.permute(1, 2, 0, 3).reshape(groups, c_out // groups, -1)  # (G, C_out/G, N · L)
            cols_rows = cols.permute(1, 0, 3, 2).reshape(groups, -1, cols.shape[2])  # (G, N · L, C_in/G · kh · kw)
            grad_weight = g_rows.bmm(cols_rows).reshape(weight.shape)
        if ctx.has_bias and needs_bias_grad:
            grad_bias = grad_output.sum((0, 2, 3))  # ∂C/∂b = Σ over examples and positions of g
        return grad_x, grad_weight, grad_bias, None, None, None, None

    @staticmethod
    def jvp(ctx, x_tangent, weight_tangent, bias_tangent, *_):
        x, weight = ctx.saved_tensors
        stride, padding, dilation, groups = ctx.arguments
        z_tangent = 0
        if x_tangent is not None:
            z_tangent = conv2d(x_tangent, weight, None, stride, padding, dilation, groups)  # W ⋆ ẋ
        if weight_tangent is not None:
            z_tangent = z_tangent + conv2d(x, weight_tangent, None, stride, padding, dilation, groups)  # + Ẇ ⋆ x
        if bias_tangent is not None:
            z_tangent = z_tangent + bias_tangent[:, None, None]  # + ḃ, at every position
        return z_tangent
