"""Every Function's backward and jvp (and their derivatives) against finite differences, in float64.

At PyTorch's own tight tolerance for its ops (atol 1e-8, rtol 1e-6; gradcheck's default, atol 1e-5 with rtol 1e-3,
lets a 0.1% error through), with forward-mode AD, batched gradients (vmap over the backward) and batched forward
gradients (vmap over the jvp), and for the second derivatives forward-over-reverse and reverse-over-reverse.
"""

import pytest
import torch
from conftest import TIGHT, assert_grad_and_gradgrad, noncontiguous
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from torch.autograd import gradcheck

import manualbp.functional as F

DOUBLE = torch.float64

leading_dims = st.lists(st.integers(1, 3), min_size=0, max_size=3)  # (), batch 1.., 3-D+ inputs
shapes = st.lists(st.integers(1, 4), min_size=1, max_size=4)


def _leaf(t, requires_grad, make_noncontiguous=False):
    t = noncontiguous(t) if make_noncontiguous else t
    return t.detach().requires_grad_(requires_grad)


def test_the_tight_tolerance_catches_a_gradient_wrong_by_one_part_in_a_thousand():
    class OffByATenthOfAPercent(torch.autograd.Function):
        @staticmethod
        def forward(z):
            return z * z

        @staticmethod
        def setup_context(ctx, inputs, output):
            ctx.save_for_backward(inputs[0])

        @staticmethod
        def backward(ctx, grad_output):
            (z,) = ctx.saved_tensors
            return grad_output * 2 * z * 1.001

    z = torch.randn(4, dtype=DOUBLE, requires_grad=True)
    assert gradcheck(OffByATenthOfAPercent.apply, (z,), eps=1e-6, atol=1e-5, rtol=1e-3)  # the default lets it pass
    with pytest.raises(RuntimeError, match="Jacobian mismatch"):  # GradcheckError
        gradcheck(OffByATenthOfAPercent.apply, (z,), **TIGHT)


@given(
    seed=st.integers(0, 2**16),
    leading=leading_dims,
    in_features=st.integers(1, 4),
    out_features=st.integers(1, 4),
    bias=st.booleans(),
    wants=st.tuples(st.booleans(), st.booleans(), st.booleans()).filter(any),
    make_noncontiguous=st.booleans(),
)
def test_linear_gradcheck_and_gradgradcheck(seed, leading, in_features, out_features, bias, wants, make_noncontiguous):
    torch.manual_seed(seed)  # each example draws the same tensors when hypothesis replays it
    assume(bias or wants[0] or wants[1])
    x = _leaf(torch.randn(*leading, in_features, dtype=DOUBLE), wants[0], make_noncontiguous)
    weight = _leaf(torch.randn(out_features, in_features, dtype=DOUBLE), wants[1], make_noncontiguous)
    b = _leaf(torch.randn(out_features, dtype=DOUBLE), wants[2]) if bias else None
    assert_grad_and_gradgrad(F.linear, (x, weight, b))


ACTIVATIONS = {
    "relu": F.relu,
    "leaky_relu": lambda z: F.leaky_relu(z, 0.2),
    "leaky_relu_negative_slope": lambda z: F.leaky_relu(z, -0.5),
    "sigmoid": F.sigmoid,
    "tanh": F.tanh,
    "gelu": F.gelu,
    "gelu_tanh": lambda z: F.gelu(z, approximate="tanh"),
}


@pytest.mark.parametrize("name", ACTIVATIONS)
@given(seed=st.integers(0, 2**16), shape=shapes, make_noncontiguous=st.booleans())
def test_activation_gradcheck_and_gradgradcheck(seed, name, shape, make_noncontiguous):
    torch.manual_seed(seed)  # each example draws the same tensors when hypothesis replays it
    z = torch.randn(*shape, dtype=DOUBLE)
    z = z + 0.1 * torch.sign(z)  # away from the kink at 0, where finite differences straddle two slopes
    assert_grad_and_gradgrad(ACTIVATIONS[name], (_leaf(z, True, make_noncontiguous),))


@given(
    seed=st.integers(0, 2**16),
    shape=shapes,
    reduction=st.sampled_from(["mean", "sum", "none"]),
    weighted=st.booleans(),
    wants=st.tuples(st.booleans(), st.booleans(), st.booleans()).filter(any),
    make_noncontiguous=st.booleans(),
)
def test_mse_loss_gradcheck_and_gradgradcheck(seed, shape, reduction, weighted, wants, make_noncontiguous):
    torch.manual_seed(seed)  # each example draws the same tensors when hypothesis replays it
    assume(weighted or wants[0] or wants[1])
    a = _leaf(torch.randn(*shape, dtype=DOUBLE), wants[0], make_noncontiguous)
    y = _leaf(torch.randn(*shape, dtype=DOUBLE), wants[1])
    weight = _leaf(torch.rand(*shape, dtype=DOUBLE) + 0.5, wants[2]) if weighted else None
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
    z = _leaf(torch.randn(*logits_shape, dtype=DOUBLE) * 3, True, make_noncontiguous)
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
    z = _leaf(torch.randn(*shape, dtype=DOUBLE) * 3, True)
    probabilities = _leaf(torch.randn(*shape, dtype=DOUBLE).softmax(0 if batch is None else 1), target_grad)
    weight = torch.rand(num_classes, dtype=DOUBLE) + 0.5 if weighted else None

    def loss(z, y):
        return F.cross_entropy(z, y, weight, reduction=reduction, label_smoothing=label_smoothing)

    assert_grad_and_gradgrad(loss, (z, probabilities))


FIXED_CASES = {
    "linear": (F.linear, [(3, 2, 4), (5, 4), (5,)]),
    "linear_1d_weight": (F.linear, [(3, 2, 4), (4,)]),
    "linear_activation": (lambda x, w, b: F.linear_activation(x, w, b, "tanh"), [(3, 4), (5, 4), (5,)]),
    **{name: (fn, [(3, 4)]) for name, fn in ACTIVATIONS.items()},
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
        inputs.append(_leaf(t + 0.1 * torch.sign(t), True))
    assert_grad_and_gradgrad(fn, tuple(inputs))
