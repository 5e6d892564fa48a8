"""Real models converted with ``manualbp.convert``, against the same models in torch.nn: one training step each.

    python benchmarks/models.py [--device cuda] [--quick] [--profile] [--models resnet18,transformer]

Each model is built twice from the same seed (the same initial weights); one copy is converted, so the only
difference is whose Functions compute the forward and backward passes. Each timed call is one step on a fixed
random batch: forward in training mode, cross-entropy, backward, SGD with momentum 0.9.

- ``resnet18``: torchvision's ``resnet18(num_classes=10)`` on 3 × 32 × 32 images.
- ``transformer``: an ``Embedding`` (1,000 tokens, d 128), a 2-layer ``TransformerEncoder`` (4 heads, feed-forward
  512, dropout 0.1, batch first), and a ``Linear`` back to the 1,000 tokens, on sequences of 64 tokens: every
  position predicts a token.
"""

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import _harness  # noqa: E402
import cnn  # noqa: E402
import step  # noqa: E402

import manualbp  # noqa: E402
from manualbp import functional as manual_functional  # noqa: E402

MODELS = {  # name → the table's description
    "resnet18": "torchvision resnet18(num_classes=10), 3 × 32 × 32",
    "transformer": "Embedding + 2-layer TransformerEncoder (d 128, 4 heads, ff 512) + Linear, sequence 64",
}
BATCH = 16
QUICK_BATCH = 2
VOCABULARY, SEQUENCE = 1000, 64


class TokenModel(torch.nn.Module):
    """Embedding, TransformerEncoder, Linear: a token's logits for every position of a sequence."""

    def __init__(self, d_model=128, heads=4, feed_forward=512, layers=2):
        super().__init__()
        self.embedding = torch.nn.Embedding(VOCABULARY, d_model)
        layer = torch.nn.TransformerEncoderLayer(d_model, heads, feed_forward, batch_first=True)
        self.encoder = torch.nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = torch.nn.Linear(d_model, VOCABULARY)

    def forward(self, tokens):
        return self.head(self.encoder(self.embedding(tokens))).flatten(0, 1)


def resnet18():
    import torchvision  # only this model needs it

    return torchvision.models.resnet18(weights=None, num_classes=10)


def make_case(name, batch_size, layers, device):
    """``(model, x, target, cost)``: the model (seed 0), converted when ``layers`` is ``"manual"``, a fixed random
    batch, and ``cost(output)``, its cross-entropy."""
    torch.manual_seed(0)
    model = resnet18() if name == "resnet18" else TokenModel()
    if layers == "manual":
        model = manualbp.convert(model)
    model = model.to(device).train()
    generator = torch.Generator().manual_seed(0)
    if name == "resnet18":
        x = torch.randn(batch_size, 3, 32, 32, generator=generator)
        target = torch.randint(0, 10, (batch_size,), generator=generator)
    else:
        x = torch.randint(0, VOCABULARY, (batch_size, SEQUENCE), generator=generator)
        target = torch.randint(0, VOCABULARY, (batch_size * SEQUENCE,), generator=generator)
    x, target = x.to(device), target.to(device)
    functional = manual_functional if layers == "manual" else torch.nn.functional
    return model, x, target, lambda output: functional.cross_entropy(output, target)


def make_step(name, batch_size, layers, device):
    model, x, _, cost = make_case(name, batch_size, layers, device)
    return step.training_step(model, lambda: cost(model(x)))


def model_list(text):
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in MODELS]
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list of {', '.join(MODELS)}, got {text!r}")
    return names


def main(argv=None):
    parser = _harness.parser(__doc__.split("\n\n")[0])
    parser.add_argument("--profile", action="store_true", help="also print each variant's top operators")
    parser.add_argument(
        "--models", type=model_list, default=list(MODELS), help=f"which models (default: {','.join(MODELS)})"
    )
    args = parser.parse_args(argv)
    device = _harness.check_device(args)
    rounds = args.rounds or (2 if args.quick else 21)
    min_run_time = 0.01 if args.quick else 0.5
    batch_size = QUICK_BATCH if args.quick else BATCH
    rows = []
    for name in args.models:
        steps = {layers: make_step(name, batch_size, layers, device) for layers in ("manual", "torch")}
        times = _harness.compare(steps, device, rounds, min_run_time)
        rows.append(
            [
                MODELS[name],
                batch_size,
                _harness.microseconds(times["manual"]),
                _harness.microseconds(times["torch"]),
                _harness.format_ratio(times["manual"], times["torch"]),
            ]
        )
        if args.profile:
            for layers in ("manual", "torch"):
                table = cnn.profile_table(make_step(name, batch_size, layers, device), device)
                print(f"#### Top operators, {name}, `{layers}`, batch {batch_size}, 5 steps\n\n```\n{table}\n```\n")
    header = ["model", "batch", "manualbp µs", "torch.nn µs", "ratio (IQR)"]
    command = _harness.command("models.py", args)
    _harness.report("Converted real models, one training step, eager", device, command, _harness.table(header, rows))
    return rows


if __name__ == "__main__":
    main()
