"""Drop-in ``torch.nn`` modules whose gradients come from manualbp's hand-derived backward passes.

Each class subclasses its ``torch.nn`` twin, so constructor arguments, defaults, initialisation (same seed, same
weights), parameter names, ``state_dict``, ``repr`` and ``isinstance`` checks are PyTorch's own. Only
``forward`` changes: it calls ``manualbp.functional``, whose Functions hold the math. The modules add none.
"""

import torch

from manualbp import functional as F

__all__ = ["ACTIVATIONS", "GELU", "CrossEntropyLoss", "LeakyReLU", "Linear", "MSELoss", "ReLU", "Sequential", "Sigmoid", "Tanh"]


class Linear(torch.nn.Linear):
    r"""z = x Wᵀ + b, with the backward pass ∂C/∂x = g W, ∂C/∂W = gᵀ x, ∂C/∂b = Σ g derived by hand.

    Args:
        in_features: size of each input example.
        out_features: size of each output example.
        bias: if False, the layer learns no additive bias. Default: True.
        device, dtype: where and in what precision to create the parameters.

    Shape:
        - Input: ``(*, in_features)``, any number of leading dimensions.
        - Output: ``(*, out_features)``.

    Attributes:
        weight: ``(out_features, in_features)``, initialised from U(−√k, √k) with k = 1/in_features
            (``torch.nn.Linear``'s kaiming-uniform, a = √5).
        bias: ``(out_features,)``, initialised from U(−√k, √k).

    Examples::

        >>> layer = manualbp.nn.Linear(20, 30)
        >>> layer(torch.randn(128, 20)).shape
        torch.Size([128, 30])
    """

    def forward(self, input):
        return F.linear(input, self.weight, self.bias)


class ReLU(torch.nn.ReLU):
    r"""a = max(z, 0), with f′(z) = [z > 0].

    Args:
        inplace: also write the result into the input, as ``torch.nn.ReLU`` does. Default: False.

    Shape: input and output ``(*)``.

    Examples::

        >>> manualbp.nn.ReLU()(torch.tensor([-1.0, 2.0]))
        tensor([0., 2.])
    """

    def forward(self, input):
        return F.relu(input, inplace=self.inplace)


class LeakyReLU(torch.nn.LeakyReLU):
    r"""a = z if z > 0 else s·z, with f′(z) = 1 if z > 0 else s.

    Args:
        negative_slope: the slope s for z ≤ 0. Default: 0.01.
        inplace: also write the result into the input. Default: False.

    Shape: input and output ``(*)``.

    Examples::

        >>> manualbp.nn.LeakyReLU(0.1)(torch.tensor([-1.0, 2.0]))
        tensor([-0.1000,  2.0000])
    """

    def forward(self, input):
        return F.leaky_relu(input, self.negative_slope, inplace=self.inplace)


class Sigmoid(torch.nn.Sigmoid):
    r"""a = σ(z) = 1 / (1 + e⁻ᶻ), with f′(z) = a(1 − a).

    Shape: input and output ``(*)``.

    Examples::

        >>> manualbp.nn.Sigmoid()(torch.zeros(2))
        tensor([0.5000, 0.5000])
    """

    def forward(self, input):
        return F.sigmoid(input)


class Tanh(torch.nn.Tanh):
    r"""a = tanh(z), with f′(z) = 1 − a².

    Shape: input and output ``(*)``.

    Examples::

        >>> manualbp.nn.Tanh()(torch.zeros(2))
        tensor([0., 0.])
    """

    def forward(self, input):
        return F.tanh(input)


class GELU(torch.nn.GELU):
    r"""a = z·Φ(z), with f′(z) = Φ(z) + z·φ(z) (or the derivative of the tanh approximation).

    Args:
        approximate: ``"none"`` (default) for the exact erf form, ``"tanh"`` for the tanh approximation.

    Shape: input and output ``(*)``.

    Examples::

        >>> manualbp.nn.GELU(approximate="tanh")(torch.zeros(2))
        tensor([0., 0.])
    """

    def forward(self, input):
        return F.gelu(input, approximate=self.approximate)


# the activations by the names the trainer's --activation flag uses
ACTIVATIONS = {"relu": ReLU, "leaky-relu": LeakyReLU, "sigmoid": Sigmoid, "tanh": Tanh, "gelu": GELU}


class MSELoss(torch.nn.MSELoss):
    r"""The quadratic cost C = Σ(a − y)² (``reduction="sum"``) or its mean (default), with ∂C/∂a = 2(a − y).

    Args:
        size_average, reduce: deprecated, as in PyTorch; use ``reduction``.
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"``.

    Shape: input ``(*)``; target the same shape; output ``()``, or ``(*)`` for ``"none"``.

    Examples::

        >>> manualbp.nn.MSELoss(reduction="sum")(torch.tensor([1.0, 2.0]), torch.tensor([0.0, 0.0]))
        tensor(5.)
    """

    def forward(self, input, target):
        return F.mse_loss(input, target, reduction=self.reduction)


class CrossEntropyLoss(torch.nn.CrossEntropyLoss):
    r"""Softmax cross-entropy from logits, with ∂C/∂z = softmax(z) − onehot(y) (divided by N for the mean).

    Args:
        weight: optional per-class weights, ``(C,)``.
        size_average, reduce: deprecated, as in PyTorch; use ``reduction``.
        ignore_index: a target value that counts for nothing. Default: −100.
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"``.
        label_smoothing: ε in [0, 1]. Default: 0.

    Shape: input ``(C,)``, ``(N, C)`` or ``(N, C, d₁, …)``; target ``()``, ``(N,)`` or ``(N, d₁, …)`` of class
    indices; output ``()``, or the target's shape for ``"none"``.

    Examples::

        >>> loss = manualbp.nn.CrossEntropyLoss()
        >>> loss(torch.zeros(2, 4), torch.tensor([0, 3]))  # log 4
        tensor(1.3863)
    """

    def forward(self, input, target):
        return F.cross_entropy(
            input,
            target,
            weight=self.weight,
            ignore_index=self.ignore_index,
            reduction=self.reduction,
            label_smoothing=self.label_smoothing,
        )


class Sequential(torch.nn.Sequential):
    r"""``torch.nn.Sequential`` that runs each manualbp ``Linear`` followed by a manualbp ``ReLU``, ``Sigmoid`` or
    ``Tanh`` as one Function, ``manualbp.functional.linear_activation``.

    The results and gradients are those of calling the two modules one after the other (the fused Function runs
    their very code); what changes is one node fewer in the autograd graph per such pair, which is most of
    manualbp's per-layer cost at small sizes (``BENCHMARKS.md``). The modules, their order, the parameters and
    the ``state_dict`` are exactly ``torch.nn.Sequential``'s. A pair whose modules carry hooks, or anything else,
    runs module by module as in ``torch.nn.Sequential``, so every hook still fires.

    Examples::

        >>> mnn = manualbp.nn
        >>> model = mnn.Sequential(mnn.Linear(784, 30), mnn.Sigmoid(), mnn.Linear(30, 10))
        >>> model(torch.randn(8, 784)).shape  # Linear + Sigmoid ran as one Function, then the last Linear
        torch.Size([8, 10])
    """

    def forward(self, input):
        if any(_GLOBAL_HOOKS):  # a global module hook fires for every module: run them one by one
            return super().forward(input)
        pending = None  # a Linear layer, held back until we see whether an activation follows it
        for module in self._modules.values():
            if pending is not None:
                activation = _FUSABLE.get(type(module))
                if activation is not None and not _hooked(pending) and not _hooked(module):
                    input = F._linear_activation(input, pending.weight, pending.bias, activation)
                    pending = None
                    continue
                input = _call(pending, input)
                pending = None
            if type(module) is Linear:
                pending = module
            else:
                input = module(input)
        return input if pending is None else _call(pending, input)


_FUSABLE = {ReLU: "relu", Sigmoid: "sigmoid", Tanh: "tanh"}
# the global module hooks, dicts that torch.nn's register_module_*_hook functions fill in place
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


def _hooked(module):
    """Whether calling this module could run a hook of its own."""
    return bool(
        module._forward_hooks or module._forward_pre_hooks or module._backward_hooks or module._backward_pre_hooks
    )


def _call(linear, input):
    """``linear(input)``: straight to its functional form when no hook can fire (``nn.Module.__call__`` would do
    nothing else here, at ~1 µs a call)."""
    return linear(input) if _hooked(linear) else F.linear(input, linear.weight, linear.bias)
