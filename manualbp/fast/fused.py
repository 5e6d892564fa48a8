"""A Linear layer and the activation after it as one Function, and a chain of such layers as one Function: the
reference tier's backward passes, one node."""

import functools

import torch

from manualbp.autograd import Linear, ReLU, Sigmoid, Tanh
from manualbp.fast import kernels
from manualbp.fast.activation import times_derivative
from manualbp.fast.program import backward_lines, compile_program, forward_lines, layers_of

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
        return *gradients(grad_output, x, weight, a, ctx.activation, ctx.has_bias, ctx.needs_input_grad[:3]), None

    @staticmethod
    def jvp(ctx, x_tangent, weight_tangent, bias_tangent, _):
        x, weight, a = ctx.saved_tensors
        # the reference derivations in the forward order: ż through the linear map, then ȧ = f′(z)·ż
        z_tangent = Linear.tangent(x_tangent, weight_tangent, bias_tangent, x, weight)
        return times_derivative(ctx.activation, z_tangent, a)


def gradients(grad_output, x, weight, a, activation, has_bias, needs_input_grad):
    """``(∂C/∂x, ∂C/∂W, ∂C/∂b)`` of a = f(x Wᵀ + b) from g = ∂C/∂a, each None where ``needs_input_grad`` does not ask
    for it: ``LinearActivation``'s backward, and each fused layer's in ``LinearChain``. ``activation`` None: a Linear
    layer alone (δ = g)."""
    if activation is None:
        return Linear.gradients(grad_output, x, weight, has_bias, needs_input_grad)
    needs_x_grad, needs_weight_grad, needs_bias_grad = needs_input_grad
    if has_bias and needs_bias_grad and kernels.chosen_for_backward(grad_output):
        # on a GPU: δ and ∂C/∂b = Σ_rows δ in one pass of one kernel, then Linear's two products with δ for g
        delta, grad_bias = kernels.activation.times_derivative_and_column_sum(grad_output, a, activation)
        grad_x, grad_weight, _ = Linear.gradients(delta, x, weight, False, (needs_x_grad, needs_weight_grad, False))
        return grad_x, grad_weight, grad_bias
    # the reference derivations, in the backward order: δ = g ⊙ f′(z), then Linear's gradients with δ for g
    delta = times_derivative(activation, grad_output, a)
    return Linear.gradients(delta, x, weight, has_bias, needs_input_grad)


class LinearChain(torch.autograd.Function):
    r"""aᴸ = f_L(⋯ f_1(x W¹ᵀ + b¹) ⋯): consecutive Linear layers, each followed by ``ReLU``, ``Sigmoid``, ``Tanh``
    or nothing, as one Function: what ``manualbp.nn.Sequential`` runs for a run of such modules in eager mode.

    The forward pass is each layer's ``Linear.forward`` and activation (``LinearActivation.forward``'s two steps),
    and the backward pass each layer's ``LinearActivation`` backward (t · f′, then ``Linear.gradients``; on a GPU
    ``gradients``, its one-kernel δ and Σ δ), last layer first, the ∂C/∂aˡ⁻¹ of one the g of the next: the chain
    rule through the network, as the engine would run it through one node per layer, with the same operations in
    the same order, and so the same bits. Both passes are written out for the network at hand (``program``), as
    ``MLPLoss``'s are. What the one node saves is the engine's round trip into Python for every layer but one, each
    way (``benchmarks/chain.py``, BENCHMARKS.md). It keeps what the per-layer nodes would (x, every aˡ, and each Wˡ
    that a ∂C/∂aˡ⁻¹ needs), no more.

    The hidden aˡ are made inside the node, so they have no autograd history of their own: a double backward
    (``create_graph=True``) differentiates the per-layer nodes instead, run again from x. The chain has no ``jvp``
    and is for plain eager mode only (``manualbp.fast.sequential`` runs the layers one by one elsewhere).

    Shapes: x: ``(N, n₀)``; ``activations``: one name or None per layer (a tuple); ``parameters``: W¹, b¹, W², …
    (a bias may be None); aᴸ: ``(N, n_L)``.
    """

    @staticmethod
    def forward(ctx, x, activations, *parameters):
        # the layers, written out for this network (``LinearChain.program``), and what their backward passes keep
        ctx.program = LinearChain.program(activations, ctx.needs_input_grad)  # looked up once, for both passes
        output, saved = ctx.program["forward"](x, *parameters)
        ctx.save_for_backward(*saved)
        ctx.activations = activations
        ctx.parameters = parameters  # for a double backward only, which runs the layers again
        return output

    @staticmethod
    def backward(ctx, grad_output):
        if torch.is_grad_enabled():  # create_graph=True: the hidden aˡ have no history here, the per-layer nodes do
            return LinearChain.through_layers(ctx, grad_output)
        # on a GPU each layer's δ and Σ δ come out of one kernel (``gradients``): the program's other backward
        backward = ctx.program["backward_on_gpu" if kernels.chosen_for_backward(grad_output) else "backward"]
        return backward(grad_output, *ctx.saved_tensors)

    @staticmethod
    @functools.lru_cache(maxsize=256)
    def program(activations, needs_input_grad):
        """The chain's forward and backward passes written out for one network, as ``manualbp.fast.program`` writes
        ``MLPLoss``'s: ``forward(x, W1, b1, W2, …)`` → ``(aᴸ, saved)``, each layer's ``Linear.forward`` and
        activation, and what the backward keeps; ``backward(g, *saved)`` → the node's gradients, each layer's
        t · f′ and ``Linear.gradients``, last layer first, down to the lowest layer that anything asks a gradient of
        (``needs_input_grad``: the node's). ``backward_on_gpu`` is the same with each layer's backward as one call of
        ``gradients`` (its one-kernel δ and Σ δ on a GPU). The same operations as the per-layer nodes, in their
        order: the same bits; written out, a call pays no loop (2–3 % of a training step at 784-30-10, batches 10 and
        100: BENCHMARKS.md). Made once for each network and pattern of needs (the last 256 are kept);
        ``inspect.getsource`` shows it::

            program = LinearChain.program(("sigmoid", "sigmoid"), (False, False) + (True,) * 4)
            print(inspect.getsource(program["forward"]), inspect.getsource(program["backward"]))
        """
        if any(name is not None and name not in ACTIVATIONS for name in activations):
            raise ValueError(f"LinearChain: activations must be {', '.join(ACTIVATIONS)} or None, got {activations}")
        layers = layers_of(activations)
        if len(needs_input_grad) != 2 + 2 * len(layers):
            raise ValueError(
                f"LinearChain: {len(layers)} activations need {2 * len(layers)} parameters (W¹, b¹, …), "
                f"got {len(needs_input_grad) - 2}"
            )
        namespace = {"Linear": Linear, "gradients": gradients}
        namespace.update({f"f{index}": layer for index, layer in enumerate(layers, 1)})
        source = _chain_source(layers, needs_input_grad)
        return compile_program(source, namespace, "fused.LinearChain.program")

    @staticmethod
    def through_layers(ctx, grad_output):
        """``backward``'s result by autograd through the per-layer nodes (``LinearActivation``, ``Linear``) run
        again from x: differentiable, for a double backward."""
        x, parameters = ctx.saved_tensors[0], ctx.parameters
        inputs = [x, *parameters]
        needs = [
            need and tensor is not None
            for tensor, need in zip(inputs, (ctx.needs_input_grad[0], *ctx.needs_input_grad[2:]), strict=True)
        ]
        with torch.enable_grad():
            a = x
            for n, activation in enumerate(ctx.activations):
                weight, bias = parameters[2 * n], parameters[2 * n + 1]
                if activation is None:
                    a = Linear.apply(a, weight, bias)
                else:
                    a = LinearActivation.apply(a, weight, bias, activation)
            wanted = [tensor for tensor, need in zip(inputs, needs, strict=True) if need]
            grads = iter(torch.autograd.grad(a, wanted, grad_output, create_graph=True))
        grad_x, *grad_parameters = [next(grads) if need else None for need in needs]
        return grad_x, None, *grad_parameters


def _chain_source(layers, needs_input_grad):
    """``LinearChain.program``'s source, where ``f1``, ``f2``, … name each layer's ``manualbp.fast.program.Layer``.
    The backward keeps what the per-layer nodes would: x, every aˡ (the next layer's input, f_l′'s operand; aᴸ only
    where an f′ follows), and each Wˡ that a ∂C/∂aˡ⁻¹ needs (W¹ only where x needs a gradient)."""
    count = len(layers)
    needs_x_grad, needs = needs_input_grad[0], needs_input_grad[2:]
    parameters = ", ".join(f"W{n}, b{n}" for n in range(1, count + 1))
    kept = [f"a{n}" for n in range(count)] + [f"a{count}" if layers[-1].activate is not None else "None"]
    kept += ["W1" if needs_x_grad else "None"] + [f"W{n}" for n in range(2, count + 1)]
    saved = ", ".join([*(f"a{n}" for n in range(count + 1)), *(f"W{n}" for n in range(1, count + 1))])  # or None
    forward = [
        f"def forward(x, {parameters}):",
        *forward_lines(layers),
        f"    return a{count}, ({', '.join(kept)})",
    ]
    # whether anything at layer n or below asks for a gradient: the chain rule stops at the lowest such layer
    wanted = [needs_x_grad]
    for n in range(count):
        wanted.append(wanted[-1] or needs[2 * n] or needs[2 * n + 1])
    layer_needs = [(wanted[n], needs[2 * n], needs[2 * n + 1]) if wanted[n + 1] else None for n in range(count)]
    parameter_grads = ", ".join(
        f"grad_W{n}, grad_b{n}" if layer_needs[n - 1] is not None else "None, None" for n in range(1, count + 1)
    )
    returned = f"    return {'grad_a0' if needs_x_grad else 'None'}, None, {parameter_grads}"

    def has_bias(n):  # as Linear.gradients reads it: whether ∂C/∂bˡ is taken (a bias that is None needs none)
        return repr(needs[2 * n - 1])

    backward = []
    for name, one_call in (("backward", False), ("backward_on_gpu", True)):
        backward += [
            "",
            f"def {name}(grad_a{count}, {saved}):",
            *backward_lines(layers, layer_needs, has_bias, one_call),
            returned,
        ]
    return "\n".join([*forward, *backward, ""])
