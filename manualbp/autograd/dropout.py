"""Dropout, y = x · m with a random mask m, and its backward pass: the same mask."""

import torch


class Dropout(torch.autograd.Function):
    r"""y = x · m, element-wise, for a mask m drawn once per forward pass: m_i = 1/(1 − p) with probability 1 − p,
    else 0 (inverted dropout: the scale keeps E[y] = x, so eval mode is the identity).

    Given the mask, y_i depends on x_i alone, with ∂y_i/∂x_i = m_i, so

        ∂C/∂x = g · m          ẏ = ẋ · m

    The randomness lives outside the Function: ``manualbp.functional.dropout`` draws m (as PyTorch's CPU kernel
    draws it, so the same generator state gives the same mask) and passes it in. The Function itself is then
    deterministic, which is what repeated evaluation (gradcheck) and vmap need; the mask is saved for backward.

    Shapes: x, mask, y, grad_output and grad_input: ``(*)``.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(x, mask):
        return x * mask

    @staticmethod
    def setup_context(ctx, inputs, output):
        _, mask = inputs
        ctx.save_for_backward(mask)
        ctx.save_for_forward(mask)

    @staticmethod
    def backward(ctx, grad_output):
        return Dropout.gradients(grad_output, *ctx.saved_tensors)

    @staticmethod
    def jvp(ctx, x_tangent, _):
        return Dropout.tangent(x_tangent, *ctx.saved_tensors)

    @staticmethod
    def gradients(grad_output, mask):
        return grad_output * mask, None  # ∂C/∂x = g · m; the mask is not a parameter

    @staticmethod
    def tangent(x_tangent, mask):
        return x_tangent * mask  # ẏ = ẋ · m
