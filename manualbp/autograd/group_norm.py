"""Group normalization, y = γ x̂ + β with x̂ = (x − μ)/σ over groups of channels, and its compact backward pass."""

import math

import torch


class GroupNorm(torch.autograd.Function):
    r"""y = γ x̂ + β,  x̂ = (x − μ) σ⁻¹,  σ⁻¹ = 1/√(v + ε), over each group of channels of each example.

    The C channels are split into G groups of C/G consecutive channels. Each example's group is normalised on its
    own, over its M = (C/G) · positions values: μ = (1/M) Σ x and v = (1/M) Σ (x − μ)² (the biased variance), per
    example and group. G = 1 is layer norm over (C, *) and G = C instance norm; unlike batch norm, nothing is
    shared across the batch, so training and eval are the same map.

    γ (``weight``) and β (``bias``) are per *channel*, shared by every example and position, so their gradients
    sum over those, as a bias shared by the positions of a convolution does:

        ∂C/∂γ_c = Σ_{n, positions} g x̂        ∂C/∂β_c = Σ_{n, positions} g

    For x, write ĝ = ∂C/∂x̂ = γ g (γ of each value's channel: unlike batch norm's, it varies within a group, so it
    cannot be taken out of the sums). Inside one group x_k reaches C along three paths: directly through x̂_k,
    through μ (which every x̂_i of the group uses) and through v:

        ∂μ/∂x_k = 1/M        ∂v/∂x_k = (2/M)(x_k − μ)        ∂σ⁻¹/∂v = −½ σ⁻³
        ∂C/∂x_k = σ⁻¹ ĝ_k  +  (1/M) Σ_i ĝ_i · (−σ⁻¹)  +  (2/M)(x_k − μ) · Σ_i ĝ_i (x_i − μ)(−½ σ⁻³)

    (the path through v into μ adds nothing: Σ (x − μ) = 0). Writing x − μ = x̂σ, the sums become means over the
    group, and the compact form of batch norm's backward, per example and group, is

        ∂C/∂x = σ⁻¹ (ĝ − mean ĝ − x̂ · mean(ĝ x̂))

    Its Jacobian ∂x̂_i/∂x_k = (σ⁻¹/M)(M[i = k] − 1 − x̂_i x̂_k) is symmetric, so forward mode applies the same
    bracket to a tangent ẋ, then the product rule through γ and β:

        x̂̇ = σ⁻¹ (ẋ − mean ẋ − x̂ · mean(x̂ ẋ))        ẏ = γ x̂̇ + γ̇ x̂ + β̇

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
        ctx.num_groups, ctx.eps = num_groups, eps
        ctx.has_weight, ctx.has_bias = weight is not None, bias is not None

    @staticmethod
    def backward(ctx, grad_output):
        x, weight = ctx.saved_tensors
        needs_x_grad, _, needs_weight_grad, needs_bias_grad, _ = ctx.needs_input_grad
        x_hat, inverse_std = GroupNorm.normalize(x, ctx.num_groups, ctx.eps)
        axes = [0, *range(2, x.dim())]  # every example and position: γ and β are shared by them
        grad_x = grad_weight = grad_bias = None
        if needs_x_grad:
            g_hat = grad_output * channel(weight, x) if ctx.has_weight else grad_output  # ĝ = γ g
            grad_x = GroupNorm.times_jacobian(grouped(g_hat, ctx.num_groups), x_hat, inverse_std).reshape(x.shape)
        if ctx.has_weight and needs_weight_grad:
            grad_weight = (grad_output * x_hat.reshape(x.shape)).sum(axes)  # ∂C/∂γ = Σ g x̂
        if ctx.has_bias and needs_bias_grad:
            grad_bias = grad_output.sum(axes)  # ∂C/∂β = Σ g
        return grad_x, None, grad_weight, grad_bias, None

    @staticmethod
    def jvp(ctx, x_tangent, _, weight_tangent, bias_tangent, __):
        x, weight = ctx.saved_tensors
        x_hat, inverse_std = GroupNorm.normalize(x, ctx.num_groups, ctx.eps)
        x_hat_tangent = GroupNorm.times_jacobian(grouped(x_tangent, ctx.num_groups), x_hat, inverse_std)
        y_tangent = x_hat_tangent.reshape(x.shape)  # x̂̇
        if ctx.has_weight:
            # γ x̂̇ + γ̇ x̂
            y_tangent = y_tangent * channel(weight, x) + channel(weight_tangent, x) * x_hat.reshape(x.shape)
        if bias_tangent is not None:
            y_tangent = y_tangent + channel(bias_tangent, x)  # + β̇
        return y_tangent

    @staticmethod
    def normalize(x, num_groups, eps):
        """``(x̂, σ⁻¹)`` in the ``(N, G, M)`` view of the groups; σ⁻¹ of shape ``(N, G, 1)``."""
        groups = grouped(x, num_groups)
        mean = groups.mean(-1, keepdim=True)
        inverse_std = torch.rsqrt(groups.var(-1, correction=0, keepdim=True) + eps)  # biased: 1/M
        return (groups - mean) * inverse_std, inverse_std

    @staticmethod
    def times_jacobian(t, x_hat, inverse_std):
        """σ⁻¹ (t − mean t − x̂ · mean(t x̂)) per group: the symmetric Jacobian ∂x̂/∂x times t, from either side."""
        return inverse_std * (t - t.mean(-1, keepdim=True) - x_hat * (t * x_hat).mean(-1, keepdim=True))


def grouped(t, num_groups):
    """``(N, C, *)`` viewed as ``(N, G, M)``: each example's G groups of M = (C/G) · positions values (the
    channels of a group are consecutive). Sized explicitly, as ``-1`` cannot be inferred when N = 0."""
    return t.reshape(t.shape[0], num_groups, math.prod(t.shape[1:]) // num_groups)


def channel(per_channel, x):
    """A ``(C,)`` tensor viewed as ``(C, 1, …)``, to broadcast over ``x``'s batch and positions."""
    return per_channel.reshape(-1, *([1] * (x.dim() - 2)))
