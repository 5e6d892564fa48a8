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

    Any leading dimensions of ``x`` are flattened into rows first, so "rows" means every leading index.

    Shapes:
        x: ``(*, in_features)``; weight: ``(out_features, in_features)``; bias: ``(out_features,)`` or None;
        z and grad_output: ``(*, out_features)``.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(x, weight, bias):
        if x.dim() == 2 and bias is not None:
            # one fused GEMM, z = b + x Wᵀ, as torch.nn.functional.linear runs it: the same bits
            return torch.addmm(bias, x, weight.t())
        # matmul folds the leading dims into rows itself, and returns a tensor of its own rather than a
        # view (autograd forbids modifying a custom Function's view output in place, as inplace ReLU does)
        z = x.matmul(weight.t())
        return z if bias is None else z + bias

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, weight, bias = inputs
        ctx.save_for_backward(*kept_for_grads(ctx, x, weight))
        ctx.has_bias = bias is not None

    @staticmethod
    def backward(ctx, grad_output):
        x, weight = ctx.saved_tensors
        return linear_grads(grad_output, x, weight, ctx.needs_input_grad, ctx.has_bias)


def linear_grads(grad_output, x, weight, needs_input_grad, has_bias):
    """``(∂C/∂x, ∂C/∂W, ∂C/∂b)`` from g = ``grad_output`` = ∂C/∂z, each only if needed (else None)."""
    grad_input = grad_weight = grad_bias = None
    rows = grad_output.dim() != 2  # leading dimensions to fold into rows (x has the same ones)
    g = grad_output.reshape(-1, grad_output.shape[-1]) if rows else grad_output
    if needs_input_grad[0]:
        grad_input = g.mm(weight)
        if rows:
            grad_input = grad_input.reshape(*grad_output.shape[:-1], weight.shape[1])
    if needs_input_grad[1]:
        grad_weight = g.t().mm(x.reshape(-1, x.shape[-1]) if rows else x)
    if has_bias and needs_input_grad[2]:
        grad_bias = g.sum(0)
    return grad_input, grad_weight, grad_bias


def kept_for_grads(ctx, x, weight):
    """What the backward keeps: ∂C/∂W needs x and ∂C/∂x needs W, so each only if that gradient will be taken
    (the first layer's x needs no gradient, so its W is not kept alive by the graph)."""
    needs_x_grad, needs_weight_grad = ctx.needs_input_grad[:2]
    return x if needs_weight_grad else None, weight if needs_x_grad else None
