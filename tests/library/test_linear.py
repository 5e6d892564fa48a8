"""Linear and the fused Linear + activation: against PyTorch's autograd (bitwise where the arithmetic is the same),
gradcheck and gradgradcheck in float64 at the tight tolerance, and bad input."""

import importlib

import pytest
import torch
from conftest import is_manualbp_node
from helpers import (
    DOUBLE,
    ULPS,
    as_leaf,
    assert_case_bitwise_on_cpu,
    assert_case_within_tolerance,
    assert_grad_and_gradgrad,
    assert_raises_with_message,
    assert_torch_raises_the_same_type,
    bad_call,
    cases,
    noncontiguous,
    output_and_grads_at,
)
from hypothesis import assume, given
from hypothesis import strategies as st

import manualbp.functional as F

# ---- parity with PyTorch ----


@pytest.mark.parametrize("case", cases("linear"))
def test_float32_forward_and_grads_match_autograd_bitwise_on_cpu(case):
    assert_case_bitwise_on_cpu(case, not_bitwise={})


@pytest.mark.parametrize("case", cases("linear"))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_forward_and_grads_match_autograd_within_tolerance(case, device, dtype):
    assert_case_within_tolerance(case, device, dtype)


@given(
    leading=st.lists(st.integers(1, 5), min_size=0, max_size=3),
    in_features=st.integers(1, 33),
    out_features=st.integers(1, 33),
    make_noncontiguous=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_linear_matches_autograd_bitwise_over_shapes_and_layouts(
    leading, in_features, out_features, make_noncontiguous, seed
):
    torch.manual_seed(seed)
    x = torch.randn(*leading, in_features)
    weight, bias = torch.randn(out_features, in_features), torch.randn(out_features)
    upstream = torch.randn(*leading, out_features)
    if make_noncontiguous:
        x, upstream = noncontiguous(x), noncontiguous(upstream)
    out_m, grads_m = output_and_grads_at(F.linear, (x, weight, bias), upstream)
    out_r, grads_r = output_and_grads_at(torch.nn.functional.linear, (x, weight, bias), upstream)
    torch.testing.assert_close(out_m, out_r, rtol=0, atol=0)
    for name, grad_m, grad_r in zip(("x", "weight", "bias"), grads_m, grads_r, strict=True):
        if name == "x" and in_features == 1:
            # With one input feature the rows of x are also its columns, and PyTorch's mm backward then takes
            # its column-major branch, W·gᵀ transposed: the same sum over the outputs, handed to the BLAS in
            # another layout, which may add it up in another order.
            bound = ULPS * torch.finfo(torch.float32).eps * (upstream.abs() @ weight.abs()).max()
            assert (grad_m - grad_r).abs().max() <= bound
        else:
            torch.testing.assert_close(grad_m, grad_r, rtol=0, atol=0)


def test_output_grad_fn_is_manualbps_backward_not_a_builtin():
    output = F.linear(torch.randn(2, 4, requires_grad=True), torch.randn(3, 4, requires_grad=True))
    assert is_manualbp_node(output.grad_fn, "Linear"), type(output.grad_fn).__name__


# ---- gradcheck and gradgradcheck ----


@given(
    seed=st.integers(0, 2**16),
    leading=st.lists(st.integers(1, 3), min_size=0, max_size=3),  # (), batch 1.., 3-D+ inputs
    in_features=st.integers(1, 4),
    out_features=st.integers(1, 4),
    bias=st.booleans(),
    wants=st.tuples(st.booleans(), st.booleans(), st.booleans()).filter(any),
    make_noncontiguous=st.booleans(),
)
def test_linear_gradcheck_and_gradgradcheck(seed, leading, in_features, out_features, bias, wants, make_noncontiguous):
    torch.manual_seed(seed)  # each example draws the same tensors when hypothesis replays it
    assume(bias or wants[0] or wants[1])
    x = as_leaf(torch.randn(*leading, in_features, dtype=DOUBLE), wants[0], make_noncontiguous)
    weight = as_leaf(torch.randn(out_features, in_features, dtype=DOUBLE), wants[1], make_noncontiguous)
    b = as_leaf(torch.randn(out_features, dtype=DOUBLE), wants[2]) if bias else None
    assert_grad_and_gradgrad(F.linear, (x, weight, b))


FIXED_CASES = {
    "linear": (F.linear, [(3, 2, 4), (5, 4), (5,)]),
    "linear_1d_weight": (F.linear, [(3, 2, 4), (4,)]),
    "linear_activation": (lambda x, w, b: F.linear_activation(x, w, b, "tanh"), [(3, 4), (5, 4), (5,)]),
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
        "linear in_features",
        "linear",
        (torch.randn(3, 5), torch.randn(4, 6)),
        RuntimeError,
        r"input of shape \(3, 5\) must end in in_features=6",
    ),
    bad_call(
        "linear weight dims",
        "linear",
        (torch.randn(3, 5), torch.randn(2, 4, 5)),
        RuntimeError,
        r"weight must be 2-D .* got shape \(2, 4, 5\)",
    ),
    bad_call(
        "linear 1-D weight with a bias on a batch",
        "linear",
        (torch.randn(3, 5), torch.randn(5), torch.tensor(1.0)),
        RuntimeError,
        r"with a 1-D weight, a bias must be 0-D and the input 1-D",
    ),
    bad_call(
        "linear bias shape",
        "linear",
        (torch.randn(3, 5), torch.randn(4, 5), torch.randn(3)),
        RuntimeError,
        r"bias must have shape \(4,\) .* got \(3,\)",
    ),
    bad_call(
        "linear dtype",
        "linear",
        (torch.randn(3, 5), torch.randn(4, 5, dtype=torch.float64)),
        RuntimeError,
        r"same dtype, got input torch.float32, weight torch.float64",
    ),
    bad_call(
        "linear device",
        "linear",
        (torch.randn(3, 5), torch.randn(4, 5, device="meta")),
        RuntimeError,
        r"same device, got input cpu, weight meta",
    ),
    # None where a tensor is required: torch's exception type, with a message that names the argument
    bad_call(
        "linear input None",
        "linear",
        (None, torch.randn(4, 5)),
        TypeError,
        r"^linear: input must be a Tensor, got NoneType$",
    ),
    bad_call(
        "linear weight None",
        "linear",
        (torch.randn(3, 5), None),
        TypeError,
        r"^linear: weight must be a Tensor, got NoneType$",
    ),
]

# inputs torch.nn.functional accepts or rejects otherwise, where manualbp is stricter on purpose
STRICTER_THAN_TORCH = {
    "linear device": "torch fails later, inside the kernel, with no names",
}


@pytest.mark.parametrize("call", BAD_CALLS, ids=lambda call: call.name)
def test_bad_input_raises_torchs_exception_type_with_a_message(call):
    assert_raises_with_message(call)


@pytest.mark.parametrize("call", BAD_CALLS, ids=lambda call: call.name)
def test_torch_raises_the_same_exception_type_for_the_same_input(call):
    assert_torch_raises_the_same_type(call, STRICTER_THAN_TORCH)


# ---- the unchecked call: a training step's layer pays for no check, and every refusal is still the checks' ----

LINEAR_MODULE = importlib.import_module("manualbp.functional.linear")


@pytest.mark.parametrize("function", ["linear", "linear_activation"])
def test_a_2d_input_with_good_operands_runs_no_check(monkeypatch, function):
    x, weight, bias = torch.randn(3, 5), torch.randn(4, 5, requires_grad=True), torch.randn(4, requires_grad=True)
    expected = getattr(F, function)(x, weight, bias)

    def refuse(*args, **kwargs):
        raise AssertionError("the checks ran")

    monkeypatch.setattr(LINEAR_MODULE, "_linear_operands", refuse)
    assert torch.equal(getattr(F, function)(x, weight, bias), expected)


@pytest.mark.parametrize(
    ("x", "bias"),
    [(torch.randn(3, 5), torch.randn(1)), (torch.randn(3, 5), torch.randn(())), (torch.randn(2, 3, 5), torch.randn(4))],
    ids=["bias (1,)", "bias ()", "3-D input"],
)
def test_what_addmm_would_take_silently_goes_through_the_checks_and_matches_torch(x, bias):
    weight = torch.randn(4, 5)
    torch.testing.assert_close(F.linear(x, weight, bias), torch.nn.functional.linear(x, weight, bias), rtol=0, atol=0)


@pytest.mark.parametrize(
    ("operands", "message"),
    [
        ((torch.randn(3, 5), torch.randn(4, 6), None), r"input of shape \(3, 5\) must end in in_features=6"),
        ((torch.randn(3, 5), torch.randn(4, 5, dtype=torch.float64), None), "same dtype"),
        ((torch.randn(3, 5), torch.randn(4, 5, device="meta"), None), "same device, got input cpu, weight meta"),
        ((torch.randn(3, 5), torch.randn(4, 5), torch.randn(3)), r"bias must have shape \(4,\)"),
    ],
    ids=["width", "dtype", "meta", "bias"],
)
def test_linear_activation_refuses_in_grad_mode_with_the_checks_line(operands, message):
    x, weight, bias = operands
    weight.requires_grad_(not weight.is_meta)
    with pytest.raises(RuntimeError, match=message) as raised:
        F.linear_activation(x, weight, bias, "sigmoid")
    assert str(raised.value).startswith("linear_activation: ") and "\n" not in str(raised.value)


def test_linear_activation_refuses_an_unknown_activation_by_name():
    with pytest.raises(ValueError, match="activation must be one of"):
        F.linear_activation(torch.randn(3, 5), torch.randn(4, 5, requires_grad=True), None, "softplus")
