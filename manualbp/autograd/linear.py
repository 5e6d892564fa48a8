"""The fully connected layer, z = x Wᵀ + b, with its backward pass derived by hand."""

import torch


class Linear(torch.autograd.Function):
    r"""z = x Wᵀ + b, one neuron per row of W.

    In the chain-rule notation, with a⁽ᴸ⁻¹⁾ = x the previous layer's activations, one output neuron j computes
    z_j = Σ_k W_jk a_k + b_j, so

        ∂z_j/∂W_jk = a_k,   ∂z_j/∂b_j = 1,   ∂z_j/∂a_k = W_jk.

    With g = ∂C/∂z (``grad_output``) the chain rule gives, per example,

        ∂C/∂W_jk = g_j a_k          ∂C/∂b_j = g_j          ∂C/∂a_k = Σ_j g_j W_jk

    The last one sums over every neuron j that a_k feeds. In matrix form, stacking the examples of a batch as
    rows, the weights and bias are shared by every example, so their gradients sum over the batch:

        ∂C/∂x = g W        ∂C/∂W = gᵀ x        ∂C/∂b = Σ_rows g

    ``manualbp.functional.linear`` folds any leading dimensions of an input ``(*, in_features)`` into rows first
    (prod(*) examples), and unfolds the result.

    Forward mode (``jvp``) pushes tangents ẋ, Ẇ, ḃ the other way, through the product rule of z = x Wᵀ + b:

        ż = ẋ Wᵀ + x Ẇᵀ + ḃ

    the same partial derivatives as above (∂z/∂x = Wᵀ, ∂z/∂W = x, ∂z/∂b = 1), applied to directions of the inputs
    rather than to a gradient of the output.

    Shapes:
        x: ``(rows, in_features)``; weight: ``(out_features, in_features)``; bias: ``(out_features,)`` or None;
        z and grad_output: ``(rows, out_features)``.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(x, weight, bias):
        if bias is None:
            return x.mm(weight.t())
        # z = b + x Wᵀ as one fused GEMM, as torch.nn.functional.linear runs it: the same bits
        return torch.addmm(bias, x, weight.t())

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, weight, bias = inputs
        needs_x_grad, needs_weight_grad, _ = ctx.needs_input_grad
        # ∂C/∂W needs x and ∂C/∂x needs W: keep each only for the gradient that will be taken
        ctx.save_for_backward(x if needs_weight_grad else None, weight if needs_x_grad else None)
        ctx.save_for_forward(x, weight)
        ctx.has_bias = bias is not None

    @staticmethod
    def backward(ctx, grad_output):
        return Linear.gradients(grad_output, *ctx.saved_tensors, ctx.has_bias, needs_input_grad=ctx.needs_input_grad)

    @staticmethod
    def jvp(ctx, x_tangent, weight_tangent, bias_tangent):
        return Linear.tangent(x_tangent, weight_tangent, bias_tangent, *ctx.saved_tensors)

    @staticmethod
    def gradients(grad_output, x, weight, has_bias, needs_input_grad=None):
        """``(∂C/∂x, ∂C/∂W, ∂C/∂b)`` from g = ∂C/∂z, each None where ``needs_input_grad`` does not ask for it (or
        the layer has no bias). x may be None if ∂C/∂W is not asked for, W if ∂C/∂x is not."""
        needs_x_grad, needs_weight_grad, needs_bias_grad = needs_input_grad or (True, True, True)
        grad_x = grad_weight = grad_bias = None
        if needs_x_grad:
            grad_x = grad_output.mm(weight)  # ∂C/∂x = g W
        if needs_weight_grad:
            grad_weight = grad_output.t().mm(x)  # ∂C/∂W = gᵀ x: a sum over the rows
        if has_bias and needs_bias_grad:
            grad_bias = grad_output.sum(0)  # ∂C/∂b = Σ_rows g
        return grad_x, grad_weight, grad_bias

    @staticmethod
    def tangent(x_tangent, weight_tangent, bias_tangent, x, weight):
        """ż from the inputs' tangents ẋ, Ẇ and ḃ (None where the layer has no bias)."""
        z_tangent = x_tangent.mm(weight.t()) + x.mm(weight_tangent.t())  # ẋ Wᵀ + x Ẇᵀ
        return z_tangent if bias_tangent is None else z_tangent + bias_tangent  # + ḃ
