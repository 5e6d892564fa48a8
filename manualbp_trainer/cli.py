"""The command line of train.py: the flags, their help and the Config they make. Training itself is ``launch``'s,
imported only once the flags are parsed: ``--help`` and a mistyped flag import neither torch nor torchvision (what
they read, ``config`` and the model specs, imports no torch)."""

import argparse
import dataclasses
import math

from manualbp_trainer.config import ACTIVATIONS, DATASETS, PRESETS, Config, flag
from manualbp_trainer.model import MODELS


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


def _as_flag(name, value):
    """``("lr", 0.1)`` as "--lr 0.1", ``("pictures", False)`` as "--no-pictures"."""
    if isinstance(value, bool):
        return flag(("" if value else "no_") + name)
    return f"{flag(name)} {value}"


def _with_default(text, value):
    """``text`` and the default it describes, said once: argparse's own "(default: …)" would say ``None`` for
    every option whose default is Config's (the parser's defaults are None, to tell which flags were given)."""
    if isinstance(value, bool):
        value = "on" if value else "off"
    elif isinstance(value, tuple):
        value = " ".join(map(str, value))
    return f"{text} (default: {value})" if text else f"(default: {value})"


def _models_help():
    """--model's entry: each kind's layers, and its own defaults."""
    entries = []
    for spec in MODELS.values():
        defaults = ", ".join(_as_flag(name, value) for name, value in spec.defaults.items())
        entries.append(f"{spec.name}: {spec.summary}" + (f"; its own defaults: {defaults}" if defaults else ""))
    return ". ".join(entries) + "."


def _own_defaults(name):
    """ "--model cnn: 10, --model vit: 10": the model kinds' own defaults for Config field ``name``."""
    return ", ".join(f"--model {spec.name}: {spec.defaults[name]}" for spec in MODELS.values() if name in spec.defaults)


def build_parser():
    """train.py's flags. Their defaults in the parser are None, to tell which flags were given; --help states
    Config's."""
    p = _Parser(
        prog="train.py",
        description="Train an MLP, a small CNN or a small vision transformer on MNIST with manualbp's hand-derived "
        "layers (mini-batch SGD), logging to TensorBoard: watch it with `uv run tensorboard --logdir runs`.",
        argument_default=None,
    )
    d = Config()
    _model_flags(p.add_argument_group("model"), d)
    _optimiser_flags(p.add_argument_group("optimiser (torch.optim.SGD)"), d)
    _data_flags(p.add_argument_group("data"), d)
    _run_flags(p.add_argument_group("run"), d)
    return p


def _model_flags(model, d):
    model.add_argument("--model", choices=list(MODELS), help=_with_default(_models_help(), d.model))
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


def _optimiser_flags(opt, d):
    opt.add_argument("--lr", type=_positive(float), help=_with_default("learning rate", d.lr))
    opt.add_argument(
        "--momentum",
        type=_non_negative_float,
        help=_with_default("heavy-ball momentum: each update adds this fraction of the previous one", d.momentum),
    )
    opt.add_argument(
        "--nesterov",
        action=argparse.BooleanOptionalAction,
        help=_with_default("Nesterov's momentum: the gradient looks one momentum step ahead", d.nesterov),
    )
    opt.add_argument(
        "--weight-decay",
        type=_non_negative_float,
        help=_with_default("L2 penalty: adds this times each weight to its gradient", d.weight_decay),
    )
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
    opt.add_argument(
        "--epochs",
        type=_positive(int),
        help=_with_default(f"passes over the training set ({_own_defaults('epochs')})", d.epochs),
    )
    opt.add_argument("--seed", type=_seed, help=_with_default("seeds the initial weights and the shuffling", d.seed))
    opt.add_argument(
        "--dtype",
        choices=["float32", "float64"],
        help=_with_default("floating-point type of the weights and the data", d.dtype),
    )
    opt.add_argument(
        "--preset",
        choices=list(PRESETS),
        help="nielsen: the chapter-1 network of 'Neural Networks and Deep Learning' (784-30-10 sigmoid, "
        "quadratic cost, η = 3.0 as lr 15 for our mean-reduced loss, batch 10, 30 epochs, N(0, 1) "
        "init). Explicit flags override it.",
    )


def _data_flags(dat, d):
    dat.add_argument(
        "--dataset",
        choices=list(DATASETS),
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


def _run_flags(run, d):
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
            "replay it: on a GPU, one launch per step instead of dozens. By default on wherever the run allows it "
            "(a GPU, one process, a model that supports it, no --compile, no --lr-schedule onecycle), and a GPU run "
            "that cannot have it says why and runs eagerly; --cuda-graphs insists (an error where it cannot run), "
            "--no-cuda-graphs runs eagerly",
            "where the run allows it",
        ),
    )
    run.add_argument("--log-every", type=_positive(int), help=_with_default("steps between logged values", d.log_every))
    run.add_argument(
        "--pictures",
        action=argparse.BooleanOptionalAction,
        help=_with_default(
            "each epoch, draw what one test image per class asks of every output, hidden neuron and first-layer "
            "weight, and how single examples' gradients agree with their batch (TensorBoard's IMAGES and "
            "HISTOGRAMS tabs; the MLP's only). A worker process draws the figures while the next epoch trains "
            "(about 3 s of a core an epoch)",
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


def config_from_args(args):
    """Defaults, then the preset or the --model's own defaults, then every flag given explicitly."""
    values = dataclasses.asdict(Config())
    if args.preset:
        values.update(PRESETS[args.preset])
    values.update(MODELS[args.model or "mlp"].defaults)
    explicit = {f.name: getattr(args, f.name) for f in dataclasses.fields(Config) if getattr(args, f.name) is not None}
    values.update(explicit)
    values["hidden"] = tuple(values["hidden"])
    return Config(**values), explicit


def main(argv=None, stop=None):
    """Run train.py's command line; return the exit status (argument and setup errors exit via SystemExit).

    ``stop`` is an event that stops the run at the next step boundary once set (``threading.Event``). By default
    the first Ctrl-C or SIGTERM sets it and a second one stops at once (``launch.StopSignals``); under torchrun
    they are torchrun's.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    config, explicit = config_from_args(args)
    from manualbp_trainer import launch  # here, not above: --help needs no torchvision nor TensorBoard

    return launch.run(parser, args, config, explicit, stop)
