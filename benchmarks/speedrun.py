"""The MNIST-sized MLP speed run: 784-512-10, 40 epochs of 60,000 images at batch 1024, through train.py's own
training step, in each way it can run (eager, ``--compile``, ``--cuda-graphs``), with manualbp's layers and with
torch.nn's.

    python benchmarks/speedrun.py --data-dir DIR [--device cuda] [--quick]

DIR holds the four MNIST-format IDX files (MNIST's, or Fashion-MNIST's from Debian's ``dataset-fashion-mnist``).
Each variant first trains one epoch to pay its one-off costs (compiling, the first cuBLAS calls, capturing the
graphs), then its weights, momentum, schedule and shuffling are reset in place and the epochs are timed: the
training of each epoch (``train_epoch``: the data set lies on the device; the epoch ends with its one read-back)
and then the evaluation on the test set. The table gives the training time of all epochs, the evaluation time,
the final test accuracy, and the time (training and evaluation) until the test accuracy first reached
``--target``. Every variant trains from the same initial weights on the same batches; ``max |Δw|`` is how far
its final weights are from the first variant's.
"""

import argparse
import dataclasses
import os
import sys
import threading
import time

import torch
from tqdm import tqdm

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import _harness  # noqa: E402

from manualbp_trainer import data, logbook, loop  # noqa: E402

MODES = ("eager", "compile", "cuda-graphs")


def variant(config, train_set, mode, layers):
    """``(state, step)`` for one way of running, its one-off costs paid by one epoch of training."""
    config = dataclasses.replace(config, layers=layers, compile=mode == "compile", cuda_graphs=mode == "cuda-graphs")
    state = loop.create_state(
        config, train_set.images.shape[1], len(train_set), train_set.images.device, train_set.images.dtype
    )
    step = loop.build_step(state, config, train_set)
    initial = {name: value.detach().clone() for name, value in state.model.state_dict().items()}
    book = logbook.Logbook(config, None, tqdm(disable=True), train_set.images.device)  # no TensorBoard writer
    loop.train_epoch(state, config, train_set, step, book, threading.Event())
    return config, state, step, initial


def reset(config, state, initial, train_examples):
    """The state of a fresh run, in place (a captured graph and a compiled graph keep every address): the initial
    weights, zero momentum (the same first update as no momentum buffer: m·0 + g = g), a new schedule."""
    with torch.no_grad():
        for name, value in state.model.state_dict().items():
            value.copy_(initial[name])
        for parameter_state in state.optimizer.state.values():
            parameter_state["momentum_buffer"].zero_()
    state.optimizer.param_groups[0]["lr"] = config.lr
    state.optimizer.param_groups[0].pop("initial_lr", None)
    state.scheduler = loop.make_scheduler(
        state.optimizer, config.lr_schedule, config.lr, config.epochs * loop.steps_per_epoch(config, train_examples)
    )
    state.shuffler.manual_seed(config.seed)
    state.epoch = state.step = state.global_step = 0


def timed_run(config, state, step, train_set, test_set, target):
    """Train ``config.epochs`` epochs, evaluating after each; returns the times, the accuracy and the weights."""
    device = train_set.images.device
    functional = loop.layer_functional(config)
    train_seconds = eval_seconds = 0.0
    reached = None
    accuracy = float("nan")
    for _ in range(config.epochs):
        _harness.synchronize(device)
        started = time.perf_counter()
        # train_epoch ends with a read-back: the epoch's work is done when it returns
        book = logbook.Logbook(config, None, tqdm(disable=True), train_set.images.device)  # no TensorBoard writer
        loop.train_epoch(state, config, train_set, step, book, threading.Event())
        train_seconds += time.perf_counter() - started
        state.epoch, state.step = state.epoch + 1, 0
        started = time.perf_counter()
        _, accuracy, _ = loop.evaluate(state.model, functional, config.loss, test_set)  # reads back its accuracy
        eval_seconds += time.perf_counter() - started
        if reached is None and accuracy >= target:
            reached = (train_seconds + eval_seconds, state.epoch)
    weights = {name: value.detach().clone() for name, value in state.model.state_dict().items()}
    return train_seconds, eval_seconds, accuracy, reached, weights


def _fraction(text):
    """--target: an accuracy, a number in (0, 1] (0.98, not 98)."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"expected an accuracy in (0, 1], such as 0.98, got {text!r}")
    return value


def main(argv=None):
    parser = _harness.parser(__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", required=True, help="a folder with the four MNIST-format IDX files")
    positive = _harness.positive_int
    parser.add_argument("--hidden", type=positive, nargs="+", default=[512], help="hidden layer sizes (default: 512)")
    parser.add_argument("--epochs", type=positive, default=40, help="(default: 40; quick: 2)")
    parser.add_argument("--batch-size", type=positive, default=1024, help="(default: 1024)")
    parser.add_argument("--lr", type=float, default=0.1, help="SGD learning rate, Nesterov momentum 0.9 (default: 0.1)")
    parser.add_argument("--target", type=_fraction, default=0.98, help="test accuracy to time (default: 0.98)")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=None, help="(default: all that run here)")
    args = parser.parse_args(argv)
    device = _harness.check_device(args)
    modes = args.modes or [mode for mode in MODES if mode != "cuda-graphs" or device.type == "cuda"]
    if "cuda-graphs" in modes and device.type != "cuda":
        parser.error("--modes cuda-graphs needs --device cuda")
    try:
        train_set, test_set = data.load(data_dir=args.data_dir, device=device)
        dataset = data.identify(args.data_dir)
    except data.DataError as error:
        parser.error(str(error))
    if args.quick:
        train_set = data.Split(train_set.images[:4096], train_set.labels[:4096])
    config = loop.Config(
        dataset=dataset,
        hidden=tuple(args.hidden),
        batch_size=args.batch_size,
        epochs=2 if args.quick else args.epochs,
        lr=args.lr,
        device=str(device),
        log_every=10**9,
        pictures=False,
    )
    rows, first_weights = [], None
    for mode in modes:
        for layers in ("manual", "torch"):
            try:
                run_config, state, step, initial = variant(config, train_set, mode, layers)
                reset(run_config, state, initial, len(train_set))
                train_s, eval_s, accuracy, reached, weights = timed_run(
                    run_config, state, step, train_set, test_set, args.target
                )
            except Exception as error:  # one variant failing must not hide the others' figures
                rows.append([mode, layers, f"failed: {type(error).__name__}: {str(error).splitlines()[0][:120]}"])
                continue
            first_weights = first_weights or weights
            drift = max((weights[k].double() - first_weights[k].double()).abs().max().item() for k in weights)
            to_target = f"{reached[0]:.3f} s (epoch {reached[1]})" if reached else "not reached"
            rows.append(
                [mode, layers, f"{train_s:.3f} s", f"{eval_s:.3f} s", f"{accuracy:.4f}", to_target, f"{drift:.1e}"]
            )
            print(f"{mode:12s} {layers:7s} train {train_s:.3f} s eval {eval_s:.3f} s acc {accuracy:.4f}", flush=True)
    network = "-".join(map(str, [data.IMAGE_PIXELS, *args.hidden, data.NUM_CLASSES]))
    header = [
        "mode",
        "layers",
        f"train, {config.epochs} epochs",
        "evaluate, every epoch",
        "test accuracy",
        f"time to {args.target:.0%}",
        "max |Δw| vs first row",
    ]
    command = _harness.command("speedrun.py", args, f"--data-dir {args.data_dir}")
    title = (
        f"Speed run: {network} ReLU, {len(train_set):,} {dataset} images × {config.epochs} epochs, batch "
        f"{config.batch_size}, SGD lr {config.lr} Nesterov 0.9, cosine schedule"
    )
    _harness.report(title, device, command, _harness.table(header, rows))


if __name__ == "__main__":
    main()
