"""Running a ``Sequential`` with each Linear and the ReLU, Sigmoid or Tanh after it as one fused node, and a run of
such layers as one node."""

import torch

from manualbp.fast.call import plain_eager
from manualbp.fast.fused import LinearChain
from manualbp.fast.torch_internals import any_autocast_enabled, global_module_hooks, hooked, parameter

# what an operation of the chain raises for an operand it refuses; the layers one by one then name it, in one line
_REFUSED = (RuntimeError, ValueError, IndexError, TypeError)


def forward(sequential, input, linear_class, activations, linear_activation):
    """``sequential(input)``, each unhooked module of type ``linear_class`` followed by an unhooked activation module
    whose type is a key of ``activations`` (its value: ``"relu"``, ``"sigmoid"`` or ``"tanh"``) run as one node,
    ``linear_activation(input, weight, bias, name)``, and a run of two or more such layers (a Linear with or without
    its activation) as one ``LinearChain`` node where ``chain`` can take it; everything else module by module
    through ``Module.__call__``, hooks and all.
    """
    # a global module hook fires for every module, and an input that is not a tensor (torch.fx's Proxy, which
    # records each module call) must meet every module: then run them one by one
    if global_module_hooks() or not isinstance(input, torch.Tensor):
        return torch.nn.Sequential.forward(sequential, input)
    layers = []  # the run of unhooked layers not yet called: [Linear module, activation name or None]
    for module in sequential._modules.values():
        if layers and layers[-1][1] is None:
            name = activations.get(type(module))
            if name is not None and not hooked(module):
                layers[-1][1] = name
                continue
        if type(module) is linear_class and not hooked(module):
            layers.append([module, None])
            continue
        input = module(_run(layers, input, linear_activation) if layers else input)
        layers = []
    return _run(layers, input, linear_activation) if layers else input


def _run(layers, input, linear_activation):
    """The output of a run of layers (``forward``'s ``layers``): one ``LinearChain`` node where ``chain`` takes it,
    else each layer as its own node (its module, or ``linear_activation``)."""
    if len(layers) > 1 and input.dim() == 2 and plain_eager() and not any_autocast_enabled() and _keeps_x(layers):
        output = chain(input, layers)
        if output is not None:
            return output
    for module, name in layers:
        if name is None:
            input = module(input)
        else:
            input = linear_activation(input, parameter(module, "weight"), parameter(module, "bias"), name)
    return input


def chain(input, layers):
    """``LinearChain``'s aᴸ for a 2-D input and ``layers`` (``[Linear module, activation name or None]`` each),
    checking only what its ``addmm`` calls do not refuse by themselves (a bias they would broadcast, a meta tensor
    among tensors on another device); None where the layers must run one by one instead (and so name what is wrong
    with an operand). For plain eager mode without autocast (``LinearChain`` has no jvp, and autocast casts each
    layer's operands)."""
    parameters, activations = [], []
    for module, name in layers:
        weight, bias = parameter(module, "weight"), parameter(module, "bias")
        if bias is not None and bias.shape != weight.shape[:1]:
            return None
        if not (input.is_cpu and weight.is_cpu and (bias is None or bias.is_cpu)) and not _one_device(
            input, weight, bias
        ):
            return None
        parameters += (weight, bias)
        activations.append(name)
    try:
        return LinearChain.apply(input, tuple(activations), *parameters)
    except _REFUSED:
        return None


def _keeps_x(layers):
    """Whether ``LinearChain`` would keep no more than the layers one by one: it keeps x (to run them again in a double
    backward) and the layers keep it only for the first ∂C/∂W; where that is not taken (a frozen first layer, in a
    training step) the layers run one by one."""
    weight = parameter(layers[0][0], "weight")
    return weight.requires_grad or not torch.is_grad_enabled()


def _one_device(input, weight, bias):
    return weight.device == input.device and (bias is None or bias.device == input.device)
