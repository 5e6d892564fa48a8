"""Cross-entropy's two reference Functions: the plain case (``OneHotCrossEntropyLoss``) against the general one
(``CrossEntropyLoss``) bit for bit, both against PyTorch, both through gradcheck and gradgradcheck, and the
derivation ladder of docs/derivations.md rung by rung against autograd."""

import pytest
import torch
from conftest import assert_grad_and_gradgrad
from hypothesis import given, settings
from hypothesis import strategies as st

from manualbp import autograd as A

DTYPES = [torch.float32, torch.float64]


def plain(z, target):
    return A.OneHotCrossEntropyLoss.apply(z, target)[0]


def general(z, target, weight=None, ignore_index=-100, label_smoothing=0.0, reduction="mean"):
    return A.CrossEntropyLoss.apply(z, target, weight, ignore_index, label_smoothing, reduction)[0]


def _loss_grad_and_tangent(loss, z, target, upstream, direction):
    """The loss, ∂(upstream · loss)/∂z, and the loss's tangent along ``direction`` (forward-mode AD)."""
    leaf = z.detach().clone().requires_grad_()
    value = loss(leaf, target)
    (grad,) = torch.autograd.grad(value, leaf, upstream)
    _, tangent = torch.func.jvp(lambda z: loss(z, target), (z.detach(),), (direction,))
    return value.detach(), grad, tangent


def _case(dtype, rows, classes, seed):
    generator = torch.Generator().manual_seed(seed)
    z = torch.randn(rows, classes, generator=generator, dtype=dtype) * 3
    target = torch.randint(0, classes, (rows,), generator=generator)
    upstream = torch.randn((), generator=generator, dtype=dtype)
    direction = torch.randn(rows, classes, generator=generator, dtype=dtype)
    return z, target, upstream, direction


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@settings(max_examples=20, deadline=None)
@given(rows=st.integers(1, 300), classes=st.integers(1, 12), seed=st.integers(0, 2**16))
def test_plain_and_general_cross_entropy_agree_bitwise_on_the_plain_case(dtype, rows, classes, seed):
    z, target, upstream, direction = _case(dtype, rows, classes, seed)
    ours = _loss_grad_and_tangent(plain, z, target, upstream, direction)
    theirs = _loss_grad_and_tangent(general, z, target, upstream, direction)
    for name, got, expected in zip(("loss", "grad z", "tangent"), ours, theirs, strict=True):
        assert got.dtype == expected.dtype and got.shape == expected.shape, name
        assert torch.equal(got, expected), f"{name}: {(got - expected).abs().max()}"


@pytest.mark.parametrize("function", [plain, general], ids=["plain", "general"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("rows, classes", [(1, 1), (1, 2), (7, 10), (64, 10), (300, 12), (5, 123)])
def test_cross_entropy_matches_torch_loss_bitwise_and_grad_within_a_few_ulps(function, dtype, rows, classes):
    z, target, upstream, direction = _case(dtype, rows, classes, seed=rows * classes)
    loss, grad, tangent = _loss_grad_and_tangent(function, z, target, upstream, direction)
    expected = _loss_grad_and_tangent(torch.nn.functional.cross_entropy, z, target, upstream, direction)
    assert torch.equal(loss, expected[0]), "the value is PyTorch's own kernels: log_softmax, then nll_loss"
    # not bitwise: log_softmax_backward's fused kernel evaluates e^ℓ·Σu in one pass, the formula in two roundings;
    # a few ulps of the largest entry for the gradient, of the largest ż_k for the tangent (ż − Σ p ż cancels)
    eps = torch.finfo(dtype).eps
    assert (grad - expected[1]).abs().max() <= 4 * eps * expected[1].abs().max()
    assert (tangent - expected[2]).abs().max() <= 4 * eps * direction.abs().max()


# each case runs every check, batched (vmap) ones included: a few seconds each, so one in the default set
SLOW = pytest.mark.slow


@pytest.mark.parametrize(
    "rows, classes",
    [(5, 4), pytest.param(1, 1, marks=SLOW), pytest.param(3, 2, marks=SLOW), pytest.param(8, 7, marks=SLOW)],
)
def test_plain_cross_entropy_passes_gradcheck_and_gradgradcheck(rows, classes):
    z, target, _, _ = _case(torch.float64, rows, classes, seed=rows + classes)
    assert_grad_and_gradgrad(lambda z: plain(z, target), (z.requires_grad_(),))


GENERAL_OPTIONS = {
    "plain": {},
    "sum": {"reduction": "sum"},
    "none": {"reduction": "none"},
    "weighted": {"weight": torch.tensor([0.5, 2.0, 1.0, 1.5], dtype=torch.float64)},
    "ignore_index": {"ignore_index": 1},
    "smoothed": {"label_smoothing": 0.2},
    "all": {
        "weight": torch.tensor([0.5, 2.0, 1.0, 1.5], dtype=torch.float64),
        "ignore_index": 1,
        "label_smoothing": 0.2,
    },
}


@pytest.mark.parametrize(
    "options",
    [pytest.param(options, id=name, marks=() if name == "all" else SLOW) for name, options in GENERAL_OPTIONS.items()],
)
def test_general_cross_entropy_passes_gradcheck_and_gradgradcheck(options):
    z, _, _, _ = _case(torch.float64, 5, 4, seed=1)
    target = torch.tensor([0, 3, 1, 2, 2])
    assert_grad_and_gradgrad(lambda z: general(z, target, **options), (z.requires_grad_(),))


def test_general_cross_entropy_with_class_probabilities_passes_gradcheck_and_gradgradcheck():
    z, _, _, _ = _case(torch.float64, 5, 4, seed=2)
    y = torch.randn(5, 4, dtype=torch.float64).softmax(1).requires_grad_()
    weight = torch.tensor([0.5, 2.0, 1.0, 1.5], dtype=torch.float64)
    assert_grad_and_gradgrad(lambda z, y: general(z, y, weight, label_smoothing=0.1), (z.requires_grad_(), y))


def test_each_rung_of_the_cross_entropy_ladder_matches_autograd():
    """docs/derivations.md's ladder: the forward one operation at a time, then each rung's gradient computed by
    hand from the rung above it, and compared with the gradient autograd finds for that intermediate; then the
    closed form (p − onehot(t))/N against autograd and against ``OneHotCrossEntropyLoss``."""
    rows, classes = 32, 10
    z, target, _, _ = _case(torch.float64, rows, classes, seed=3)
    z.requires_grad_()
    m = z.max(1, keepdim=True).values
    z_shifted = z - m
    e = z_shifted.exp()
    s = e.sum(1, keepdim=True)
    r = 1 / s
    p = e * r
    log_p = p.log()
    loss = -log_p[torch.arange(rows), target].mean()
    intermediates = {"m": m, "z̃": z_shifted, "e": e, "s": s, "r": r, "p": p, "ℓ": log_p}
    for tensor in intermediates.values():
        tensor.retain_grad()
    loss.backward()

    onehot = torch.nn.functional.one_hot(target, classes).to(z.dtype)
    d = {}
    d["ℓ"] = -onehot / rows  # C picks one ℓ per row, with weight −1/N
    d["p"] = d["ℓ"] / p  # d log p = dp / p
    d["r"] = (d["p"] * e).sum(1, keepdim=True)  # r multiplies every e_k of its row
    d["s"] = -d["r"] / s**2  # d(1/s) = −ds / s²
    d["e"] = d["p"] * r + d["s"]  # through p, and through s (∂s/∂e_k = 1)
    d["z̃"] = d["e"] * e  # d exp = exp
    d["m"] = -d["z̃"].sum(1, keepdim=True)  # m is subtracted from every z̃_k of its row
    dz = d["z̃"] + torch.nn.functional.one_hot(z.argmax(1), classes) * d["m"]  # through z̃, and through m
    for name, tensor in intermediates.items():
        torch.testing.assert_close(d[name], tensor.grad, rtol=1e-12, atol=1e-15, msg=f"rung d{name}")
    torch.testing.assert_close(dz, z.grad, rtol=1e-12, atol=1e-15, msg="rung dz")
    assert d["m"].abs().max() < 1e-15  # the shift drops out: Σ_k dz̃_k = (Σ p − 1)/N = 0

    closed_form = (z.softmax(1) - onehot) / rows
    torch.testing.assert_close(closed_form, z.grad, rtol=1e-12, atol=1e-15)
    (ours,) = torch.autograd.grad(plain(z, target), z)
    torch.testing.assert_close(ours, closed_form, rtol=1e-12, atol=1e-15)
