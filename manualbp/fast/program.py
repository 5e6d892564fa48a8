"""A network's loop over its layers written out once per network, one line per operation: the straight-line programs
that ``MLPLoss`` (the network and its loss) and ``LinearChain`` (a Sequential's run of layers) run.

The reference's backprop loop (``MLP.gradients``) pays on every call for its bookkeeping: lists of the layers'
outputs, indices, each activation looked up by name, a Python call for each layer's derivation. For a small network
that is a few percent of a training step. So a node that runs a whole network writes the loop out for the network
at hand, once: Python source that calls the very functions the loop would call, in its order (the same bits),
compiled and kept per network (``functools.lru_cache`` in each caller). ``inspect.getsource`` prints a program and a
traceback shows its line.
"""

import functools
import itertools
import linecache
from typing import NamedTuple

from manualbp import autograd
from manualbp.fast.activation import KERNELS, times_derivative


class Layer(NamedTuple):
    """What a program needs of a layer's activation, looked up once per network (``layers_of``)."""

    name: object  # the activation's name ("relu", …), or None for no activation
    activate: object  # z ↦ a = f(z), the reference activation's forward; None for no activation
    times_derivative: object  # (t, kept) ↦ t · f′(z), by one kernel where there is one; None for no activation
    keeps_z: bool  # whether f′ is computed from z rather than from a, as the reference's ``keep`` says


def layers_of(activations):
    """One ``Layer`` per name of ``activations`` (a tuple: ``"relu"``, …, or None), made once for each network: the
    names' lookups, which cost a few microseconds a layer in every call, are done here."""
    return tuple(_layer(name) for name in activations)


def _layer(name):
    if name is None:
        return Layer(None, None, None, False)
    function, options = autograd.mlp.ACTIVATIONS[name]
    kernel = KERNELS.get(name)  # ReLU's, sigmoid's and tanh's t · f′ in one pass (see manualbp.fast.activation)
    return Layer(
        name=name,
        activate=functools.partial(_activate, function, options) if options else function.forward,
        times_derivative=kernel or functools.partial(_times_derivative, name, options),
        keeps_z=autograd.mlp._keeps_z(name),  # the reference's own answer, from its keep
    )


def _activate(function, options, z):
    return function.forward(z, *options)


def _times_derivative(name, options, t, kept):
    return times_derivative(name, t, kept, *options)


def forward_lines(layers):
    """The lines of the forward pass, zˡ = aˡ⁻¹ Wˡᵀ + bˡ (``Linear.forward``) and aˡ = f_l(zˡ), from ``a0`` = ``x``
    to ``a{L}``, where ``W1``, ``b1``, … are the parameters and ``f1``, ``f2``, … name each layer's ``Layer``. zˡ is
    deleted where f′ reads a."""
    lines = ["    # forward, layer by layer: zˡ = aˡ⁻¹ Wˡᵀ + bˡ, aˡ = f_l(zˡ)", "    a0 = x"]
    for n, layer in enumerate(layers, 1):
        if layer.activate is None:
            lines.append(f"    a{n} = Linear.forward(a{n - 1}, W{n}, b{n})")
            continue
        lines.append(f"    z{n} = Linear.forward(a{n - 1}, W{n}, b{n})")
        lines.append(f"    a{n} = f{n}.activate(z{n})")
        if not layer.keeps_z:  # f′ reads a: z is done with
            lines.append(f"    del z{n}")
    return lines


def backward_lines(layers, needs, has_bias, one_call=False):
    """The lines of the backward pass from ``grad_a{L}`` = ∂C/∂aᴸ down, the four equations layer by layer:

        δˡ = ∂C/∂aˡ ⊙ f_l′(zˡ)        (the activation's t · f′)
        ∂C/∂aˡ⁻¹ = δˡ Wˡ,  ∂C/∂Wˡ = δˡᵀ aˡ⁻¹,  ∂C/∂bˡ = Σ_rows δˡ        (``Linear.gradients``, with δˡ for g)

    each leaving ``grad_a{l-1}``, ``grad_W{l}`` and ``grad_b{l}``. ``needs``: per layer, ``(∂C/∂aˡ⁻¹, ∂C/∂Wˡ,
    ∂C/∂bˡ)`` to compute, or None for a layer that nothing asks of (neither it nor any below it: the lines stop
    above it); ``has_bias(n)``: the expression of whether layer n has a bias. ``one_call``: each layer with an
    activation as one call of ``gradients`` (``fast.fused.gradients``, which has the GPU's one-kernel δ and Σ δ)
    instead of its two steps. Each ``del`` frees a tensor once nothing below reads it, as autograd frees a node's
    saved tensors during the backward pass."""
    count = len(layers)
    comment = "back through every layer: δˡ = ∂C/∂aˡ ⊙ f_l′(zˡ); ∂C/∂aˡ⁻¹ = δˡ Wˡ, ∂C/∂Wˡ = δˡᵀ aˡ⁻¹, ∂C/∂bˡ = Σ δˡ"
    lines = [f"    # {comment}"]
    for n in range(count, 0, -1):
        layer, layer_needs = layers[n - 1], needs[n - 1]
        if layer_needs is None:
            break
        outputs = f"grad_a{n - 1}, grad_W{n}, grad_b{n}"
        later = f", a{n}" if n < count else ""  # aˡ: layer l + 1's input, f_l′'s operand
        if layer.times_derivative is None:
            lines.append(f"    {outputs} = Linear.gradients(grad_a{n}, a{n - 1}, W{n}, {has_bias(n)}, {layer_needs})")
            lines.append(f"    del grad_a{n}{later}")
            continue
        kept = f"z{n}" if layer.keeps_z else f"a{n}"
        done = f"grad_a{n}" + (f", z{n}" if layer.keeps_z else "")  # f′'s operands, once δˡ is made
        if one_call:
            lines.append(
                f"    {outputs} = gradients(grad_a{n}, a{n - 1}, W{n}, {kept}, {layer.name!r}, {has_bias(n)}, "
                f"{layer_needs})"
            )
            lines.append(f"    del {done}{later}")
            continue
        lines.append(f"    delta{n} = f{n}.times_derivative(grad_a{n}, {kept})")
        lines.append(f"    del {done}")
        lines.append(f"    {outputs} = Linear.gradients(delta{n}, a{n - 1}, W{n}, {has_bias(n)}, {layer_needs})")
        lines.append(f"    del delta{n}{later}")
    return lines


def compile_program(source, namespace, kind):
    """``namespace`` with the functions that ``source`` defines; ``kind`` names the program in tracebacks, and the
    source is kept in ``linecache`` for them and for ``inspect.getsource``."""
    filename = f"<manualbp.fast.{kind} {next(_programs)}>"  # one name per program
    linecache.cache[filename] = (len(source), None, source.splitlines(keepends=True), filename)
    exec(compile(source, filename, "exec"), namespace)
    return namespace


_programs = itertools.count()
