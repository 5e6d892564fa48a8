"""Element-wise activations a = f(z), each with its derivative f′(z) written out by hand.

The forward passes call PyTorch's own kernels (they are not what this project derives); the derivatives are
plain tensor arithmetic written from the formula in each docstring.

For an element-wise f, neuron i's activation depends on its own pre-activation only, so the chain rule has a
single path and the Jacobian ∂a/∂z is diagonal, f′(z_i) on the diagonal. Both directions of differentiation are
then the same product with f′:

    backward (reverse mode):  ∂C/∂z_i = ∂C/∂a_i · f′(z_i)
    jvp (forward mode):       ȧ_i = f′(z_i) · ż_i

so each Function's ``backward`` and ``jvp`` call one ``times_derivative(t, kept, *options)`` = t · f′, for inputs
of any shape ``(*)``, where ``kept = keep(z, a, *options)`` is what f′ is computed from: what PyTorch's own
derivative formula saves (the output where f′ can be written in terms of a, the input otherwise), so that where the
arithmetic is the same, the results are the same to the bit. Every activation has these two with the same
signature, so the one-loop MLP and the fused layers call any of them alike.
"""

import math

import torch


class ReLU(torch.autograd.Function):
    r"""a = max(z, 0);  f′(z) = 1 if z > 0 else 0.

    At z = 0 the derivative is undefined; like PyTorch we use 0. Written in the output a = max(z, 0) ≥ 0, the
    derivative is 1 where a > 0 and 0 where a = 0: that is sign(a). At a NaN input PyTorch passes the gradient
    through (its rule is "zero where a ≤ 0"), so f′ is 1 there too.

    Shapes: z, a, grad_output and grad_input: ``(*)``.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(z):
        return torch.relu(z)

    @staticmethod
    def setup_context(ctx, inputs, output):
        (z,) = inputs
        ctx.save_for_backward(ReLU.keep(z, output))
        ctx.save_for_forward(ReLU.keep(z, output))

    @staticmethod
    def backward(ctx, grad_output):
        return ReLU.times_derivative(grad_output, *ctx.saved_tensors)

    @staticmethod
    def jvp(ctx, z_tangent):
        return ReLU.times_derivative(z_tangent, *ctx.saved_tensors)

    @staticmethod
    def keep(z, a):
        """What f′ is computed from: the output, not the input, since a > 0 exactly where z > 0."""
        return a

    @staticmethod
    def times_derivative(t, a):
        """t · f′(z), f′ = sign(a) for a ≥ 0, and 1 at NaN (``torch.sign`` gives 0 there, so NaN is made 1 first)."""
        derivative = a.nan_to_num(nan=1.0).sign_()  # in place on nan_to_num's new tensor: one temporary, not two
        return t * derivative


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
        ctx.save_for_backward(LeakyReLU.keep(z, output, negative_slope))
        ctx.save_for_forward(LeakyReLU.keep(z, output, negative_slope))
        ctx.negative_slope = negative_slope

    @staticmethod
    def backward(ctx, grad_output):
        return LeakyReLU.times_derivative(grad_output, *ctx.saved_tensors, ctx.negative_slope), None

    @staticmethod
    def jvp(ctx, z_tangent, _):
        return LeakyReLU.times_derivative(z_tangent, *ctx.saved_tensors, ctx.negative_slope)

    @staticmethod
    def keep(z, a, negative_slope):
        """What f′ is computed from: the side of the kink. For a slope s ≥ 0, a > 0 exactly where z > 0, so the
        output tells it, as for ReLU (and an in-place call, which overwrites z, still has it); for s < 0 only the
        input does."""
        return a if negative_slope >= 0 else z

    @staticmethod
    def times_derivative(t, side, negative_slope):
        """t · f′(z): t where z > 0, t · s elsewhere; ``side`` is z, or for s ≥ 0 a (positive where z is)."""
        return torch.where(side > 0, t, t * negative_slope)


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
        (z,) = inputs
        ctx.save_for_backward(Sigmoid.keep(z, output))
        ctx.save_for_forward(Sigmoid.keep(z, output))

    @staticmethod
    def backward(ctx, grad_output):
        return Sigmoid.times_derivative(grad_output, *ctx.saved_tensors)

    @staticmethod
    def jvp(ctx, z_tangent):
        return Sigmoid.times_derivative(z_tangent, *ctx.saved_tensors)

    @staticmethod
    def keep(z, a):
        """What f′ is computed from: the output, not the input, since σ′ = σ(1 − σ) needs only the output."""
        return a

    @staticmethod
    def times_derivative(t, a):
        """t · f′(z) = t · (1 − a) · a, multiplied left to right as PyTorch's sigmoid_backward kernel does: the
        same bits."""
        return t * (1 - a) * a


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
        (z,) = inputs
        ctx.save_for_backward(Tanh.keep(z, output))
        ctx.save_for_forward(Tanh.keep(z, output))

    @staticmethod
    def backward(ctx, grad_output):
        return Tanh.times_derivative(grad_output, *ctx.saved_tensors)

    @staticmethod
    def jvp(ctx, z_tangent):
        return Tanh.times_derivative(z_tangent, *ctx.saved_tensors)

    @staticmethod
    def keep(z, a):
        """What f′ is computed from: the output, not the input, since tanh′ = 1 − tanh² needs only the output."""
        return a

    @staticmethod
    def times_derivative(t, a):
        """t · f′(z), f′ = 1 − a·a in one rounding (a fused multiply-add), as PyTorch's tanh_backward kernel
        computes it: the same bits."""
        return t * torch.addcmul(a.new_ones(()), a, a, value=-1)


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

    The second term is the chain rule through tanh and then through u.

    Shapes: z, a, grad_output and grad_input: ``(*)``.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(z, approximate):
        return torch.nn.functional.gelu(z, approximate=approximate)

    @staticmethod
    def setup_context(ctx, inputs, output):
        z, approximate = inputs
        ctx.save_for_backward(GELU.keep(z, output, approximate))
        ctx.save_for_forward(GELU.keep(z, output, approximate))
        ctx.approximate = approximate

    @staticmethod
    def backward(ctx, grad_output):
        return GELU.times_derivative(grad_output, *ctx.saved_tensors, ctx.approximate), None

    @staticmethod
    def jvp(ctx, z_tangent, _):
        return GELU.times_derivative(z_tangent, *ctx.saved_tensors, ctx.approximate)

    @staticmethod
    def keep(z, a, approximate):
        """What f′ is computed from: the input, which f′(z) = Φ(z) + z·φ(z) needs (a alone does not give z)."""
        return z

    @staticmethod
    def times_derivative(t, z, approximate):
        """t · f′(z), for the exact or the tanh form."""
        if approximate == "tanh":
            z_squared = z * z
            tanh_u = torch.tanh(_SQRT_2_OVER_PI * (z + _KAPPA * z_squared * z))
            du_dz = _SQRT_2_OVER_PI * (1 + 3 * _KAPPA * z_squared)
            derivative = 0.5 * (1 + tanh_u) + 0.5 * z * (1 - tanh_u * tanh_u) * du_dz
        else:
            cdf = 0.5 * (1 + torch.erf(z * _SQRT_HALF))
            pdf = _INV_SQRT_2PI * torch.exp(z * z * -0.5)
            derivative = cdf + z * pdf
        return t * derivative
