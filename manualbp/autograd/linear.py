"""The fully connected layer, z = x Wᵀ + b, with its backward pass derived by hand."""

import math

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

    Any leading dimensions of ``x`` are rows too: ``(*, in_features)`` holds prod(*) examples.

    Shapes:
        x: ``(*, in_features)``; weight: ``(out_features, in_features)``; bias: ``(out_features,)`` or None;
        z and grad_output: ``(*, out_features)``.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(x, weight, bias):
        if x.dim() == 2 and bias is not None:
            # z = b + x Wᵀ as one fused GEMM, the kernel torch.nn.functional.linear runs: the same bits
            return torch.addmm(bias, x, weight.t())
        # matmul treats the leading dims as rows itself, and returns a tensor of its own rather than a view
        # (autograd forbids modifying a custom Function's view output in place, as inplace ReLU does)
        z = x.matmul(weight.t())
        return z if bias is None else z + bias

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, weight, bias = inputs
        needs_x_grad, needs_weight_grad, _ = ctx.needs_input_grad
        # ∂C/∂W needs x and ∂C/∂x needs W: keep each only for the gradient that will be taken
        ctx.save_for_backward(x if needs_weight_grad else None, weight if needs_x_grad else None)
        ctx.has_bias = bias is not None

    @staticmethod
    def backward(ctx, grad_output):
        x, weight = ctx.saved_tensors
        needs_x_grad, needs_weight_grad, needs_bias_grad = ctx.needs_input_grad
        grad_x = grad_weight = grad_bias = None
        g = rows(grad_output)
        if needs_x_grad:
            grad_x = g.mm(weight).reshape(*grad_output.shape[:-1], weight.shape[1])  # ∂C/∂x = g W
        if needs_weight_grad:
            grad_weight = g.t().mm(rows(x))  # ∂C/∂W = gᵀ x: a sum over the rows
        if ctx.has_bias and needs_bias_grad:
            grad_bias = g.sum(0)  # ∂C/∂b = Σ_rows g
        return grad_x, grad_weight, grad_bias


def rows(t):
    """``(*, n)`` as ``(prod(*), n)``: one row per example, whatever the leading dimensions (none, or empty)."""
    return t.reshape(math.prod(t.shape[:-1]), t.shape[-1])
