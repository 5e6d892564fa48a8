"""A Linear layer and the activation after it as one Function: the same two derivations, one Python node."""

import torch

from manualbp.autograd.activations import ReLU, Sigmoid, Tanh
from manualbp.autograd.linear import Linear, kept_for_grads, linear_grads

# the activations whose f′ is written in their output a, so that the fused Function need keep only a
ACTIVATIONS = {"relu": ReLU, "sigmoid": Sigmoid, "tanh": Tanh}


class LinearActivation(torch.autograd.Function):
    r"""a = f(z), z = x Wᵀ + b: ``Linear`` then ``ReLU``, ``Sigmoid`` or ``Tanh``, in one Function.

    The backward is the two derivations one after the other, the chain rule through f and then through the
    linear map. With g = ∂C/∂a (``grad_output``):

        δ = ∂C/∂z = g ⊙ f′(z)                              (the activation's backward)
        ∂C/∂x = δ W        ∂C/∂W = δᵀ x        ∂C/∂b = Σ_rows δ     (Linear's backward, with δ for g)

    δ is the "error" of the layer in Nielsen's notation, δᴸ = ∂C/∂zᴸ. Both steps call the very code of
    ``Linear`` and of the activation, so the results are theirs to the bit. What fusing saves is a node of the
    autograd graph, and so a round trip into Python, per layer and per pass (``BENCHMARKS.md``).

    Shapes: x: ``(*, in_features)``; weight: ``(out_features, in_features)``; bias: ``(out_features,)`` or
    None; a and grad_output: ``(*, out_features)``. ``activation``: ``"relu"``, ``"sigmoid"`` or ``"tanh"``.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(x, weight, bias, activation):
        return ACTIVATIONS[activation].forward(Linear.forward(x, weight, bias))

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, weight, bias, activation = inputs
        # f′ is written in a, so z itself need not be kept
        ctx.save_for_backward(*kept_for_grads(ctx, x, weight), output)
        ctx.has_bias = bias is not None
        ctx.activation = activation

    @staticmethod
    def backward(ctx, grad_output):
        x, weight, a = ctx.saved_tensors
        delta = ACTIVATIONS[ctx.activation].chain(grad_output, a)
        return *linear_grads(delta, x, weight, ctx.needs_input_grad, ctx.has_bias), None
