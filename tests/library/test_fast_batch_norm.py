"""Batch norm's regrouped training backward (``manualbp.fast.normalization``) against the reference's closed form:
the same formula, rounded otherwise, so held to rounding; and the reference wherever the regrouped form does not
apply (evaluation, double backward)."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch.autograd import gradcheck, gradgradcheck

import manualbp.autograd as A
import manualbp.functional as F
import manualbp.nn as mnn
from manualbp.fast.normalization import BatchNormKeepingStatistics, training_gradients

NEEDS = (True, True, True, False, False, False, False, False)


def _case(shape, offset, seed, dtype, affine):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=generator, dtype=torch.float64) * 2 + offset  # a mean far from 0 too
    g = torch.randn(shape, generator=generator, dtype=torch.float64)
    weight = torch.randn(shape[1], generator=generator, dtype=torch.float64) if affine else None
    return x.to(dtype), g.to(dtype), None if weight is None else weight.to(dtype)


def _scales(x, g, weight):
    """The size of each result's terms, the measure of its rounding (a result that cancels to ~0, as ∂C/∂x does
    for two values per channel, rounds at the size of its terms): |γ| σ⁻¹ max|g| for ∂C/∂x, σ⁻¹ Σ|g (x − μ)| for
    ∂C/∂γ, Σ|g| for ∂C/∂β."""
    axes = [0, *range(2, x.dim())]
    variance, mean = torch.var_mean(x, axes, correction=0, keepdim=True)
    inverse_std = torch.rsqrt(variance + 1e-5)
    gamma = 1.0 if weight is None else weight.abs().max().item()
    return (
        gamma * inverse_std.max().item() * g.abs().max().item(),
        (inverse_std * (g * (x - mean)).abs().sum(axes, keepdim=True)).max().item(),
        g.abs().sum(axes).max().item(),
    )


def _reference(x, g, weight, affine):
    return A.BatchNorm.gradients(g, x, weight, None, None, True, 1e-5, affine, needs_input_grad=NEEDS)[:3]


@given(
    shape=st.sampled_from([(2, 3), (5, 1), (3, 4, 5), (2, 3, 4, 4), (4, 2, 3, 5), (1, 3, 2, 2)]),
    offset=st.sampled_from([0.0, 10.0, -300.0]),
    seed=st.integers(0, 2**31 - 1),
    affine=st.booleans(),
)
def test_regrouped_training_backward_is_the_references_to_float32_rounding(shape, offset, seed, affine):
    x64, g64, w64 = _case(shape, offset, seed, torch.float64, affine)
    truth = _reference(x64, g64, w64, affine)  # float64: the reference, exact to float32's eyes
    scales = _scales(x64, g64, w64)
    fast64 = training_gradients(g64, x64, w64, 1e-5, affine, NEEDS)
    for got, expected, scale in zip(fast64, truth, scales, strict=True):
        if expected is not None:
            torch.testing.assert_close(got, expected, rtol=0, atol=1e-12 * scale)
    x, g, w = _case(shape, offset, seed, torch.float32, affine)
    reference = _reference(x, g, w, affine)
    eps = torch.finfo(torch.float32).eps
    # μ and σ⁻¹ computed in the backward, and kept from the forward's kernel (BatchNormKeepingStatistics)
    for statistics in [(), _forward_statistics(x, w)]:
        fast = training_gradients(g, x, w, 1e-5, affine, NEEDS, statistics)
        for got, theirs, expected, scale in zip(fast, reference, truth, scales, strict=True):
            if expected is None:
                assert got is None and theirs is None
                continue
            assert got.dtype == torch.float32 and got.shape == expected.shape
            ours_error = (got.double() - expected).abs().max().item()
            reference_error = (theirs.double() - expected).abs().max().item()
            # no worse than the reference's own rounding, give or take a few units in the last place of the terms
            assert ours_error <= 2 * reference_error + 16 * eps * scale, (ours_error, reference_error, scale)


def _forward_statistics(x, weight):
    """The batch's μ and σ⁻¹ as ATen's forward kernel returns them beside y."""
    return tuple(torch.ops.aten.native_batch_norm(x, weight, None, None, None, True, 0.1, 1e-5)[1:])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("shape", [(6, 3), (4, 3, 5, 5), (2, 3, 4, 2, 3)])
def test_the_eager_batch_norm_keeps_torchs_forward_bits_and_running_statistics(shape, dtype):
    # the eager twin's forward is the kernel F.batch_norm runs: the same y and the same moved running statistics,
    # bit for bit; and it keeps two numbers per channel for the backward, beside what the reference keeps
    generator = torch.Generator().manual_seed(0)
    x = (torch.randn(shape, generator=generator, dtype=torch.float64) * 3 + 2).to(dtype).requires_grad_()
    weight, bias = (torch.randn(3, generator=generator, dtype=dtype).requires_grad_() for _ in range(2))
    ours, theirs = (
        (torch.zeros(3, dtype=dtype), torch.ones(3, dtype=dtype)),
        (torch.zeros(3, dtype=dtype), torch.ones(3, dtype=dtype)),
    )
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        y = F.batch_norm(x, *ours, weight, bias, training=True, momentum=0.3)
    expected = torch.nn.functional.batch_norm(x, *theirs, weight, bias, training=True, momentum=0.3)
    assert issubclass(y.grad_fn._forward_cls, BatchNormKeepingStatistics)
    assert torch.equal(y, expected) and all(torch.equal(a, b) for a, b in zip(ours, theirs, strict=True))
    assert [tuple(t.shape) for t in saved] == [shape, (3,), (3,), (3,)]  # x, γ, μ, σ⁻¹


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_batch_norm_module_trains_through_the_regrouped_backward_and_agrees_with_torch_nn(dtype):
    torch.manual_seed(0)
    ours, theirs = mnn.BatchNorm2d(3, dtype=dtype), torch.nn.BatchNorm2d(3, dtype=dtype)
    with torch.no_grad():
        for module in (ours, theirs):
            module.weight.copy_(torch.tensor([0.5, -1.5, 2.0]))
            module.bias.copy_(torch.tensor([0.1, 0.2, -0.3]))
    x = torch.randn(4, 3, 5, 5, dtype=dtype) * 3 + 1
    g = torch.randn(4, 3, 5, 5, dtype=dtype)
    grads = []
    for module in (ours, theirs):
        leaf = x.clone().requires_grad_()
        output = module(leaf)
        grads.append(torch.autograd.grad(output, [leaf, module.weight, module.bias], g))
        if module is ours:
            # eager mode on the CPU: the twin that keeps the forward's μ and σ⁻¹, named as every batch-norm node
            assert type(output.grad_fn).__name__ == "BatchNormBackward"
            assert issubclass(output.grad_fn._forward_cls, BatchNormKeepingStatistics)
    for got, expected in zip(*grads, strict=True):
        torch.testing.assert_close(got, expected)


def test_batch_norm_in_training_passes_gradcheck_and_gradgradcheck_through_the_fast_route():
    x = torch.randn(4, 3, 2, 2, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(3, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(3, dtype=torch.float64, requires_grad=True)

    def f(x, weight, bias):
        return F.batch_norm(x, None, None, weight, bias, training=True)

    assert gradcheck(f, (x, weight, bias))
    assert gradgradcheck(f, (x, weight, bias))  # the double backward differentiates the reference's backward
    # gradcheck's batched check vmaps the backward over many g (x − μ not batched): ∂C/∂x is then out of place
    assert gradcheck(f, (x, weight, bias), check_batched_grad=True)


@pytest.mark.parametrize("statistics", [False, True], ids=["computed", "kept"])
def test_regrouped_backward_leaves_x_and_g_as_they_were(statistics):
    # ∂C/∂x is written over x − μ, the backward's own tensor: never over x or g, which the caller still holds
    x, g, weight = _case((3, 4, 5, 5), 2.0, 0, torch.float32, True)
    x_before, g_before = x.clone(), g.clone()
    kept = _forward_statistics(x, weight) if statistics else ()
    grad_x, _, _ = training_gradients(g, x, weight, 1e-5, True, NEEDS, kept)
    assert torch.equal(x, x_before) and torch.equal(g, g_before)
    assert grad_x.data_ptr() not in (x.data_ptr(), g.data_ptr())


def test_batch_norm_in_evaluation_takes_the_references_backward_to_the_bit():
    x = torch.randn(4, 3, 3, 3, requires_grad=True)
    mean, var = torch.randn(3), torch.rand(3) + 0.5
    weight, bias = torch.randn(3, requires_grad=True), torch.randn(3, requires_grad=True)
    g = torch.randn(4, 3, 3, 3)
    fast = torch.autograd.grad(F.batch_norm(x, mean, var, weight, bias, training=False), [x, weight, bias], g)
    reference = A.BatchNorm.gradients(g, x.detach(), weight.detach(), mean, var, False, 1e-5, True)[:3]
    for got, expected in zip(fast, reference, strict=True):
        assert torch.equal(got, expected)
