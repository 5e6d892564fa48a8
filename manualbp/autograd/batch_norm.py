"""Batch normalization, y = γ x̂ + β with x̂ = (x − μ) σ⁻¹ per channel over the batch and positions."""

import torch
from torch.nn.functional import batch_norm

from manualbp.autograd.normalization import affine_gradients, affine_tangent, channel, normalize, times_jacobian


class BatchNorm(torch.autograd.Function):
    r"""y = γ x̂ + β,  x̂ = (x − μ) σ⁻¹, per channel over its values in every example and position.

    **Training** (batch statistics): ``normalization.py``'s x̂ over every axis but the channel's, so with
    ĝ = ∂C/∂x̂ = γ g its closed form, per channel:

        ∂C/∂x = σ⁻¹ (ĝ − mean ĝ − x̂ · mean(ĝ x̂))

    **Eval** (running statistics μ_r, v_r): they are constants, so x̂ = (x − μ_r) σ_r⁻¹ is an element-wise affine
    map and ∂C/∂x = σ_r⁻¹ ĝ. In training the forward pass (PyTorch's kernel) also moves the running statistics,
    running ← (1 − momentum)·running + momentum·batch (the variance unbiased, Σ(x − μ)²/(N − 1)); that is state,
    not part of y, and has no gradient.

    γ and β act per channel like a diagonal weight and a bias shared by every example and position, so
    ∂C/∂γ = Σ g x̂ and ∂C/∂β = Σ g over those. Forward mode: x̂̇ = σ⁻¹ (ẋ − mean ẋ − x̂ · mean(x̂ ẋ)) in training,
    σ_r⁻¹ ẋ in eval, then ẏ = γ x̂̇ + γ̇ x̂ + β̇.

    x̂ and σ⁻¹ are recomputed from x in the backward rather than saved from the forward pass: computed there, they
    stay functions of x for autograd, so the backward pass can itself be differentiated (double backward).

    Shapes:
        x, y, grad_output and grad_input: ``(N, C, *)``; weight (γ), bias (β), running_mean, running_var:
        ``(C,)`` or None; the means and sums run over every axis but 1.
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
        return BatchNorm.gradients(
            grad_output, *ctx.saved_tensors, ctx.training, ctx.eps, ctx.has_bias, needs_input_grad=ctx.needs_input_grad
        )

    @staticmethod
    def jvp(ctx, x_tangent, weight_tangent, bias_tangent, *_):
        return BatchNorm.tangent(x_tangent, weight_tangent, bias_tangent, *ctx.saved_tensors, ctx.training, ctx.eps)

    @staticmethod
    def gradients(grad_output, x, weight, running_mean, running_var, training, eps, has_bias, needs_input_grad=None):
        needs_x_grad, needs_weight_grad, needs_bias_grad = (needs_input_grad or (True,) * 3)[:3]
        x_hat, inverse_std, axes = BatchNorm.normalize(x, running_mean, running_var, training, eps)
        grad_x = None
        if needs_x_grad:
            g_hat = grad_output if weight is None else channel(weight, x) * grad_output  # ĝ = γ g
            # ∂C/∂x = σ⁻¹ (ĝ − mean ĝ − x̂ mean(ĝ x̂)); in eval the statistics are constants: σ_r⁻¹ ĝ
            grad_x = times_jacobian(g_hat, x_hat, inverse_std, axes) if training else inverse_std * g_hat
        needs_weight_grad, needs_bias_grad = weight is not None and needs_weight_grad, has_bias and needs_bias_grad
        grad_weight, grad_bias = affine_gradients(grad_output, x_hat, axes, needs_weight_grad, needs_bias_grad)
        return grad_x, grad_weight, grad_bias, None, None, None, None, None

    @staticmethod
    def tangent(x_tangent, weight_tangent, bias_tangent, x, weight, running_mean, running_var, training, eps):
        x_hat, inverse_std, axes = BatchNorm.normalize(x, running_mean, running_var, training, eps)
        x_hat_tangent = None
        if x_tangent is not None:  # x̂̇: the same Jacobian as the backward's
            x_hat_tangent = times_jacobian(x_tangent, x_hat, inverse_std, axes) if training else inverse_std * x_tangent
        per_channel = [None if t is None else channel(t, x) for t in (weight, weight_tangent, bias_tangent)]
        return affine_tangent(x_hat_tangent, x_hat, *per_channel)  # ẏ = γ x̂̇ + γ̇ x̂ + β̇

    @staticmethod
    def normalize(x, running_mean, running_var, training, eps):
        """``(x̂, σ⁻¹, axes)``: the batch's statistics in training, the running ones in eval; σ⁻¹ broadcastable."""
        axes = [0, *range(2, x.dim())]
        if training:
            return *normalize(x, axes, eps), axes
        inverse_std = torch.rsqrt(channel(running_var, x) + eps)
        return (x - channel(running_mean, x)) * inverse_std, inverse_std, axes
