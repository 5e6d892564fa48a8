"""See backprop on one example of a trained run: ``python -m manualbp_trainer.explain RUN_DIR``.

Loads the run's saved MLP and its data set, takes one test image (``--index N``, or the first of class ``--label K``),
draws what that example asks of every output neuron, hidden neuron and first-layer weight (``--out FILE.png``), and
prints the chain rule for one weight of the last layer, ∂C/∂w = ∂C/∂a · f′(z) · a⁽ᴸ⁻¹⁾, factor by factor, beside
autograd's ∂C/∂w. Bad input is one line on stderr and exit status 2.
"""

import argparse
import os
import sys

import torch

from manualbp_trainer import checkpoint, data, pictures
from manualbp_trainer.loop import Config
from manualbp_trainer.networks import build_mlp


class ExplainError(Exception):
    """The run, its checkpoint or the chosen example cannot be used; the message says what to do."""


def load_run(run_dir):
    """``(model, config)`` of the run in ``run_dir``: its last checkpoint's MLP, on the CPU."""
    saved = checkpoint.read(run_dir, ("model", "config"))
    path = os.path.join(run_dir, checkpoint.FILENAME)
    fields = {name: value for name, value in saved["config"].items() if name in Config.__dataclass_fields__}
    config = Config(**{**fields, "hidden": tuple(fields.get("hidden", ()))})
    if config.model != "mlp":
        raise ExplainError(
            f"{run_dir} is a --model {config.model} run: explain draws an MLP's neurons and follows the chain rule "
            "through its Linear layers; choose a run of --model mlp"
        )
    state = saved["model"]
    weights = [state[key] for key in sorted((k for k in state if k.endswith(".weight")), key=_layer_number)]
    if not weights or any(w.dim() != 2 for w in weights):
        raise ExplainError(f"{path} holds a checkpoint of another model, not an MLP of Linear layers")
    sizes = [weights[0].shape[1], *(w.shape[0] for w in weights)]
    model = build_mlp(sizes, config.activation, config.output_activation, "manual", dtype=weights[0].dtype)
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        raise ExplainError(
            f"{path} holds a checkpoint of another model: its weights do not fit the MLP {'-'.join(map(str, sizes))} "
            f"its config describes"
        ) from error
    return model.eval(), config


def pick(test_set, index=None, label=None):
    """The index of the chosen test example: ``index``, or the first example of class ``label`` (default 0)."""
    if index is not None:
        if not 0 <= index < len(test_set):
            raise ExplainError(
                f"--index {index} is out of range: the test set has {len(test_set)} images (0 to {len(test_set) - 1})"
            )
        return index
    if label is not None:
        found = (test_set.labels == label).nonzero()
        if len(found) == 0:
            raise ExplainError(
                f"--label {label}: no test image has that class (classes are 0 to {data.NUM_CLASSES - 1})"
            )
        return int(found[0])
    return 0


def build_parser():
    parser = argparse.ArgumentParser(
        prog="python -m manualbp_trainer.explain",
        description="What one test example asks of a trained MLP's outputs, hidden neurons and weights, and the "
        "chain rule for one weight, factor by factor, beside autograd's gradient.",
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a run directory made by train.py")
    choose = parser.add_mutually_exclusive_group()
    choose.add_argument("--index", type=int, help="the test image's index (default: 0)")
    choose.add_argument("--label", type=int, help="the first test image of this class")
    parser.add_argument("--out", metavar="FILE.png", help="draw the figure into this new PNG file")
    parser.add_argument("--data-dir", help="the four IDX files, if not where the run read them")
    parser.add_argument("--row", type=int, help="the weight's output neuron j in the last layer (default: the target)")
    parser.add_argument("--column", type=int, help="the weight's input k (default: the hidden neuron feeding j most)")
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return _explain(args)
    except (ExplainError, checkpoint.CheckpointError, data.DataError) as error:
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return 2


def _explain(args):
    if args.out is not None and os.path.exists(args.out):
        raise ExplainError(f"--out {args.out} already exists: choose a new file name")
    if args.out is not None and not args.out.lower().endswith(".png"):
        raise ExplainError(f"--out {args.out}: the figure is a PNG image; name the file FILE.png")
    folder = os.path.dirname(os.path.abspath(args.out)) if args.out is not None else None
    if folder is not None and not (os.path.isdir(folder) and os.access(folder, os.W_OK)):
        raise ExplainError(f"--out {args.out}: there is no writable folder {folder} to put it in: make it first")
    model, config = load_run(args.run_dir)
    data_dir = args.data_dir if args.data_dir is not None else config.data_dir
    dtype = next(model.parameters()).dtype
    _, test_set = data.load(config.dataset, config.data_root, data_dir, "cpu", dtype, config.normalize)
    index = pick(test_set, args.index, args.label)
    x, label = test_set.images[index], int(test_set.labels[index])
    target = test_set.labels[index]
    if config.loss == "mse":  # the quadratic cost compares the output with the label's one-hot vector
        target = torch.nn.functional.one_hot(target, data.NUM_CLASSES).to(dtype)
    width = [m for m in model if isinstance(m, torch.nn.Linear)][-1].out_features
    for flag, value in (("--row", args.row), ("--column", args.column)):
        limit = width if flag == "--row" else [m for m in model if isinstance(m, torch.nn.Linear)][-1].in_features
        if value is not None and not 0 <= value < limit:
            raise ExplainError(f"{flag} {value} is out of range: the last layer has {limit} (0 to {limit - 1})")
    predicted = int(model(x.unsqueeze(0)).argmax())
    print(f"{args.run_dir}: test image {index}, class {label}, predicted {predicted}")
    print(pictures.format_chain_rule(pictures.chain_rule(model, x, target, config.loss, args.row, args.column)))
    if args.out is not None:
        names = pictures.class_names(config.dataset)
        figure = pictures.figure(x, label, pictures.requests(model, x, target, config.loss), names)
        figure.savefig(args.out, bbox_inches="tight")  # nothing cut off at the edges
        print(f"the figure: {args.out}")
    return 0


def _layer_number(key):
    head = key.split(".")[0]
    return int(head) if head.isdigit() else -1


if __name__ == "__main__":
    sys.exit(main())
