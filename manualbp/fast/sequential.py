"""Running a ``Sequential`` with each Linear and the ReLU, Sigmoid or Tanh after it as one fused node."""

import torch

from manualbp.fast.torch_internals import global_module_hooks, hooked, parameter


def forward(sequential, input, linear_class, activations, linear_activation):
    """``sequential(input)``, each unhooked module of type ``linear_class`` followed by an unhooked activation module
    whose type is a key of ``activations`` (its value: ``"relu"``, ``"sigmoid"`` or ``"tanh"``) run as one node,
    ``linear_activation(input, weight, bias, name)``; everything else module by module through
    ``Module.__call__``, hooks and all.
    """
    # a global module hook fires for every module, and an input that is not a tensor (torch.fx's Proxy, which
    # records each module call) must meet every module: then run them one by one
    if global_module_hooks() or not isinstance(input, torch.Tensor):
        return torch.nn.Sequential.forward(sequential, input)
    pending = None  # a Linear layer, held back until we see whether an activation follows it
    for module in sequential._modules.values():
        if pending is not None:
            activation = activations.get(type(module))
            if activation is not None and not hooked(pending) and not hooked(module):
                input = linear_activation(input, parameter(pending, "weight"), parameter(pending, "bias"), activation)
                pending = None
                continue
            input = pending(input)
            pending = None
        if type(module) is linear_class:
            pending = module
        else:
            input = module(input)
    return input if pending is None else pending(input)
