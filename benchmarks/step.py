"""Training step: zero_grad, forward, loss, backward and an SGD step of one MLP, manualbp's layers against torch.nn's.

    python benchmarks/step.py [--device cuda] [--compile] [--quick]

Every variant starts from the same initial weights (the trainer's ``build_mlp``, seed 0) and trains on the same
random batch; the only difference is whose Functions compute the forward and backward passes:

- per-layer: torch.nn's model converted by ``manualbp.convert`` (a node per layer, each Linear and its activation
  fused: what a user's own model gets), and manualbp's loss;
- one-node MLP: ``manualbp.nn.MLP``, whose forward is one node (``manualbp.functional.mlp``: the whole network's
  backward as one loop), and manualbp's loss;
- MLP + loss: the network and its loss as one node, ``manualbp.functional.mlp_loss`` (every gradient computed in the
  forward pass);
- torch.nn.
"""

import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import _harness  # noqa: E402

import manualbp  # noqa: E402
from manualbp import functional as manual_functional  # noqa: E402
from manualbp import nn as mnn  # noqa: E402
from manualbp_trainer.networks import build_mlp  # noqa: E402

# (layer sizes, hidden activation, loss, batch size); the MSE networks end in a sigmoid, as in Nielsen's book
CASES = [
    ((784, 256, 10), "relu", "cross-entropy", 64),
    ((784, 256, 10), "relu", "cross-entropy", 100),
    ((784, 30, 10), "sigmoid", "mse", 10),
    ((784, 30, 10), "sigmoid", "mse", 100),
    ((784, 1024, 1024, 10), "tanh", "cross-entropy", 512),
    ((128, 128, 128, 10), "relu", "cross-entropy", 4096),
]
QUICK_CASES = [((784, 30, 10), "sigmoid", "mse", 10), ((64, 32, 10), "relu", "cross-entropy", 16)]


def make_case(sizes, activation, loss, batch_size, layers, device):
    """``(model, x, target, cost)``: the network as the trainer's ``build_mlp`` builds it (seed 0), a fixed random
    batch, and ``cost(output)``, its loss. ``layers``: ``"manual"`` for torch.nn's model converted by
    ``manualbp.convert`` (the per-layer path), ``"mlp"`` for ``manualbp.nn.MLP`` (its forward one node),
    ``"torch"`` for torch.nn's; the cost is manualbp's loss for the first two."""
    output_activation = "sigmoid" if loss == "mse" else None
    model = build_mlp(list(sizes), activation, output_activation, "manual" if layers == "mlp" else "torch")
    model = (manualbp.convert(model) if layers == "manual" else model).to(device)
    functional = torch.nn.functional if layers == "torch" else manual_functional
    x, target = make_batch(sizes, loss, batch_size, device)
    loss_function = functional.mse_loss if loss == "mse" else functional.cross_entropy
    return model, x, target, lambda output: loss_function(output, target)


def make_batch(sizes, loss, batch_size, device):
    """``(x, target)``: the fixed random batch of every case (seed 0), the target one-hot for MSE and class
    indices for cross-entropy."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batch_size, sizes[0], generator=generator).to(device)
    labels = torch.randint(0, sizes[-1], (batch_size,), generator=generator).to(device)
    return x, torch.nn.functional.one_hot(labels, sizes[-1]).float() if loss == "mse" else labels


def make_step(sizes, activation, loss, batch_size, layers, device, compile=False):
    """A function that runs one training step of the given network on a fixed random batch; ``layers`` is
    ``"manual"`` (the converted model, per layer), ``"torch"``, ``"mlp"`` (``manualbp.nn.MLP``, its forward one
    ``manualbp.functional.mlp`` node) or ``"mlp_loss"`` (the model and its loss as one ``manualbp.functional.mlp_loss``
    node)."""
    model, x, target, cost = make_case(
        sizes, activation, loss, batch_size, "mlp" if layers == "mlp_loss" else layers, device
    )
    parameters = layers_of(model) if layers == "mlp_loss" else None  # once: SGD updates the very same tensors

    def forward():
        if layers == "mlp_loss":
            return manual_functional.mlp_loss(x, target, *parameters, loss)
        return cost(model(x))

    return training_step(model, torch.compile(forward, fullgraph=True) if compile else forward)


def layers_of(model, activation_modules=None):
    """``(weights, biases, activations)`` of a Sequential of Linear layers and activations, as
    ``manualbp.functional.mlp`` takes them; ``activation_modules``: the activations' module classes by name
    (default: ``manualbp.nn.ACTIVATIONS``)."""
    names = {module: name for name, module in (activation_modules or mnn.ACTIVATIONS).items()}
    weights, biases, activations = [], [], []
    for module in model:
        if isinstance(module, torch.nn.Linear):
            weights.append(module.weight)
            biases.append(module.bias)
            activations.append(None)
        else:
            activations[-1] = names[type(module)]
    return weights, biases, activations


def training_step(model, forward, **options):
    """One step of SGD with momentum on ``model``'s parameters, ``forward()`` giving the loss; ``options`` are
    ``torch.optim.SGD``'s beyond lr 0.01 and momentum 0.9. The step is zero_grad, forward and loss, backward, SGD
    step, in that order (as issue #21 times it): clearing the last gradients after the forward pass instead would
    keep two sets alive while ``mlp_loss``'s forward computes the new ones (BENCHMARKS.md has both orders)."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, **options)

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = forward()
        loss.backward()
        optimizer.step()

    return step


CASE_HEADER = ["network", "activation", "loss", "batch"]


def case_cells(sizes, activation, loss, batch_size):
    """The first cells of a table row for one case, under ``CASE_HEADER``."""
    return ["-".join(map(str, sizes)), activation, loss, batch_size]


def main(argv=None):
    parser = _harness.parser(__doc__.split("\n\n")[0])
    parser.add_argument("--compile", action="store_true", help="forward and loss through torch.compile, both variants")
    args = parser.parse_args(argv)
    device, rounds, min_run_time = _harness.timing(args)
    rows = []
    for sizes, activation, loss, batch_size in QUICK_CASES if args.quick else CASES:
        if args.compile:
            torch._dynamo.reset()  # a fresh cache per case: the recompile limit counts all graphs
        steps = {
            layers: make_step(sizes, activation, loss, batch_size, layers, device, args.compile)
            for layers in ("manual", "torch", "mlp", "mlp_loss")
        }
        times = _harness.compare(steps, device, rounds, min_run_time)
        rows.append(
            [
                *case_cells(sizes, activation, loss, batch_size),
                _harness.microseconds(times["manual"]),
                _harness.microseconds(times["torch"]),
                _harness.format_ratio(times["manual"], times["torch"]),
                _harness.microseconds(times["mlp"]),
                _harness.format_ratio(times["mlp"], times["torch"]),
                _harness.microseconds(times["mlp_loss"]),
                _harness.format_ratio(times["mlp_loss"], times["torch"]),
            ]
        )
    header = [
        *CASE_HEADER,
        "per-layer µs",
        "torch.nn µs",
        "per-layer ratio (IQR)",
        "one-node MLP µs",
        "MLP ratio (IQR)",
    ]
    header += ["MLP + loss µs", "MLP + loss ratio (IQR)"]
    command = _harness.command("step.py", args)
    command += " --compile" if args.compile else ""
    mode = "torch.compile" if args.compile else "eager"
    title = f"Training step (forward, loss, backward, SGD), {mode}"
    _harness.report(title, device, command, _harness.table(header, rows))


if __name__ == "__main__":
    main()
