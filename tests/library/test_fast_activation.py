"""The fast tier's one-kernel t · f′ (``manualbp.fast.activation``) against the reference's tensor arithmetic:
sigmoid and tanh to the bit, ReLU as numbers wherever the upstream gradient is finite, and torch.nn's answer where it
is not."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch.autograd import gradcheck, gradgradcheck

import manualbp.autograd as A
import manualbp.functional as F
from manualbp import fast
from manualbp.fast import activation

DTYPES = [torch.float32, torch.float64]
FUNCTIONS = {"relu": A.ReLU, "sigmoid": A.Sigmoid, "tanh": A.Tanh}
SPECIAL = [0.0, -0.0, 1e-30, -1e-30, 30.0, -30.0, float("inf"), float("-inf"), float("nan")]


def _bits(tensor):
    return tensor.view(torch.int64 if tensor.dtype == torch.float64 else torch.int32)


def _operands(function, seed, size, dtype):
    """(t, kept): a finite upstream gradient, and what the activation keeps of z, special values of z included."""
    generator = torch.Generator().manual_seed(seed)
    z = torch.cat([torch.randn(size, generator=generator, dtype=dtype) * 4, torch.tensor(SPECIAL, dtype=dtype)])
    t = torch.randn(z.shape, generator=generator, dtype=dtype) * 10
    return t, function.keep(z, function.forward(z))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", ["sigmoid", "tanh"])
@given(seed=st.integers(0, 2**31 - 1), size=st.integers(0, 300))
def test_sigmoid_and_tanh_products_by_one_kernel_are_the_references_to_the_bit(name, dtype, seed, size):
    function = FUNCTIONS[name]
    t, kept = _operands(function, seed, size, dtype)
    got = activation.times_derivative(name, t, kept)
    expected = function.times_derivative(t, kept)
    assert torch.equal(_bits(got), _bits(expected))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@given(seed=st.integers(0, 2**31 - 1), size=st.integers(0, 300))
def test_relus_product_by_one_kernel_equals_the_references_wherever_the_upstream_gradient_is_finite(dtype, seed, size):
    t, a = _operands(A.ReLU, seed, size, dtype)
    got = activation.times_derivative("relu", t, a)
    expected = A.ReLU.times_derivative(t, a)
    assert torch.equal(got, expected)  # as numbers: −0 and +0 are equal
    assert torch.equal(_bits(got[a != 0]), _bits(expected[a != 0]))  # and to the bit where a ≠ 0
    assert not got[a == 0].signbit().any()  # the kernel writes +0 where the reference's t · 0 may be −0


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_relus_one_kernel_product_gives_torch_nns_zero_where_a_non_finite_gradient_meets_a_dead_unit(dtype):
    z = torch.tensor([-1.0, -1.0, -1.0, 2.0, 2.0], dtype=dtype)
    t = torch.tensor([float("inf"), float("-inf"), float("nan"), float("inf"), float("nan")], dtype=dtype)
    a = torch.relu(z)
    reference = A.ReLU.times_derivative(t, a)
    assert reference[:3].isnan().all()  # t · 0 with t = ±inf or NaN
    got = activation.times_derivative("relu", t, a)
    leaf = z.clone().requires_grad_()
    (torch_nn,) = torch.autograd.grad(torch.relu(leaf), leaf, t)
    assert torch.equal(got[:3], torch.zeros(3, dtype=dtype))
    torch.testing.assert_close(got, torch_nn, rtol=0, atol=0, equal_nan=True)  # torch.nn's ReLU gives the same


@pytest.mark.parametrize("name", ["relu", "sigmoid", "tanh"])
def test_fast_activation_functions_pass_gradcheck_gradgradcheck_and_the_forward_mode_check(name):
    function = getattr(activation, FUNCTIONS[name].__name__)
    z = torch.randn(4, 5, dtype=torch.float64)
    z = (z + 0.1 * z.sign()).requires_grad_()  # away from ReLU's kink, where finite differences straddle it
    assert gradcheck(function.apply, (z,), check_forward_ad=True, check_batched_grad=True)
    assert gradgradcheck(function.apply, (z,))


@pytest.mark.parametrize("name", ["relu", "sigmoid", "tanh"])
def test_the_functional_activations_run_the_one_kernel_functions_and_match_autograd(name):
    z = torch.randn(6, 7, requires_grad=True)
    g = torch.randn(6, 7)
    output = getattr(F, name)(z)
    assert type(output.grad_fn).__name__ == f"{FUNCTIONS[name].__name__}Backward"
    assert getattr(fast, name).function is getattr(activation, FUNCTIONS[name].__name__)
    (got,) = torch.autograd.grad(output, z, g)
    leaf = z.detach().clone().requires_grad_()
    (expected,) = torch.autograd.grad(getattr(torch, name)(leaf), leaf, g)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
