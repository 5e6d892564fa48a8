"""The element-wise activations a = f(z), drop-in twins of ``torch.nn``'s."""

import torch

from manualbp import functional as F
from manualbp.nn.module import HandDerived

__all__ = ["ACTIVATIONS", "GELU", "LeakyReLU", "LogSoftmax", "ReLU", "Sigmoid", "Softmax", "Tanh"]


class ReLU(HandDerived, torch.nn.ReLU):
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


class LeakyReLU(HandDerived, torch.nn.LeakyReLU):
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


class Sigmoid(HandDerived, torch.nn.Sigmoid):
    r"""a = σ(z) = 1 / (1 + e⁻ᶻ), with f′(z) = a(1 − a).

    Shape: input and output ``(*)``.

    Examples::

        >>> manualbp.nn.Sigmoid()(torch.zeros(2))
        tensor([0.5000, 0.5000])
    """

    def forward(self, input):
        return F.sigmoid(input)


class Tanh(HandDerived, torch.nn.Tanh):
    r"""a = tanh(z), with f′(z) = 1 − a².

    Shape: input and output ``(*)``.

    Examples::

        >>> manualbp.nn.Tanh()(torch.zeros(2))
        tensor([0., 0.])
    """

    def forward(self, input):
        return F.tanh(input)


class GELU(HandDerived, torch.nn.GELU):
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


# the activation modules by name: the one registry (the trainer's --activation flag uses these names)
ACTIVATIONS = {"relu": ReLU, "leaky-relu": LeakyReLU, "sigmoid": Sigmoid, "tanh": Tanh, "gelu": GELU}


class Softmax(HandDerived, torch.nn.Softmax):
    r"""p = softmax(z) along ``dim``, with ∂C/∂z = p ⊙ (g − Σ g·p).

    Args:
        dim: the dimension normalised over (None: PyTorch's deprecated implicit choice, with its warning).

    Shape: input and output ``(*)``.

    Examples::

        >>> manualbp.nn.Softmax(dim=-1)(torch.zeros(2))
        tensor([0.5000, 0.5000])
    """

    def forward(self, input):
        return F.softmax(input, self.dim, _stacklevel=5)


class LogSoftmax(HandDerived, torch.nn.LogSoftmax):
    r"""ℓ = log softmax(z) along ``dim``, with ∂C/∂z = g − p Σg.

    Args:
        dim: the dimension normalised over (None: PyTorch's deprecated implicit choice, with its warning).

    Shape: input and output ``(*)``.

    Examples::

        >>> manualbp.nn.LogSoftmax(dim=-1)(torch.zeros(2))
        tensor([-0.6931, -0.6931])
    """

    def forward(self, input):
        return F.log_softmax(input, self.dim, _stacklevel=5)
