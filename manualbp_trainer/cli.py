"""The command line of train.py: parse, check, pick the run directory, train, report. Errors are one line."""

import argparse
import contextlib
import dataclasses
import math
import os
import signal
import sys
import tempfile
import threading
import time
import traceback

import torch

from manualbp.nn import ACTIVATIONS
from manualbp_trainer import checkpoint, data, distributed
from manualbp_trainer.loop import Config, TrainingError, parameter_count, resolve_device, train
from manualbp_trainer.model import MLP_ONLY, cnn_parameter_count

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
# --model cnn's defaults where the MLP's do not fit (explicit flags override them); the rest (lr 0.05, Nesterov
# momentum 0.9, weight decay 5e-4, the cosine schedule, batch 100) are the MLP's. 15 epochs, as the MLP's, said here
# so that --help can name them: 10 under-trained a small training set (issue #23), and the model's random shifts
# keep the extra epochs from memorising it. No --pictures: they draw an MLP's neurons.
CNN = {"epochs": 15, "pictures": False}
# what may differ when a run is resumed: where it runs and where its data lies, not what it computes
RESUMABLE = {"device", "compile", "cuda_graphs", "data_root", "data_dir", "log_every", "pictures"}


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
_seed = _number(int, "an integer from -2**63 to 2**64 - 1 (torch.manual_seed's range)", lambda v: -(2**63) <= v < 2**64)


def _flag(name):
    """A Config field's flag: ``"lr_schedule"`` as "--lr-schedule"."""
    return "--" + name.replace("_", "-")


def _as_flag(name, value):
    """``("lr", 0.1)`` as "--lr 0.1", ``("pictures", False)`` as "--no-pictures"."""
    if isinstance(value, bool):
        return _flag(("" if value else "no_") + name)
    return f"{_flag(name)} {value}"


def _with_default(text, value):
    """``text`` and the default it describes, said once: argparse's own "(default: …)" would say ``None`` for
    every option whose default is Config's (the parser's defaults are None, to tell which flags were given)."""
    if isinstance(value, bool):
        value = "on" if value else "off"
    elif isinstance(value, tuple):
        value = " ".join(map(str, value))
    return f"{text} (default: {value})" if text else f"(default: {value})"


def build_parser():
    d = Config()
    p = _Parser(
        prog="train.py",
        description="Train an MLP or a small CNN on MNIST with manualbp's hand-derived layers (mini-batch SGD), "
        "logging to TensorBoard: watch it with `uv run tensorboard --logdir runs`.",
        argument_default=None,
    )
    model = p.add_argument_group("model")
    model.add_argument(
        "--model",
        choices=["mlp", "cnn"],
        help=_with_default(
            "mlp: 784-hidden-10, shaped by --hidden, --activation, --output-activation and --init. cnn: "
            "[Conv2d 3×3 → BatchNorm2d → ReLU → MaxPool2d 2] with 32, then 64 channels → Dropout 0.25 → Linear "
            "3136→128 → ReLU → Dropout 0.5 → Linear 128→10; its own defaults: "
            + ", ".join(_as_flag(name, value) for name, value in CNN.items()),
            d.model,
        ),
    )
    model.add_argument("--hidden", type=_positive(int), nargs="+", help=_with_default("hidden layer sizes", d.hidden))
    model.add_argument("--activation", choices=list(ACTIVATIONS), help=_with_default("hidden activation", d.activation))
    model.add_argument(
        "--output-activation",
        choices=list(ACTIVATIONS),
        help=_with_default("activation after the last layer", "none: the output is the logits"),
    )
    model.add_argument(
        "--loss",
        choices=["cross-entropy", "mse"],
        help=_with_default("cross-entropy on logits, or the quadratic cost on one-hot targets", d.loss),
    )
    model.add_argument(
        "--layers",
        choices=["manual", "torch"],
        help=_with_default(
            "manualbp's hand-derived layers, or torch.nn's with the same initial weights, to compare curve against "
            "curve",
            d.layers,
        ),
    )
    model.add_argument(
        "--init",
        choices=["default", "normal"],
        help=_with_default("torch.nn.Linear's initialisation, or N(0, 1) weights and biases", d.init),
    )
    opt = p.add_argument_group("optimiser (torch.optim.SGD)")
    opt.add_argument("--lr", type=_positive(float), help=_with_default("learning rate", d.lr))
    opt.add_argument("--momentum", type=_non_negative_float, help=_with_default("", d.momentum))
    opt.add_argument("--nesterov", action=argparse.BooleanOptionalAction, help=_with_default("", d.nesterov))
    opt.add_argument("--weight-decay", type=_non_negative_float, help=_with_default("", d.weight_decay))
    opt.add_argument(
        "--lr-schedule",
        choices=["constant", "cosine", "onecycle"],
        help=_with_default("per-step schedule over the whole run", d.lr_schedule),
    )
    opt.add_argument(
        "--batch-size",
        type=_positive(int),
        help=_with_default("examples per mini-batch; the gradient is their average", d.batch_size),
    )
    opt.add_argument("--epochs", type=_positive(int), help=_with_default(f"--model cnn's: {CNN['epochs']}", d.epochs))
    opt.add_argument("--seed", type=_seed, help=_with_default("seeds the initial weights and the shuffling", d.seed))
    opt.add_argument("--dtype", choices=["float32", "float64"], help=_with_default("", d.dtype))
    opt.add_argument(
        "--preset",
        choices=list(PRESETS),
        help="nielsen: the chapter-1 network of 'Neural Networks and Deep Learning' (784-30-10 sigmoid, "
        "quadratic cost, η = 3.0 as lr 15 for our mean-reduced loss, batch 10, 30 epochs, N(0, 1) "
        "init). Explicit flags override it.",
    )
    dat = p.add_argument_group("data")
    dat.add_argument(
        "--dataset",
        choices=list(data.DATASETS),
        help=_with_default(
            "the data set torchvision downloads. With --data-dir, the run records the data set it recognises in "
            "the files (MNIST's or Fashion-MNIST's test labels), or 'idx' for other IDX files; --dataset then "
            "only checks that they are what you expect",
            d.dataset,
        ),
    )
    dat.add_argument("--data-root", help=_with_default("where torchvision downloads the data set", d.data_root))
    dat.add_argument(
        "--data-dir",
        help="a folder with the four IDX files (train-images-idx3-ubyte, train-labels-idx1-ubyte, "
        "t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte, raw or .gz), read with no download",
    )
    dat.add_argument(
        "--normalize",
        action=argparse.BooleanOptionalAction,
        help=_with_default("standardise pixels with the training set's mean and std", d.normalize),
    )
    run = p.add_argument_group("run")
    run.add_argument(
        "--device",
        choices=["auto", "cpu", "cuda"],
        help=_with_default("auto picks CUDA when present; the run records the device it used", d.device),
    )
    run.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        help=_with_default(
            "run the forward pass, loss and backward through torch.compile: less launch overhead on a GPU "
            "(compiling takes a while first)",
            d.compile,
        ),
    )
    run.add_argument(
        "--cuda-graphs",
        action=argparse.BooleanOptionalAction,
        help=_with_default(
            "capture the whole training step (forward, hand-derived backward, SGD update) as a CUDA graph and "
            "replay it: on a GPU, one launch per step instead of dozens (needs --device cuda; not with --compile)",
            d.cuda_graphs,
        ),
    )
    run.add_argument("--log-every", type=_positive(int), help=_with_default("steps between logged values", d.log_every))
    run.add_argument(
        "--pictures",
        action=argparse.BooleanOptionalAction,
        help=_with_default(
            "each epoch, draw what one test image per class asks of every output, hidden neuron and first-layer "
            "weight, and how single examples' gradients agree with their batch (TensorBoard's IMAGES and "
            "HISTOGRAMS tabs; about 2 s an epoch on a CPU; the MLP's only)",
            d.pictures,
        ),
    )
    run.add_argument("--logdir", help="parent folder of the run directories (default: runs)")
    run.add_argument("--run-name", help="the run directory's name (default: from the time and the config)")
    run.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue the run in RUN_DIR from its last checkpoint; a finished run is not continued",
    )
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def config_from_args(args):
    """Defaults, then the preset or --model cnn's defaults, then every flag given explicitly."""
    values = dataclasses.asdict(Config())
    if args.preset:
        values.update(PRESETS[args.preset])
    if args.model == "cnn":
        values.update(CNN)
    explicit = {f.name: getattr(args, f.name) for f in dataclasses.fields(Config) if getattr(args, f.name) is not None}
    values.update(explicit)
    values["hidden"] = tuple(values["hidden"])
    return Config(**values), explicit


def _make_run_dir(path):
    try:
        os.makedirs(path)
    except FileExistsError:
        raise
    except OSError as error:
        raise ValueError(
            f"cannot make the run directory {path} ({error.strerror}): choose a writable --logdir"
        ) from error


def _new_run_dir(args, config):
    logdir = args.logdir or "runs"  # --logdir's default, left None in the parser so that --resume can refuse it
    if args.run_name is not None:
        if not args.run_name or os.sep in args.run_name or args.run_name in (".", ".."):
            raise ValueError(f"--run-name {args.run_name!r} must be a plain folder name")
        path = os.path.join(logdir, args.run_name)
        if os.path.exists(path):
            raise ValueError(f"{path} already exists: choose another --run-name, or continue it with --resume {path}")
        _make_run_dir(path)
        return path
    network = "cnn" if config.model == "cnn" else "-".join(map(str, config.hidden)) + f"_{config.activation}"
    base = (
        f"{time.strftime('%Y%m%d-%H%M%S')}_{config.dataset}_{config.layers}_{network}_{config.loss}_lr{config.lr:g}_"
        f"bs{config.batch_size}"
    )
    for attempt in range(1, 1000):
        path = os.path.join(logdir, base if attempt == 1 else f"{base}-{attempt}")
        try:
            _make_run_dir(path)  # exist_ok=False: an existing run is never reused
            return path
        except FileExistsError:
            continue
    raise ValueError(f"could not make a new run directory under {logdir}")


def main(argv=None, stop=None):
    """Run train.py's command line; return the exit status (argument and setup errors exit via SystemExit).

    ``stop`` is an event that stops the run at the next step boundary once set (``threading.Event``). By default
    the first Ctrl-C sets it and a second one stops at once (``_CtrlC``); under torchrun Ctrl-C is torchrun's.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    config, explicit = config_from_args(args)
    resume = None
    try:
        if args.model == "cnn":
            _check_cnn_flags(args, explicit)
        if args.resume is not None:
            changed = sorted(set(explicit) - RESUMABLE)
            if changed or args.preset:
                flags = ", ".join(map(_flag, changed)) or "--preset"
                raise ValueError(
                    f"{flags} cannot change when resuming: --resume continues the run as it was "
                    "configured (only --device, --compile, --cuda-graphs, --data-dir, --data-root, --log-every and "
                    "--pictures may differ)"
                )
            if args.run_name is not None or args.logdir is not None:
                raise ValueError(
                    f"--resume {args.resume} continues the run in that directory: leave out "
                    f"{'--run-name' if args.run_name is not None else '--logdir'} (to train elsewhere, copy the run "
                    "and resume the copy)"
                )
            resume = checkpoint.load(args.resume)
            config = _resumed_config(args.resume, resume, explicit)
            _check_same_data(args.resume, config)
            _check_writable(args.resume)
        if config.model == "cnn" and explicit.get("pictures"):  # a CNN run resumed with --pictures
            raise ValueError(_PICTURES_CNN)
        if config.model == "cnn" and distributed.launched_by_torchrun():
            raise ValueError(
                "--model cnn runs on one process: under torchrun each process's BatchNorm layers would normalise "
                "with its own share of the batch, not the batch's statistics: launch train.py without torchrun"
            )
        if config.nesterov and config.momentum == 0:
            raise ValueError("--nesterov needs a --momentum above 0: pass --momentum 0.9, say, or --no-nesterov")
        if config.device == "cuda" and not torch.cuda.is_available():
            if "device" not in explicit:  # the device the resumed run was made on
                raise ValueError(
                    f"--resume {args.resume}: the run trained on cuda and no CUDA device is available "
                    "here: pass --device cpu to continue it on the CPU"
                )
            raise ValueError("--device cuda: no CUDA device is available here; use --device cpu or auto")
        config = dataclasses.replace(config, device=str(resolve_device(config.device)))
        _check_cuda_graphs(config)
        if args.resume is None:
            config = dataclasses.replace(config, dataset=_dataset_name(config, explicit))
            _check_memory(config)
    except (ValueError, data.DataError, checkpoint.CheckpointError, OSError) as error:
        parser.exit(2, f"train.py: error: {error}\n")
    with _writer_thread_errors_told_once():
        if distributed.launched_by_torchrun():
            distributed.init(config.device)
            # every rank must stop at the same step, so Ctrl-C is torchrun's: it ends the whole job
            previous = signal.signal(signal.SIGINT, signal.default_int_handler)
            try:
                return _run(parser, args, config, resume, stop or threading.Event())
            finally:
                signal.signal(signal.SIGINT, previous)
                distributed.shutdown()
        if stop is not None:
            return _run(parser, args, config, resume, stop)
        with _CtrlC() as ctrl_c:
            return _run(parser, args, config, resume, ctrl_c.stop, ctrl_c.training())


@contextlib.contextmanager
def _writer_thread_errors_told_once():
    """TensorBoard writes events from a thread of its own. When that fails (a full disk), the writer raises the
    error again in the main thread at its next call, where the run reports it in one line; the thread's own
    traceback would only say it twice."""
    previous = threading.excepthook

    def hook(args):
        frames = traceback.extract_tb(args.exc_traceback)
        if not (isinstance(args.exc_value, OSError) and any("tensorboard" in frame.filename for frame in frames)):
            previous(args)

    threading.excepthook = hook
    try:
        yield
    finally:
        threading.excepthook = previous


class _CtrlC:
    """SIGINT on a run of one process. The first Ctrl-C sets ``stop``: the run stops at the next step boundary and
    saves its position. A second one while ``training()`` is entered stops it at once (KeyboardInterrupt). When
    training returns, SIGINT is ignored from then on: the run is saved, and all that is left is to say so.

    Ignoring it there, before the run says that it stopped, matters to someone who holds Ctrl-C down: a flood of
    signals that meets a Python handler in a blocking call runs the handler again at each retry, nested, until a
    RecursionError ends the process with status -2 rather than 130 (this happened to the test that holds it down)."""

    def __init__(self):
        self.stop = threading.Event()
        self._training = False

    def _handle(self, signum, frame):
        if self.stop.is_set() and self._training:
            raise KeyboardInterrupt
        self.stop.set()

    @contextlib.contextmanager
    def training(self):
        self._training = True
        try:
            yield
        finally:
            self._training = False
            signal.signal(signal.SIGINT, signal.SIG_IGN)

    def __enter__(self):
        self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc):
        signal.signal(signal.SIGINT, self._previous)


def _resumed_config(run_dir, saved, explicit):
    """The saved run's Config, with the flags that may differ when resuming; a finished run is refused."""
    values = dict(saved["config"])
    values.update({name: value for name, value in explicit.items() if name in RESUMABLE})
    try:
        values["hidden"] = tuple(values["hidden"])
        config = Config(**values)
    except (KeyError, TypeError) as error:
        raise checkpoint.CheckpointError(
            f"--resume {run_dir}: its checkpoint's config does not fit this train.py ({checkpoint.cause(error)}): "
            "the run cannot be continued: start a new one"
        ) from error
    if saved["epoch"] >= config.epochs:
        raise ValueError(
            f"--resume {run_dir}: the run is finished ({saved['epoch']} of {config.epochs} epochs): there is "
            "nothing to continue; start a new run to train longer"
        )
    return config


def _check_writable(run_dir):
    """Fail now, not from TensorBoard's writer thread, if the run directory cannot be written."""
    try:
        with tempfile.TemporaryFile(dir=run_dir):
            pass
    except OSError as error:
        raise ValueError(
            f"--resume {run_dir}: cannot write into it ({error.strerror}): make it writable (chmod u+w) or copy "
            "the run somewhere writable and resume the copy"
        ) from error


_PICTURES_CNN = "--pictures draws an MLP's neurons, and --model cnn has none to draw: drop --pictures"


def _check_cnn_flags(args, explicit):
    """--model cnn with a flag that describes the MLP is refused: it would be silently ignored."""
    flags = [_flag(name) for name in MLP_ONLY if name in explicit]
    flags += [f"--preset {args.preset}"] if args.preset else []
    if flags:
        verb = "describes" if len(flags) == 1 else "describe"
        raise ValueError(
            f"{', '.join(flags)} {verb} the MLP, and --model cnn has layers of its own (see --help): drop "
            f"{'it' if len(flags) == 1 else 'them'}, or train --model mlp"
        )
    if explicit.get("pictures"):
        raise ValueError(_PICTURES_CNN)


def _check_cuda_graphs(config):
    if not config.cuda_graphs:
        return
    if config.model == "cnn":
        raise ValueError(
            "--cuda-graphs is not supported with --model cnn: replaying BatchNorm's running statistics and "
            "Dropout's random masks from a captured graph is untested: train it without --cuda-graphs"
        )
    if not config.device.startswith("cuda"):
        raise ValueError(f"--cuda-graphs needs a GPU, and this run is on {config.device}: pass --device cuda")
    if config.compile:
        raise ValueError("--cuda-graphs and --compile each replace the step's launches: pass one of them")
    if config.lr_schedule == "onecycle":
        raise ValueError(
            "--cuda-graphs with --lr-schedule onecycle: OneCycleLR changes the momentum at every step, and a "
            "captured step keeps the momentum it was captured with: use --lr-schedule cosine or constant"
        )
    if distributed.launched_by_torchrun():
        raise ValueError("--cuda-graphs runs on one process: launch train.py without torchrun")


def _check_same_data(run_dir, config):
    """A resumed run must read the data it trained on: a --data-dir holding other files is refused."""
    if config.data_dir is None or config.dataset == "idx":  # downloaded by name, or files no one can tell apart
        return
    found = data.identify(config.data_dir)
    if found != config.dataset:
        what = f"{found}'s" if found != "idx" else "neither MNIST's nor Fashion-MNIST's"
        raise ValueError(
            f"--resume {run_dir}: the run trained on {config.dataset}, but the files in --data-dir "
            f"{config.data_dir} are {what}: pass the folder of the data it trained on"
        )


def _dataset_name(config, explicit):
    """The data set's name as the run records it: with --data-dir, what the files are."""
    if config.data_dir is None:
        return config.dataset
    found = data.identify(config.data_dir)
    if "dataset" in explicit and found not in ("idx", config.dataset):
        raise ValueError(f"--dataset {config.dataset}, but the files in --data-dir {config.data_dir} are {found}'s")
    return config.dataset if "dataset" in explicit else found


def _check_memory(config):
    """Refuse, before anything is written, a model whose weights, gradients and momentum cannot fit."""
    if config.model == "cnn":
        count, model, advice = cnn_parameter_count(), "--model cnn", "train on another device"
    else:
        count = parameter_count([data.IMAGE_PIXELS, *config.hidden, data.NUM_CLASSES])
        model, advice = f"--hidden {' '.join(map(str, config.hidden))}", "choose smaller --hidden sizes"
    copies = 3 if config.momentum > 0 else 2
    needed = count * getattr(torch, config.dtype).itemsize * copies
    device = torch.device(config.device)
    available = torch.cuda.mem_get_info(device)[0] if device.type == "cuda" else _free_host_memory()
    if available is not None and needed > available:
        raise ValueError(
            f"{model}: the model's weights, gradients and momentum need {_bytes(needed)} but {config.device} has "
            f"{_bytes(available)} free: {advice}"
        )


def _free_host_memory():
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _bytes(count):
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if count < 1000 or unit == "PB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000


def _remove_if_empty(run_dir):
    """A run that failed before writing anything leaves no directory behind (a resumed one is never empty)."""
    if distributed.rank_and_world_size()[0] == 0 and os.path.isdir(run_dir) and not os.listdir(run_dir):
        os.rmdir(run_dir)


def _what_is_kept(run_dir, resumable=False):
    """What a failed run leaves in ``run_dir``, said for the end of its error line."""
    try:
        saved = checkpoint.load(run_dir)
    except checkpoint.CheckpointError:
        return f"no checkpoint was saved: {run_dir} holds only the TensorBoard events so far"
    position = f"epoch {saved['epoch']}" + (f", step {saved['step']}" if saved["step"] else "")
    then = f": continue with --resume {run_dir}" if resumable else ""
    return f"the last good checkpoint ({position}) is kept in {run_dir}{then}"


def _run(parser, args, config, resume, stop, training=None):
    """Pick the run directory (rank 0 does, under torchrun), train, and report; errors end the process.

    ``training`` (a context manager) is entered while ``train`` runs.
    """
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
        with training or contextlib.nullcontext():
            progress = not args.no_progress and sys.stderr.isatty()
            result = train(config, run_dir, resume=resume, progress=progress, stop=stop)
    except data.DataError as error:
        _remove_if_empty(run_dir)
        parser.exit(2, f"train.py: error: {prefix}{error}\n")
    except checkpoint.SaveError as error:  # a full disk: the run can go on from its last checkpoint
        parser.exit(1, f"train.py: error: {prefix}{error}; {_what_is_kept(run_dir, resumable=True)}\n")
    except checkpoint.CheckpointError as error:  # a checkpoint that does not fit its own configuration
        parser.exit(2, f"train.py: error: {prefix}--resume {run_dir}: {error}\n")
    except TrainingError as error:
        parser.exit(1, f"train.py: error: {prefix}{error}; {_what_is_kept(run_dir)}\n")
    except (torch.OutOfMemoryError, RuntimeError) as error:
        if not isinstance(error, torch.OutOfMemoryError) and "alloc" not in str(error):
            raise  # not a failed allocation: a bug, whose traceback is the useful report
        _remove_if_empty(run_dir)
        parser.exit(
            1,
            f"train.py: error: {prefix}out of memory on {config.device} ({checkpoint.cause(error)}): choose "
            f"{'a smaller' if config.model == 'cnn' else 'smaller --hidden sizes or'} --batch-size\n",
        )
    except OSError as error:  # TensorBoard's event file, on a full disk or in a folder that went away
        kept = _what_is_kept(run_dir, resumable=True)
        parser.exit(
            1,
            f"train.py: error: {prefix}could not write TensorBoard's events into {run_dir} "
            f"({error.strerror or error}): free disk space, or raise the file-size limit (ulimit -f); {kept}\n",
        )
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
