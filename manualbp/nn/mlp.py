"""``MLP``: a multilayer perceptron whose forward pass is one node, and whose loss is one node with it."""

import torch

from manualbp import functional as F
from manualbp.fast.torch_internals import global_module_hooks, hooked, parameter
from manualbp.functional.linear import LOSSES
from manualbp.nn.activation import ACTIVATIONS
from manualbp.nn.container import Sequential
from manualbp.nn.linear import Linear

__all__ = ["MLP"]


class MLP(Sequential):
    r"""Linear layers with an activation after each hidden one: aᴸ = f_L(W_L ⋯ f(W_1 x + b_1) ⋯ + b_L).

    ``model(x)`` runs the whole network as one autograd node (``manualbp.functional.mlp``: its backward is the
    textbook's backpropagation loop); ``model.loss(x, target)`` runs the network *and its loss* as one node
    (``manualbp.functional.mlp_loss``), whose gradients are computed in the forward pass, so that
    ``loss.backward()`` only hands them to the parameters. Both give the gradients of the layers called one by
    one, to the bit.

    The modules are a ``Sequential`` of ``manualbp.nn.Linear`` and activation modules, so the parameters and the
    ``state_dict`` are those of the same ``torch.nn.Sequential`` (keys ``0.weight``, ``0.bias``, ``2.weight``, …):
    a checkpoint loads into plain torch.nn and back. A module with a hook (or a global module hook) makes the
    network run module by module, so that every hook fires.

    Args:
        sizes: the widths n₀, n₁, …, n_L of the input, every hidden layer and the output (at least two).
        activation: the hidden layers' activation, a name in ``manualbp.nn.ACTIVATIONS`` (``"relu"``,
            ``"leaky-relu"``, ``"sigmoid"``, ``"tanh"``, ``"gelu"``). Default: ``"relu"``.
        output_activation: None (default: the output is the logits) or a name, after the last layer.
        bias: if False, no layer learns an additive bias. Default: True.
        device, dtype: where and in what precision to create the parameters.

    Shape:
        - Input: ``(*, n₀)``.
        - Output: ``(*, n_L)``.

    Examples::

        >>> model = manualbp.nn.MLP([784, 30, 10], activation="sigmoid")
        >>> model.loss(torch.randn(8, 784), torch.randint(10, (8,))).shape
        torch.Size([])
    """

    def __init__(self, sizes, activation="relu", output_activation=None, bias=True, device=None, dtype=None):
        sizes = list(sizes)
        if len(sizes) < 2 or not all(isinstance(size, int) and size > 0 for size in sizes):
            raise ValueError(f"MLP: sizes must be at least two positive ints (input, ..., output), got {sizes}")
        for name in (activation, output_activation):
            if name is not None and name not in ACTIVATIONS:
                raise ValueError(f"MLP: activation must be one of {sorted(ACTIVATIONS)} or None, got {name!r}")
        if activation is None:
            raise ValueError("MLP: the hidden layers need an activation (without one the network is one linear map)")
        modules, activations = [], []
        for layer, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
            modules.append(Linear(n_in, n_out, bias=bias, device=device, dtype=dtype))
            name = activation if layer < len(sizes) - 2 else output_activation
            if name is not None:
                modules.append(ACTIVATIONS[name]())
            activations.append(name)
        super().__init__(*modules)
        self.activations = tuple(activations)

    def forward(self, input):
        if self._module_by_module(input):
            return super().forward(input)
        return F.mlp(input, *self._parameters_by_layer(), self.activations)

    def loss(self, input, target, loss="cross-entropy", return_output=False):
        """C = ``loss``(model(input), target): ``"cross-entropy"`` (class indices, the mean) or ``"mse"`` (targets
        shaped like the output, the mean), with the network as one node; with ``return_output``, ``(C, output)``,
        the output detached. See ``manualbp.functional.mlp_loss``."""
        if self._module_by_module(input) and loss in LOSSES:
            output = super().forward(input)
            value = LOSSES[loss](output, target)
            return (value, output.detach()) if return_output else value
        return F.mlp_loss(input, target, *self._parameters_by_layer(), self.activations, loss, return_output)

    def _parameters_by_layer(self):
        linears = [module for module in self if isinstance(module, Linear)]
        return [parameter(linear, "weight") for linear in linears], [parameter(linear, "bias") for linear in linears]

    def _module_by_module(self, input):
        """Whether to run module by module: a hook must fire, or the input is not a tensor (torch.fx's Proxy)."""
        return not isinstance(input, torch.Tensor) or global_module_hooks() or any(map(hooked, self))
