"""Running a ``Sequential`` with each Linear and the ReLU, Sigmoid or Tanh after it as one fused node."""

import torch


def forward(sequential, input, linear_class, activations, linear_activation):
    """``sequential(input)``, each unhooked module of type ``linear_class`` followed by an unhooked activation module
    whose type is a key of ``activations`` (its value: ``"relu"``, ``"sigmoid"`` or ``"tanh"``) run as one node,
    ``linear_activation(input, weight, bias, name)``; everything else module by module through
    ``Module.__call__``, hooks and all.
    """
    # a global module hook fires for every module, and an input that is not a tensor (torch.fx's Proxy, which
    # records each module call) must meet every module: then run them one by one
    if _global_hooks() or not isinstance(input, torch.Tensor):
        return torch.nn.Sequential.forward(sequential, input)
    pending = None  # a Linear layer, held back until we see whether an activation follows it
    for module in sequential._modules.values():
        if pending is not None:
            activation = activations.get(type(module))
            if activation is not None and not _hooked(pending) and not _hooked(module):
                input = linear_activation(input, pending.weight, pending.bias, activation)
                pending = None
                continue
            input = pending(input)
            pending = None
        if type(module) is linear_class:
            pending = module
        else:
            input = module(input)
    return input if pending is None else pending(input)


# Private torch state, read only here: the module-global hook dicts that torch.nn's register_module_*_hook
# functions fill, and each module's own hook dicts. PyTorch has no public "does calling this module run a hook?";
# fusing two modules into one node is sound only when neither would.
_GLOBAL_HOOKS = tuple(
    getattr(torch.nn.modules.module, name, {})
    for name in (
        "_global_forward_hooks",
        "_global_forward_pre_hooks",
        "_global_backward_hooks",
        "_global_backward_pre_hooks",
        "_global_forward_hooks_always_called",
    )
)


def _global_hooks():
    return any(_GLOBAL_HOOKS)


def _hooked(module):
    """Whether calling this module could run a hook of its own."""
    return bool(
        module._forward_hooks or module._forward_pre_hooks or module._backward_hooks or module._backward_pre_hooks
    )
