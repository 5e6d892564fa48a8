"""Softmax and log-softmax: against PyTorch's autograd (bitwise where the arithmetic is the same), gradcheck and
gradgradcheck in float64 at the tight tolerance, the module, and bad input."""

import pytest
import torch
from conftest import is_manualbp_node
from helpers import (
    DOUBLE,
    assert_case_bitwise_on_cpu,
    assert_case_within_tolerance,
    assert_grad_and_gradgrad,
    assert_module_outputs_and_grads,
    assert_row_within_ulps,
    assert_same_outputs_and_grads,
    cases,
    leaf,
    module_pair,
)

import manualbp.functional as F

# ---- parity with PyTorch ----

# Where the arithmetic differs, why, and so why these rows are bounded rather than bitwise.
NOT_BITWISE = {
    ("Softmax", "grad z"): "softmax_backward's fused kernel forms p·(g − Σg·p) in one pass, the formula in three",
    ("LogSoftmax", "grad z"): "as Softmax: g − e^ℓ·Σg in one fused kernel against rounded tensor ops",
}


@pytest.mark.parametrize("case", cases("softmax"))
def test_float32_forward_and_grads_match_autograd_bitwise_on_cpu(case):
    assert_case_bitwise_on_cpu(case, NOT_BITWISE)


@pytest.mark.parametrize("key", NOT_BITWISE, ids=" ".join)
def test_float32_rows_that_cannot_be_bitwise_stay_within_a_few_ulps(key):
    assert_row_within_ulps(key, NOT_BITWISE[key])


@pytest.mark.parametrize("case", cases("softmax"))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_forward_and_grads_match_autograd_within_tolerance(case, device, dtype):
    assert_case_within_tolerance(case, device, dtype)


SOFTMAXES = [(F.softmax, torch.softmax, "Softmax"), (F.log_softmax, torch.log_softmax, "LogSoftmax")]


@pytest.mark.parametrize("manual_fn, torch_fn, name", SOFTMAXES, ids=["softmax", "log_softmax"])
@pytest.mark.parametrize("shape, dim", [((5,), 0), ((3, 4), 1), ((3, 4), 0), ((2, 3, 4), -1), ((2, 3, 4), 1)])
@pytest.mark.parametrize("dtype", [torch.float32, DOUBLE])
def test_softmax_outputs_and_grads_match_torch(manual_fn, torch_fn, name, shape, dim, dtype):
    z = leaf(*shape, dtype=dtype) * 3
    out = manual_fn(z, dim)
    assert is_manualbp_node(out.grad_fn, name)
    assert_same_outputs_and_grads(lambda z: manual_fn(z, dim), lambda z: torch_fn(z, dim), (z,))


# ---- gradcheck and gradgradcheck ----


@pytest.mark.parametrize("manual_fn", [F.softmax, F.log_softmax], ids=["softmax", "log_softmax"])
@pytest.mark.parametrize("shape, dim", [((4,), 0), ((2, 3), 1), ((2, 3, 2), 0)])
def test_softmax_gradcheck_and_gradgradcheck(manual_fn, shape, dim):
    assert_grad_and_gradgrad(lambda z: manual_fn(z, dim), (leaf(*shape),))


# ---- the module ----


def test_the_softmax_module_matches_torch():
    builtin, manual = module_pair(torch.nn.Softmax, dim=-1)
    assert_module_outputs_and_grads(builtin, manual, [leaf(2, 3, 4)])
    assert type(manual).__module__.startswith("manualbp.nn.")


# ---- bad input ----


def test_softmax_checks_its_dim_as_torch_does():
    with pytest.raises(IndexError, match="Dimension out of range"):
        F.softmax(torch.randn(2, 3), 2)
    with pytest.raises(TypeError, match="dim must be an int"):
        F.log_softmax(torch.randn(2, 3), 1.0)
    with pytest.warns(UserWarning, match="Implicit dimension choice"):
        out = F.softmax(torch.randn(2, 3))
    torch.testing.assert_close(out.sum(1), torch.ones(2))
