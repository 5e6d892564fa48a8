"""The element-wise activations (ReLU, LeakyReLU, Sigmoid, Tanh, GELU): against PyTorch's autograd (bitwise where the
arithmetic is the same), gradcheck and gradgradcheck in float64 at the tight tolerance, and bad input."""

import pytest
import torch
from conftest import is_manualbp_node
from helpers import (
    DOUBLE,
    as_leaf,
    assert_case_bitwise_on_cpu,
    assert_case_within_tolerance,
    assert_grad_and_gradgrad,
    assert_raises_with_message,
    assert_row_within_ulps,
    assert_torch_raises_the_same_type,
    bad_call,
    cases,
    noncontiguous,
    output_and_grads_at,
)
from hypothesis import given
from hypothesis import strategies as st

import manualbp.functional as F

# ---- parity with PyTorch ----

# Where the arithmetic differs, why, and so why these rows are bounded rather than bitwise.
NOT_BITWISE = {
    ("GELU", "grad z"): "PyTorch's fused kernel contracts its multiply-adds; the composed formula rounds each step",
    ("GELU(tanh)", "grad z"): "as GELU: one fused kernel against a sequence of rounded tensor ops",
}


@pytest.mark.parametrize("case", cases("activation"))
def test_float32_forward_and_grads_match_autograd_bitwise_on_cpu(case):
    assert_case_bitwise_on_cpu(case, NOT_BITWISE)


@pytest.mark.parametrize("key", NOT_BITWISE, ids=" ".join)
def test_float32_rows_that_cannot_be_bitwise_stay_within_a_few_ulps(key):
    assert_row_within_ulps(key, NOT_BITWISE[key])


@pytest.mark.parametrize("case", cases("activation"))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_forward_and_grads_match_autograd_within_tolerance(case, device, dtype):
    assert_case_within_tolerance(case, device, dtype)


BITWISE_ACTIVATIONS = [
    (F.relu, torch.relu),
    (lambda z: F.leaky_relu(z, 0.3), lambda z: torch.nn.functional.leaky_relu(z, 0.3)),
    (F.sigmoid, torch.sigmoid),
    (F.tanh, torch.tanh),
]


@pytest.mark.parametrize("fns", BITWISE_ACTIVATIONS, ids=["relu", "leaky_relu", "sigmoid", "tanh"])
@given(
    shape=st.lists(st.integers(1, 40), min_size=1, max_size=3),
    make_noncontiguous=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_activation_matches_autograd_bitwise_over_shapes_and_layouts(fns, shape, make_noncontiguous, seed):
    torch.manual_seed(seed)
    z, upstream = torch.randn(*shape) * 3, torch.randn(*shape)
    if make_noncontiguous:
        z, upstream = noncontiguous(z), noncontiguous(upstream)
    out_m, grads_m = output_and_grads_at(fns[0], (z,), upstream)
    out_r, grads_r = output_and_grads_at(fns[1], (z,), upstream)
    torch.testing.assert_close(out_m, out_r, rtol=0, atol=0)
    torch.testing.assert_close(grads_m[0], grads_r[0], rtol=0, atol=0)


@pytest.mark.parametrize("slope", [0.3, 0.0])
def test_in_place_leaky_relu_gives_torchs_gradient_bitwise_and_a_negative_slope_fails_in_backward_as_in_torch(slope):
    # in place, the input is overwritten: the derivative must come from the output (a > 0 where z > 0 for s ≥ 0)
    torch.manual_seed(0)
    z, upstream = torch.randn(5, 7) * 3, torch.randn(5, 7)
    grads = []
    for leaky_relu in (F.leaky_relu, torch.nn.functional.leaky_relu):
        leaf = z.clone().requires_grad_()
        output = leaky_relu(leaf * 1, slope, inplace=True)
        grads.append((output.detach(), torch.autograd.grad(output, leaf, upstream)[0]))
    assert torch.equal(grads[0][0], grads[1][0]) and torch.equal(grads[0][1], grads[1][1])
    for leaky_relu in (F.leaky_relu, torch.nn.functional.leaky_relu):  # s < 0: only z tells the side, and it is gone
        leaf = z.clone().requires_grad_()
        with pytest.raises(RuntimeError, match="inplace|[Ii]n-place"):
            leaky_relu(leaf * 1, -0.5, inplace=True).sum().backward()


FUNCTIONS = [
    ("ReLU", F.relu),
    ("LeakyReLU", F.leaky_relu),
    ("Sigmoid", F.sigmoid),
    ("Tanh", F.tanh),
    ("GELU", F.gelu),
]


@pytest.mark.parametrize("function_name, call", FUNCTIONS, ids=[name for name, _ in FUNCTIONS])
def test_output_grad_fn_is_manualbps_backward_not_a_builtin(function_name, call):
    output = call(torch.randn(2, 4, requires_grad=True))
    assert is_manualbp_node(output.grad_fn, function_name), type(output.grad_fn).__name__


# ---- gradcheck and gradgradcheck ----


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
@given(
    seed=st.integers(0, 2**16),
    shape=st.lists(st.integers(1, 4), min_size=1, max_size=3),  # elementwise: a fourth axis adds time, not cases
    make_noncontiguous=st.booleans(),
)
def test_activation_gradcheck_and_gradgradcheck(seed, name, shape, make_noncontiguous):
    torch.manual_seed(seed)  # each example draws the same tensors when hypothesis replays it
    z = torch.randn(*shape, dtype=DOUBLE)
    z = z + 0.1 * torch.sign(z)  # away from the kink at 0, where finite differences straddle two slopes
    assert_grad_and_gradgrad(ACTIVATIONS[name], (as_leaf(z, True, make_noncontiguous),))


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_every_function_passes_gradcheck_and_gradgradcheck_on_each_device(name, device):
    t = torch.randn(3, 4, dtype=DOUBLE, device=device)
    assert_grad_and_gradgrad(ACTIVATIONS[name], (as_leaf(t + 0.1 * torch.sign(t), True),))


# ---- bad input: torch.nn.functional's exception type, with a message naming expected and got ----

BAD_CALLS = [
    bad_call(
        "gelu approximate",
        "gelu",
        (torch.randn(3),),
        RuntimeError,
        r"approximate must be 'none' or 'tanh', got 'erf'",
        approximate="erf",
    ),
    bad_call(
        "leaky_relu slope",
        "leaky_relu",
        (torch.randn(3), "0.1"),
        TypeError,
        r"negative_slope must be a number, got str",
    ),
]


@pytest.mark.parametrize("call", BAD_CALLS, ids=lambda call: call.name)
def test_bad_input_raises_torchs_exception_type_with_a_message(call):
    assert_raises_with_message(call)


@pytest.mark.parametrize("call", BAD_CALLS, ids=lambda call: call.name)
def test_torch_raises_the_same_exception_type_for_the_same_input(call):
    assert_torch_raises_the_same_type(call, stricter_than_torch={})
