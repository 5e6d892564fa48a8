"""A Linear layer and the activation after it as one Function: the reference tier's two backward passes, one node."""

from types import SimpleNamespace

import torch

from manualbp.autograd import Linear, ReLU, Sigmoid, Tanh

# the activations whose backward needs only their output a, so that the fused node need keep nothing else
ACTIVATIONS = {"relu": ReLU, "sigmoid": Sigmoid, "tanh": Tanh}


class LinearActivation(torch.autograd.Function):
    r"""a = f(z), z = x Wᵀ + b: ``Linear`` then ``ReLU``, ``Sigmoid`` or ``Tanh``, in one Function.

    The backward is the two reference derivations one after the other, the chain rule through f and then through
    the linear map. With g = ∂C/∂a (``grad_output``):

        δ = ∂C/∂z = g ⊙ f′(z)                              (the activation's backward)
        ∂C/∂x = δ W        ∂C/∂W = δᵀ x        ∂C/∂b = Σ_rows δ     (Linear's backward, with δ for g)

    δ is the "error" of the layer in Nielsen's notation, δᴸ = ∂C/∂zᴸ. Both steps call the reference Functions'
    own ``forward``, ``backward`` and ``jvp`` (no derivative is written here), so the results are theirs to the bit.
    What fusing saves is a node of the autograd graph, and so a round trip into Python, per layer and per pass.

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
        needs_x_grad, needs_weight_grad = ctx.needs_input_grad[:2]
        # what each reference backward keeps: Linear's x and W (each only if its gradient is taken), f's output a
        ctx.save_for_backward(x if needs_weight_grad else None, weight if needs_x_grad else None, output)
        ctx.save_for_forward(x, weight, output)
        ctx.has_bias = bias is not None
        ctx.activation = activation

    @staticmethod
    def backward(ctx, grad_output):
        x, weight, a = ctx.saved_tensors
        # the reference backward passes, each handed the saved tensors and flags its own setup_context would keep
        delta = ACTIVATIONS[ctx.activation].backward(SimpleNamespace(saved_tensors=(a,)), grad_output)
        linear = SimpleNamespace(
            saved_tensors=(x, weight), needs_input_grad=ctx.needs_input_grad[:3], has_bias=ctx.has_bias
        )
        return *Linear.backward(linear, delta), None

    @staticmethod
    def jvp(ctx, x_tangent, weight_tangent, bias_tangent, _):
        x, weight, a = ctx.saved_tensors
        # the reference jvps in the forward order: ż through the linear map, then ȧ = f′(z)·ż
        z_tangent = Linear.jvp(SimpleNamespace(saved_tensors=(x, weight)), x_tangent, weight_tangent, bias_tangent)
        return ACTIVATIONS[ctx.activation].jvp(SimpleNamespace(saved_tensors=(a,)), z_tangent)
