"""The multilayer perceptron the trainer builds, from manualbp's layers or torch.nn's."""

import torch

import manualbp
from manualbp import nn as mnn


def build_mlp(
    sizes, activation="relu", output_activation=None, layers="manual", init="default", seed=0, dtype=torch.float32
):
    """``Sequential(Linear, f, Linear, f, …, Linear[, output f])`` over ``sizes`` (e.g. ``[784, 256, 10]``).

    Args:
        activation: a name in ``manualbp.nn.ACTIVATIONS``, after every hidden layer.
        output_activation: None, or a name in ``manualbp.nn.ACTIVATIONS`` after the last layer (the sigmoid output of
            "Neural Networks and Deep Learning").
        layers: ``"manual"`` for manualbp's layers, ``"torch"`` for ``torch.nn``'s. Both draw the same initial
            weights, so the two train side by side from the same start.
        init: ``"default"`` for ``torch.nn.Linear``'s initialisation, ``"normal"`` for weights and biases drawn
            from N(0, 1), as in the book.
        seed: seeds the initial weights (and nothing else).

    The state_dict keys are those of ``torch.nn.Sequential``: ``"0.weight"``, ``"0.bias"``, ``"2.weight"``, …
    (manualbp's model is a ``manualbp.nn.Sequential``, which fuses each Linear with its activation; torch.nn's is
    a plain ``torch.nn.Sequential``.)
    """
    with torch.random.fork_rng(devices=[]):  # seed the weights, and leave the caller's random stream as it was
        torch.manual_seed(seed)
        modules = []
        for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
            modules.append(mnn.Linear(fan_in, fan_out, dtype=dtype))
            if i < len(sizes) - 2:
                modules.append(mnn.ACTIVATIONS[activation]())
            elif output_activation is not None:
                modules.append(mnn.ACTIVATIONS[output_activation]())
        model = mnn.Sequential(*modules)  # each Linear and its activation run as one Function
        if init == "normal":
            with torch.no_grad():
                for parameter in model.parameters():
                    parameter.normal_(0.0, 1.0)
    return model if layers == "manual" else manualbp.convert(model, to="torch")


def linear_layers(model):
    """``(name, module)`` for every Linear layer, manualbp's or torch.nn's, in order."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
