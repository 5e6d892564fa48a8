"""Layer grid: forward + backward of each manualbp layer against its torch.nn twin, over batch sizes and widths.

    python benchmarks/layers.py [--device cuda] [--quick]

Each cell is the median ratio manualbp / torch.nn of one forward and backward pass (the upstream gradient is a
fixed random tensor, so the backward does the same work as in a network); below 1 means manualbp is faster.
Linear layers are square (width → width); the losses see ``width`` classes or outputs.
"""

import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import _harness  # noqa: E402

import manualbp.nn as mnn  # noqa: E402

BATCHES = (1, 64, 4096)
WIDTHS = (10, 256, 4096)
QUICK_BATCHES, QUICK_WIDTHS = (1, 64), (10, 32)
LAYERS = {
    "Linear": lambda width: (mnn.Linear(width, width), torch.nn.Linear(width, width)),
    "ReLU": lambda width: (mnn.ReLU(), torch.nn.ReLU()),
    "LeakyReLU": lambda width: (mnn.LeakyReLU(), torch.nn.LeakyReLU()),
    "Sigmoid": lambda width: (mnn.Sigmoid(), torch.nn.Sigmoid()),
    "Tanh": lambda width: (mnn.Tanh(), torch.nn.Tanh()),
    "GELU": lambda width: (mnn.GELU(), torch.nn.GELU()),
    "MSELoss": lambda width: (mnn.MSELoss(), torch.nn.MSELoss()),
    "CrossEntropyLoss": lambda width: (mnn.CrossEntropyLoss(), torch.nn.CrossEntropyLoss()),
}


def make_pass(name, module, batch, width, device, compile=False):
    """One forward and backward pass of ``module`` on fixed random inputs."""
    module = module.to(device)
    if compile:
        module = torch.compile(module, fullgraph=True)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batch, width, generator=generator).to(device).requires_grad_()
    if name == "MSELoss":
        target = torch.randn(batch, width, generator=generator).to(device)
        return lambda: module(x, target).backward()
    if name == "CrossEntropyLoss":
        target = torch.randint(0, width, (batch,), generator=generator).to(device)
        return lambda: module(x, target).backward()
    grad_output = torch.randn(batch, width, generator=generator).to(device)
    return lambda: module(x).backward(grad_output)


def main(argv=None):
    parser = _harness.parser(__doc__.split("\n\n")[0])
    parser.add_argument("--compile", action="store_true", help="each layer through torch.compile, both variants")
    parser.add_argument("--layers", nargs="+", choices=list(LAYERS), default=list(LAYERS), help="(default: all)")
    args = parser.parse_args(argv)
    device = _harness.check_device(args)
    batches, widths = (QUICK_BATCHES, QUICK_WIDTHS) if args.quick else (BATCHES, WIDTHS)
    rounds = args.rounds or (2 if args.quick else 5)
    min_run_time = 0.01 if args.quick else 0.05
    rows = []
    for name in args.layers:
        make = LAYERS[name]
        for batch in batches:
            cells = []
            for width in widths:
                if args.compile:
                    torch._dynamo.reset()  # a fresh cache per case: the recompile limit counts all graphs
                manual, reference = make(width)
                passes = {
                    "manual": make_pass(name, manual, batch, width, device, args.compile),
                    "torch": make_pass(name, reference, batch, width, device, args.compile),
                }
                times = _harness.compare(passes, device, rounds, min_run_time)
                cells.append(
                    f"{_harness.format_ratio(times['manual'], times['torch'])}, "
                    f"{_harness.microseconds(times['torch'])} µs"
                )
            rows.append([name, batch, *cells])
    header = ["layer", "batch", *(f"width {width}: ratio (IQR), torch.nn time" for width in widths)]
    command = _harness.command("layers.py", args)
    command += " --compile" if args.compile else ""
    command += "" if args.layers == list(LAYERS) else " --layers " + " ".join(args.layers)
    title = "Layer grid (forward + backward), " + ("torch.compile" if args.compile else "eager")
    _harness.report(title, device, command, _harness.table(header, rows))


if __name__ == "__main__":
    main()
