"""The whole network and its loss as one autograd node, whose gradients are computed in the forward pass."""

import functools
from typing import NamedTuple

import torch

from manualbp import autograd
from manualbp.autograd import MLP, Linear, MSELoss, OneHotCrossEntropyLoss
from manualbp.fast import kernels
from manualbp.fast.activation import KERNELS, times_derivative
from manualbp.fast.call import is_one, upstream_one
from manualbp.fast.cross_entropy import one_hot_gradient_at_one
from manualbp.fast.mse import mse_gradient, mse_value


class MLPLoss(torch.autograd.Function):
    r"""C = loss(MLP(x), y): every layer of a multilayer perceptron and its loss in one Function, the textbook's
    ``backprop(x, y)`` ("Neural Networks and Deep Learning", chapter 2) as one autograd node.

    Forward runs the layers, zˡ = aˡ⁻¹ Wˡᵀ + bˡ (``Linear.forward``) and aˡ = f_l(zˡ) (each activation's forward),
    then the loss: the mean cross-entropy of the logits aᴸ against class indices (``OneHotCrossEntropyLoss``), or the
    mean squared error against targets shaped like aᴸ (``MSELoss``). When a gradient is wanted it goes on, in the
    same call, to the four equations of backpropagation:

        ∂C/∂aᴸ = (softmax(aᴸ) − onehot(y)) / N    or    2(aᴸ − y) / n     the loss's own derivative at g = 1
        δᴸ = ∂C/∂aᴸ ⊙ f_L′(zᴸ)                                            the output layer's error
        δˡ = (δˡ⁺¹ Wˡ⁺¹) ⊙ f_l′(zˡ)                                        back through every layer
        ∂C/∂Wˡ = δˡᵀ aˡ⁻¹        ∂C/∂bˡ = Σ_rows δˡ                        every parameter's gradient

    by the reference tier's own derivations: the loss's ``gradients`` (cross-entropy's at g = 1 by
    ``fast.cross_entropy.one_hot_gradient_at_one``, MSE's by ``fast.mse.mse_gradient``: the same operations), then
    ``MLP.gradients``'s loop (``backpropagate``): each layer's ``Linear.gradients`` and its activation's t · f′, by
    the one-kernel products of ``manualbp.fast.activation`` as in the per-layer path. So every gradient is the
    per-layer path's to the bit (for ReLU: as numbers, −0 and +0 alike). Nothing is derived here. What the one node
    saves is the autograd graph (no node per layer, nor for the loss, and no pass over the logits in the backward),
    the lookups of every layer's activation by name (``layers_of``, once per network), and the product of every
    gradient with an upstream gradient that is exactly 1 (``loss.backward()``): the backward hands the gradients
    back as they are.

    On a GPU (where ``kernels.chosen_for`` says so), cross-entropy's C and ∂C/∂aᴸ come out of one kernel
    (``kernels.cross_entropy``, as the per-layer path's ``fast.cross_entropy``), where the reference's log-softmax,
    gather, mean, exp and one-hot subtraction are a launch each; GELU's and leaky ReLU's t · f′ are the activation
    kernel's. There the backward always multiplies by the upstream gradient: reading it to skip a 1 would stall the
    stream.

    The gradients exist only in eager mode, where the forward sees which inputs need one; ``manualbp.functional.
    mlp_loss`` takes the reference's two nodes (``MLP``, then the loss Function) under torch.func, torch.compile,
    forward-mode AD and autocast, and a double backward differentiates those two nodes again (see ``backward``).

    Shapes: x: ``(N, n₀)``; target: ``(N,)`` int64 class indices for ``"cross-entropy"``, ``(N, n_L)`` for
    ``"mse"``; ``parameters``: W¹, b¹, W², … (a bias may be None). Outputs: C, ``()``; and aᴸ, ``(N, n_L)``, not
    differentiable (for the caller's accuracy: every gradient comes from C).
    """

    @staticmethod
    def forward(ctx, x, target, loss, activations, *parameters):
        layers = layers_of(activations)
        weights, biases = parameters[::2], parameters[1::2]
        # zˡ = aˡ⁻¹ Wˡᵀ + bˡ and aˡ = f_l(zˡ), layer by layer: each layer's input, and what its f′ reads (z or a)
        inputs, kept, a = [], [], x
        for layer, weight, bias in zip(layers, weights, biases, strict=True):
            inputs.append(a)
            z = Linear.forward(a, weight, bias)
            a = z if layer.activate is None else layer.activate(z)
            kept.append(z if layer.keeps_z else a)
        needs = layer_needs(ctx.needs_input_grad)  # what each layer's gradients are to be; None: no gradient
        if loss == "cross-entropy" and needs and kernels.chosen_for(a):
            # on a GPU: C and ∂C/∂aᴸ at g = 1 in one kernel (only where a gradient is wanted: it writes one)
            value, grad_a = kernels.cross_entropy.cross_entropy(a, target, None, -100, 0.0, "mean")
        elif loss == "cross-entropy":
            (value, log_probs), grad_a = OneHotCrossEntropyLoss.forward(a, target), None
        else:
            value, grad_a = mse_value(a, target), None
        ctx.save_for_backward(x, target, *parameters)
        ctx.loss, ctx.activations = loss, activations
        ctx.gradients = None
        ctx.mark_non_differentiable(a)  # the output comes along for the caller's accuracy, not to differentiate
        ctx.set_materialize_grads(False)  # and so its gradient is None, not a tensor of zeros made for every call
        if needs is None:
            return value, a  # nothing will ask for a gradient: evaluation pays for none
        if grad_a is None:  # the loss's ∂C/∂aᴸ at the upstream gradient of loss.backward(), g = 1
            if loss == "cross-entropy":
                grad_a = one_hot_gradient_at_one(target, log_probs)
            else:
                grad_a = mse_gradient(upstream_one(a.dtype, a.device), a, target)
        ctx.gradients = backpropagate(grad_a, layers, inputs, kept, weights, biases, needs)
        return value, a

    @staticmethod
    def backward(ctx, grad_loss, _):
        if grad_loss is None:  # nothing flows into C (gradcheck asks about the output aᴸ alone, say)
            return (None,) * len(ctx.needs_input_grad)
        if torch.is_grad_enabled() or ctx.gradients is None:
            # a double backward (create_graph=True) needs gradients that are functions of the inputs, and a second
            # backward through a retained graph finds them handed over: both differentiate the reference again
            grad_x, *grad_parameters = MLPLoss.through_reference(ctx, grad_loss)
        else:
            gradients, ctx.gradients = ctx.gradients, None  # handed over, not copied: they may become .grad as they are
            if not is_one(grad_loss):
                gradients = [None if grad is None else grad * grad_loss for grad in gradients]
            grad_x, *grad_parameters = gradients
        return grad_x, None, None, None, *grad_parameters

    @staticmethod
    def through_reference(ctx, grad_loss):
        """The gradients of x and the parameters by autograd through ``reference``'s two nodes, differentiable
        when the backward is (create_graph=True)."""
        create_graph = torch.is_grad_enabled()
        x, target, *parameters = ctx.saved_tensors
        inputs = [x, *parameters]
        needs = [
            needs and tensor is not None
            for tensor, needs in zip(inputs, ctx.needs_input_grad[:1] + ctx.needs_input_grad[4:], strict=True)
        ]
        with torch.enable_grad():
            value = reference(x, target, ctx.loss, ctx.activations, *parameters)
            wanted = [tensor for tensor, needed in zip(inputs, needs, strict=True) if needed]
            grads = iter(torch.autograd.grad(value, wanted, grad_loss, create_graph=create_graph))
        return [next(grads) if needed else None for needed in needs]


class Layer(NamedTuple):
    """What the one node needs of a layer's activation, looked up once per network (``layers_of``)."""

    activate: object  # z ↦ a = f(z), the reference activation's forward; None for no activation
    times_derivative: object  # (t, kept) ↦ t · f′(z), by one kernel where there is one; None for no activation
    keeps_z: bool  # whether f′ is computed from z rather than from a, as the reference's ``keep`` says


@functools.cache
def layers_of(activations):
    """One ``Layer`` per name of ``activations`` (a tuple: ``"relu"``, …, or None), made once for each network:
    the names' lookups, which cost a few microseconds a layer in every call, are done here instead."""
    return tuple(_layer(name) for name in activations)


def _layer(name):
    if name is None:
        return Layer(None, None, False)
    function, options = autograd.mlp.ACTIVATIONS[name]
    kernel = KERNELS.get(name)  # ReLU's, sigmoid's and tanh's t · f′ in one pass (see manualbp.fast.activation)
    return Layer(
        activate=functools.partial(_activate, function, options) if options else function.forward,
        times_derivative=kernel or functools.partial(_times_derivative, name, options),
        keeps_z=autograd.mlp._keeps_z(name),  # the reference's own answer, from its keep
    )


def _activate(function, options, z):
    return function.forward(z, *options)


def _times_derivative(name, options, t, kept):
    return times_derivative(name, t, kept, *options)


def backpropagate(grad_a, layers, inputs, kept, weights, biases, needs):
    """``[∂C/∂x, ∂C/∂W¹, ∂C/∂b¹, ∂C/∂W², …]`` from g = ∂C/∂aᴸ: ``MLP.gradients``'s loop where nothing flows into
    the hidden a's and z's but what comes down from the loss (the one node's only case), each layer's products by
    ``Linear.gradients`` and its t · f′ by the ``Layer``'s one kernel. ``inputs`` are every layer's aˡ⁻¹,
    ``kept`` what each f′ reads; ``needs`` says which gradients of each layer to compute (``layer_needs``)."""
    grads = [None] * (1 + 2 * len(layers))
    for index in reversed(range(len(layers))):
        derivative = layers[index].times_derivative
        delta = grad_a if derivative is None else derivative(grad_a, kept[index])  # δˡ = ∂C/∂aˡ ⊙ f′(zˡ)
        # ∂C/∂Wˡ = δˡᵀ aˡ⁻¹, ∂C/∂bˡ = Σ_rows δˡ and ∂C/∂aˡ⁻¹ = δˡ Wˡ (for x itself only if it needs it)
        grad_a, grads[1 + 2 * index], grads[2 + 2 * index] = Linear.gradients(
            delta, inputs[index], weights[index], biases[index] is not None, needs_input_grad=needs[index]
        )
    grads[0] = grad_a
    return grads


@functools.cache
def layer_needs(needs_input_grad):
    """Each layer's ``(∂C/∂aˡ⁻¹, ∂C/∂Wˡ, ∂C/∂bˡ)`` to compute, from ``MLPLoss``'s ``ctx.needs_input_grad`` (x, the
    target, the loss's and activations' names, W¹, b¹, …): every hidden layer's input does (the layers below need
    it), x only if it asks. None where nothing needs a gradient. Made once per pattern, not per call."""
    needs_x_grad, _, _, _, *needs_parameter_grads = needs_input_grad
    if not (needs_x_grad or any(needs_parameter_grads)):
        return None
    needs_a_grad = (needs_x_grad, *[True] * (len(needs_parameter_grads) // 2 - 1))
    return tuple(zip(needs_a_grad, needs_parameter_grads[::2], needs_parameter_grads[1::2], strict=True))


def reference(x, target, loss, activations, *parameters):
    """The same C as two reference nodes, ``MLP`` and then the loss Function, for what the one node does not do:
    torch.func transforms, torch.compile, forward-mode AD and double backward."""
    a = MLP.apply(x, activations, *parameters)[0]
    if loss == "cross-entropy":
        return OneHotCrossEntropyLoss.apply(a, target)[0]
    return MSELoss.apply(a, target, None, "mean")
