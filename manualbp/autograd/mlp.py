"""Backpropagation as it is taught: a whole multilayer perceptron as one Function, its backward the textbook loop."""

import torch

from manualbp.autograd.activation import GELU, LeakyReLU, ReLU, Sigmoid, Tanh
from manualbp.autograd.linear import Linear

# each name's activation Function and its options: a = f.forward(z, *options), and t · f′(z) =
# f.times_derivative(t, f.keep(z, a, *options), *options) (leaky ReLU with PyTorch's default slope 0.01)
ACTIVATIONS = {
    "relu": (ReLU, ()),
    "sigmoid": (Sigmoid, ()),
    "tanh": (Tanh, ()),
    "leaky-relu": (LeakyReLU, (0.01,)),
    "gelu": (GELU, ("none",)),
}


def _keeps_z(activation):
    """Whether f′ is computed from z (GELU) rather than from a, which the loop keeps anyway as the next layer's
    input: ``keep`` chooses by position, so two labels show which it picks."""
    if activation is None:
        return False
    function, options = ACTIVATIONS[activation]
    return function.keep("z", "a", *options) == "z"


class MLP(torch.autograd.Function):
    r"""aᴸ = f_L(W_L ⋯ f_1(W_1 x + b_1) ⋯ + b_L): every Linear layer and its activation, as one Function.

    Forward, layer by layer (a⁰ = x; ``activations[l]`` is f_l's name, or None for no activation):

        zˡ = aˡ⁻¹ Wˡᵀ + bˡ,    aˡ = f_l(zˡ)

    Backward is the algorithm of backpropagation as one loop. With g = ∂C/∂aᴸ (``grad_output``, from the loss):

        δᴸ = ∂C/∂aᴸ ⊙ f_L′(zᴸ)                  what the output layer's pre-activations should do
        δˡ = (δˡ⁺¹ Wˡ⁺¹) ⊙ f_l′(zˡ)             each neuron sums the suggestions of every neuron it feeds,
                                                  weighted by the weights, then scales by its own slope
        ∂C/∂Wˡ = δˡᵀ aˡ⁻¹    ∂C/∂bˡ = Σ_rows δˡ    every weight: the error of the neuron it feeds times the
                                                  activation it carries; summed over the examples of the batch
        ∂C/∂x = δ¹ W¹

    The f′ are the activations' own (``times_derivative`` of ReLU, Sigmoid, …), and each product is the one the
    Linear layer's backward computes, so the gradients equal those of the per-layer Functions to the bit. What the
    loop saves is the autograd graph: one node for the whole network rather than one per layer.

    Forward mode (``jvp``) runs the same layers in the forward order: żˡ = ȧˡ⁻¹ Wˡᵀ + aˡ⁻¹ Ẇˡᵀ + ḃˡ, ȧˡ = f_l′(zˡ)·żˡ.

    Shapes: x: ``(rows, n₀)``; ``parameters``: W¹, b¹, W², b², … with Wˡ ``(n_l, n_{l−1})`` and bˡ ``(n_l,)`` (a
    bias may be None); aᴸ and grad_output: ``(rows, n_L)``.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(x, activations, *parameters):
        # every hidden layer's a, and the z its f′ needs, are outputs too, so that setup_context can keep them
        zs, outputs, a = [], [], x
        for activation, weight, bias in zip(activations, parameters[::2], parameters[1::2], strict=True):
            z = Linear.forward(a, weight, bias)
            a = z if activation is None else _activate(activation, z)
            zs.append(z)
            outputs.append(a)
        return a, *outputs[:-1], *(z for z, activation in zip(zs, activations, strict=True) if _keeps_z(activation))

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, activations, *parameters = inputs
        a, *intermediates = output
        # the output aᴸ only for its activation's f′: logits (no activation) are no layer's input, and keeping them
        # would save more for the backward than the layers one by one do
        # and W¹ only for ∂C/∂x = δ¹ W¹, as Linear keeps it: the other weights carry δ down to the layer below
        weights = [
            weight if layer > 0 or ctx.needs_input_grad[0] else None for layer, weight in enumerate(parameters[::2])
        ]
        ctx.save_for_backward(x, *weights, a if activations[-1] is not None else None, *intermediates)
        # the jvp runs the layers again beside the tangents (forward mode is one pass, so it keeps nothing)
        ctx.save_for_forward(x, *parameters)
        ctx.activations = activations
        ctx.has_bias = [bias is not None for bias in parameters[1::2]]
        ctx.set_materialize_grads(False)  # an output nobody used gets None, not a tensor of zeros

    @staticmethod
    def backward(ctx, grad_output, *grad_intermediates):
        x, weights, zs, outputs = MLP.saved(ctx)
        # gradients into the hidden a's and z's, which are outputs too: None in ordinary use (a double backward,
        # which differentiates this loop through them, sends some)
        extra_a, extra_z = MLP.per_layer(ctx.activations, grad_intermediates)
        grad_x, *grads = MLP.gradients(
            grad_output,
            x,
            weights,
            zs,
            outputs,
            ctx.activations,
            ctx.has_bias,
            extra_a,
            extra_z,
            needs_input_grad=ctx.needs_input_grad[:1] + ctx.needs_input_grad[2:],
        )
        return grad_x, None, *grads

    @staticmethod
    def gradients(
        grad_output,
        x,
        weights,
        zs,
        outputs,
        activations,
        has_bias,
        extra_a=None,
        extra_z=None,
        needs_input_grad=None,
    ):
        """``(∂C/∂x, ∂C/∂W¹, ∂C/∂b¹, ∂C/∂W², …)`` from g = ∂C/∂aᴸ by the backprop loop. ``zs`` and ``outputs`` are
        every layer's z (None where f′ does not need it) and a; ``extra_a`` and ``extra_z`` gradients flowing into
        the hidden a's and z's themselves (None, or a list with None where nothing flows); ``needs_input_grad``
        says which of x, W¹, b¹, W², … to compute."""
        layers = len(weights)
        extra_a, extra_z = extra_a or [None] * layers, extra_z or [None] * layers
        needs_input_grad = needs_input_grad or (True,) * (1 + 2 * layers)
        inputs = [x, *outputs[:-1]]  # aˡ⁻¹ of every layer
        grads = []
        grad_a = grad_output  # ∂C/∂aᴸ, from the loss
        for layer in reversed(range(layers)):
            grad_a = _add(grad_a, extra_a[layer])
            activation = activations[layer]
            delta = grad_a  # δˡ = ∂C/∂zˡ = ∂C/∂aˡ ⊙ f′(zˡ)
            if activation is not None and grad_a is not None:
                delta = _times_derivative(activation, grad_a, zs[layer], outputs[layer])
            delta = _add(delta, extra_z[layer])
            if delta is None:  # nothing reaches this layer from above (a double backward may start lower down)
                grads[:0] = [None, None]
                continue
            # Linear's backward with δˡ for g: ∂C/∂Wˡ = δˡᵀ aˡ⁻¹, ∂C/∂bˡ = Σ_rows δˡ, and ∂C/∂aˡ⁻¹ = δˡ Wˡ, where
            # each neuron sums what the next layer suggests (for x itself only if it needs it)
            needs = (layer > 0 or needs_input_grad[0], *needs_input_grad[1 + 2 * layer : 3 + 2 * layer])
            grad_a, grad_weight, grad_bias = Linear.gradients(
                delta, inputs[layer], weights[layer], has_bias[layer], needs_input_grad=needs
            )
            grads[:0] = [grad_weight, grad_bias]
        return grad_a, *grads

    @staticmethod
    def jvp(ctx, x_tangent, _, *parameter_tangents):
        x, *parameters = ctx.saved_tensors
        return MLP.tangent(x_tangent, parameter_tangents, x, parameters, ctx.activations)

    @staticmethod
    def tangent(x_tangent, parameter_tangents, x, parameters, activations):
        """The tangents of aᴸ, the hidden a's and the kept z's (as the forward returns them) from ẋ and the
        parameters' tangents Ẇ¹, ḃ¹, … (each None for a zero direction), running the layers forwards beside them."""
        a, a_tangent = x, x_tangent
        hidden_tangents, z_tangents = [], []
        for layer, activation in enumerate(activations):
            weight, bias = parameters[2 * layer], parameters[2 * layer + 1]
            weight_tangent, bias_tangent = parameter_tangents[2 * layer], parameter_tangents[2 * layer + 1]
            z = Linear.forward(a, weight, bias)
            # żˡ = ȧˡ⁻¹ Wˡᵀ + aˡ⁻¹ Ẇˡᵀ + ḃˡ by Linear's own tangent, a missing ȧ or Ẇ taken as zero
            z_tangent = None
            if a_tangent is not None or weight_tangent is not None or bias_tangent is not None:
                z_tangent = Linear.tangent(
                    torch.zeros_like(a) if a_tangent is None else a_tangent,
                    torch.zeros_like(weight) if weight_tangent is None else weight_tangent,
                    bias_tangent,
                    a,
                    weight,
                )
            a = z if activation is None else _activate(activation, z)
            a_tangent = z_tangent  # ȧˡ = f′(zˡ) · żˡ
            if activation is not None and z_tangent is not None:
                a_tangent = _times_derivative(activation, z_tangent, z, a)
            # an output with no tangent yet gets zeros: forward AD wants a tangent for every output it tracks
            hidden_tangents.append(torch.zeros_like(a) if a_tangent is None else a_tangent)
            if _keeps_z(activation):
                z_tangents.append(torch.zeros_like(z) if z_tangent is None else z_tangent)
        return hidden_tangents[-1], *hidden_tangents[:-1], *z_tangents

    @staticmethod
    def saved(ctx):
        """``(x, weights, zs, activations)`` of every layer as setup_context saved them (z None where f′ does not
        need it)."""
        x, *rest = ctx.saved_tensors
        layers = len(ctx.activations)
        weights, output, hidden, kept_zs = (
            rest[:layers],
            rest[layers],
            rest[layers + 1 : 2 * layers],
            rest[2 * layers :],
        )
        return x, weights, MLP.per_layer(ctx.activations, [*hidden, *kept_zs])[1], [*hidden, output]

    @staticmethod
    def per_layer(activations, intermediates):
        """The forward's extra outputs (hidden a's, then the kept z's) as two lists with one entry per layer: the
        a's (None for the last layer, the output itself) and the z's (None where f′ does not need z)."""
        layers = len(activations)
        hidden, kept = intermediates[: layers - 1], iter(intermediates[layers - 1 :])
        zs = [next(kept) if _keeps_z(activation) else None for activation in activations]
        return [*hidden, None], zs


def _activate(activation, z):
    """a = f(z) by the activation's own forward."""
    function, options = ACTIVATIONS[activation]
    return function.forward(z, *options)


def _times_derivative(activation, t, z, a):
    """t · f′(z) by the activation's own derivative, from z or a as its ``keep`` says."""
    function, options = ACTIVATIONS[activation]
    return function.times_derivative(t, function.keep(z, a, *options), *options)


def _add(*terms):
    """The sum of the terms that are not None (None if all are)."""
    present = [term for term in terms if term is not None]
    return sum(present[1:], present[0]) if present else None
