"""A Linear layer and the activation after it as one Function: the reference tier's two backward passes, one node."""

import torch

from manualbp.autograd import Linear, ReLU, Sigmoid, Tanh
from manualbp.fast import kernels
from manualbp.fast.activation import times_derivative

# the activations whose derivative is computed from their output a (their ``keep``), so that the fused node need
# keep nothing else
ACTIVATIONS = {"relu": ReLU, "sigmoid": Sigmoid, "tanh": Tanh}


class LinearActivation(torch.autograd.Function):
    r"""a = f(z), z = x Wᵀ + b: ``Linear`` then ``ReLU``, ``Sigmoid`` or ``Tanh``, in one Function.

    The backward is the two reference derivations one after the other, the chain rule through f and then through
    the linear map. With g = ∂C/∂a (``grad_output``):

        δ = ∂C/∂z = g ⊙ f′(z)                              (the activation's backward)
        ∂C/∂x = δ W        ∂C/∂W = δᵀ x        ∂C/∂b = Σ_rows δ     (Linear's backward, with δ for g)

    δ is the "error" of the layer in Nielsen's notation, δᴸ = ∂C/∂zᴸ. Both steps call the reference Functions'
    own ``forward``, ``gradients`` and ``tangent`` (no derivative is written here), and g ⊙ f′(z) by the
    activation's one-kernel product (``manualbp.fast.activation``: the reference's bits for sigmoid and tanh, its
    numbers for ReLU wherever g is finite).
    What fusing saves is a node of the autograd graph, and so a round trip into Python, per layer and per pass; on
    a GPU, where ``kernels.chosen_for_backward`` says so, δ and ∂C/∂b also come out of one kernel
    (``kernels.activation.times_derivative_and_column_sum``), so δ is not read a second time for its sum.

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
        needs_x_grad, needs_weight_grad, needs_bias_grad = ctx.needs_input_grad[:3]
        if ctx.has_bias and needs_bias_grad and kernels.chosen_for_backward(grad_output):
            # on a GPU: δ and ∂C/∂b = Σ_rows δ in one pass of one kernel, then Linear's two products with δ for g
            delta, grad_bias = kernels.activation.times_derivative_and_column_sum(grad_output, a, ctx.activation)
            grad_x, grad_weight, _ = Linear.gradients(delta, x, weight, False, (needs_x_grad, needs_weight_grad, False))
            return grad_x, grad_weight, grad_bias, None
        # the reference derivations, in the backward order: δ = g ⊙ f′(z), then Linear's gradients with δ for g
        delta = times_derivative(ctx.activation, grad_output, a)
        return *Linear.gradients(delta, x, weight, ctx.has_bias, needs_input_grad=ctx.needs_input_grad[:3]), None

    @staticmethod
    def jvp(ctx, x_tangent, weight_tangent, bias_tangent, _):
        x, weight, a = ctx.saved_tensors
        # the reference derivations in the forward order: ż through the linear map, then ȧ = f′(z)·ż
        z_tangent = Linear.tangent(x_tangent, weight_tangent, bias_tangent, x, weight)
        return times_derivative(ctx.activation, z_tangent, a)
