"""Softmax and log-softmax along one dimension, with their (non-diagonal) Jacobians applied by hand."""

import torch


class Softmax(torch.autograd.Function):
    r"""p = softmax(z) along ``dim``: p_i = e^{z_i} / Σ_k e^{z_k}.

    Every p_i depends on every z_k of its slice (through the shared denominator), so the Jacobian is not diagonal.
    By the quotient rule

        ∂p_i/∂z_k = p_i ([i = k] − p_k)

    and with g = ∂C/∂p (``grad_output``) the chain rule sums over every p_i that z_k feeds:

        ∂C/∂z_k = Σ_i g_i p_i ([i = k] − p_k) = p_k (g_k − Σ_i g_i p_i)        ∂C/∂z = p ⊙ (g − Σ g·p)

    The Jacobian is symmetric (p_i [i = k] − p_i p_k), so the jvp is the same product applied to a tangent ż:
    ṗ = p ⊙ (ż − Σ ż·p). Both need only the output p, which is saved (as PyTorch saves it).

    Shapes: z, p, grad_output and grad_input: ``(*)``; the sums run over ``dim`` alone, one per slice.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(z, dim):
        return torch.softmax(z, dim)

    @staticmethod
    def setup_context(ctx, inputs, output):
        _, dim = inputs
        # save the output, not the input: the Jacobian p_i([i = k] − p_k) is written in p alone
        ctx.save_for_backward(output)
        ctx.save_for_forward(output)
        ctx.dim = dim

    @staticmethod
    def backward(ctx, grad_output):
        return Softmax.times_jacobian(grad_output, *ctx.saved_tensors, ctx.dim), None

    @staticmethod
    def jvp(ctx, z_tangent, _):
        return Softmax.times_jacobian(z_tangent, *ctx.saved_tensors, ctx.dim)

    @staticmethod
    def times_jacobian(t, p, dim):
        """p ⊙ (t − Σ t·p): the symmetric Jacobian of softmax times t, from either side (so, like the element-wise
        activations' ``times_derivative``, it is both the backward's and the jvp's derivation)."""
        return p * (t - (t * p).sum(dim, keepdim=True))


class LogSoftmax(torch.autograd.Function):
    r"""ℓ = log softmax(z) along ``dim``: ℓ_i = z_i − log Σ_k e^{z_k}.

    ∂ℓ_i/∂z_k = [i = k] − p_k, with p = softmax(z) = e^ℓ (the derivative of log Σ e^z is softmax). With
    g = ∂C/∂ℓ the chain rule sums over i:

        ∂C/∂z_k = Σ_i g_i ([i = k] − p_k) = g_k − p_k Σ_i g_i        ∂C/∂z = g − p Σg

    This Jacobian is not symmetric, so the jvp sums over k instead: ℓ̇_i = Σ_k ([i = k] − p_k) ż_k = ż_i − Σ_k p_k ż_k.
    Both need p, rebuilt as e^ℓ from the saved output.

    Shapes: z, ℓ, grad_output and grad_input: ``(*)``; the sums run over ``dim`` alone.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(z, dim):
        return torch.log_softmax(z, dim)

    @staticmethod
    def setup_context(ctx, inputs, output):
        _, dim = inputs
        ctx.save_for_backward(output)
        ctx.save_for_forward(output)
        ctx.dim = dim

    @staticmethod
    def backward(ctx, grad_output):
        return LogSoftmax.gradients(grad_output, *ctx.saved_tensors, ctx.dim)

    @staticmethod
    def jvp(ctx, z_tangent, _):
        return LogSoftmax.tangent(z_tangent, *ctx.saved_tensors, ctx.dim)

    @staticmethod
    def gradients(grad_output, log_p, dim):
        p = log_p.exp()
        return grad_output - p * grad_output.sum(dim, keepdim=True), None  # g − p Σg

    @staticmethod
    def tangent(z_tangent, log_p, dim):
        p = log_p.exp()
        return z_tangent - (p * z_tangent).sum(dim, keepdim=True)  # ż − Σ p·ż
