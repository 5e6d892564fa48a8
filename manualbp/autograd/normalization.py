r"""Normalisation derived once: x̂ = (x − μ) σ⁻¹ over given axes, then y = γ x̂ + β.

Batch, layer and group norm (``batch_norm.py``, ``layer_norm.py``, ``group_norm.py``) are this map. They differ only
in the axes that μ and σ⁻¹ reduce over (every axis but the channel's; the trailing ``normalized_shape``; each
example's group of channels), in the axes that share one γ and β, and, for batch norm, in running statistics.

Over the N values that the reduced axes hold:

    μ = mean x        v = mean (x − μ)²  (biased: 1/N)        σ⁻¹ = 1/√(v + ε)        x̂ = (x − μ) σ⁻¹

Each x̂_i depends on every x_k through μ and v; with ∂μ/∂x_k = 1/N, ∂v/∂x_k = (2/N)(x_k − μ) (the Σ (x − μ) = 0
term drops out) and ∂σ⁻¹/∂v = −½ σ⁻³,

    ∂x̂_i/∂x_k = σ⁻¹ ([i = k] − 1/N) − (1/N) σ⁻¹ x̂_i x̂_k

With ĝ = ∂C/∂x̂ = γ g, summing over every x̂_i that x_k feeds gives the closed form (the "compact" backward)

    ∂C/∂x = σ⁻¹ (ĝ − mean ĝ − x̂ · mean(ĝ x̂))

The Jacobian is symmetric, so forward mode applies the same bracket to a tangent ẋ: x̂̇ = σ⁻¹ (ẋ − mean ẋ −
x̂ · mean(x̂ ẋ)); ``times_jacobian`` is both. docs/derivations.md derives it rung by rung (μ, x − μ, v, σ⁻¹, x̂, y).

The affine part is y = γ x̂ + β, γ and β shared by the values of the other axes, so their gradients sum over those:
∂C/∂γ = Σ g x̂ and ∂C/∂β = Σ g (``affine_gradients``), and ẏ = γ x̂̇ + γ̇ x̂ + β̇ (``affine_tangent``).
"""

import torch


def normalize(x, axes, eps):
    """``(x̂, σ⁻¹)``: x̂ = (x − μ) σ⁻¹, μ = mean x and σ⁻¹ = 1/√(mean (x − μ)² + ε) over ``axes``.

    Shapes: x̂ has x's; σ⁻¹ has size 1 along ``axes``, to broadcast over them.
    """
    centered = x - x.mean(axes, keepdim=True)
    inverse_std = torch.rsqrt(centered.square().mean(axes, keepdim=True) + eps)
    return centered * inverse_std, inverse_std


def times_jacobian(t, x_hat, inverse_std, axes):
    """σ⁻¹ (t − mean t − x̂ · mean(t x̂)) over ``axes``: the symmetric Jacobian ∂x̂/∂x times t, from either side.

    The backward with t = ĝ = γ g (∂C/∂x), the jvp with t = ẋ (x̂̇). Shapes: t and x̂ alike; σ⁻¹ as ``normalize``'s.
    """
    return inverse_std * (t - t.mean(axes, keepdim=True) - x_hat * (t * x_hat).mean(axes, keepdim=True))


def affine_gradients(grad_output, x_hat, shared_axes, needs_weight_grad, needs_bias_grad):
    """``(∂C/∂γ, ∂C/∂β)`` of y = γ x̂ + β: Σ g x̂ and Σ g over ``shared_axes`` (the axes whose values share one γ
    and β), each None where not needed. Shapes: grad_output and x̂ alike; the sums drop ``shared_axes``."""
    grad_weight = sum_over(grad_output * x_hat, shared_axes) if needs_weight_grad else None  # ∂C/∂γ = Σ g x̂
    grad_bias = sum_over(grad_output, shared_axes) if needs_bias_grad else None  # ∂C/∂β = Σ g
    return grad_weight, grad_bias


def affine_tangent(x_hat_tangent, x_hat, weight, weight_tangent, bias_tangent):
    """ẏ = γ x̂̇ + γ̇ x̂ + β̇ by the product rule; γ, γ̇ and β̇ broadcastable against x̂, and any of x̂̇, γ, γ̇, β̇ None
    for none (γ = 1 when there is no weight)."""
    y_tangent = torch.zeros_like(x_hat) if x_hat_tangent is None else x_hat_tangent
    if weight is not None:
        y_tangent = y_tangent * weight  # γ x̂̇
    if weight_tangent is not None:
        y_tangent = y_tangent + weight_tangent * x_hat  # + γ̇ x̂
    return y_tangent if bias_tangent is None else y_tangent + bias_tangent  # + β̇


def sum_over(t, axes):
    """t summed over ``axes``; over none it is t itself (``t.sum(())`` would sum every axis)."""
    return t.sum(axes) if len(axes) else t


def channel(per_channel, x):
    """A ``(C,)`` tensor viewed as ``(C, 1, …)``: it then broadcasts over the positions of ``x`` ``(N, C, *)``, and,
    as the trailing dimensions line up, over its batch."""
    return per_channel.reshape(-1, *([1] * (x.dim() - 2)))
