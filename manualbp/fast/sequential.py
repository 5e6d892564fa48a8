"""Running a ``Sequential`` with each Linear and the ReLU, Sigmoid or Tanh after it as one fused node, and a run of
such layers as one node."""

import torch

from manualbp.fast.torch_internals import global_module_hooks, hooked, parameter


def forward(sequential, input, linear_class, activations, linear_activation, linear_chain):
    """``sequential(input)``, each unhooked module of type ``linear_class`` followed by an unhooked activation module
    whose type is a key of ``activations`` (its value: ``"relu"``, ``"sigmoid"`` or ``"tanh"``) run as one node,
    ``linear_activation(input, weight, bias, name)``, and a run of two or more such layers (a Linear with or without
    its activation) as one node, ``linear_chain(input, weights, biases, names)`` (a ``LinearChain``; None where it
    declines, and the layers run one by one); everything else module by module through ``Module.__call__``, hooks and
    all.
    """
    # a global module hook fires for every module, and an input that is not a tensor (torch.fx's Proxy, which
    # records each module call) must meet every module: then run them one by one
    if global_module_hooks() or not isinstance(input, torch.Tensor):
        return torch.nn.Sequential.forward(sequential, input)
    modules, names, weights, biases = [], [], [], []  # the run of unhooked layers not yet called, and their W and b
    for module in sequential._modules.values():
        kind = type(module)
        if names and names[-1] is None and kind in activations and not hooked(module):
            names[-1] = activations[kind]
            continue
        if kind is linear_class and not hooked(module):
            modules.append(module)
            names.append(None)
            weights.append(parameter(module, "weight"))
            biases.append(parameter(module, "bias"))
            continue
        if modules:
            input = _run(input, modules, names, weights, biases, linear_activation, linear_chain)
            modules, names, weights, biases = [], [], [], []
        input = module(input)
    return _run(input, modules, names, weights, biases, linear_activation, linear_chain) if modules else input


def _run(input, modules, names, weights, biases, linear_activation, linear_chain):
    """The output of a run of layers (``forward``'s ``modules``, their activations' ``names``, None for none, their
    ``weights`` and ``biases``): one node where ``linear_chain`` takes it, else each layer as its own node (its
    module, or ``linear_activation``)."""
    if len(modules) > 1:
        output = linear_chain(input, weights, biases, tuple(names))
        if output is not None:
            return output
    for module, name, weight, bias in zip(modules, names, weights, biases, strict=True):
        input = module(input) if name is None else linear_activation(input, weight, bias, name)
    return input
