"""``Sequential``: ``torch.nn.Sequential``, with each Linear and its activation run as one autograd node."""

import torch

from manualbp import fast
from manualbp import functional as F
from manualbp.functional.linear import _linear_chain
from manualbp.nn.activation import ACTIVATIONS
from manualbp.nn.linear import Linear
from manualbp.nn.module import HandDerived

__all__ = ["Sequential"]

# the activation modules LinearActivation fuses with the Linear layer before them, by their registry names
FUSABLE = {ACTIVATIONS[name]: name for name in fast.ACTIVATIONS}


class Sequential(HandDerived, torch.nn.Sequential):
    r"""``torch.nn.Sequential`` that runs each manualbp ``Linear`` followed by a manualbp ``ReLU``, ``Sigmoid`` or
    ``Tanh`` as one Function, ``manualbp.functional.linear_activation`` (the fast tier's ``LinearActivation``), and
    in eager mode a run of two or more such layers (a Linear with or without its activation) on a 2-D input as one
    Function, the fast tier's ``LinearChain``, whose backward is each layer's, last first.

    The results and gradients are those of calling the modules one after the other, to the bit (the fused Functions
    run the reference tier's very code); what changes is fewer nodes in the autograd graph, each a round trip into
    Python per pass, which is most of manualbp's per-layer cost at small sizes (``BENCHMARKS.md``). The modules,
    their order, the parameters and the ``state_dict`` are exactly ``torch.nn.Sequential``'s. A module that carries
    hooks, or anything else, runs as a module, as in ``torch.nn.Sequential``, so every hook still fires.

    Examples::

        >>> mnn = manualbp.nn
        >>> model = mnn.Sequential(mnn.Linear(784, 30), mnn.Sigmoid(), mnn.Linear(30, 10))
        >>> model(torch.randn(8, 784)).shape  # Linear + Sigmoid and the last Linear ran as one Function
        torch.Size([8, 10])
    """

    def forward(self, input):
        return fast.sequential.forward(self, input, Linear, FUSABLE, F.linear_activation, _linear_chain)
