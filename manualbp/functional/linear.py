"""The linear map and what is built from it: ``linear``, ``linear_activation`` (fused), ``mlp`` (one node) and
``mlp_loss`` (the network and its loss, one node)."""

import math

import torch

from manualbp import autograd, fast
from manualbp.fast.torch_internals import any_autocast_enabled
from manualbp.functional._checks import OPERAND_ERRORS, _autocast_enabled, _check_same, _check_tensors, _one_device
from manualbp.functional.loss import cross_entropy, mse_loss

__all__ = ["linear", "linear_activation", "mlp", "mlp_loss"]


def linear(input, weight, bias=None):
    """z = x Wᵀ + b. See ``manualbp.autograd.Linear`` for the derivation.

    Args:
        input: ``(*, in_features)``.
        weight: ``(out_features, in_features)``.
        bias: ``(out_features,)`` or None.

    Returns:
        ``(*, out_features)``.

    A 1-D weight ``(in_features,)`` is one neuron, as in ``torch.nn.functional.linear``: the output is then
    ``(*)``, and a bias must be a 0-D tensor (on a 1-D input only, as in PyTorch). A bias of shape ``()`` or
    ``(1,)`` is broadcast over the outputs, as PyTorch broadcasts it.
    """
    try:
        if _takes_unchecked(input, weight, bias):  # the common case: the node's own operations check the rest
            return fast.linear(input, weight, bias)
    except OPERAND_ERRORS:  # an operation refused an operand: the checks below name it, in one line
        pass
    try:
        if weight.dim() == 1:
            if bias is not None and (bias.dim() != 0 or input.dim() != 1):
                raise RuntimeError(
                    f"linear: with a 1-D weight, a bias must be 0-D and the input 1-D, got bias of shape "
                    f"{tuple(bias.shape)} and input of shape {tuple(input.shape)}"
                )
            row = weight.unsqueeze(0)  # one neuron: a (1, in_features) weight, then its output dimension dropped
            bias = None if bias is None else bias.unsqueeze(0)
            return _on_rows(fast.linear, *_linear_operands("linear", input, row, bias)).squeeze(-1)
        return _on_rows(fast.linear, *_linear_operands("linear", input, weight, bias))
    except AttributeError:  # costs nothing unless raised: a non-tensor argument is torch's TypeError
        _check_tensors("linear", ("input", "weight"), input=input, weight=weight, bias=bias)
        raise


def linear_activation(input, weight, bias=None, activation="relu"):
    """a = f(x Wᵀ + b) as one Function, for f = ``"relu"``, ``"sigmoid"`` or ``"tanh"``: the result and gradients
    of ``relu(linear(input, weight, bias))`` (and so on), with one node in the autograd graph rather than two.
    See ``manualbp.fast.LinearActivation``.
    """
    try:
        if _takes_unchecked(input, weight, bias):  # the common case: the node's own operations check the rest
            return fast.linear_activation(input, weight, bias, activation)
    except OPERAND_ERRORS:  # an operation refused an operand: the checks below name it, in one line
        pass
    if activation not in fast.ACTIVATIONS:
        raise ValueError(f"linear_activation: activation must be one of {sorted(fast.ACTIVATIONS)}, got {activation!r}")
    try:
        operands = _linear_operands("linear_activation", input, weight, bias)
    except AttributeError:
        _check_tensors("linear_activation", ("input", "weight"), input=input, weight=weight, bias=bias)
        raise
    return _on_rows(fast.linear_activation, *operands, activation)


def _linear_chain(input, weights, biases, activations):
    """``fast.LinearChain``'s aᴸ for ``manualbp.nn.Sequential``'s run of Linear layers (``activations``: ``"relu"``,
    ``"sigmoid"``, ``"tanh"`` or None each), in plain eager mode without autocast (the chain has no jvp, and autocast
    casts each layer's operands), with only the checks its ``addmm`` calls do not make (``_unchecked_parameters``);
    None where the layers must run one by one instead: an operand that an operation refused (their checks name it,
    in one line), and a frozen first layer in a training step, whose x the layers do not keep and the chain would
    (to run them again in a double backward)."""
    if any_autocast_enabled() or not fast.plain_eager():
        return None
    if torch.is_grad_enabled() and not weights[0].requires_grad:
        return None
    parameters = _unchecked_parameters(input, weights, biases)
    if parameters is None:
        return None
    try:
        return fast.LinearChain.apply(input, activations, *parameters)
    except OPERAND_ERRORS:
        return None


def mlp(input, weights, biases, activations):
    """aᴸ = f_L(⋯ f_1(x W₁ᵀ + b₁) ⋯): a whole multilayer perceptron as one Function, one autograd node, whose
    backward is the textbook backpropagation loop. See ``manualbp.autograd.MLP``.

    The outputs and gradients are those of ``linear`` and the activations called layer by layer, to the bit.

    Args:
        input: ``(*, n₀)``.
        weights: one ``(n_l, n_{l−1})`` tensor per layer.
        biases: one ``(n_l,)`` tensor (or None) per layer.
        activations: one name per layer, ``"relu"``, ``"leaky-relu"`` (slope 0.01), ``"sigmoid"``, ``"tanh"`` or
            ``"gelu"``, or None for no activation (a last layer giving logits, say).

    Returns:
        ``(*, n_L)``.
    """
    weights, biases, activations = list(weights), list(biases), tuple(activations)
    try:
        # under autocast the checks cast every operand outside the node, as for linear; under compile Dynamo traces them
        unchecked = not (any_autocast_enabled() or torch.compiler.is_compiling())
        parameters = _unchecked_parameters(input, weights, biases) if unchecked else None
        if parameters is not None:  # the common case: the node's own operations check the rest
            return fast.mlp(input, activations, *parameters)[0]
    except OPERAND_ERRORS:  # an operation refused an operand: the checks below name it, in one line
        pass
    input, parameters, activations = _mlp_operands("mlp", input, weights, biases, activations)
    width = parameters[-2].shape[0]
    rows = input if input.dim() == 2 else input.reshape(math.prod(input.shape[:-1]), input.shape[-1])
    output = fast.mlp(rows, activations, *parameters)[0]
    return output if input.dim() == 2 else output.reshape(*input.shape[:-1], width)


# the losses mlp_loss takes, by name, as the two-node path computes them
LOSSES = {"cross-entropy": cross_entropy, "mse": mse_loss}


def mlp_loss(input, target, weights, biases, activations, loss="cross-entropy", return_output=False):
    """C = loss(aᴸ, y) for the network aᴸ = f_L(⋯ f_1(x W₁ᵀ + b₁) ⋯): the whole network and its loss as one
    autograd node, whose every gradient is computed in the forward pass by the four equations of backpropagation
    (see ``manualbp.fast.MLPLoss``, and ``docs/derivations.md``). ``loss.backward()`` then only hands them over.

    The loss and every gradient are those of ``mlp`` (or the layers one by one) followed by ``cross_entropy`` or
    ``mse_loss``, to the bit. Under ``torch.no_grad()`` (or with nothing requiring a gradient) no gradient is
    computed. Under torch.func transforms, torch.compile, forward-mode AD and autocast, and for a double backward,
    the same value and gradients come from the two nodes ``mlp`` and the loss, which support them.

    Args:
        input: ``(*, n₀)``.
        target: for ``"cross-entropy"``, int64 class indices in ``[0, n_L)`` of shape ``(*)``; for ``"mse"``,
            the output's shape ``(*, n_L)``.
        weights, biases, activations: as for ``mlp``.
        loss: ``"cross-entropy"`` (softmax cross-entropy of the logits aᴸ, the mean over the examples) or
            ``"mse"`` (the mean squared error over every element, as ``mse_loss``'s default).
        return_output: also return the network's output aᴸ, ``(*, n_L)``, detached (for an accuracy, say: every
            gradient comes from the loss).

    Returns:
        ``()``, the loss; with ``return_output``, ``(loss, output)``.
    """
    weights, biases, activations = list(weights), list(biases), tuple(activations)
    if torch.is_grad_enabled() and not any_autocast_enabled() and fast.plain_eager():
        # a training step: the one node, whose own operations check most of what they take (see _train_in_one_node)
        try:
            trained = _train_in_one_node(input, target, weights, biases, activations, loss)
        except OPERAND_ERRORS:  # an operation refused an operand: the checks of _checked_mlp_loss name it, in one line
            trained = None
        if trained is not None:
            return trained if return_output else trained[0]
    return _checked_mlp_loss(input, target, weights, biases, activations, loss, return_output)


def _train_in_one_node(input, target, weights, biases, activations, loss):
    """``fast.mlp_loss(...)``'s ``(C, aᴸ)`` for a 2-D input, checking only what no operation of the node refuses
    by itself; None where ``_checked_mlp_loss`` must run instead.

    The node's ATen operations raise for a weight of the wrong shape, dtype or device (``addmm``), an activation
    name (``layers_of``) or layer count (``MLPLoss.program``) that is wrong, a cross-entropy target of the wrong
    shape or out of bounds (``nll_loss``; −100, its ignore_index, then by the one-hot's ``scatter_add_``), and the
    caller then runs every check to name the operand in one line. What would pass them silently is checked here: a
    bias that ``addmm`` would broadcast, a meta tensor among tensors on another device (``addmm`` computes a meta
    result), an MSE target that ``mse_loss`` would broadcast or promote, a uint8 target (which ``nll_loss`` takes) or
    a 0-D one, and −100 where no gradient, so no scatter, is computed. Every check of
    ``_checked_mlp_loss`` costs a training step of a 784-30-10 network at batch 10 about 5 % (AMD EPYC, 2 threads);
    these and the call around them, 1.5–2 % (the public function against the node, one process)."""
    parameters = _unchecked_parameters(input, weights, biases)
    if parameters is None:
        return None
    if loss == "cross-entropy":
        if target.dtype is not torch.int64 or target.dim() != 1:
            return None
    elif loss != "mse" or target.dtype is not input.dtype or target.shape != (input.shape[0], weights[-1].shape[0]):
        return None
    value, output = fast.mlp_loss(input, target, loss, activations, *parameters)
    if loss == "cross-entropy" and not value.requires_grad and target.numel():
        span = fast.target_range(target)
        if span is not None and span[0] < 0:  # −100, which nll_loss ignores
            return None
    return value, output


def _unchecked_parameters(input, weights, biases):
    """W¹, b¹, W², … as the network's node takes them, for a 2-D input, with only the checks that its ``addmm`` calls
    do not make (see ``_train_in_one_node``): each bias ``(out_features,)`` or None, and no meta tensor among tensors
    on another device. None where ``_mlp_operands`` must check them (and name what is wrong)."""
    if input.dim() != 2 or not weights:
        return None
    parameters = []
    for weight, bias in zip(weights, biases, strict=True):
        if (bias is not None and bias.shape != (weight.shape[0],)) or not _one_device(input, weight, bias):
            return None
        parameters += (weight, bias)
    return parameters


def _checked_mlp_loss(input, target, weights, biases, activations, loss, return_output):
    """``mlp_loss`` with every operand checked first (a clear error for each), in every mode."""
    if loss not in LOSSES:
        raise ValueError(f"mlp_loss: loss must be one of {list(LOSSES)}, got {loss!r}")
    input, parameters, activations = _mlp_operands("mlp_loss", input, weights, biases, activations)
    _check_tensors("mlp_loss", ("input", "target"), input=input, target=target)
    width = parameters[-2].shape[0]
    rows = input if input.dim() == 2 else input.reshape(math.prod(input.shape[:-1]), input.shape[-1])
    if loss == "cross-entropy":
        if target.dtype is not torch.int64 or target.shape != input.shape[:-1]:
            raise RuntimeError(
                f"mlp_loss: cross-entropy targets must be int64 class indices of shape {tuple(input.shape[:-1])} "
                f"(one per example), got {target.dtype} of shape {tuple(target.shape)}"
            )
        target = target if rows is input else target.reshape(-1)  # one class index per row
        span = None if target.numel() == 0 else fast.target_range(target)
        if span is not None and not (span[0] >= 0 and span[1] < width):
            bad = target[(target < 0) | (target >= width)][0].item()
            raise IndexError(f"mlp_loss: target {bad} is out of bounds: class indices must lie in [0, {width})")
    elif target.shape != (*input.shape[:-1], width):
        raise ValueError(
            f"mlp_loss: mse targets must have the output's shape {(*input.shape[:-1], width)}, got "
            f"{tuple(target.shape)}"
        )
    elif rows is not input:
        target = target.reshape(rows.shape[0], width)
    if target.device != input.device:
        _check_same("mlp_loss", "device", input=input, target=target)
    if not torch.is_grad_enabled() or _autocast_enabled(input) or not fast.plain_eager():
        # no gradient to compute (the node would compute them: inside a Function, grad mode is always off), or a
        # mode the node cannot take: the network's node and the loss's
        output = fast.mlp(rows, activations, *parameters)[0]
        value = LOSSES[loss](output, target)
        output = output.detach()
    else:
        if loss == "mse" and target.dtype is not input.dtype:
            _check_same("mlp_loss", "dtype", input=input, target=target)
        value, output = fast.mlp_loss(rows, target, loss, activations, *parameters)
    if not return_output:
        return value
    return value, output if input.dim() == 2 else output.reshape(*input.shape[:-1], width)


def _mlp_operands(function, input, weights, biases, activations):
    """Check a network's operands (and cast them as autocast would); return ``(input, parameters, activations)``
    with ``parameters`` W¹, b¹, W², … as the Functions take them. One pass over the layers: this runs on every
    training step, where each microsecond is a share of a small network's step."""
    _check_tensors(function, input=input)
    weights, biases, activations = list(weights), list(biases), tuple(activations)
    if not weights or not len(weights) == len(biases) == len(activations):
        raise ValueError(
            f"{function}: weights, biases and activations need one entry per layer, got {len(weights)}, {len(biases)} "
            f"and {len(activations)}"
        )
    width = input.shape[-1] if input.dim() > 0 else None
    # alike: every parameter has the input's dtype and device (dtypes are singletons: `is` compares them; all on the
    # CPU is one device, found without building device objects)
    dtype, on_cpu, device = input.dtype, input.is_cpu, None if input.is_cpu else input.device
    parameters, alike = [], True
    for layer, (weight, bias, activation) in enumerate(zip(weights, biases, activations, strict=True)):
        if activation is not None and activation not in autograd.mlp.ACTIVATIONS:
            raise ValueError(
                f"{function}: activation {activation!r} is not one of {sorted(autograd.mlp.ACTIVATIONS)} (or None for "
                "none)"
            )
        if weight.dim() != 2 or weight.shape[1] != width:
            raise RuntimeError(
                f"{function}: layer {layer + 1}'s weight must be 2-D (out_features, {width}) to take "
                f"{'the input' if layer == 0 else f'layer {layer} output'} of width {width}, got shape "
                f"{tuple(weight.shape)}"
            )
        width = weight.shape[0]
        if bias is not None and bias.shape != (width,):
            raise RuntimeError(
                f"{function}: layer {layer + 1}'s bias must have shape ({width},), got {tuple(bias.shape)}"
            )
        alike = alike and weight.dtype is dtype and (weight.is_cpu if on_cpu else weight.device == device)
        alike = alike and (bias is None or (bias.dtype is dtype and (bias.is_cpu if on_cpu else bias.device == device)))
        parameters += (weight, bias)
    autocast = _autocast_enabled(input)
    if not autocast and alike:
        return input, parameters, activations  # the common case, found without naming every tensor
    tensors = {"input": input} | {f"weight {i + 1}": w for i, w in enumerate(weights)}
    tensors |= {f"bias {i + 1}": b for i, b in enumerate(biases) if b is not None}
    if autocast:  # as for linear: every operand in the autocast dtype, cast outside the Function
        dtype = torch.get_autocast_dtype(input.device.type)
        tensors = {name: t.to(dtype) for name, t in tensors.items()}
    _check_same(function, "dtype", **tensors)
    _check_same(function, "device", **tensors)
    parameters = [tensors.get(f"{kind} {i + 1}") for i in range(len(weights)) for kind in ("weight", "bias")]
    return tensors["input"], parameters, activations


def _takes_unchecked(input, weight, bias):
    """Whether a linear map's node can take its operands without ``_linear_operands``'s checks: a 2-D input and a
    bias that is absent or ``(out_features,)``, outside autocast (which casts them) and torch.compile.

    Every other check there is one that the node's ``addmm`` makes itself (a weight that is not 2-D or does not
    match the input's width, a dtype or device that differs), so the caller calls the node, and runs the checks only
    where it raised, to name the operand in one line. What ``addmm`` would take silently is tested here: a bias it
    would broadcast, an input of other than two dimensions (folded into rows by ``_on_rows``), and a meta tensor among
    tensors on another device (``addmm`` then returns a meta tensor). The checks cost 2.5 µs a layer (AMD EPYC), as
    long as the layer's forward at batch 10; this test 0.9 µs."""
    return (
        input.dim() == 2
        and (bias is None or bias.shape == weight.shape[:1])
        and _one_device(input, weight, bias)
        and not any_autocast_enabled()
        and not torch.compiler.is_compiling()
    )


def _on_rows(route, input, weight, *args):
    """``route(input, weight, *args)`` for an input ``(*, in_features)``: its leading dimensions folded into the
    rows of a matrix and unfolded again, as views outside the Function (so the output is the Function's own)."""
    if input.dim() == 2:
        return route(input, weight, *args)
    rows = input.reshape(math.prod(input.shape[:-1]), input.shape[-1])
    return route(rows, weight, *args).reshape(*input.shape[:-1], weight.shape[0])


def _linear_operands(function, input, weight, bias):
    """Check the operands of a linear map, and cast them as autocast would; return ``(input, weight, bias)``."""
    if weight.dim() != 2:
        raise RuntimeError(
            f"{function}: weight must be 2-D (out_features, in_features) or, for linear, 1-D (in_features,), got "
            f"shape {tuple(weight.shape)}"
        )
    if input.dim() == 0 or input.shape[-1] != weight.shape[1]:
        raise RuntimeError(
            f"{function}: input of shape {tuple(input.shape)} must end in in_features={weight.shape[1]} "
            f"to match weight of shape {tuple(weight.shape)}"
        )
    if bias is not None and bias.shape != (weight.shape[0],):  # torch.Size is a tuple: compared without a copy
        if tuple(bias.shape) not in ((), (1,)):
            raise RuntimeError(
                f"{function}: bias must have shape ({weight.shape[0]},) (or () or (1,), broadcast) to match weight "
                f"of shape {tuple(weight.shape)}, got {tuple(bias.shape)}"
            )
        bias = bias.expand(weight.shape[0])  # one number for every output: a view, whose backward sums ∂C/∂b
    if _autocast_enabled(input):
        # what autocast does for torch's own linear: cast every operand to the autocast dtype, as an
        # ordinary (differentiable) cast outside the Function, so the backward runs in that dtype too
        dtype = torch.get_autocast_dtype(input.device.type)
        input, weight = input.to(dtype), weight.to(dtype)
        bias = None if bias is None else bias.to(dtype)
    dtype = input.dtype  # dtypes are singletons: `is` compares them
    if weight.dtype is not dtype or (bias is not None and bias.dtype is not dtype):
        _check_same(function, "dtype", input=input, weight=weight, bias=bias)
    if not _one_device(input, weight, bias):
        _check_same(function, "device", input=input, weight=weight, bias=bias)
    return input, weight, bias
