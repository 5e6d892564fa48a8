"""Scaled dot-product attention, O = softmax(q kᵀ·scale + mask) v, with its backward derived step by step."""

import torch

from manualbp.autograd.softmax import Softmax


class ScaledDotProductAttention(torch.autograd.Function):
    r"""O = P v with P = softmax(S) along the keys, S = q kᵀ · scale + M: each query's output is a weighted mean of
    the values, weighted by how well the query matches each key.

    Three steps, each a layer already derived, so the backward runs them in reverse. With g = ∂C/∂O:

        O = P v  (a matrix product, as Linear):     ∂C/∂v = Pᵀ g          ∂C/∂P = g vᵀ
        P = softmax(S) row by row:                   ∂C/∂S = P ⊙ (∂C/∂P − rowsum(∂C/∂P ⊙ P))
        S = q kᵀ · scale + M:                        ∂C/∂q = ∂C/∂S k · scale    ∂C/∂k = (∂C/∂S)ᵀ q · scale
                                                     ∂C/∂M = ∂C/∂S (summed over the dimensions M is broadcast on)

    The additive mask M holds 0 where a query may look at a key and −∞ where it may not (``manualbp.functional``
    turns boolean and causal masks into this form); e^{−∞} = 0 gives those keys no weight and, through the P ⊙ …
    factor, no gradient. A query that may look at no key at all gets P = 0 (and so O = 0), not the 0/0 of softmax.

    With dropout, O = (P ⊙ D) v for a mask D of 0 and 1/(1 − p) drawn outside (an input, not differentiated): the
    first step then reads ∂C/∂v = (P ⊙ D)ᵀ g and ∂C/∂P = (g vᵀ) ⊙ D.

    P is a second output (``MultiheadAttention`` returns it as the attention weights), so the backward also takes
    ∂C/∂P from its users, added to g vᵀ before the softmax step. Being an output, P is saved without a copy, and a
    second derivative differentiates through it.

    The jvp runs the same three steps forwards, by the product rule:

        Ṡ = (q̇ kᵀ + q k̇ᵀ) · scale + Ṁ        Ṗ = P ⊙ (Ṡ − rowsum(Ṡ ⊙ P))        Ȯ = (Ṗ ⊙ D) v + (P ⊙ D) v̇

    Shapes: q: ``(*, L, E)``; k: ``(*, S, E)``; v: ``(*, S, Ev)``, the same ``*`` for all three; mask:
    broadcastable to ``(*, L, S)``, or None; dropout mask: ``(*, L, S)`` or None; O: ``(*, L, Ev)``;
    P: ``(*, L, S)``.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(q, k, v, attn_mask, dropout_mask, scale):
        scores = q.matmul(k.transpose(-2, -1)) * scale
        if attn_mask is not None:
            scores = scores + attn_mask
        p = torch.softmax(scores, -1)
        # a row of −∞ only (a query with no key to look at): weights 0 rather than softmax's 0/0 = nan
        p = torch.where(scores.amax(-1, keepdim=True) == float("-inf"), 0, p)
        weights = p if dropout_mask is None else p * dropout_mask
        return weights.matmul(v), p

    @staticmethod
    def setup_context(ctx, inputs, output):
        q, k, v, attn_mask, dropout_mask, scale = inputs
        _, p = output
        ctx.save_for_backward(q, k, v, dropout_mask, p)
        ctx.save_for_forward(q, k, v, dropout_mask, p)
        ctx.scale = scale
        ctx.mask_shape = None if attn_mask is None else attn_mask.shape

    @staticmethod
    def backward(ctx, grad_output, grad_weights):
        return ScaledDotProductAttention.gradients(
            grad_output,
            grad_weights,
            *ctx.saved_tensors,
            ctx.scale,
            ctx.mask_shape,
            needs_input_grad=ctx.needs_input_grad,
        )

    @staticmethod
    def jvp(ctx, q_tangent, k_tangent, v_tangent, mask_tangent, _, __):
        return ScaledDotProductAttention.tangent(
            q_tangent, k_tangent, v_tangent, mask_tangent, *ctx.saved_tensors, ctx.scale
        )

    @staticmethod
    def gradients(grad_output, grad_weights, q, k, v, dropout_mask, p, scale, mask_shape, needs_input_grad=None):
        needs_q_grad, needs_k_grad, needs_v_grad, needs_mask_grad, _, _ = needs_input_grad or (True,) * 6
        weights = p if dropout_mask is None else p * dropout_mask
        grad_v = weights.transpose(-2, -1).matmul(grad_output) if needs_v_grad else None  # ∂C/∂v = Pᵀ g
        grad_p = grad_output.matmul(v.transpose(-2, -1))  # ∂C/∂P = g vᵀ
        if dropout_mask is not None:
            grad_p = grad_p * dropout_mask
        if grad_weights is not None:
            grad_p = grad_p + grad_weights  # P's own users
        grad_scores = Softmax.times_jacobian(grad_p, p, -1)  # ∂C/∂S = P ⊙ (∂C/∂P − rowsum(∂C/∂P ⊙ P))
        grad_q = grad_scores.matmul(k) * scale if needs_q_grad else None  # ∂C/∂q = ∂C/∂S k · scale
        grad_k = grad_scores.transpose(-2, -1).matmul(q) * scale if needs_k_grad else None  # (∂C/∂S)ᵀ q · scale
        grad_mask = None
        if mask_shape is not None and needs_mask_grad:
            grad_mask = grad_scores.sum_to_size(mask_shape)  # ∂C/∂M = ∂C/∂S, summed where M was broadcast
        return grad_q, grad_k, grad_v, grad_mask, None, None

    @staticmethod
    def tangent(q_tangent, k_tangent, v_tangent, mask_tangent, q, k, v, dropout_mask, p, scale):
        scores_tangent = (q_tangent.matmul(k.transpose(-2, -1)) + q.matmul(k_tangent.transpose(-2, -1))) * scale
        if mask_tangent is not None:
            scores_tangent = scores_tangent + mask_tangent  # Ṡ = (q̇ kᵀ + q k̇ᵀ)·scale + Ṁ
        p_tangent = Softmax.times_jacobian(scores_tangent, p, -1)  # Ṗ = P ⊙ (Ṡ − rowsum(Ṡ ⊙ P))
        if dropout_mask is None:
            return p_tangent.matmul(v) + p.matmul(v_tangent), p_tangent  # Ȯ = Ṗ v + P v̇
        return (p_tangent * dropout_mask).matmul(v) + (p * dropout_mask).matmul(v_tangent), p_tangent
