"""The command line of train.py: parse, check, pick the run directory, train, report. Errors are one line."""

import argparse
import dataclasses
import math
import os
import sys
import time

import torch

from manualbp.nn import ACTIVATIONS
from manualbp_trainer import checkpoint, data, distributed
from manualbp_trainer.loop import Config, TrainingError, train

# "Neural Networks and Deep Learning", chapter 1: 784-30-10, sigmoid everywhere, quadratic cost, mini-batch 10,
# 30 epochs, weights and biases from N(0, 1), pixels in [0, 1]. The book's cost for one example is
# C_x = ½‖a − y‖², and its update is w ← w − (η/m) Σ_x ∇C_x over a mini-batch of m, with η = 3.0. Our
# MSELoss(reduction="mean") averages (a − y)² over the m examples and the 10 outputs, so its gradient is
# (2/10)·(1/m) Σ_x (a − y)·…, which is 1/5 of the book's: the same update needs lr = 5η = 15.
NIELSEN = {
    "hidden": (30,),
    "activation": "sigmoid",
    "output_activation": "sigmoid",
    "loss": "mse",
    "init": "normal",
    "normalize": False,
    "lr": 15.0,
    "momentum": 0.0,
    "nesterov": False,
    "weight_decay": 0.0,
    "lr_schedule": "constant",
    "batch_size": 10,
    "epochs": 30,
}
PRESETS = {"nielsen": NIELSEN}
# what may differ when a run is resumed: where it runs and where its data lies, not what it computes
RESUMABLE = {"device", "compile", "data_root", "data_dir", "log_every"}


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _number(kind, expected, accept):
    """An argparse type: ``kind(text)``, finite, for which ``accept(value)`` holds, else "expected …, got …"."""

    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not math.isfinite(value) or not accept(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    return parse


def _positive(kind):
    return _number(kind, f"a positive {kind.__name__}", lambda value: value > 0)


_non_negative_float = _number(float, "a number ≥ 0", lambda value: value >= 0)


def build_parser():
    d = Config()
    p = _Parser(
        prog="train.py",
        description="Train an MLP on MNIST with manualbp's hand-derived layers (mini-batch SGD), logging to "
        "TensorBoard: watch it with `tensorboard --logdir runs`.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        argument_default=None,
    )
    model = p.add_argument_group("model")
    model.add_argument(
        "--hidden", type=_positive(int), nargs="+", help=f"hidden layer sizes (default: {' '.join(map(str, d.hidden))})"
    )
    model.add_argument("--activation", choices=list(ACTIVATIONS), help=f"hidden activation (default: {d.activation})")
    model.add_argument(
        "--output-activation", choices=list(ACTIVATIONS), help="activation after the last layer (default: none: logits)"
    )
    model.add_argument(
        "--loss",
        choices=["cross-entropy", "mse"],
        help=f"cross-entropy on logits, or the quadratic cost on one-hot targets (default: {d.loss})",
    )
    model.add_argument(
        "--layers",
        choices=["manual", "torch"],
        help="manualbp's hand-derived layers, or torch.nn's with the same initial weights, to "
        f"compare curve against curve (default: {d.layers})",
    )
    model.add_argument(
        "--init",
        choices=["default", "normal"],
        help="torch.nn.Linear's initialisation, or N(0, 1) weights and biases (default: default)",
    )
    opt = p.add_argument_group("optimiser (torch.optim.SGD)")
    opt.add_argument("--lr", type=_positive(float), help=f"learning rate (default: {d.lr})")
    opt.add_argument("--momentum", type=_non_negative_float, help=f"(default: {d.momentum})")
    opt.add_argument("--nesterov", action=argparse.BooleanOptionalAction, help=f"(default: {d.nesterov})")
    opt.add_argument("--weight-decay", type=_non_negative_float, help=f"(default: {d.weight_decay})")
    opt.add_argument(
        "--lr-schedule",
        choices=["constant", "cosine", "onecycle"],
        help=f"per-step schedule over the whole run (default: {d.lr_schedule})",
    )
    opt.add_argument(
        "--batch-size",
        type=_positive(int),
        help=f"examples per mini-batch; the gradient is their average (default: {d.batch_size})",
    )
    opt.add_argument("--epochs", type=_positive(int), help=f"(default: {d.epochs})")
    opt.add_argument("--seed", type=int, help=f"seeds the initial weights and the shuffling (default: {d.seed})")
    opt.add_argument("--dtype", choices=["float32", "float64"], help=f"(default: {d.dtype})")
    opt.add_argument(
        "--preset",
        choices=list(PRESETS),
        help="nielsen: the chapter-1 network of 'Neural Networks and Deep Learning' (784-30-10 sigmoid, "
        "quadratic cost, η = 3.0 as lr 15 for our mean-reduced loss, batch 10, 30 epochs, N(0, 1) "
        "init). Explicit flags override it.",
    )
    dat = p.add_argument_group("data")
    dat.add_argument("--dataset", choices=list(data.DATASETS), help=f"(default: {d.dataset})")
    dat.add_argument("--data-root", help=f"where torchvision downloads the data set (default: {d.data_root})")
    dat.add_argument(
        "--data-dir",
        help="a folder with the four IDX files (train-images-idx3-ubyte, "
        "train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte, raw or .gz); no "
        "download",
    )
    dat.add_argument(
        "--normalize",
        action=argparse.BooleanOptionalAction,
        help="standardise pixels with the training set's mean and std (default: on)",
    )
    run = p.add_argument_group("run")
    run.add_argument("--device", choices=["auto", "cpu", "cuda"], help="auto picks CUDA when present (default: auto)")
    run.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        help="run the forward pass, loss and backward through torch.compile: less launch overhead on a GPU "
        "(compiling takes a while first; default: off)",
    )
    run.add_argument("--log-every", type=_positive(int), help=f"steps between logged values (default: {d.log_every})")
    run.add_argument("--logdir", default="runs", help="parent folder of the run directories (default: runs)")
    run.add_argument("--run-name", help="the run directory's name (default: from the time and the config)")
    run.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last checkpoint")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def config_from_args(args):
    """Defaults, then the preset, then every flag given explicitly."""
    values = dataclasses.asdict(Config())
    if args.preset:
        values.update(PRESETS[args.preset])
    explicit = {f.name: getattr(args, f.name) for f in dataclasses.fields(Config) if getattr(args, f.name) is not None}
    values.update(explicit)
    values["hidden"] = tuple(values["hidden"])
    return Config(**values), explicit


def _new_run_dir(args, config):
    if args.run_name is not None:
        if not args.run_name or os.sep in args.run_name or args.run_name in (".", ".."):
            raise ValueError(f"--run-name {args.run_name!r} must be a plain folder name")
        path = os.path.join(args.logdir, args.run_name)
        if os.path.exists(path):
            raise ValueError(f"{path} already exists: choose another --run-name, or continue it with --resume {path}")
        os.makedirs(path)
        return path
    hidden = "-".join(map(str, config.hidden))
    base = (
        f"{time.strftime('%Y%m%d-%H%M%S')}_{config.dataset}_{config.layers}_{hidden}_{config.activation}_"
        f"{config.loss}_lr{config.lr:g}_bs{config.batch_size}"
    )
    for attempt in range(1, 1000):
        path = os.path.join(args.logdir, base if attempt == 1 else f"{base}-{attempt}")
        try:
            os.makedirs(path)  # exist_ok=False: an existing run is never reused
            return path
        except FileExistsError:
            continue
    raise ValueError(f"could not make a new run directory under {args.logdir}")


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    config, explicit = config_from_args(args)
    resume = None
    try:
        if args.resume is not None:
            resume = checkpoint.load(args.resume)
            changed = sorted(set(explicit) - RESUMABLE)
            if changed or args.preset:
                flags = ", ".join("--" + name.replace("_", "-") for name in changed) or "--preset"
                raise ValueError(
                    f"{flags} cannot change when resuming: --resume continues the run as it was "
                    "configured (only --device, --compile, --data-dir, --data-root and --log-every may differ)"
                )
            saved = resume["config"]
            saved.update({k: v for k, v in explicit.items() if k in RESUMABLE})
            saved["hidden"] = tuple(saved["hidden"])
            config = Config(**saved)
        if config.nesterov and config.momentum == 0:
            raise ValueError("--nesterov needs a --momentum above 0: pass --momentum 0.9, say, or --no-nesterov")
        if config.device == "cuda" and not torch.cuda.is_available():
            raise ValueError("--device cuda: no CUDA device is available here; use --device cpu or auto")
    except (ValueError, checkpoint.CheckpointError, OSError) as error:
        parser.exit(2, f"train.py: error: {error}\n")
    if not distributed.launched_by_torchrun():
        return _run(parser, args, config, resume)
    distributed.init(config.device)
    try:
        return _run(parser, args, config, resume)
    finally:
        distributed.shutdown()


def _run(parser, args, config, resume):
    """Pick the run directory (rank 0 does, under torchrun), train, and report; errors end the process."""
    rank, world_size = distributed.rank_and_world_size()
    prefix = f"rank {rank}: " if world_size > 1 else ""
    run_dir = error = None
    try:
        if args.resume is not None:
            run_dir = args.resume
        elif rank == 0:
            run_dir = _new_run_dir(args, config)
    except (ValueError, OSError) as problem:
        error = str(problem)
    run_dir, error = distributed.broadcast_from_rank_0((run_dir, error))
    if error is not None:
        parser.exit(2, f"train.py: error: {prefix}{error}\n")
    try:
        result = train(config, run_dir, resume=resume, progress=not args.no_progress and sys.stderr.isatty())
    except data.DataError as error:
        if rank == 0 and args.resume is None and not os.listdir(run_dir):
            os.rmdir(run_dir)  # nothing was written: leave no empty run behind
        parser.exit(2, f"train.py: error: {prefix}{error}\n")
    except TrainingError as error:
        parser.exit(1, f"train.py: error: {prefix}{error}\n")
    except KeyboardInterrupt:  # a second Ctrl-C, or under torchrun the first: stop now, keep what was saved
        parser.exit(
            130,
            f"train.py: {prefix}stopped: {run_dir} keeps the checkpoint of the last finished epoch, if any; "
            f"continue with --resume {run_dir}\n",
        )
    if rank != 0:
        return 0
    if result.interrupted:
        print(f"interrupted: saved the run in {run_dir}; continue it with --resume {run_dir}", file=sys.stderr)
        return 130
    print(
        f"final test accuracy {result.final_accuracy:.4f}, best {result.best_accuracy:.4f} (epoch "
        f"{result.best_epoch}), {result.seconds:.1f} s, run {run_dir}"
    )
    return 0
