"""Where eager time goes: each layer of a training step on its own, and the fixed cost of a Python Function.

    python benchmarks/overhead.py [--device cuda] [--quick]

Two tables. The first times forward + backward of every layer of a network at the shapes it has in the training
step (the first Linear's input needs no gradient, as in training), manualbp against torch.nn, so the gap of a
whole step can be read layer by layer. The second isolates what any Python ``torch.autograd.Function`` costs
beyond a built-in operation that does the same arithmetic (``neg`` forward, ``neg`` backward): in the classic
form that manualbp calls in eager mode, and in the ``setup_context`` form, whose every call PyTorch binds with
``inspect.signature``.
"""

import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import _harness  # noqa: E402
import step  # noqa: E402

from manualbp import functional as manual_functional  # noqa: E402
from manualbp.autograd.function import classic  # noqa: E402

QUICK_CASES = [((784, 30, 10), "sigmoid", "mse", 10)]
LAYERS = ("manual", "torch")
CASES = [((784, 30, 10), "sigmoid", "mse", 10), ((784, 256, 10), "relu", "cross-entropy", 100)]


class Negate(torch.autograd.Function):
    """The smallest Function: one built-in operation forward, one backward."""

    @staticmethod
    def forward(x):
        return x.neg()

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def backward(ctx, grad_output):
        return grad_output.neg()


def layer_passes(sizes, activation, loss, batch_size, functional, device):
    """``{layer name: function running its forward and backward}`` at the shapes of the training step."""
    generator = torch.Generator().manual_seed(0)

    def randn(*shape, grad=False):
        return torch.randn(*shape, generator=generator).to(device).requires_grad_(grad)

    passes = {}
    activate = getattr(functional, activation.replace("-", "_"))
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=False)):
        x = randn(batch_size, fan_in, grad=i > 0)
        weight, bias = randn(fan_out, fan_in, grad=True), randn(fan_out, grad=True)
        z, grad_output = randn(batch_size, fan_out, grad=True), randn(batch_size, fan_out)
        passes[f"Linear {fan_in}→{fan_out}"] = lambda x=x, w=weight, b=bias, g=grad_output: functional.linear(
            x, w, b
        ).backward(g)
        if i < len(sizes) - 2 or loss == "mse":
            name = activation if i < len(sizes) - 2 else "sigmoid"
            f = activate if i < len(sizes) - 2 else functional.sigmoid
            passes[f"{name} ({batch_size}×{fan_out})"] = lambda z=z, g=grad_output, f=f: f(z).backward(g)
    logits = randn(batch_size, sizes[-1], grad=True)
    if loss == "mse":
        target = randn(batch_size, sizes[-1])
        passes[f"mse_loss ({batch_size}×{sizes[-1]})"] = lambda: functional.mse_loss(logits, target).backward()
    else:
        labels = torch.randint(0, sizes[-1], (batch_size,), generator=generator).to(device)
        passes[f"cross_entropy ({batch_size}×{sizes[-1]})"] = lambda: functional.cross_entropy(
            logits, labels
        ).backward()
    return passes


def main(argv=None):
    args = _harness.parser(__doc__.splitlines()[0]).parse_args(argv)
    device = _harness.check_device(args)
    rounds = args.rounds or (2 if args.quick else 7)
    min_run_time = 0.01 if args.quick else 0.2
    command = "python benchmarks/overhead.py" + (f" --device {args.device}" if args.device != "cpu" else "")

    rows = []
    for sizes, activation, loss, batch_size in QUICK_CASES if args.quick else CASES:
        network = f"{'-'.join(map(str, sizes))} {activation}, {loss}, batch {batch_size}"
        manual = layer_passes(sizes, activation, loss, batch_size, manual_functional, device)
        builtin = layer_passes(sizes, activation, loss, batch_size, torch.nn.functional, device)
        whole = {layers: step.make_step(sizes, activation, loss, batch_size, layers, device) for layers in LAYERS}
        times = _harness.compare(whole, device, rounds, min_run_time)
        gap = _harness.median_difference(times["manual"], times["torch"])
        for name in manual:
            pair = {"manual": manual[name], "torch": builtin[name]}
            layer_times = _harness.compare(pair, device, rounds, min_run_time)
            rows.append(
                [
                    network,
                    name,
                    _harness.microseconds(layer_times["manual"]),
                    _harness.microseconds(layer_times["torch"]),
                    f"{_harness.median_difference(layer_times['manual'], layer_times['torch']) * 1e6:+.1f}",
                ]
            )
        rows.append(
            [
                network,
                "**whole training step**",
                _harness.microseconds(times["manual"]),
                _harness.microseconds(times["torch"]),
                f"**{gap * 1e6:+.1f}**",
            ]
        )
    header = ["network", "layer (forward + backward)", "manualbp µs", "torch.nn µs", "difference µs"]
    _harness.report("Where the eager time goes, layer by layer", device, command, _harness.table(header, rows))

    x = torch.randn(10, 30, device=device, requires_grad=True)
    grad_output = torch.randn(10, 30, device=device)
    variants = {
        "built-in `neg`": lambda: x.neg().backward(grad_output),
        "classic-form Function (what manualbp calls)": lambda: classic(Negate).apply(x).backward(grad_output),
        "setup_context-form Function, `.apply`": lambda: Negate.apply(x).backward(grad_output),
    }
    times = _harness.compare(variants, device, rounds, min_run_time)
    reference = times["built-in `neg`"]
    rows = [
        [name, _harness.microseconds(values), f"{_harness.median_difference(values, reference) * 1e6:+.1f}"]
        for name, values in times.items()
    ]
    header = ["one (10×30) operation, forward + backward", "µs", "beyond the built-in, µs"]
    _harness.report("The fixed cost of a Python autograd Function", device, command, _harness.table(header, rows))


if __name__ == "__main__":
    main()
