"""Layer normalization, y = γ ⊙ x̂ + β with x̂ = (x − μ)/σ over the last dimensions, and its compact backward."""

import math

import torch


class LayerNorm(torch.autograd.Function):
    r"""y = γ ⊙ x̂ + β, x̂ = (x − μ) · r, over the N = prod(normalized_shape) last entries of each example.

    μ = (1/N) Σ x and σ² = (1/N) Σ (x − μ)² (the biased variance) are per example, and r = 1/√(σ² + ε) = 1/σ.
    γ (``weight``) and β (``bias``) are shared by every example, so their gradients sum over the examples
    (the leading dimensions):

        ∂C/∂γ = Σ_examples g ⊙ x̂        ∂C/∂β = Σ_examples g

    For x, write ĝ = ∂C/∂x̂ = g ⊙ γ. x̂_i depends on every x_k of its example through μ and r:

        ∂μ/∂x_k = 1/N        ∂r/∂x_k = −½ r³ · ∂σ²/∂x_k = −½ r³ · (2/N)(x_k − μ) = −(r²/N) x̂_k
        ∂x̂_i/∂x_k = r([i = k] − 1/N) + (x_i − μ) ∂r/∂x_k = (r/N)(N[i = k] − 1 − x̂_i x̂_k)

    (the Σ(x − μ) = 0 term of ∂σ²/∂x_k drops out). Summing over every x̂_i that x_k feeds:

        ∂C/∂x_k = Σ_i ĝ_i (r/N)(N[i = k] − 1 − x̂_i x̂_k) = (r/N)(N ĝ_k − Σ ĝ − x̂_k Σ(ĝ ⊙ x̂))

    the one-line ("compact") backward of CS231n's and llm.c's layer norm. That Jacobian is symmetric, so the jvp
    applies the same bracket to a tangent ẋ, then the product rule through γ and β:

        x̂̇ = (r/N)(N ẋ − Σ ẋ − x̂ Σ(ẋ ⊙ x̂))        ẏ = γ ⊙ x̂̇ + γ̇ ⊙ x̂ + β̇

    x̂ and r are recomputed from the saved input rather than saved: so the backward is written in x and γ alone,
    and a second derivative (which differentiates the backward) sees how x̂ and r move with x.

    Shapes: x, y, grad_output and grad_input: ``(*, *normalized_shape)``; weight and bias:
    ``normalized_shape`` or None.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(x, normalized_shape, weight, bias, eps):
        # the value by PyTorch's kernel (the forward is not what this project derives)
        return torch.nn.functional.layer_norm(x, normalized_shape, weight, bias, eps)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, normalized_shape, weight, bias, eps = inputs
        ctx.save_for_backward(x, weight)
        ctx.save_for_forward(x, weight)
        ctx.dims = tuple(range(-len(normalized_shape), 0))
        ctx.eps = eps
        ctx.has_weight, ctx.has_bias = weight is not None, bias is not None

    @staticmethod
    def backward(ctx, grad_output):
        x, weight = ctx.saved_tensors
        needs_x_grad, _, needs_weight_grad, needs_bias_grad, _ = ctx.needs_input_grad
        x_hat, r = LayerNorm.normalize(x, ctx.dims, ctx.eps)
        examples = tuple(range(x.dim() - len(ctx.dims)))  # the leading dimensions, over which γ and β are shared
        grad_x = grad_weight = grad_bias = None
        if needs_x_grad:
            g_hat = grad_output * weight if ctx.has_weight else grad_output  # ĝ = g ⊙ γ
            grad_x = LayerNorm.times_jacobian(g_hat, x_hat, r, ctx.dims)
        if ctx.has_weight and needs_weight_grad:
            grad_weight = LayerNorm.sum_examples(grad_output * x_hat, examples)  # ∂C/∂γ = Σ g ⊙ x̂
        if ctx.has_bias and needs_bias_grad:
            grad_bias = LayerNorm.sum_examples(grad_output, examples)  # ∂C/∂β = Σ g
        return grad_x, None, grad_weight, grad_bias, None

    @staticmethod
    def jvp(ctx, x_tangent, _, weight_tangent, bias_tangent, __):
        x, weight = ctx.saved_tensors
        x_hat, r = LayerNorm.normalize(x, ctx.dims, ctx.eps)
        y_tangent = LayerNorm.times_jacobian(x_tangent, x_hat, r, ctx.dims)  # x̂̇
        if ctx.has_weight:
            y_tangent = y_tangent * weight + weight_tangent * x_hat  # γ ⊙ x̂̇ + γ̇ ⊙ x̂
        return y_tangent if bias_tangent is None else y_tangent + bias_tangent  # + β̇

    @staticmethod
    def sum_examples(t, examples):
        """t summed over the leading dimensions ``examples``; a single example (none) is t itself (``sum(())`` would
        sum everything)."""
        return t.sum(examples) if examples else t

    @staticmethod
    def normalize(x, dims, eps):
        """x̂ = (x − μ)·r and r = 1/√(σ² + ε), per example (r keeps the summed dimensions, as size 1)."""
        mean = x.mean(dims, keepdim=True)
        r = torch.rsqrt(x.var(dims, correction=0, keepdim=True) + eps)
        return (x - mean) * r, r

    @staticmethod
    def times_jacobian(t, x_hat, r, dims):
        """(r/N)(N t − Σ t − x̂ Σ(t ⊙ x̂)): the symmetric Jacobian ∂x̂/∂x times t, from either side."""
        n = math.prod(x_hat.shape[d] for d in dims)
        return (r / n) * (n * t - t.sum(dims, keepdim=True) - x_hat * (t * x_hat).sum(dims, keepdim=True))
