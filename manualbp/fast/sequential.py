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
    modules, names, parameters = [], [], []  # the run of unhooked layers not yet called, and their W and b
    for module in sequential._modules.values():
        kind = type(module)
        if names and names[-1] is None and kind in activations and not hooked(module):
            names[-1] = activations[kind]
            continue
        if kind is linear_class and not hooked(module):
            modules.append(module)
            names.append(None)
            parameters += (parameter(module, "weight"), parameter(module, "bias"))
            continue
        if modules:
            input = _run(input, modules, names, parameters, linear_activation)
            modules, names, parameters = [], [], []
        input = module(input)
    return _run(input, modules, names, parameters, linear_activation) if modules else input


def _run(input, modules, names, parameters, linear_activation):
    """The output of a run of layers (``forward``'s ``modules``, their activations' ``names``, None for none, and
    their ``parameters`` W¹, b¹, W², …): one ``LinearChain`` node where ``chain`` takes it, else each layer as its
    own node (its module, or ``linear_activation``)."""
    if len(modules) > 1:
        output = chain(input, names, parameters)
        if output is not None:
            return output
    for n, (module, name) in enumerate(zip(modules, names, strict=True)):
        if name is None:
            input = module(input)
        else:
            input = linear_activation(input, parameters[2 * n], parameters[2 * n + 1], name)
    return input


def chain(input, names, parameters):
    """``LinearChain``'s aᴸ for a 2-D input, its layers' activation ``names`` and ``parameters``, in plain eager mode
    without autocast (``LinearChain`` has no jvp, and autocast casts each layer's operands), checking only what its
    ``addmm`` calls do not refuse by themselves (a bias they would broadcast, a meta tensor among tensors on another
    device); None where the layers must run one by one instead (and so name what is wrong with an operand), and where
    the chain would keep more than they would (``_keeps_x``)."""
    if input.dim() != 2 or any_autocast_enabled() or not plain_eager() or not _keeps_x(parameters[0]):
        return None
    on_cpu = input.is_cpu
    for weight, bias in zip(parameters[::2], parameters[1::2], strict=True):
        if bias is not None and bias.shape != weight.shape[:1]:
            return None
        if not (on_cpu and weight.is_cpu and (bias is None or bias.is_cpu)) and not _one_device(input, weight, bias):
            return None
    try:
        return LinearChain.apply(input, tuple(names), *parameters)
    except _REFUSED:
        return None


def _keeps_x(weight):
    """Whether ``LinearChain`` would keep no more than the layers one by one: it keeps x (to run them again in a double
    backward) and the layers keep it only for the first ∂C/∂W; where that is not taken (a frozen first layer, in a
    training step) the layers run one by one."""
    return weight.requires_grad or not torch.is_grad_enabled()


def _one_device(input, weight, bias):
    return weight.device == input.device and (bias is None or bias.device == input.device)
