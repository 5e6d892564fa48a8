"""The whole network and its loss as one autograd node, whose gradients are computed in the forward pass."""

import torch

from manualbp.autograd import MLP, MSELoss, OneHotCrossEntropyLoss
from manualbp.fast import kernels
from manualbp.fast.activation import times_derivative_from
from manualbp.fast.mse import mse_gradient, mse_value
from manualbp.fast.torch_internals import forward_ad_level_open, functorch_transforms_active, is_functorch_wrapped


def in_one_node():
    """Whether ``MLPLoss`` can run here: in eager mode, outside torch.func transforms and forward-mode AD (it is a
    classic-form Function that computes its gradients in the forward pass, which none of those can take)."""
    return not (torch.compiler.is_compiling() or functorch_transforms_active() or forward_ad_level_open())


class MLPLoss(torch.autograd.Function):
    r"""C = loss(MLP(x), y): every layer of a multilayer perceptron and its loss in one Function, the textbook's
    ``backprop(x, y)`` ("Neural Networks and Deep Learning", chapter 2) as one autograd node.

    Forward runs the layers, zˡ = aˡ⁻¹ Wˡᵀ + bˡ and aˡ = f_l(zˡ) (``MLP.forward``), then the loss: the mean
    cross-entropy of the logits aᴸ against class indices (``OneHotCrossEntropyLoss``), or the mean squared error
    against targets shaped like aᴸ (``MSELoss``). When a gradient is wanted it goes on, in the same call, to the
    four equations of backpropagation:

        ∂C/∂aᴸ = (softmax(aᴸ) − onehot(y)) / N    or    2(aᴸ − y) / n     the loss's own derivative at g = 1
        δᴸ = ∂C/∂aᴸ ⊙ f_L′(zᴸ)                                            the output layer's error
        δˡ = (δˡ⁺¹ Wˡ⁺¹) ⊙ f_l′(zˡ)                                        back through every layer
        ∂C/∂Wˡ = δˡᵀ aˡ⁻¹        ∂C/∂bˡ = Σ_rows δˡ                        every parameter's gradient

    by the reference tier's own derivations (the loss's ``gradients``, then ``MLP.gradients``: the loop of
    ``Linear.gradients`` and each activation's t · f′, by the one-kernel products of ``manualbp.fast.activation``
    as in the per-layer path), so every gradient is the per-layer path's to the bit (for ReLU: as numbers, −0 and
    +0 alike). Nothing is derived here. What the one node saves is the autograd graph (no node per layer, nor for the
    loss, and no pass over the logits in the backward), and the product of every gradient with an upstream
    gradient that is exactly 1 (``loss.backward()``): the backward hands the gradients back as they are.

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
        a, *intermediates = MLP.forward(x, activations, *parameters)
        needs_x_grad, _, _, _, *needs_parameter_grads = ctx.needs_input_grad
        wanted = needs_x_grad or any(needs_parameter_grads)
        if loss == "cross-entropy" and wanted and kernels.chosen_for(a):
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
        if not wanted:
            return value, a  # nothing will ask for a gradient: evaluation pays for none
        if grad_a is None:
            one = value.new_ones(())  # the upstream gradient of loss.backward(), as autograd would send it
            if loss == "cross-entropy":
                grad_a, _ = OneHotCrossEntropyLoss.gradients(one, None, target, log_probs)
            else:
                grad_a = mse_gradient(one, a, target)
        hidden, zs = MLP.per_layer(activations, intermediates)
        ctx.gradients = MLP.gradients(
            grad_a,
            x,
            parameters[::2],
            zs,
            [*hidden[:-1], a],
            activations,
            [bias is not None for bias in parameters[1::2]],
            needs_input_grad=(needs_x_grad, *needs_parameter_grads),
            times_derivative=times_derivative_from,  # f′ by one kernel for ReLU, sigmoid and tanh
        )
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
            if not _is_one(grad_loss):
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


def _is_one(grad_loss):
    """Whether the upstream gradient is known to be exactly 1 without cost: read on the CPU only (reading a CUDA
    number would stall the stream), and never a transform's wrapper (gradcheck's batched checks vmap the backward)."""
    return grad_loss.is_cpu and not is_functorch_wrapped(grad_loss) and grad_loss.item() == 1.0


def reference(x, target, loss, activations, *parameters):
    """The same C as two reference nodes, ``MLP`` and then the loss Function, for what the one node does not do:
    torch.func transforms, torch.compile, forward-mode AD and double backward."""
    a = MLP.apply(x, activations, *parameters)[0]
    if loss == "cross-entropy":
        return OneHotCrossEntropyLoss.apply(a, target)[0]
    return MSELoss.apply(a, target, None, "mean")
