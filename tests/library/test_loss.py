"""The losses (MSE, cross-entropy): against PyTorch's autograd (bitwise where the arithmetic is the same), gradcheck
and gradgradcheck in float64 at the tight tolerance, and bad input; then cross-entropy's two reference Functions: the
plain case (``OneHotCrossEntropyLoss``) against the general one (``CrossEntropyLoss``) bit for bit, both against
PyTorch, both through gradcheck and gradgradcheck, and the derivation ladder of docs/derivations.md rung by rung
against autograd."""

import importlib

import pytest
import torch
from conftest import is_manualbp_node
from helpers import (
    DOUBLE,
    as_leaf,
    assert_case_bitwise_on_cpu,
    assert_case_within_tolerance,
    assert_empty_batch_like_torch,
    assert_grad_and_gradgrad,
    assert_raises_with_message,
    assert_row_within_ulps,
    assert_torch_raises_the_same_type,
    bad_call,
    cases,
)
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import manualbp.functional as F
from manualbp import autograd as A

# ---- parity with PyTorch ----

# Where the arithmetic differs, why, and so why these rows are bounded rather than bitwise.
NOT_BITWISE = {
    ("CrossEntropyLoss", "grad z"): "log_softmax_backward's fused kernel evaluates e^ℓ·Σu in one pass",
    ("CrossEntropyLoss(weighted,smoothed)", "forward"): "the smoothing term is summed in a different order",
    ("CrossEntropyLoss(weighted,smoothed)", "grad z"): "as CrossEntropyLoss",
}


@pytest.mark.parametrize("case", cases("loss"))
def test_float32_forward_and_grads_match_autograd_bitwise_on_cpu(case):
    assert_case_bitwise_on_cpu(case, NOT_BITWISE)


@pytest.mark.parametrize("key", NOT_BITWISE, ids=" ".join)
def test_float32_rows_that_cannot_be_bitwise_stay_within_a_few_ulps(key):
    assert_row_within_ulps(key, NOT_BITWISE[key])


@pytest.mark.parametrize("case", cases("loss"))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_forward_and_grads_match_autograd_within_tolerance(case, device, dtype):
    assert_case_within_tolerance(case, device, dtype)


def test_cross_entropy_is_stable_for_huge_logits():
    z = torch.tensor([[1e30, -1e30, 0.0], [3e38, -3e38, 1.0], [-50.0, 50.0, 0.0]], requires_grad=True)
    target = torch.tensor([1, 0, 1])
    loss = F.cross_entropy(z, target, reduction="sum")
    (grad,) = torch.autograd.grad(loss, z)
    z_ref = z.detach().clone().requires_grad_()
    loss_ref = torch.nn.functional.cross_entropy(z_ref, target, reduction="sum")
    (grad_ref,) = torch.autograd.grad(loss_ref, z_ref)
    assert torch.isfinite(loss) and torch.isfinite(grad).all()
    torch.testing.assert_close(loss, loss_ref)
    torch.testing.assert_close(grad, grad_ref)
    # softmax − onehot: the first row puts all mass on class 0, and the target is class 1
    torch.testing.assert_close(grad[0], torch.tensor([1.0, -1.0, 0.0]))


FUNCTIONS = [
    ("MSELoss", lambda x: F.mse_loss(x, torch.zeros_like(x))),
    ("OneHotCrossEntropyLoss", lambda x: F.cross_entropy(x, torch.tensor([0, 2]))),
    ("CrossEntropyLoss", lambda x: F.cross_entropy(x, torch.tensor([0, 2]), label_smoothing=0.1)),
]


@pytest.mark.parametrize("function_name, call", FUNCTIONS, ids=[name for name, _ in FUNCTIONS])
def test_output_grad_fn_is_manualbps_backward_not_a_builtin(function_name, call):
    output = call(torch.randn(2, 4, requires_grad=True))
    assert is_manualbp_node(output.grad_fn, function_name), type(output.grad_fn).__name__


EMPTY_BATCH = {
    "mse_loss_mean": (lambda f, x: f.mse_loss(x, torch.zeros_like(x)), (0, 4)),
    "mse_loss_sum": (lambda f, x: f.mse_loss(x, torch.zeros_like(x), reduction="sum"), (0, 4)),
}


@pytest.mark.parametrize("case", EMPTY_BATCH)
def test_an_empty_batch_gives_torchs_output_and_empty_gradient(case):
    assert_empty_batch_like_torch(*EMPTY_BATCH[case])


# ---- gradcheck and gradgradcheck, over shapes and options ----


@given(
    seed=st.integers(0, 2**16),
    shape=st.lists(st.integers(1, 4), min_size=1, max_size=4),
    reduction=st.sampled_from(["mean", "sum", "none"]),
    weighted=st.booleans(),
    wants=st.tuples(st.booleans(), st.booleans(), st.booleans()).filter(any),
    make_noncontiguous=st.booleans(),
)
def test_mse_loss_gradcheck_and_gradgradcheck(seed, shape, reduction, weighted, wants, make_noncontiguous):
    torch.manual_seed(seed)  # each example draws the same tensors when hypothesis replays it
    assume(weighted or wants[0] or wants[1])
    a = as_leaf(torch.randn(*shape, dtype=DOUBLE), wants[0], make_noncontiguous)
    y = as_leaf(torch.randn(*shape, dtype=DOUBLE), wants[1])
    weight = as_leaf(torch.rand(*shape, dtype=DOUBLE) + 0.5, wants[2]) if weighted else None
    # a step of 1e-4: central differences of a quadratic are exact but for rounding, and rounding in a sum of up
    # to 256 squares, divided by a step of 1e-6, would be larger than atol 1e-8
    loss = lambda a, y, w: F.mse_loss(a, y, reduction=reduction, weight=w)  # noqa: E731
    assert_grad_and_gradgrad(loss, (a, y, weight), eps=1e-4)


@settings(max_examples=12)  # each example runs eight checks of a two-output Function
@given(
    seed=st.integers(0, 2**16),
    batch=st.sampled_from([None, 1, 3]),  # None: an unbatched (C,) input
    spatial=st.lists(st.integers(1, 3), min_size=0, max_size=2),
    num_classes=st.integers(1, 5),
    reduction=st.sampled_from(["mean", "sum", "none"]),
    weighted=st.booleans(),
    ignore_some=st.booleans(),
    label_smoothing=st.sampled_from([0.0, 0.2]),
    make_noncontiguous=st.booleans(),
)
def test_cross_entropy_gradcheck_and_gradgradcheck(
    seed, batch, spatial, num_classes, reduction, weighted, ignore_some, label_smoothing, make_noncontiguous
):
    torch.manual_seed(seed)  # each example draws the same tensors when hypothesis replays it
    if batch is None:
        spatial = []
    logits_shape = (num_classes,) if batch is None else (batch, num_classes, *spatial)
    target_shape = () if batch is None else (batch, *spatial)
    z = as_leaf(torch.randn(*logits_shape, dtype=DOUBLE) * 3, True, make_noncontiguous)
    target = torch.randint(0, num_classes, target_shape)
    if ignore_some and target.numel() > 1:
        target.view(-1)[0] = -100  # keep at least one row, or "mean" divides by zero
    weight = torch.rand(num_classes, dtype=DOUBLE) + 0.5 if weighted else None

    def loss(z):
        return F.cross_entropy(z, target, weight, reduction=reduction, label_smoothing=label_smoothing)

    assert_grad_and_gradgrad(loss, (z,))


@settings(max_examples=12)
@given(
    seed=st.integers(0, 2**16),
    batch=st.sampled_from([None, 1, 3]),  # None: an unbatched (C,) input
    spatial=st.lists(st.integers(1, 3), min_size=0, max_size=2),
    num_classes=st.integers(1, 5),
    reduction=st.sampled_from(["mean", "sum", "none"]),
    weighted=st.booleans(),
    label_smoothing=st.sampled_from([0.0, 0.2]),
    target_grad=st.booleans(),
)
def test_cross_entropy_with_class_probabilities_gradcheck_and_gradgradcheck(
    seed, batch, spatial, num_classes, reduction, weighted, label_smoothing, target_grad
):
    torch.manual_seed(seed)  # each example draws the same tensors when hypothesis replays it
    if batch is None:
        spatial = []
    shape = (num_classes,) if batch is None else (batch, num_classes, *spatial)
    z = as_leaf(torch.randn(*shape, dtype=DOUBLE) * 3, True)
    probabilities = as_leaf(torch.randn(*shape, dtype=DOUBLE).softmax(0 if batch is None else 1), target_grad)
    weight = torch.rand(num_classes, dtype=DOUBLE) + 0.5 if weighted else None

    def loss(z, y):
        return F.cross_entropy(z, y, weight, reduction=reduction, label_smoothing=label_smoothing)

    assert_grad_and_gradgrad(loss, (z, probabilities))


FIXED_CASES = {
    "mse_loss": (F.mse_loss, [(3, 4), (3, 4)]),
    "cross_entropy": (
        lambda z: F.cross_entropy(z, torch.tensor([0, 3, 1], device=z.device), label_smoothing=0.1),
        [(3, 4)],
    ),
}


@pytest.mark.parametrize("name", FIXED_CASES)
def test_every_function_passes_gradcheck_and_gradgradcheck_on_each_device(name, device):
    fn, shapes = FIXED_CASES[name]
    inputs = []
    for shape in shapes:
        t = torch.randn(*shape, dtype=DOUBLE, device=device)
        inputs.append(as_leaf(t + 0.1 * torch.sign(t), True))
    assert_grad_and_gradgrad(fn, tuple(inputs))


# ---- bad input: torch.nn.functional's exception type, with a message naming expected and got ----

BAD_CALLS = [
    bad_call(
        "mse reduction",
        "mse_loss",
        (torch.randn(3), torch.randn(3)),
        ValueError,
        r"avg is not a valid value for reduction",
        reduction="avg",
    ),
    bad_call("mse shapes", "mse_loss", (torch.randn(3, 5), torch.randn(3, 4)), RuntimeError, r"size of tensor"),
    bad_call(
        "mse weight shape",
        "mse_loss",
        (torch.randn(3), torch.randn(3)),
        ValueError,
        r"weight must have the input's shape \(3,\), got \(2,\)",
        weight=torch.ones(2),
    ),
    bad_call(
        "ce batch",
        "cross_entropy",
        (torch.randn(3, 5), torch.tensor([1, 2])),
        ValueError,
        r"expected input batch_size \(3\) to match target batch_size \(2\)",
    ),
    bad_call(
        "ce target too big",
        "cross_entropy",
        (torch.randn(3, 5), torch.tensor([1, 2, 7])),
        IndexError,
        r"target 7 is out of bounds: class indices must lie in \[0, 5\)",
    ),
    bad_call(
        "ce target negative",
        "cross_entropy",
        (torch.randn(3, 5), torch.tensor([1, -2, 3])),
        IndexError,
        r"target -2 is out of bounds",
    ),
    bad_call(
        "ce target dims",
        "cross_entropy",
        (torch.randn(3, 5), torch.tensor([[1, 2, 3]])),
        ValueError,
        r"expected input batch_size \(3\) to match target batch_size \(1\)",
    ),
    bad_call(
        "ce target trailing dims",
        "cross_entropy",
        (torch.randn(3, 5), torch.tensor([[1], [2], [3]])),
        RuntimeError,
        r"target must have shape \(3,\) \(class indices\) or \(3, 5\) \(class probabilities\), got \(3, 1\)",
    ),
    bad_call(
        "ce spatial",
        "cross_entropy",
        (torch.randn(3, 5, 2), torch.zeros(3, 3, dtype=torch.long)),
        RuntimeError,
        r"target must have shape \(3, 2\) \(class indices\) or \(3, 5, 2\) \(class probabilities\), got \(3, 3\)",
    ),
    bad_call(
        "ce float target of another shape",
        "cross_entropy",
        (torch.randn(3, 5), torch.rand(3, 4)),
        RuntimeError,
        r"class-index targets must be int64, got torch.float32; a target of class probabilities must have the "
        r"input's shape \(3, 5\), got \(3, 4\)",
    ),
    bad_call(
        "ce integer target shaped like the input",
        "cross_entropy",
        (torch.randn(3, 5), torch.zeros(3, 5, dtype=torch.long)),
        RuntimeError,
        r"holds class probabilities and must be floating point, got torch.int64",
    ),
    bad_call(
        "ce ignore_index with probabilities",
        "cross_entropy",
        (torch.randn(3, 5), torch.rand(3, 5)),
        RuntimeError,
        r"ignore_index=2 applies to class indices only",
        ignore_index=2,
    ),
    bad_call(
        "ce int32 target",
        "cross_entropy",
        (torch.randn(3, 5), torch.tensor([1, 2, 3], dtype=torch.int32)),
        RuntimeError,
        r"class-index targets must be int64, got torch.int32",
    ),
    bad_call(
        "ce weight",
        "cross_entropy",
        (torch.randn(3, 5), torch.tensor([1, 2, 3]), torch.ones(4)),
        RuntimeError,
        r"weight must have shape \(5,\), one per class, got \(4,\)",
    ),
    bad_call(
        "ce smoothing",
        "cross_entropy",
        (torch.randn(3, 5), torch.tensor([1, 2, 3])),
        RuntimeError,
        r"label_smoothing must be between 0.0 and 1.0, got 1.5",
        label_smoothing=1.5,
    ),
    bad_call(
        "ce integer logits",
        "cross_entropy",
        (torch.ones(3, 5, dtype=torch.long), torch.tensor([1, 2, 3])),
        RuntimeError,
        r"floating-point logits, got dtype torch.int64",
    ),
    # None where a tensor is required: torch's exception type, with a message that names the argument
    bad_call(
        "mse target None", "mse_loss", (torch.randn(3), None), AttributeError, r"^mse_loss: target must be a Tensor"
    ),
    bad_call(
        "ce target None", "cross_entropy", (torch.randn(3, 5), None), TypeError, r"^cross_entropy: target must be a"
    ),
]


@pytest.mark.filterwarnings("ignore:.*target size:UserWarning")  # "mse shapes" warns before it fails
@pytest.mark.parametrize("call", BAD_CALLS, ids=lambda call: call.name)
def test_bad_input_raises_torchs_exception_type_with_a_message(call):
    assert_raises_with_message(call)


@pytest.mark.filterwarnings("ignore:.*target size:UserWarning")  # "mse shapes" warns before it fails
@pytest.mark.parametrize("call", BAD_CALLS, ids=lambda call: call.name)
def test_torch_raises_the_same_exception_type_for_the_same_input(call):
    assert_torch_raises_the_same_type(call, stricter_than_torch={})


def test_mse_loss_warns_and_broadcasts_like_torch_when_shapes_differ():
    a, y = torch.randn(3, 1), torch.randn(3)
    with pytest.warns(UserWarning, match=r"target size \(3,\) differs from input size \(3, 1\)"):
        loss = F.mse_loss(a, y)
    with pytest.warns(UserWarning):
        expected = torch.nn.functional.mse_loss(a, y)
    torch.testing.assert_close(loss, expected)


def test_ignore_index_targets_are_allowed_out_of_range():
    z = torch.randn(3, 5, requires_grad=True)
    target = torch.tensor([1, -100, 4])
    loss = F.cross_entropy(z, target)
    torch.testing.assert_close(loss, torch.nn.functional.cross_entropy(z, target))


def test_mse_loss_promotes_mixed_dtypes_like_torch():
    a = torch.randn(4, requires_grad=True)
    y = torch.randn(4, dtype=torch.float64)
    loss = F.mse_loss(a, y)
    expected = torch.nn.functional.mse_loss(a, y)
    assert loss.dtype == expected.dtype == torch.float64
    torch.testing.assert_close(loss, expected)
    (grad,) = torch.autograd.grad(loss, a)
    assert grad.dtype == torch.float32


# ---- cross-entropy's plain and general reference Functions ----

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


# ---- the unchecked plain case: a training step's loss reads no target, and every refusal is still the checks' ----

LOSS_MODULE = importlib.import_module("manualbp.functional.loss")


def test_the_plain_case_with_good_operands_runs_no_check_and_reads_no_target(monkeypatch):
    z, target = torch.randn(6, 4, requires_grad=True), torch.tensor([0, 3, 1, 2, 2, 0])
    expected = F.cross_entropy(z, target)

    def refuse(*args, **kwargs):
        raise AssertionError("the checks ran")

    monkeypatch.setattr(LOSS_MODULE, "_check_index_target", refuse)
    monkeypatch.setattr(LOSS_MODULE.fast, "target_range", refuse)
    value = F.cross_entropy(z, target)
    assert torch.equal(value, expected)
    torch.testing.assert_close(torch.autograd.grad(value, z)[0], torch.autograd.grad(expected, z)[0], rtol=0, atol=0)


@pytest.mark.parametrize("requires_grad", [True, False], ids=["gradient", "value only"])
def test_a_target_at_the_default_ignore_index_leaves_its_row_out_as_torch_does(requires_grad):
    # the unchecked plain case cannot leave a row out: with a gradient its scatter refuses -100 and the general case
    # runs; without one, nll_loss leaves the row out itself
    z, target = torch.randn(5, 3, requires_grad=requires_grad), torch.tensor([0, -100, 2, -100, 1])
    ours, theirs = F.cross_entropy(z, target), torch.nn.functional.cross_entropy(z, target)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
    if requires_grad:
        torch.testing.assert_close(torch.autograd.grad(ours, z)[0], torch.autograd.grad(theirs, z)[0])


@pytest.mark.parametrize("requires_grad", [True, False], ids=["gradient", "value only"])
@pytest.mark.parametrize(
    ("target", "error", "message"),
    [
        (torch.tensor([0, 3, 1]), IndexError, r"target 3 is out of bounds: class indices must lie in \[0, 3\)"),
        (torch.tensor([0, -1, 1]), IndexError, "target -1 is out of bounds"),
        (torch.tensor([0, 1]), ValueError, r"expected input batch_size \(3\) to match target batch_size \(2\)"),
    ],
    ids=["high", "negative", "length"],
)
def test_the_unchecked_plain_case_refuses_with_the_checks_line(target, error, message, requires_grad):
    z = torch.randn(3, 3, requires_grad=requires_grad)
    with pytest.raises(error, match=message) as raised:
        F.cross_entropy(z, target)
    assert str(raised.value).startswith("cross_entropy: ") and "\n" not in str(raised.value)


def test_integer_logits_are_refused_by_the_checks_not_by_the_kernel():
    with pytest.raises(NotImplementedError, match="must hold floating-point logits"):
        F.cross_entropy(torch.ones(3, 4, dtype=torch.int64), torch.tensor([0, 1, 2]))
