"""The CNN's training step (train.py --model cnn), manualbp's layers against torch.nn's: time, bytes saved for
backward, and with --profile where the time goes.

    python benchmarks/cnn.py [--device cuda] [--quick] [--profile]

Both models are built by the trainer's ``build_cnn`` from the same seed (the same initial weights) and trained on
the same random batch with the trainer's optimiser (SGD, Nesterov momentum 0.9, weight decay 5e-4, fused); the only
difference is whose Functions compute the forward and backward passes. Each timed call is one step: forward
(dropout and batch norm in training mode), cross-entropy, backward, SGD.
"""

import os
import sys

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import _harness  # noqa: E402
import memory  # noqa: E402
import step  # noqa: E402

from manualbp import functional as manual_functional  # noqa: E402
from manualbp_trainer.networks import build_cnn  # noqa: E402

BATCHES = [32, 100, 256]  # 100: the trainer's default
QUICK_BATCHES = [4]


def make_case(batch_size, layers, device):
    """``(model, x, labels, cost)``: the CNN as the trainer builds it (seed 0), a fixed random batch of
    flattened 28×28 images, and ``cost(output)``, its cross-entropy."""
    model = build_cnn(layers).to(device)
    functional = manual_functional if layers == "manual" else torch.nn.functional
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batch_size, 784, generator=generator).to(device)
    labels = torch.randint(0, 10, (batch_size,), generator=generator).to(device)
    return model, x, labels, lambda output: functional.cross_entropy(output, labels)


def make_step(batch_size, layers, device):
    model, x, _, cost = make_case(batch_size, layers, device)
    return step.training_step(model, lambda: cost(model(x)), nesterov=True, weight_decay=5e-4)


def profile_table(train_step, device, rows=12):
    """The operators that take the most time in five steps, as torch.profiler's table."""
    train_step()  # warm up
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as profiler:
        for _ in range(5):
            train_step()
        _harness.synchronize(device)
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    return profiler.key_averages().table(sort_by=key, row_limit=rows)


def main(argv=None):
    parser = _harness.parser(__doc__.split("\n\n")[0])
    parser.add_argument("--profile", action="store_true", help="also print each variant's top operators")
    args = parser.parse_args(argv)
    device = _harness.check_device(args)
    rounds = args.rounds or (2 if args.quick else 11)
    min_run_time = 0.01 if args.quick else 1.0
    command = _harness.command("cnn.py", args)
    batches = QUICK_BATCHES if args.quick else BATCHES
    rows = []
    for batch_size in batches:
        steps = {layers: make_step(batch_size, layers, device) for layers in ("manual", "torch")}
        times = _harness.compare(steps, device, rounds, min_run_time)
        manual = memory.saved_for_backward(*make_case(batch_size, "manual", device), device)
        reference = memory.saved_for_backward(*make_case(batch_size, "torch", device), device)
        rows.append(
            [
                batch_size,
                _harness.microseconds(times["manual"]),
                _harness.microseconds(times["torch"]),
                _harness.format_ratio(times["manual"], times["torch"]),
                f"{manual[0]:,}",
                f"{reference[0]:,}",
                _harness.count(manual[2]),
                _harness.count(reference[2]),
            ]
        )
    header = [
        "batch",
        "manualbp µs",
        "torch.nn µs",
        "ratio (IQR)",
        "saved activations, manualbp (bytes)",
        "torch.nn",
        "CUDA peak, manualbp",
        "torch.nn",
    ]
    title = "CNN training step (train.py --model cnn), eager"
    _harness.report(title, device, command, _harness.table(header, rows))
    if args.profile:
        for layers in ("manual", "torch"):
            table = profile_table(make_step(batches[-1], layers, device), device)
            print(f"#### Top operators, `--layers {layers}`, batch {batches[-1]}, 5 steps\n\n```\n{table}\n```\n")
    return rows


if __name__ == "__main__":
    main()
