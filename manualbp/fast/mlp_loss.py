"""The whole network and its loss as one autograd node, whose gradients are computed in the forward pass."""

import functools

import torch

from manualbp.autograd import MLP, Linear, MSELoss, OneHotCrossEntropyLoss
from manualbp.fast import kernels
from manualbp.fast.call import is_one, upstream_one
from manualbp.fast.cross_entropy import cross_entropy_value, one_hot_gradient_at_one
from manualbp.fast.mse import mse_gradient, mse_value
from manualbp.fast.program import backward_lines, compile_program, forward_lines, layers_of


class MLPLoss(torch.autograd.Function):
    r"""C = loss(MLP(x), y): every layer of a multilayer perceptron and its loss in one Function, the textbook's
    ``backprop(x, y)`` ("Neural Networks and Deep Learning", chapter 2) as one autograd node.

    Forward runs the layers, zˡ = aˡ⁻¹ Wˡᵀ + bˡ (``Linear.forward``) and aˡ = f_l(zˡ) (each activation's forward),
    then the loss: the mean cross-entropy of the logits aᴸ against class indices (``OneHotCrossEntropyLoss``'s value,
    by its two kernels: ``fast.cross_entropy.cross_entropy_value``), or the mean squared error against targets shaped
    like aᴸ (``MSELoss``'s, ``fast.mse.mse_value``). When a gradient is wanted it goes on, in the same call, to the
    four equations of backpropagation:

        ∂C/∂aᴸ = (softmax(aᴸ) − onehot(y)) / N    or    2(aᴸ − y) / n     the loss's own derivative at g = 1
        δᴸ = ∂C/∂aᴸ ⊙ f_L′(zᴸ)                                            the output layer's error
        δˡ = (δˡ⁺¹ Wˡ⁺¹) ⊙ f_l′(zˡ)                                        back through every layer
        ∂C/∂Wˡ = δˡᵀ aˡ⁻¹        ∂C/∂bˡ = Σ_rows δˡ                        every parameter's gradient

    by the reference tier's own derivations: the loss's ``gradients`` (cross-entropy's at g = 1 by
    ``fast.cross_entropy.one_hot_gradient_at_one``, MSE's by ``fast.mse.mse_gradient``: the same operations), then
    ``MLP.gradients``'s loop: each layer's ``Linear.gradients`` and its activation's t · f′, by the one-kernel
    products of ``manualbp.fast.activation`` as in the per-layer path. So every gradient is the per-layer path's to
    the bit (for ReLU: as numbers, −0 and +0 alike). Nothing is derived here. The loop runs written out for the
    network at hand (``MLPLoss.program``: one line per operation, made once per network), so a call pays no loop
    bookkeeping. What the one node saves is the autograd graph (no node per layer, nor for the loss, and no pass over
    the logits in the backward), the lookups of every layer's activation by name (``layers_of``, once per network),
    and the product of every gradient with an upstream gradient that is exactly 1 (``loss.backward()``): the
    backward hands the gradients back as they are.

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
        # the layers, the loss and, where a gradient is wanted, every gradient: one straight-line program per network
        value, a, ctx.gradients = MLPLoss.program(activations, loss, ctx.needs_input_grad)(x, target, *parameters)
        ctx.save_for_backward(x, target, *parameters)
        ctx.loss, ctx.activations = loss, activations
        ctx.mark_non_differentiable(a)  # the output comes along for the caller's accuracy, not to differentiate
        ctx.set_materialize_grads(False)  # and so its gradient is None, not a tensor of zeros made for every call
        return value, a

    @staticmethod
    def backward(ctx, grad_loss, _):
        if grad_loss is None:  # nothing flows into C (gradcheck asks about the output aᴸ alone, say)
            return (None,) * len(ctx.needs_input_grad)
        gradients, ctx.gradients = ctx.gradients, None  # handed over, not copied: they may become .grad as they are
        if gradients is None or torch.is_grad_enabled():
            # a double backward (create_graph=True) needs gradients that are functions of the inputs, and a second
            # backward through a retained graph finds them handed over: both differentiate the reference again
            return MLPLoss.through_reference(ctx, grad_loss)
        if is_one(grad_loss):
            return gradients
        return tuple(None if grad is None else grad * grad_loss for grad in gradients)

    @staticmethod
    @functools.lru_cache(maxsize=256)
    def program(activations, loss, needs_input_grad):
        """The one node's work for one network as a Python function of its own, ``run(x, target, W1, b1, W2, …)`` →
        ``(C, aᴸ, gradients)``: the forward pass layer by layer, the loss, and, where ``needs_input_grad`` (the node's
        ``ctx.needs_input_grad``) asks for a gradient, the loss's ∂C/∂aᴸ at g = 1 and the four equations back through
        every layer; ``gradients`` is what ``MLPLoss.backward`` returns (None where nothing needs a gradient).

        It is ``MLP.gradients``'s loop written out once per network, one line per operation: each layer's
        ``Linear.forward`` and activation, the loss's value and derivative (``fast.mse``, ``fast.cross_entropy``), each
        activation's t · f′ (``manualbp.fast.activation``) and each layer's ``Linear.gradients``, the very functions the
        loop would call, in its order, so the same bits. Written out, the call pays no loop: for a two-layer network the
        loop's lists, indices and lookups cost a training step at 784-30-10, batch 10, about 3 % (AMD EPYC, 2 threads).
        Made once for each network, loss and pattern of needs (the last 256 are kept); ``inspect.getsource`` shows it::

            print(inspect.getsource(MLPLoss.program(("sigmoid", "sigmoid"), "mse", (False,) * 4 + (True,) * 4)))
        """
        layers = layers_of(activations)
        if len(needs_input_grad) != 4 + 2 * len(layers):
            raise ValueError(
                f"MLPLoss: {len(layers)} activations need {2 * len(layers)} parameters (W¹, b¹, …), "
                f"got {len(needs_input_grad) - 4}"
            )
        if loss not in ("cross-entropy", "mse"):
            raise ValueError(f"MLPLoss: loss must be 'cross-entropy' or 'mse', got {loss!r}")
        namespace = {
            "Linear": Linear,
            "cross_entropy_value": cross_entropy_value,
            "kernels": kernels,
            "mse_value": mse_value,
            "mse_gradient": mse_gradient,
            "upstream_one": upstream_one,
            "one_hot_gradient_at_one": one_hot_gradient_at_one,
        }
        namespace.update({f"f{index}": layer for index, layer in enumerate(layers, 1)})
        source = _source(layers, loss, layer_needs(needs_input_grad))
        return compile_program(source, namespace, "mlp_loss.program")["run"]

    @staticmethod
    def through_reference(ctx, grad_loss):
        """``backward``'s result, the gradients of x and the parameters, by autograd through ``reference``'s two
        nodes: differentiable when the backward is (create_graph=True)."""
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
        grad_x, *grad_parameters = [next(grads) if needed else None for needed in needs]
        return grad_x, None, None, None, *grad_parameters


def _source(layers, loss, needs):
    """``MLPLoss.program``'s source, where ``f1``, ``f2``, … name each layer's ``Layer`` (``manualbp.fast.program``);
    ``needs`` is ``layer_needs``'s answer (None: no gradient). Each ``del`` frees a tensor once nothing below reads it,
    as autograd frees a node's saved tensors during the backward pass: a call holds no more at once than the loop
    did."""
    count = len(layers)
    parameters = ", ".join(f"W{n}, b{n}" for n in range(1, count + 1))
    lines = [f"def run(x, target, {parameters}):", *forward_lines(layers)]
    last = f"a{count}"
    if loss == "mse":
        lines.append(f"    C = mse_value({last}, target)")
    if needs is None:  # nothing will ask for a gradient: evaluation pays for none
        if loss == "cross-entropy":
            lines.append(f"    C, _ = cross_entropy_value({last}, target)")
        return "\n".join([*lines, f"    return C, {last}, None", ""])
    lines.append("    # the loss's derivative ∂C/∂aᴸ at the upstream gradient of loss.backward(), g = 1")
    if loss == "mse":
        lines.append(f"    grad_{last} = mse_gradient(upstream_one({last}.dtype, {last}.device), {last}, target)")
    else:
        lines += [
            f"    if kernels.chosen_for({last}):  # on a GPU: C and ∂C/∂aᴸ in one kernel",
            f"        C, grad_{last} = kernels.cross_entropy.cross_entropy({last}, target, None, -100, 0.0, 'mean')",
            "    else:",
            f"        C, log_probs = cross_entropy_value({last}, target)",
            f"        grad_{last} = one_hot_gradient_at_one(target, log_probs)",
            "        del log_probs",
        ]
    lines += backward_lines(layers, needs, lambda n: f"b{n} is not None")
    gradients = ", ".join(f"grad_W{n}, grad_b{n}" for n in range(1, count + 1))
    return "\n".join([*lines, f"    return C, {last}, (grad_a0, None, None, None, {gradients})", ""])


def layer_needs(needs_input_grad):
    """Each layer's ``(∂C/∂aˡ⁻¹, ∂C/∂Wˡ, ∂C/∂bˡ)`` to compute, from ``MLPLoss``'s ``ctx.needs_input_grad`` (x, the
    target, the loss's and activations' names, W¹, b¹, …): every hidden layer's input does (the layers below need
    it), x only if it asks. None where nothing needs a gradient. Made once per pattern, by ``MLPLoss.program``."""
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
