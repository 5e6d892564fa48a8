"""Element-wise activations a = f(z), each with its derivative f′(z) written out by hand in its ``backward``.

The forward passes call PyTorch's own kernels (they are not what this project derives); the backward passes
are plain tensor arithmetic written from the derivative in each docstring.

For an element-wise f, neuron i's activation depends on its own pre-activation only, so the chain rule has a
single path: ∂C/∂z_i = ∂C/∂a_i · f′(z_i). Every ``backward`` below is that product, ``grad_output * f′``, for
inputs of any shape ``(*)``. Each Function saves what PyTorch's own derivative formula saves (the output where
f′ can be written in terms of a, the input otherwise), so that where the arithmetic is the same, the gradients
are the same to the bit.
"""

import math

import torch


class ReLU(torch.autograd.Function):
    r"""a = max(z, 0);  f′(z) = 1 if z > 0 else 0.

    At z = 0 the derivative is undefined; like PyTorch we use 0. Written in the output a = max(z, 0) ≥ 0, the
    derivative is 1 where a > 0 and 0 where a = 0: that is sign(a), so ∂C/∂z = ∂C/∂a · sign(a).

    Shapes: z, a, grad_output and grad_input: ``(*)``.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(z):
        return torch.relu(z)

    @staticmethod
    def setup_context(ctx, inputs, output):
        # save the output, not the input: a > 0 exactly where z > 0
        ctx.save_for_backward(output)

    @staticmethod
    def backward(ctx, grad_output):
        (a,) = ctx.saved_tensors
        # f′ written in the output: 1 where a > 0, 0 where a = 0, which is sign(a) for a ≥ 0
        return grad_output * torch.sign(a)


class LeakyReLU(torch.autograd.Function):
    r"""a = z if z > 0 else s·z;  f′(z) = 1 if z > 0 else s, for the slope s = ``negative_slope``.

    At z = 0 the derivative is undefined; like PyTorch we use s.

    Shapes: z, a, grad_output and grad_input: ``(*)``.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(z, negative_slope):
        return torch.nn.functional.leaky_relu(z, negative_slope)

    @staticmethod
    def setup_context(ctx, inputs, output):
        z, negative_slope = inputs
        # the input, not the output: for a negative slope the sign of a no longer tells the side of the kink
        ctx.save_for_backward(z)
        ctx.negative_slope = negative_slope

    @staticmethod
    def backward(ctx, grad_output):
        (z,) = ctx.saved_tensors
        # ∂C/∂a · 1 where z > 0, ∂C/∂a · s elsewhere
        return torch.where(z > 0, grad_output, grad_output * ctx.negative_slope), None


class Sigmoid(torch.autograd.Function):
    r"""a = σ(z) = 1 / (1 + e⁻ᶻ);  f′(z) = σ(z)(1 − σ(z)) = a(1 − a).

    Shapes: z, a, grad_output and grad_input: ``(*)``.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(z):
        return torch.sigmoid(z)

    @staticmethod
    def setup_context(ctx, inputs, output):
        # save the output, not the input: σ′ = σ(1 − σ) needs only the output
        ctx.save_for_backward(output)

    @staticmethod
    def backward(ctx, grad_output):
        (a,) = ctx.saved_tensors
        # ∂C/∂a · (1 − a) · a, multiplied left to right as PyTorch's sigmoid_backward kernel does: the same bits
        return grad_output * (1 - a) * a


class Tanh(torch.autograd.Function):
    r"""a = tanh(z);  f′(z) = 1 − tanh²(z) = 1 − a².

    Shapes: z, a, grad_output and grad_input: ``(*)``.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(z):
        return torch.tanh(z)

    @staticmethod
    def setup_context(ctx, inputs, output):
        # save the output, not the input: tanh′ = 1 − tanh² needs only the output
        ctx.save_for_backward(output)

    @staticmethod
    def backward(ctx, grad_output):
        (a,) = ctx.saved_tensors
        # 1 − a·a in one rounding (a fused multiply-add), as PyTorch's tanh_backward kernel computes it: same bits
        derivative = torch.addcmul(a.new_ones(()), a, a, value=-1)
        return grad_output * derivative


_SQRT_HALF = math.sqrt(0.5)  # 1/√2
_INV_SQRT_2PI = 0.5 * math.sqrt(2 / math.pi)  # 1/√(2π), the standard normal density's constant
_SQRT_2_OVER_PI = math.sqrt(2 / math.pi)
_KAPPA = 0.044715


class GELU(torch.autograd.Function):
    r"""a = z·Φ(z), with Φ the standard normal CDF, or its tanh approximation.

    ``approximate="none"`` (exact, erf form):

        Φ(z) = ½(1 + erf(z/√2)),   φ(z) = e^(−z²/2) / √(2π)
        f′(z) = Φ(z) + z·φ(z)                         (product rule, Φ′ = φ)

    ``approximate="tanh"``, with u = √(2/π)·(z + κz³), κ = 0.044715:

        a = ½z(1 + tanh u)
        f′(z) = ½(1 + tanh u) + ½z·(1 − tanh²u)·√(2/π)·(1 + 3κz²)

    The second term is the chain rule through tanh and then through u. f′ needs z itself, so the input is saved.

    Shapes: z, a, grad_output and grad_input: ``(*)``.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(z, approximate):
        return torch.nn.functional.gelu(z, approximate=approximate)

    @staticmethod
    def setup_context(ctx, inputs, output):
        z, approximate = inputs
        ctx.save_for_backward(z)
        ctx.approximate = approximate

    @staticmethod
    def backward(ctx, grad_output):
        (z,) = ctx.saved_tensors
        if ctx.approximate == "tanh":
            z_squared = z * z
            tanh_u = torch.tanh(_SQRT_2_OVER_PI * (z + _KAPPA * z_squared * z))
            du_dz = _SQRT_2_OVER_PI * (1 + 3 * _KAPPA * z_squared)
            derivative = 0.5 * (1 + tanh_u) + 0.5 * z * (1 - tanh_u * tanh_u) * du_dz
        else:
            cdf = 0.5 * (1 + torch.erf(z * _SQRT_HALF))
            pdf = _INV_SQRT_2PI * torch.exp(z * z * -0.5)
            derivative = cdf + z * pdf
        return grad_output * derivative, None
