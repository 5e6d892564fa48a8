"""Batch normalization, y = γ x̂ + β with x̂ = (x − μ)/σ, and its compact backward pass derived by hand."""

import torch
from torch.nn.functional import batch_norm


class BatchNorm(torch.autograd.Function):
    r"""y = γ x̂ + β,  x̂ = (x − μ) σ⁻¹,  σ⁻¹ = 1/√(v + ε), per channel c over its N values (batch and positions).

    **Training** (batch statistics): μ = (1/N) Σ x and v = (1/N) Σ (x − μ)², summed over every axis but the
    channel's (N = batch · positions). Each x̂_i then depends on every x_j of its channel, through μ and v, so the
    chain rule has three paths from x_i to C: directly, through μ, and through v. With g = ∂C/∂y and
    ∂C/∂x̂ = γ g,

        ∂μ/∂x_i = 1/N        ∂v/∂x_i = (2/N)(x_i − μ)        ∂σ⁻¹/∂v = −½ σ⁻³
        ∂C/∂x_i = γσ⁻¹ g_i  +  (1/N) Σ_j ∂C/∂x̂_j · (−σ⁻¹)  +  (2/N)(x_i − μ) · Σ_j ∂C/∂x̂_j (x_j − μ)(−½σ⁻³)

    (the middle path's (x − μ)-term of ∂v/∂μ sums to zero). Writing (x − μ) = x̂σ in the last term and taking
    γσ⁻¹/N out gives the compact one-line form:

        ∂C/∂x = (1/N) γ σ⁻¹ (N g − Σ g − x̂ Σ (g x̂))  =  γ σ⁻¹ (g − mean g − x̂ · mean(g x̂))

    The parameters act per channel like a bias and a diagonal weight shared by every value of the channel:

        ∂C/∂γ = Σ g x̂          ∂C/∂β = Σ g

    **Eval** (running statistics μ_r, v_r): they are constants, so x̂ = (x − μ_r) σ_r⁻¹ is an element-wise affine
    map and ∂C/∂x = γ σ_r⁻¹ g. In training the forward pass (PyTorch's kernel) also moves the running statistics,
    running ← (1 − momentum)·running + momentum·batch (the variance unbiased, Σ(x − μ)²/(N − 1)); that is state,
    not part of y, and has no gradient.

    Forward mode, by the same three paths (μ̇ = mean ẋ, v̇ = 2 mean((x − μ) ẋ)):

        x̂̇ = σ⁻¹ (ẋ − mean ẋ − x̂ · mean(x̂ ẋ))   in training,   σ_r⁻¹ ẋ in eval
        ẏ = γ x̂̇ + γ̇ x̂ + β̇

    μ and σ⁻¹ are recomputed from x in ``backward`` rather than saved from the forward pass: computed there, they
    stay functions of x for autograd, so the backward pass can itself be differentiated (double backward).

    Shapes:
        x, y, grad_output and grad_input: ``(N, C, *)``; weight (γ), bias (β), running_mean, running_var:
        ``(C,)`` or None; the sums Σ run over every axis but 1.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(x, weight, bias, running_mean, running_var, training, momentum, eps):
        return batch_norm(x, running_mean, running_var, weight, bias, training, momentum, eps)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, weight, bias, running_mean, running_var, training, momentum, eps = inputs
        if training:  # the running statistics have just been moved: the backward needs the batch's
            running_mean = running_var = None
        ctx.save_for_backward(x, weight, running_mean, running_var)
        ctx.save_for_forward(x, weight, running_mean, running_var)
        ctx.training, ctx.eps, ctx.has_bias = training, eps, bias is not None

    @staticmethod
    def backward(ctx, grad_output):
        x, weight, running_mean, running_var = ctx.saved_tensors
        needs_x_grad, needs_weight_grad, needs_bias_grad = ctx.needs_input_grad[:3]
        x_hat, inverse_std, axes = BatchNorm.normalize(x, running_mean, running_var, ctx.training, ctx.eps)
        g = grad_output
        gamma = 1 if weight is None else channel(weight, x)
        # Σ g and Σ g x̂ are ∂C/∂β and ∂C/∂γ, and in training the two sums in ∂C/∂x too: each is taken once
        sums_for_x = needs_x_grad and ctx.training
        sum_g = g.sum(axes, keepdim=True) if needs_bias_grad or sums_for_x else None
        sum_g_x_hat = (g * x_hat).sum(axes, keepdim=True) if needs_weight_grad or sums_for_x else None
        grad_x = grad_weight = grad_bias = None
        if needs_x_grad:
            if ctx.training:
                count = x.numel() // x.shape[1]
                # the one-line form divided through by N: γσ⁻¹ (g − mean g − x̂ mean(g x̂))
                grad_x = gamma * inverse_std * (g - sum_g / count - x_hat * (sum_g_x_hat / count))
            else:
                grad_x = gamma * inverse_std * g  # running statistics are constants
        if weight is not None and needs_weight_grad:
            grad_weight = sum_g_x_hat.reshape(-1)  # ∂C/∂γ = Σ g x̂
        if ctx.has_bias and needs_bias_grad:
            grad_bias = sum_g.reshape(-1)  # ∂C/∂β = Σ g
        return grad_x, grad_weight, grad_bias, None, None, None, None, None

    @staticmethod
    def jvp(ctx, x_tangent, weight_tangent, bias_tangent, *_):
        x, weight, running_mean, running_var = ctx.saved_tensors
        x_hat, inverse_std, axes = BatchNorm.normalize(x, running_mean, running_var, ctx.training, ctx.eps)
        y_tangent = 0
        if x_tangent is not None:
            if ctx.training:
                mean_x_tangent = x_tangent.mean(axes, keepdim=True)
                mean_x_hat_x_tangent = (x_hat * x_tangent).mean(axes, keepdim=True)
                x_hat_tangent = inverse_std * (x_tangent - mean_x_tangent - x_hat * mean_x_hat_x_tangent)
            else:
                x_hat_tangent = inverse_std * x_tangent
            y_tangent = x_hat_tangent if weight is None else channel(weight, x) * x_hat_tangent  # γ x̂̇
        if weight_tangent is not None:
            y_tangent = y_tangent + channel(weight_tangent, x) * x_hat  # + γ̇ x̂
        if bias_tangent is not None:
            y_tangent = y_tangent + channel(bias_tangent, x)  # + β̇
        return y_tangent

    @staticmethod
    def normalize(x, running_mean, running_var, training, eps):
        """``(x̂, σ⁻¹, axes)``: the batch's statistics in training, the running ones in eval; σ⁻¹ broadcastable."""
        axes = [0, *range(2, x.dim())]
        if training:
            centered = x - x.mean(axes, keepdim=True)
            variance = centered.square().mean(axes, keepdim=True)  # biased: 1/N, as the normalization uses
        else:
            centered, variance = x - channel(running_mean, x), channel(running_var, x)
        inverse_std = torch.rsqrt(variance + eps)
        return centered * inverse_std, inverse_std, axes


def channel(per_channel, x):
    """A ``(C,)`` tensor viewed as ``(1, C, 1, …)``, to broadcast over ``x``'s batch and positions."""
    return per_channel.reshape(-1, *([1] * (x.dim() - 2)))
