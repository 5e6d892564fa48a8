"""Group normalization, y = γ x̂ + β with x̂ = (x − μ) σ⁻¹ over each example's groups of channels."""

import math

import torch

from manualbp.autograd.normalization import affine_gradients, affine_tangent, channel, normalize, times_jacobian


class GroupNorm(torch.autograd.Function):
    r"""y = γ x̂ + β,  x̂ = (x − μ) σ⁻¹, over each group of channels of each example.

    The C channels are split into G groups of C/G consecutive channels, and each example's group is normalised on
    its own over its M = (C/G) · positions values: ``normalization.py``'s x̂ along the last axis of the ``(N, G, M)``
    view. G = 1 is layer norm over (C, *) and G = C instance norm; unlike batch norm, nothing is shared across the
    batch, so training and eval are the same map. With ĝ = ∂C/∂x̂ = γ g (γ of each value's channel: it varies within
    a group, so unlike batch norm's it cannot be taken out of the means), the closed form, per example and group:

        ∂C/∂x = σ⁻¹ (ĝ − mean ĝ − x̂ · mean(ĝ x̂))

    and forward mode applies the same symmetric Jacobian to ẋ, then ẏ = γ x̂̇ + γ̇ x̂ + β̇. γ (``weight``) and β
    (``bias``) are per *channel*, shared by every example and position, as a convolution's bias is:

        ∂C/∂γ_c = Σ_{n, positions} g x̂        ∂C/∂β_c = Σ_{n, positions} g

    x̂ and σ⁻¹ are recomputed from the saved input rather than saved: so the backward is written in x and γ alone,
    and a second derivative (which differentiates the backward) sees how they move with x.

    Shapes:
        x, y, grad_output and grad_input: ``(N, C, *)``, C divisible by num_groups (G); weight (γ) and bias (β):
        ``(C,)`` or None; the means run over each group's ``(C/G, *)`` values (the last axis of the
        ``(N, G, M)`` view), the parameters' sums over every axis but 1.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(x, num_groups, weight, bias, eps):
        # the value by PyTorch's kernel (the forward is not what this project derives)
        return torch.nn.functional.group_norm(x, num_groups, weight, bias, eps)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, num_groups, weight, bias, eps = inputs
        ctx.save_for_backward(x, weight)
        ctx.save_for_forward(x, weight)
        ctx.num_groups, ctx.eps, ctx.has_bias = num_groups, eps, bias is not None

    @staticmethod
    def backward(ctx, grad_output):
        return GroupNorm.gradients(
            grad_output,
            *ctx.saved_tensors,
            ctx.num_groups,
            ctx.eps,
            ctx.has_bias,
            needs_input_grad=ctx.needs_input_grad,
        )

    @staticmethod
    def jvp(ctx, x_tangent, _, weight_tangent, bias_tangent, __):
        return GroupNorm.tangent(x_tangent, weight_tangent, bias_tangent, *ctx.saved_tensors, ctx.num_groups, ctx.eps)

    @staticmethod
    def gradients(grad_output, x, weight, num_groups, eps, has_bias, needs_input_grad=None):
        needs_x_grad, _, needs_weight_grad, needs_bias_grad, _ = needs_input_grad or (True,) * 5
        x_hat, inverse_std = normalize(grouped(x, num_groups), -1, eps)  # in the (N, G, M) view
        grad_x = None
        if needs_x_grad:
            g_hat = grad_output if weight is None else channel(weight, x) * grad_output  # ĝ = γ g
            # σ⁻¹ (ĝ − mean ĝ − x̂ mean(ĝ x̂)) per example and group
            grad_x = times_jacobian(grouped(g_hat, num_groups), x_hat, inverse_std, -1).reshape(x.shape)
        needs_weight_grad, needs_bias_grad = weight is not None and needs_weight_grad, has_bias and needs_bias_grad
        axes = [0, *range(2, x.dim())]  # every example and position: γ and β are shared by them
        grad_weight, grad_bias = affine_gradients(
            grad_output, x_hat.reshape(x.shape), axes, needs_weight_grad, needs_bias_grad
        )
        return grad_x, None, grad_weight, grad_bias, None

    @staticmethod
    def tangent(x_tangent, weight_tangent, bias_tangent, x, weight, num_groups, eps):
        x_hat, inverse_std = normalize(grouped(x, num_groups), -1, eps)
        x_hat_tangent = None
        if x_tangent is not None:  # x̂̇: the same Jacobian as the backward's
            x_hat_tangent = times_jacobian(grouped(x_tangent, num_groups), x_hat, inverse_std, -1).reshape(x.shape)
        per_channel = [None if t is None else channel(t, x) for t in (weight, weight_tangent, bias_tangent)]
        return affine_tangent(x_hat_tangent, x_hat.reshape(x.shape), *per_channel)  # ẏ = γ x̂̇ + γ̇ x̂ + β̇


def grouped(t, num_groups):
    """``(N, C, *)`` viewed as ``(N, G, M)``: each example's G groups of M = (C/G) · positions values (the
    channels of a group are consecutive). Sized explicitly, as ``-1`` cannot be inferred when N = 0."""
    return t.reshape(t.shape[0], num_groups, math.prod(t.shape[1:]) // num_groups)
