"""Layer normalization, y = γ ⊙ x̂ + β with x̂ = (x − μ) σ⁻¹ over the last dimensions of each example."""

import torch

from manualbp.autograd.normalization import affine_gradients, affine_tangent, normalize, times_jacobian


class LayerNorm(torch.autograd.Function):
    r"""y = γ ⊙ x̂ + β,  x̂ = (x − μ) σ⁻¹, each example over its N = prod(normalized_shape) last entries.

    ``normalization.py``'s x̂ over the trailing ``normalized_shape`` axes, per example (each position of the leading
    axes): with ĝ = ∂C/∂x̂ = γ ⊙ g, its closed form, the compact backward of CS231n's and llm.c's layer norm, is

        ∂C/∂x = σ⁻¹ (ĝ − mean ĝ − x̂ · mean(ĝ x̂))        over each example's N entries

    and forward mode applies the same symmetric Jacobian to ẋ, then the product rule, ẏ = γ ⊙ x̂̇ + γ̇ ⊙ x̂ + β̇.
    γ (``weight``) and β (``bias``) have one entry per normalised position and are shared by every example, as a
    Linear layer's weights are shared by the rows of a batch, so their gradients sum over the leading axes:

        ∂C/∂γ = Σ_examples g ⊙ x̂        ∂C/∂β = Σ_examples g

    x̂ and σ⁻¹ are recomputed from the saved input rather than saved: so the backward is written in x and γ alone,
    and a second derivative (which differentiates the backward) sees how x̂ and σ⁻¹ move with x.

    Shapes: x, y, grad_output and grad_input: ``(*, *normalized_shape)``; weight and bias: ``normalized_shape`` or
    None; the means run over the last ``len(normalized_shape)`` axes, the parameters' sums over the others.
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
        ctx.axes = tuple(range(-len(normalized_shape), 0))
        ctx.eps, ctx.has_bias = eps, bias is not None

    @staticmethod
    def backward(ctx, grad_output):
        return LayerNorm.gradients(
            grad_output, *ctx.saved_tensors, ctx.axes, ctx.eps, ctx.has_bias, needs_input_grad=ctx.needs_input_grad
        )

    @staticmethod
    def jvp(ctx, x_tangent, _, weight_tangent, bias_tangent, __):
        return LayerNorm.tangent(x_tangent, weight_tangent, bias_tangent, *ctx.saved_tensors, ctx.axes, ctx.eps)

    @staticmethod
    def gradients(grad_output, x, weight, axes, eps, has_bias, needs_input_grad=None):
        needs_x_grad, _, needs_weight_grad, needs_bias_grad, _ = needs_input_grad or (True,) * 5
        x_hat, inverse_std = normalize(x, axes, eps)
        examples = tuple(range(x.dim() - len(axes)))  # the leading axes, whose examples share γ and β
        grad_x = None
        if needs_x_grad:
            g_hat = grad_output if weight is None else weight * grad_output  # ĝ = γ ⊙ g
            grad_x = times_jacobian(g_hat, x_hat, inverse_std, axes)  # σ⁻¹ (ĝ − mean ĝ − x̂ mean(ĝ x̂))
        needs_weight_grad, needs_bias_grad = weight is not None and needs_weight_grad, has_bias and needs_bias_grad
        grad_weight, grad_bias = affine_gradients(grad_output, x_hat, examples, needs_weight_grad, needs_bias_grad)
        return grad_x, None, grad_weight, grad_bias, None

    @staticmethod
    def tangent(x_tangent, weight_tangent, bias_tangent, x, weight, axes, eps):
        x_hat, inverse_std = normalize(x, axes, eps)
        x_hat_tangent = None if x_tangent is None else times_jacobian(x_tangent, x_hat, inverse_std, axes)  # x̂̇
        return affine_tangent(x_hat_tangent, x_hat, weight, weight_tangent, bias_tangent)  # γ x̂̇ + γ̇ x̂ + β̇
