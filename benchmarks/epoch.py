"""End-to-end epoch on MNIST-sized data: the trainer with manualbp's layers, with torch.nn's, a
pytorch/examples-style DataLoader pipeline training the same model, and the machine's compute limit.

    python benchmarks/epoch.py --data-dir DIR [--device cuda] [--quick]

DIR holds the four MNIST-format IDX files (``/usr/share/datasets/fashion-mnist`` from Debian's
``dataset-fashion-mnist``, or MNIST's). One epoch is one pass over the training set plus the evaluation on the
test set, as each pipeline does it:

- trainer: ``train.py``'s ``manualbp_trainer.loop.train`` for one epoch (whole-tensor data set on the device,
  shuffled index batches, evaluation, epoch summaries and checkpoint), ``--layers manual`` and ``--layers torch``;
- DataLoader: ``torchvision.datasets`` + ``DataLoader(shuffle=True)`` with per-sample ``ToTensor`` and
  ``Normalize``, as pytorch/examples' mnist does, training the same torch.nn model with the same optimiser;
- compute limit: the time the epoch's matrix multiplies take on their own, each product timed at its own
  shape on this machine (``gemm_seconds``): what the epoch would cost with no element-wise work, no optimiser,
  no Python and no logging.

A second table splits the trainer's epochs into their phases (the training, the evaluation, the epoch's
summaries and pictures, the checkpoint, and closing the run: the figures still being drawn by the worker processes
and the event file), each timed around the function that does it, so that a difference between ``--layers manual``
and ``--layers torch`` can be traced to the phase it comes from. On a GPU the phases are timed by the host's
clock: the training and the evaluation each end by reading their sums back, so each waits for its own queued work.
"""

import contextlib
import dataclasses
import functools
import gzip
import os
import shutil
import statistics
import sys
import tempfile
import time
import unittest.mock

import torch
import torchvision
from torch.utils.benchmark import Timer

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import _harness  # noqa: E402

from manualbp_trainer import data, logbook, loop  # noqa: E402
from manualbp_trainer.loop import Config, train  # noqa: E402
from manualbp_trainer.networks import build_mlp  # noqa: E402

PHASES = {  # a phase of the trainer's epoch: the function that does it
    "training (the steps, and the loop that shuffles and slices the batches)": (loop, "train_epoch"),
    "evaluation on the test set": (loop, "evaluate"),
    "the epoch's summaries and pictures": (logbook.Logbook, "epoch"),
    "checkpoint": (loop, "save_checkpoint"),
    "closing the run (the figures still being drawn, the event file)": (logbook.Logbook, "close"),
}
REST = "the rest (between the phases: the epoch's bookkeeping, its line)"


def trainer_epoch(config, layers, phases):
    """Seconds of one trainer epoch (training, evaluation, summaries, checkpoint), data loading excluded; each
    phase's seconds are added into ``phases`` (a dict keyed by ``PHASES``' names)."""
    with tempfile.TemporaryDirectory() as run_dir, timing(phases):
        return train(dataclasses.replace(config, layers=layers), run_dir, progress=False).seconds


@contextlib.contextmanager
def timing(phases):
    """While it is open, every call of a ``PHASES`` function adds its seconds into ``phases[name]``."""

    def timed(function, name):
        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                phases[name] = phases.get(name, 0.0) + time.perf_counter() - started

        return wrapper

    with contextlib.ExitStack() as stack:
        for name, (owner, attribute) in PHASES.items():
            stack.enter_context(unittest.mock.patch.object(owner, attribute, timed(getattr(owner, attribute), name)))
        yield


def dataloader_epoch(config, root, device):
    """Seconds of one epoch of a pytorch/examples-style pipeline training the same model."""
    transform = torchvision.transforms.Compose(
        [torchvision.transforms.ToTensor(), torchvision.transforms.Normalize((0.2860,), (0.3530,))]
    )
    train_set = torchvision.datasets.FashionMNIST(root, train=True, transform=transform)
    test_set = torchvision.datasets.FashionMNIST(root, train=False, transform=transform)
    train_loader = torch.utils.data.DataLoader(train_set, batch_size=config.batch_size, shuffle=True)
    test_loader = torch.utils.data.DataLoader(test_set, batch_size=1000)
    model = build_mlp([784, *config.hidden, 10], config.activation, layers="torch").to(device)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=config.lr, momentum=config.momentum, nesterov=True, weight_decay=config.weight_decay
    )
    started = time.perf_counter()
    model.train()
    for images, labels in train_loader:
        images, labels = images.to(device).flatten(1), labels.to(device)
        loss = torch.nn.functional.cross_entropy(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    correct = 0
    with torch.no_grad():
        for images, labels in test_loader:
            correct += (model(images.to(device).flatten(1)).argmax(1) == labels.to(device)).sum().item()
    _harness.synchronize(device)
    return time.perf_counter() - started


def gemm_seconds(sizes, batch_size, train_examples, test_examples, device, min_run_time):
    """The compute limit: seconds an epoch's matrix multiplies take on their own, each timed at its shape.

    Per training step, layer l (fan_in → fan_out) multiplies (B × fan_in)·(fan_in × fan_out) forward,
    (fan_out × B)·(B × fan_in) for ∂C/∂W and, but for the first layer, (B × fan_out)·(fan_out × fan_in) for ∂C/∂x;
    evaluation runs the forward products over the test set in chunks of 2000, as the trainer does.
    Returns ``(seconds, flops)``.
    """
    steps, last = divmod(train_examples, batch_size)
    chunks, last_chunk = divmod(test_examples, 2000)
    products = []  # (m, k, n, how many per epoch, which operand is a transposed view), as the layers run them
    for layer, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=False)):
        for rows, count in ((batch_size, steps), (last, 1)):
            if rows and count:
                products.append((rows, fan_in, fan_out, count, "b"))  # x Wᵀ
                products.append((fan_out, rows, fan_in, count, "a"))  # gᵀ x
                if layer > 0:
                    products.append((rows, fan_out, fan_in, count, None))  # g W
        for rows, count in ((2000, chunks), (last_chunk, 1)):
            if rows and count:
                products.append((rows, fan_in, fan_out, count, "b"))
    seconds = flops = 0.0
    for m, k, n, count, transposed in products:
        a = torch.randn(k, m, device=device).t() if transposed == "a" else torch.randn(m, k, device=device)
        b = torch.randn(n, k, device=device).t() if transposed == "b" else torch.randn(k, n, device=device)
        timer = Timer(
            "torch.mm(a, b); synchronize(device)",
            globals=dict(torch=torch, a=a, b=b, synchronize=_harness.synchronize, device=device),
            num_threads=torch.get_num_threads(),
        )
        seconds += count * timer.blocked_autorange(min_run_time=min_run_time).median
        flops += count * 2 * m * k * n
    return seconds, flops


def torchvision_layout(data_dir, root):
    """Decompress the IDX files into torchvision's ``root/FashionMNIST/raw`` layout (no download, no md5)."""
    raw = os.path.join(root, "FashionMNIST", "raw")
    os.makedirs(raw)
    for names in data.IDX_FILES.values():
        for name in names:
            source = os.path.join(data_dir, name)
            if os.path.exists(source + ".gz"):
                with gzip.open(source + ".gz", "rb") as compressed, open(os.path.join(raw, name), "wb") as plain:
                    shutil.copyfileobj(compressed, plain)
            else:
                shutil.copy(source, os.path.join(raw, name))


def main(argv=None):
    parser = _harness.parser(__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", required=True, help="a folder with the four MNIST-format IDX files")
    parser.add_argument(
        "--hidden", type=_harness.positive_int, nargs="+", default=[256], help="hidden layer sizes (default: 256)"
    )
    args = parser.parse_args(argv)
    device = _harness.check_device(args)
    try:  # the trainer's reader checks the files first, and says in one line what is wrong with them
        train_set, test_set = data.load(data_dir=args.data_dir)
    except data.DataError as error:
        parser.error(str(error))
    rounds = args.rounds or (1 if args.quick else 5)
    config = Config(
        dataset="fashion-mnist",
        data_dir=args.data_dir,
        hidden=tuple(args.hidden),
        epochs=1,
        device=args.device,
        log_every=10**9,
    )
    phases = {layers: [] for layers in ("manual", "torch")}  # per round: {phase: seconds}

    def phased(layers):
        phases[layers].append({})
        total = trainer_epoch(config, layers, phases[layers][-1])
        phases[layers][-1][REST] = total - sum(phases[layers][-1].values())
        return total

    pipelines = {
        "manual": lambda: phased("manual"),
        "torch": lambda: phased("torch"),
        "dataloader": lambda: dataloader_epoch(config, root, device),
    }
    times = {name: [] for name in pipelines}
    names = list(pipelines)
    with tempfile.TemporaryDirectory() as root:
        torchvision_layout(args.data_dir, root)
        for index in range(rounds):
            # interleaved: each round runs every pipeline once, starting with the next one (as _harness.compare
            # does), so that none always follows the same other pipeline or always runs first
            start = index % len(names)
            for name in names[start:] + names[:start]:
                times[name].append(pipelines[name]())
    sizes = [784, *config.hidden, 10]
    limit, flops = gemm_seconds(
        sizes, config.batch_size, len(train_set), len(test_set), device, 0.05 if args.quick else 0.5
    )
    network = "-".join(map(str, sizes))

    def seconds(values):
        return f"{statistics.median(values):.3f} s"

    def milliseconds(values):
        return f"{statistics.median(values) * 1e3:,.2f} ms"

    rows = [
        ["trainer, `--layers manual`", seconds(times["manual"]), "1"],
        ["trainer, `--layers torch`", seconds(times["torch"]), _harness.format_ratio(times["manual"], times["torch"])],
        [
            "DataLoader pipeline (torch.nn)",
            seconds(times["dataloader"]),
            _harness.format_ratio(times["manual"], times["dataloader"]),
        ],
        [
            f"compute limit: the epoch's {flops / 1e9:.1f} GFLOP of matrix products alone "
            f"({flops / limit / 1e9:.0f} GFLOP/s)",
            seconds([limit]),
            _harness.format_ratio(times["manual"], [limit] * len(times["manual"])),
        ],
    ]
    header = ["pipeline", "epoch time (median)", "manualbp trainer ÷ this (IQR)"]
    flags = [f"--data-dir {args.data_dir}", f"--hidden {' '.join(map(str, args.hidden))}"]
    command = _harness.command("epoch.py", args, *flags)
    title = f"End-to-end epoch, {network} ReLU, batch {config.batch_size}"
    phase_rows = []
    for name in [*PHASES, REST]:
        manual, builtin = ([round_.get(name, 0.0) for round_ in phases[layers]] for layers in ("manual", "torch"))
        phase_rows.append([name, milliseconds(manual), milliseconds(builtin), _harness.format_ratio(manual, builtin)])
    phase_header = ["phase of the trainer's epoch", "`--layers manual`", "`--layers torch`", "manual ÷ torch (IQR)"]
    body = _harness.table(header, rows) + "\n\n" + _harness.table(phase_header, phase_rows)
    _harness.report(title, device, command, body)


if __name__ == "__main__":
    main()
