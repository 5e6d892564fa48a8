"""Compare every manualbp layer with PyTorch autograd on this machine: ``python -m manualbp.check``.

Every layer but Dropout, whose mask is drawn at random (the tests prove it for a fixed mask and against torch's own
draws on the CPU).

For each layer, the forward output and every gradient are computed from the same random inputs and the same
random upstream gradient (not ``.sum()``, which would hide a transposed or mis-scaled formula): by the reference
tier (``manualbp.autograd``'s Function called as ``Function.apply``), by the fast tier (``manualbp.functional``,
what users call) and by PyTorch's built-in autograd. Each tier's row gives the verdict against autograd in three
columns: *exact* (equal to the bit), *approximate* (within ``torch.testing.assert_close``'s tolerance for the
dtype) and *maxdiff* (the largest absolute difference), judged by ``manualbp.verify``'s ``compare``: the one machinery
that ``manualbp.verify`` holds anyone's Function to. The exit status is 1 if any row is not approximate.
"""

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass

import torch

from manualbp import autograd as A
from manualbp import functional as F
from manualbp.verify.compare import TOLERANCES, format_table
from manualbp.verify.compare import compare as judge


@dataclass(frozen=True)
class Case:
    """One layer to compare: its implementations and how to draw its inputs.

    ``make_inputs(generator, dtype)`` returns a dict of named CPU tensors; the floating-point ones listed in
    ``differentiable`` get gradients. ``manual`` (the public, fast-tier call), ``reference_tier`` (the reference
    Function's ``apply``) and ``reference`` (PyTorch) take them positionally, in that order.
    """

    name: str
    manual: Callable
    reference_tier: Callable
    reference: Callable
    make_inputs: Callable
    differentiable: tuple


@dataclass(frozen=True)
class Row:
    layer: str
    tier: str  # "reference" or "fast"
    quantity: str
    exact: bool
    approximate: bool
    maxdiff: float
    reference_max: float  # the largest |entry| of autograd's result: the scale maxdiff is measured against


def _randn(generator, dtype, *shape):
    return torch.randn(shape, generator=generator, dtype=dtype)


def _away_from_zero(generator, dtype, *shape):
    # activations have a kink at 0 where the derivative is a convention: keep the inputs clear of it
    z = _randn(generator, dtype, *shape)
    return z + 0.1 * torch.sign(z)


def _linear_inputs(generator, dtype):
    return {
        "x": _randn(generator, dtype, 64, 100),
        "weight": _randn(generator, dtype, 50, 100) * 0.1,
        "bias": _randn(generator, dtype, 50),
    }


def _activation_inputs(generator, dtype):
    return {"z": _away_from_zero(generator, dtype, 64, 100)}


def _mlp_inputs(generator, dtype):
    return {
        "x": _randn(generator, dtype, 64, 100),
        "weight1": _randn(generator, dtype, 50, 100) * 0.1,
        "bias1": _randn(generator, dtype, 50),
        "weight2": _randn(generator, dtype, 10, 50) * 0.1,
        "bias2": _randn(generator, dtype, 10),
    }


def _mlp_torch(x, weight1, bias1, weight2, bias2):
    return torch.relu(tnf.linear(torch.tanh(tnf.linear(x, weight1, bias1)), weight2, bias2))


def _mse_inputs(generator, dtype):
    return {"a": _randn(generator, dtype, 64, 10), "y": _randn(generator, dtype, 64, 10)}


def _cross_entropy_inputs(generator, dtype):
    return {"z": _randn(generator, dtype, 64, 10) * 3, "target": torch.randint(0, 10, (64,), generator=generator)}


def _weighted_cross_entropy_inputs(generator, dtype):
    inputs = _cross_entropy_inputs(generator, dtype)
    inputs["target"][::7] = -100  # some rows ignored
    inputs["weight"] = torch.rand(10, generator=generator, dtype=dtype) + 0.5
    return inputs


def _layer_norm_inputs(generator, dtype):
    return {
        "x": _randn(generator, dtype, 64, 100) * 2 + 1,
        "weight": _randn(generator, dtype, 100),
        "bias": _randn(generator, dtype, 100),
    }


def _group_norm_inputs(generator, dtype):
    return {
        "x": _randn(generator, dtype, 8, 12, 4, 4) * 2 + 1,
        "weight": _randn(generator, dtype, 12),
        "bias": _randn(generator, dtype, 12),
    }


def _embedding_inputs(generator, dtype):
    return {"indices": torch.randint(0, 20, (64, 8), generator=generator), "weight": _randn(generator, dtype, 20, 16)}


def _attention_inputs(generator, dtype):
    return {
        "q": _randn(generator, dtype, 4, 2, 16, 8),
        "k": _randn(generator, dtype, 4, 2, 24, 8),
        "v": _randn(generator, dtype, 4, 2, 24, 8),
    }


def _conv_inputs(generator, dtype):
    return {
        "x": _randn(generator, dtype, 8, 4, 12, 12),
        "weight": _randn(generator, dtype, 6, 4, 3, 3),
        "bias": _randn(generator, dtype, 6),
    }


def _image_inputs(generator, dtype):
    return {"x": _randn(generator, dtype, 8, 4, 12, 12)}


def _batch_norm_inputs(generator, dtype):
    return {
        "x": _randn(generator, dtype, 16, 4, 6, 6) * 2 + 1,
        "weight": _randn(generator, dtype, 4),
        "bias": _randn(generator, dtype, 4),
    }


tnf = torch.nn.functional


def _fused(activation):
    return Case(
        f"Linear+{activation.__name__}",
        lambda x, weight, bias: F.linear_activation(x, weight, bias, activation.__name__.lower()),
        lambda x, weight, bias: activation.apply(A.Linear.apply(x, weight, bias)),
        lambda x, weight, bias: getattr(torch, activation.__name__.lower())(tnf.linear(x, weight, bias)),
        _linear_inputs,
        ("x", "weight", "bias"),
    )


CASES = (
    Case("Linear", F.linear, A.Linear.apply, tnf.linear, _linear_inputs, ("x", "weight", "bias")),
    Case("ReLU", F.relu, A.ReLU.apply, tnf.relu, _activation_inputs, ("z",)),
    Case(
        "LeakyReLU",
        lambda z: F.leaky_relu(z, 0.1),
        lambda z: A.LeakyReLU.apply(z, 0.1),
        lambda z: tnf.leaky_relu(z, 0.1),
        _activation_inputs,
        ("z",),
    ),
    Case("Sigmoid", F.sigmoid, A.Sigmoid.apply, torch.sigmoid, _activation_inputs, ("z",)),
    Case("Tanh", F.tanh, A.Tanh.apply, torch.tanh, _activation_inputs, ("z",)),
    Case("GELU", F.gelu, lambda z: A.GELU.apply(z, "none"), tnf.gelu, _activation_inputs, ("z",)),
    Case(
        "GELU(tanh)",
        lambda z: F.gelu(z, approximate="tanh"),
        lambda z: A.GELU.apply(z, "tanh"),
        lambda z: tnf.gelu(z, approximate="tanh"),
        _activation_inputs,
        ("z",),
    ),
    _fused(A.ReLU),
    _fused(A.Sigmoid),
    _fused(A.Tanh),
    Case(
        "Softmax",
        lambda z: F.softmax(z, -1),
        lambda z: A.Softmax.apply(z, -1),
        lambda z: torch.softmax(z, -1),
        _activation_inputs,
        ("z",),
    ),
    Case(
        "LogSoftmax",
        lambda z: F.log_softmax(z, -1),
        lambda z: A.LogSoftmax.apply(z, -1),
        lambda z: torch.log_softmax(z, -1),
        _activation_inputs,
        ("z",),
    ),
    Case(
        "Conv2d(stride=2,padding=1)",
        lambda x, weight, bias: F.conv2d(x, weight, bias, 2, 1),
        lambda x, weight, bias: A.Conv2d.apply(x, weight, bias, (2, 2), (1, 1), (1, 1), 1),
        lambda x, weight, bias: tnf.conv2d(x, weight, bias, 2, 1),
        _conv_inputs,
        ("x", "weight", "bias"),
    ),
    Case(
        "MaxPool2d(3,stride=2)",
        lambda x: F.max_pool2d(x, 3, 2),
        lambda x: A.MaxPool2d.apply(x, (3, 3), (2, 2), (0, 0), (1, 1), False)[0],
        lambda x: tnf.max_pool2d(x, 3, 2),
        _image_inputs,
        ("x",),
    ),
    Case(
        "AvgPool2d(2)",
        lambda x: F.avg_pool2d(x, 2),
        lambda x: A.AvgPool2d.apply(x, (2, 2), (2, 2), (0, 0), False, True, None),
        lambda x: tnf.avg_pool2d(x, 2),
        _image_inputs,
        ("x",),
    ),
    Case(
        "AdaptiveAvgPool2d(5)",
        lambda x: F.adaptive_avg_pool2d(x, 5),
        lambda x: A.AdaptiveAvgPool2d.apply(x, (5, 5)),
        lambda x: tnf.adaptive_avg_pool2d(x, 5),
        _image_inputs,
        ("x",),
    ),
    Case(
        "BatchNorm2d(training)",
        lambda x, weight, bias: F.batch_norm(x, None, None, weight, bias, training=True),
        lambda x, weight, bias: A.BatchNorm.apply(x, weight, bias, None, None, True, 0.1, 1e-5),
        lambda x, weight, bias: tnf.batch_norm(x, None, None, weight, bias, training=True),
        _batch_norm_inputs,
        ("x", "weight", "bias"),
    ),
    Case(
        "LayerNorm",
        lambda x, weight, bias: F.layer_norm(x, (100,), weight, bias),
        lambda x, weight, bias: A.LayerNorm.apply(x, (100,), weight, bias, 1e-5),
        lambda x, weight, bias: tnf.layer_norm(x, (100,), weight, bias),
        _layer_norm_inputs,
        ("x", "weight", "bias"),
    ),
    Case(
        "GroupNorm",
        lambda x, weight, bias: F.group_norm(x, 4, weight, bias),
        lambda x, weight, bias: A.GroupNorm.apply(x, 4, weight, bias, 1e-5),
        lambda x, weight, bias: tnf.group_norm(x, 4, weight, bias),
        _group_norm_inputs,
        ("x", "weight", "bias"),
    ),
    Case(
        "Embedding",
        F.embedding,
        lambda indices, weight: A.Embedding.apply(indices, weight, None, False),
        tnf.embedding,
        _embedding_inputs,
        ("weight",),
    ),
    Case(
        "Attention",
        F.scaled_dot_product_attention,
        lambda q, k, v: A.ScaledDotProductAttention.apply(q, k, v, None, None, 1 / 8**0.5)[0],
        tnf.scaled_dot_product_attention,
        _attention_inputs,
        ("q", "k", "v"),
    ),
    Case(
        "MLP(tanh,relu)",
        lambda x, w1, b1, w2, b2: F.mlp(x, [w1, w2], [b1, b2], ["tanh", "relu"]),
        lambda x, w1, b1, w2, b2: A.MLP.apply(x, ("tanh", "relu"), w1, b1, w2, b2)[0],
        _mlp_torch,
        _mlp_inputs,
        ("x", "weight1", "bias1", "weight2", "bias2"),
    ),
    Case(
        "MSELoss", F.mse_loss, lambda a, y: A.MSELoss.apply(a, y, None, "mean"), tnf.mse_loss, _mse_inputs, ("a", "y")
    ),
    Case(
        "MSELoss(sum)",
        lambda a, y: F.mse_loss(a, y, reduction="sum"),
        lambda a, y: A.MSELoss.apply(a, y, None, "sum"),
        lambda a, y: tnf.mse_loss(a, y, reduction="sum"),
        _mse_inputs,
        ("a",),
    ),
    Case(
        "CrossEntropyLoss",
        F.cross_entropy,
        lambda z, target: A.CrossEntropyLoss.apply(z, target, None, -100, 0.0, "mean")[0],
        tnf.cross_entropy,
        _cross_entropy_inputs,
        ("z",),
    ),
    Case(
        "CrossEntropyLoss(weighted,smoothed)",
        lambda z, target, weight: F.cross_entropy(z, target, weight, label_smoothing=0.1),
        lambda z, target, weight: A.CrossEntropyLoss.apply(z, target, weight, -100, 0.1, "mean")[0],
        lambda z, target, weight: tnf.cross_entropy(z, target, weight, label_smoothing=0.1),
        _weighted_cross_entropy_inputs,
        ("z",),
    ),
)

TIERS = ("reference", "fast")


def compare(case, device="cpu", dtype=torch.float32, seed=0):
    """Run ``case`` by each tier and by autograd; return, for each tier, one Row for the forward output and one
    for each gradient."""
    generator = torch.Generator().manual_seed(seed)
    inputs = {name: t.to(device) for name, t in case.make_inputs(generator, dtype).items()}
    upstream = None
    results = {}
    for label, fn in (("reference", case.reference_tier), ("fast", case.manual), ("autograd", case.reference)):
        leaves = {name: t.clone().requires_grad_(name in case.differentiable) for name, t in inputs.items()}
        output = fn(*leaves.values())
        if upstream is None:
            upstream = _randn(generator, dtype, *output.shape).to(device)
        grads = torch.autograd.grad(output, [leaves[name] for name in case.differentiable], upstream)
        results[label] = [output.detach(), *grads]
    quantities = ["forward", *(f"grad {name}" for name in case.differentiable)]
    return [
        _row(case.name, tier, q, m, r)
        for tier in TIERS
        for q, m, r in zip(quantities, results[tier], results["autograd"], strict=True)
    ]


def _row(layer, tier, quantity, manual, reference):
    verdict = judge(manual, reference)
    return Row(layer, tier, quantity, verdict.exact, verdict.approximate, verdict.maxdiff, verdict.reference_max)


def _table(rows):
    header = ("layer", "tier", "quantity", "exact", "approximate", "maxdiff")
    return format_table(
        header, [(r.layer, r.tier, r.quantity, str(r.exact), str(r.approximate), f"{r.maxdiff:.3e}") for r in rows]
    )


def _seed(text):
    """--seed: an int that ``torch.Generator.manual_seed`` takes."""
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or not -(2**63) <= value < 2**64:
        expected = "an integer from -2**63 to 2**64 - 1 (torch.manual_seed's range)"
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
    return value


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m manualbp.check",
        description="Compare every manualbp layer's forward and gradients, by the reference tier and by the fast "
        "tier, with PyTorch autograd on random inputs and random upstream gradients. Exits 1 if any gradient "
        "disagrees beyond tolerance.",
    )
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where to run (default: cpu)")
    parser.add_argument(
        "--dtype",
        choices=("float32", "float64"),
        default="float32",
        help="floating-point type of the inputs (default: float32)",
    )
    parser.add_argument("--seed", type=_seed, default=0, help="seed for the random inputs (default: 0)")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available here; use --device cpu")
    dtype = getattr(torch, args.dtype)
    rows = [row for case in CASES for row in compare(case, args.device, dtype, args.seed)]
    device_name = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    print(
        f"manualbp vs torch {torch.__version__} autograd on {device_name}, {args.dtype}, "
        f"tolerance {TOLERANCES[dtype]}\n"
    )
    print(_table(rows))
    failed = [r for r in rows if not r.approximate]
    exact = sum(r.exact for r in rows)
    print(f"\n{exact} of {len(rows)} exact, {len(rows) - len(failed)} of {len(rows)} within tolerance")
    if failed:
        print("FAILED: " + ", ".join(f"{r.layer} {r.tier} {r.quantity}" for r in failed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
