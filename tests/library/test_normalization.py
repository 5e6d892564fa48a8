"""Batch, layer and group norm: the shared derivation rung by rung, and each Function against PyTorch.

docs/derivations.md derives normalisation once (``manualbp/autograd/normalization.py``) by a ladder: the chain rule
through every intermediate (μ, x − μ, v, σ⁻¹, x̂, y), then the closed form σ⁻¹ (ĝ − mean ĝ − x̂ · mean(ĝ x̂)). The
first tests compute every rung in float64 and compare it with the gradient autograd gives that intermediate, and
the closed form with both. Then each Function: its ctx-free ``gradients`` and ``tangent`` are its backward and jvp
to the bit; its outputs (PyTorch's kernels) are PyTorch's to the bit and its gradients match PyTorch's with
``assert_close`` (running statistics included); gradcheck and gradgradcheck at atol 1e-8 / rtol 1e-6 with forward
AD; and the argument checks. The gradients are never compared bit for bit with PyTorch's: its fused kernels sum in
another order (the parity tests below hold them to 4 ulps of the largest entry).
"""

import copy
import math
import re

import pytest
import torch
import torch.autograd.forward_ad as fwAD
from conftest import is_manualbp_node
from helpers import (
    DOUBLE,
    TF,
    assert_case_bitwise_on_cpu,
    assert_case_within_tolerance,
    assert_grad_and_gradgrad,
    assert_matches_torch,
    assert_module_matches_torch_in_train_and_eval,
    assert_module_outputs_and_grads,
    assert_row_within_ulps,
    cases,
    leaf,
    module_pair,
)
from helpers import leaves as _leaves

import manualbp
import manualbp.autograd as A
import manualbp.functional as F
from manualbp.autograd.normalization import normalize, times_jacobian

# ---- the ladder: every intermediate, then the closed form ----

# x's shape, the reduced axes, γ's shape as it broadcasts against x, and the axes whose values share γ and β
LADDERS = {
    "batch_norm_rows": ((6, 3), (0,), (3,), (0,)),
    "batch_norm_images": ((4, 3, 2, 5), (0, 2, 3), (3, 1, 1), (0, 2, 3)),
    "layer_norm": ((2, 3, 8), (-1,), (8,), (0, 1)),
    "layer_norm_two_axes": ((3, 4, 5), (-2, -1), (4, 5), (0,)),
}
EPS = 1e-5


def _forward_keeping_every_intermediate(x, gamma, beta, axes):
    """y = γ x̂ + β one line per intermediate, each keeping its gradient: ``(y, {name: intermediate})``."""
    mean = x.mean(axes, keepdim=True)
    centered = x - mean
    variance = centered.square().mean(axes, keepdim=True)
    inverse_std = (variance + EPS) ** -0.5
    x_hat = centered * inverse_std
    intermediates = {"μ": mean, "x − μ": centered, "v": variance, "σ⁻¹": inverse_std, "x̂": x_hat}
    for t in intermediates.values():
        t.retain_grad()
    return gamma * x_hat + beta, intermediates


def _ladder(g, x, gamma, axes, shared_axes):
    """∂C/∂(every intermediate), one rung of the chain rule at a time, as docs/derivations.md writes them."""
    n = math.prod(x.shape[axis] for axis in axes)
    mean = x.mean(axes, keepdim=True)
    centered = x - mean
    variance = centered.square().mean(axes, keepdim=True)
    inverse_std = (variance + EPS) ** -0.5
    x_hat = centered * inverse_std
    rungs = {"β": g.sum(shared_axes, keepdim=True).reshape(gamma.shape)}  # 1. ∂C/∂β = Σ g
    rungs["γ"] = (g * x_hat).sum(shared_axes, keepdim=True).reshape(gamma.shape)  # ∂C/∂γ = Σ g x̂
    rungs["x̂"] = gamma * g  # ĝ = γ g
    rungs["σ⁻¹"] = (rungs["x̂"] * centered).sum(axes, keepdim=True)  # 2. Σ ĝ (x − μ)
    rungs["v"] = -0.5 * (variance + EPS) ** -1.5 * rungs["σ⁻¹"]  # 3. −½ (v + ε)^(−3/2) ∂C/∂σ⁻¹
    rungs["x − μ"] = rungs["x̂"] * inverse_std + (2 / n) * centered * rungs["v"]  # 4. into x̂ and into v
    rungs["μ"] = -rungs["x − μ"].sum(axes, keepdim=True)  # 5. subtracted from every value
    rungs["x"] = rungs["x − μ"] + rungs["μ"] / n  # 6. into x − μ and into μ
    return rungs


def _ladder_inputs(case):
    shape, _, gamma_shape, _ = LADDERS[case]
    x = torch.randn(shape, dtype=DOUBLE) * 2 + 1
    gamma, beta = torch.randn(gamma_shape, dtype=DOUBLE), torch.randn(gamma_shape, dtype=DOUBLE)
    return x, gamma, beta, torch.randn(shape, dtype=DOUBLE)


@pytest.mark.parametrize("case", LADDERS)
def test_each_rung_of_the_normalization_ladder_matches_autograds_gradient_of_that_intermediate(case):
    _, axes, _, shared_axes = LADDERS[case]
    x, gamma, beta, g = _ladder_inputs(case)
    leaves = _leaves(x, gamma, beta)
    y, intermediates = _forward_keeping_every_intermediate(*leaves, axes)
    y.backward(g)
    rungs = _ladder(g, x, gamma, axes, shared_axes)
    autograds = {name: t.grad for name, t in intermediates.items()}
    autograds |= {"x": leaves[0].grad, "γ": leaves[1].grad, "β": leaves[2].grad}
    assert rungs.keys() == autograds.keys()
    for name, rung in rungs.items():
        torch.testing.assert_close(rung, autograds[name], rtol=1e-12, atol=1e-12, msg=f"∂C/∂{name}: {case}")


@pytest.mark.parametrize("case", LADDERS)
def test_the_closed_form_matches_the_ladder_and_autograd(case):
    _, axes, _, shared_axes = LADDERS[case]
    x, gamma, beta, g = _ladder_inputs(case)
    leaves = _leaves(x, gamma, beta)
    y, _ = _forward_keeping_every_intermediate(*leaves, axes)
    y.backward(g)
    x_hat, inverse_std = normalize(x, axes, EPS)
    closed_form = times_jacobian(gamma * g, x_hat, inverse_std, axes)  # σ⁻¹ (ĝ − mean ĝ − x̂ · mean(ĝ x̂))
    torch.testing.assert_close(closed_form, _ladder(g, x, gamma, axes, shared_axes)["x"], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(closed_form, leaves[0].grad, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case", LADDERS)
def test_the_closed_form_applied_to_a_tangent_is_the_forward_mode_derivative_of_normalize(case):
    # the Jacobian (σ⁻¹/N)(N[i = k] − 1 − x̂_i x̂_k) is symmetric: the same bracket is the jvp
    _, axes, _, _ = LADDERS[case]
    x, _, _, x_tangent = _ladder_inputs(case)
    _, expected = torch.func.jvp(lambda x: normalize(x, axes, EPS)[0], (x,), (x_tangent,))
    x_hat, inverse_std = normalize(x, axes, EPS)
    torch.testing.assert_close(times_jacobian(x_tangent, x_hat, inverse_std, axes), expected, rtol=1e-12, atol=1e-12)


# ---- the calling convention: gradients and tangent, without a ctx ----


RUNNING = (torch.randn(3, dtype=DOUBLE), torch.rand(3, dtype=DOUBLE) + 0.5)  # μ_r and v_r, for eval


def _running(x):
    return tuple(t.to(x.dtype) for t in RUNNING)


# name: (x's shape, γ's shape, apply(x, γ, β), gradients(g, x, γ), tangent(ẋ, γ̇, β̇, x, γ))
CONVENTION = {
    "BatchNorm(training)": (
        (5, 3, 4),
        (3,),
        lambda x, w, b: A.BatchNorm.apply(x, w, b, None, None, True, 0.1, EPS),
        lambda g, x, w: A.BatchNorm.gradients(g, x, w, None, None, True, EPS, True),
        lambda xt, wt, bt, x, w: A.BatchNorm.tangent(xt, wt, bt, x, w, None, None, True, EPS),
    ),
    "BatchNorm(eval)": (
        (5, 3, 4),
        (3,),
        lambda x, w, b: A.BatchNorm.apply(x, w, b, *_running(x), False, 0.1, EPS),
        lambda g, x, w: A.BatchNorm.gradients(g, x, w, *_running(x), False, EPS, True),
        lambda xt, wt, bt, x, w: A.BatchNorm.tangent(xt, wt, bt, x, w, *_running(x), False, EPS),
    ),
    "LayerNorm": (
        (4, 2, 6),
        (2, 6),
        lambda x, w, b: A.LayerNorm.apply(x, (2, 6), w, b, EPS),
        lambda g, x, w: A.LayerNorm.gradients(g, x, w, (-2, -1), EPS, True),
        lambda xt, wt, bt, x, w: A.LayerNorm.tangent(xt, wt, bt, x, w, (-2, -1), EPS),
    ),
    "GroupNorm": (
        (3, 6, 5),
        (6,),
        lambda x, w, b: A.GroupNorm.apply(x, 2, w, b, EPS),
        lambda g, x, w: A.GroupNorm.gradients(g, x, w, 2, EPS, True),
        lambda xt, wt, bt, x, w: A.GroupNorm.tangent(xt, wt, bt, x, w, 2, EPS),
    ),
}


@pytest.mark.parametrize("dtype", [torch.float32, DOUBLE])
@pytest.mark.parametrize("name", CONVENTION)
def test_gradients_and_tangent_called_without_ctx_are_the_backward_and_jvp_bitwise(name, dtype):
    shape, weight_shape, apply, gradients, tangent = CONVENTION[name]
    x, weight, bias = (torch.randn(s, dtype=DOUBLE).to(dtype) for s in (shape, weight_shape, weight_shape))
    x = x * 2 + 1
    leaves = _leaves(x, weight, bias)
    g = torch.randn(shape, dtype=dtype)
    ours = [grad for grad in gradients(g, x, weight) if grad is not None]  # None for the non-tensor arguments
    expected = torch.autograd.grad(apply(*leaves), leaves, g)
    assert len(ours) == 3
    for grad, expected_grad in zip(ours, expected, strict=True):
        assert torch.equal(grad, expected_grad)
    tangents = [torch.randn_like(t) for t in (x, weight, bias)]
    with fwAD.dual_level():
        output = apply(*(fwAD.make_dual(t, tangent) for t, tangent in zip((x, weight, bias), tangents, strict=True)))
        expected_tangent = fwAD.unpack_dual(output).tangent
    assert torch.equal(tangent(*tangents, x, weight), expected_tangent)


def test_gradients_leave_out_what_needs_input_grad_does_not_ask_for():
    x, weight, g = torch.randn(4, 3, dtype=DOUBLE), torch.randn(3, dtype=DOUBLE), torch.randn(4, 3, dtype=DOUBLE)
    needs = (False, True, False, False, False, False, False, False)
    grad_x, grad_weight, grad_bias, *_ = A.BatchNorm.gradients(
        g, x, weight, None, None, True, EPS, True, needs_input_grad=needs
    )
    assert grad_x is None and grad_bias is None
    torch.testing.assert_close(grad_weight, (g * normalize(x, (0,), EPS)[0]).sum(0), rtol=0, atol=0)


# ---- batch norm ----

BATCH_NORM_SHAPES = [(6, 3), (3, 2, 5), (2, 3, 3, 2)]


def _normalization_inputs(shape, has_weight, has_bias, dtype):
    """x of ``shape``, off centre and scaled (a zero mean and unit variance could hide a wrong formula), and a
    per-channel weight and bias where asked for, as leaves."""
    channels = shape[1]
    x = torch.randn(*shape, dtype=dtype) * 2 + 1
    weight = torch.randn(channels, dtype=dtype) if has_weight else None
    bias = torch.randn(channels, dtype=dtype) if has_bias else None
    return _leaves(x, weight, bias)


@pytest.mark.parametrize("dtype", [torch.float32, DOUBLE])
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("shape", BATCH_NORM_SHAPES)
def test_batch_norm_output_and_running_statistics_are_torchs_and_grads_match(shape, training, affine, dtype):
    running = [torch.randn(shape[1], dtype=dtype), torch.rand(shape[1], dtype=dtype) + 0.5]
    ours_running, torch_running = copy.deepcopy(running), copy.deepcopy(running)
    assert_matches_torch(
        lambda x, w, b: F.batch_norm(x, *ours_running, w, b, training, 0.3, 1e-3),
        lambda x, w, b: TF.batch_norm(x, *torch_running, w, b, training, 0.3, 1e-3),
        _normalization_inputs(shape, affine, affine, dtype),
        bitwise=False,
    )
    for ours, theirs in zip(ours_running, torch_running, strict=True):
        assert torch.equal(ours, theirs)


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("shape", BATCH_NORM_SHAPES)
def test_batch_norm_gradcheck_and_gradgradcheck(shape, training):
    running_mean, running_var = torch.randn(shape[1], dtype=DOUBLE), torch.rand(shape[1], dtype=DOUBLE) + 0.5
    statistics = (None, None) if training else (running_mean, running_var)  # nothing moved between evaluations
    assert_grad_and_gradgrad(
        lambda x, w, b: F.batch_norm(x, *statistics, w, b, training, 0.1, 1e-5),
        _normalization_inputs(shape, True, True, DOUBLE),
    )


# ---- group norm ----

# (input shape, num_groups): one group (layer norm over (C, *)), one per channel (instance norm), and between
GROUP_NORM = {
    "rows_one_group": ((5, 6), 1),
    "rows_three_per_group": ((5, 6), 2),
    "sequence_one_group": ((3, 6, 5), 1),
    "sequence_between": ((3, 6, 5), 3),
    "sequence_instance": ((3, 6, 5), 6),
    "image_one_group": ((2, 6, 3, 4), 1),
    "image_between": ((2, 6, 3, 4), 2),
    "image_instance": ((2, 6, 3, 4), 6),
}
AFFINE = {"weight_and_bias": (True, True), "weight_only": (True, False), "none": (False, False)}


def _group_norm_inputs(shape, affine, dtype):
    return _normalization_inputs(shape, *AFFINE[affine], dtype)


@pytest.mark.parametrize("dtype", [torch.float32, DOUBLE])
@pytest.mark.parametrize("affine", AFFINE)
@pytest.mark.parametrize("case", GROUP_NORM)
def test_group_norm_output_is_torchs_and_grads_match_torchs(case, affine, dtype):
    shape, num_groups = GROUP_NORM[case]
    inputs = _group_norm_inputs(shape, affine, dtype)
    assert is_manualbp_node(F.group_norm(inputs[0], num_groups, *inputs[1:]).grad_fn, "GroupNorm")
    assert_matches_torch(
        lambda x, w, b: F.group_norm(x, num_groups, w, b, 1e-3),
        lambda x, w, b: TF.group_norm(x, num_groups, w, b, 1e-3),
        inputs,
        bitwise=False,
    )


@pytest.mark.parametrize("dtype, residue", [(torch.float32, 1e-3), (DOUBLE, 1e-11)], ids=["float32", "float64"])
def test_group_norm_with_one_value_per_group_gives_the_exact_zero_gradients_where_torch_leaves_a_residue(
    dtype, residue
):
    # (N, C) with C groups: each group is one value, x̂ = x − μ = 0, so y = β and ∂C/∂x = ∂C/∂γ = 0 exactly, which
    # the compact form gives to the bit; torch's kernel leaves a rounding residue amplified by σ⁻¹ = 1/√ε
    x, weight, bias = _group_norm_inputs((5, 6), "weight_and_bias", dtype)
    g = torch.randn(5, 6, dtype=dtype)
    output = F.group_norm(x, 6, weight, bias)
    expected = TF.group_norm(x, 6, weight, bias)
    assert torch.equal(output, expected)  # torch's kernel, the forward's rounding residue included
    torch.testing.assert_close(output, bias.detach().expand(5, 6), atol=residue, rtol=0)
    grads = torch.autograd.grad(output, (x, weight, bias), g)
    expected_grads = torch.autograd.grad(expected, (x, weight, bias), g)
    assert not grads[0].any() and not grads[1].any()
    torch.testing.assert_close(grads[2], expected_grads[2])  # ∂C/∂β = Σ g
    assert expected_grads[0].abs().max() < residue and expected_grads[1].abs().max() < residue


@pytest.mark.parametrize(
    "shape, num_groups, affine",
    [((4, 6), 2, "weight_and_bias"), ((2, 6, 3), 3, "weight_only"), ((2, 4, 3), 1, "none"), ((2, 4, 2, 2), 4, "none")],
)
def test_group_norm_gradcheck_and_gradgradcheck(shape, num_groups, affine):
    assert_grad_and_gradgrad(
        lambda x, w, b: F.group_norm(x, num_groups, w, b), _group_norm_inputs(shape, affine, DOUBLE)
    )


def _raised(fn, *args):
    try:
        fn(*args)
    except Exception as error:  # the exception is the result
        return error
    return None


# (input shape, num_groups, weight shape, bias shape, what manualbp's message says)
GROUP_NORM_ERRORS = {
    "one_dimension": ((6,), 2, None, None, "2 or more dimensions, got 1-D"),
    "groups_do_not_divide_channels": ((2, 6, 3), 4, None, None, "divisible by num_groups=4"),
    "more_groups_than_channels": ((2, 6, 3), 12, None, None, "divisible by num_groups=12"),
    "negative_groups": ((2, 6, 3), -2, None, None, "greater than 0, got -2"),
    "no_channels": ((2, 0, 3), 1, None, None, r"at least one channel, got input of shape \[2, 0, 3\]"),
    "no_positions": ((2, 6, 0), 3, None, None, "at least one position"),
    "one_value": ((1, 4), 4, None, None, r"more than one value per group .* size \[1, 4\] with num_groups=4"),
    "weight_shape": ((2, 6, 3), 3, (5,), None, r"weight of shape \[6\] \(one per channel\), got \[5\]"),
    "bias_shape": ((2, 6, 3), 3, None, (6, 1), r"bias of shape \[6\] \(one per channel\), got \[6, 1\]"),
    "float_groups": ((2, 6, 3), 3.0, None, None, "num_groups must be an int, got float"),
}


@pytest.mark.parametrize("case", GROUP_NORM_ERRORS)
def test_group_norm_raises_torchs_exception_type_with_a_message_that_says_what_came(case):
    shape, num_groups, weight_shape, bias_shape, message = GROUP_NORM_ERRORS[case]
    args = (torch.randn(shape), num_groups, *(None if s is None else torch.ones(s) for s in (weight_shape, bias_shape)))
    theirs, ours = _raised(TF.group_norm, *args), _raised(F.group_norm, *args)
    assert theirs is not None, "torch accepts this call: it is no error case"
    assert type(ours) is type(theirs), f"manualbp raised {ours!r}, torch {theirs!r}"
    assert re.search(message, str(ours)), str(ours)


def test_group_norm_refuses_zero_groups_with_a_runtime_error_where_torch_divides_by_zero():
    # torch.nn.functional.group_norm computes N·C // num_groups in Python before its kernel's "greater than 0" check
    assert isinstance(_raised(TF.group_norm, torch.randn(2, 6, 3), 0), ZeroDivisionError)
    with pytest.raises(RuntimeError, match="num_groups to be greater than 0, got 0"):
        F.group_norm(torch.randn(2, 6, 3), 0)


# ---- layer norm ----

LAYER_NORM_CASES = [
    ((4, 6), (6,), True, True),
    ((2, 3, 4, 5), (4, 5), True, True),
    ((3, 5), (5,), True, False),
    ((3, 5), (5,), False, False),
]


def _layer_norm_inputs(shape, normalized_shape, affine, bias, dtype):
    """x off centre and scaled, and a weight and bias of ``normalized_shape`` where asked for, as leaves."""
    x = torch.randn(*shape, dtype=dtype) * 2 + 1
    weight = torch.randn(*normalized_shape, dtype=dtype) if affine else None
    b = torch.randn(*normalized_shape, dtype=dtype) if bias else None
    return _leaves(x, weight, b)


@pytest.mark.parametrize("shape, normalized_shape, affine, bias", LAYER_NORM_CASES)
@pytest.mark.parametrize("dtype", [torch.float32, DOUBLE])
def test_layer_norm_outputs_and_grads_match_torch(shape, normalized_shape, affine, bias, dtype):
    x, weight, b = _layer_norm_inputs(shape, normalized_shape, affine, bias, dtype)
    assert is_manualbp_node(F.layer_norm(x, normalized_shape, weight, b).grad_fn, "LayerNorm")
    assert_matches_torch(
        lambda *t: F.layer_norm(t[0], normalized_shape, *t[1:], eps=1e-5),
        lambda *t: TF.layer_norm(t[0], normalized_shape, *t[1:], eps=1e-5),
        (x, weight, b),
        bitwise=False,
    )


@pytest.mark.parametrize("shape, normalized_shape, affine, bias", LAYER_NORM_CASES)
def test_layer_norm_gradcheck_and_gradgradcheck(shape, normalized_shape, affine, bias):
    shape = shape if len(shape) < 4 else (2, 2, 3, 2)  # small: gradgradcheck is quadratic in the size
    normalized_shape = normalized_shape if len(normalized_shape) < 2 else (3, 2)
    inputs = _layer_norm_inputs(shape, normalized_shape, affine, bias, DOUBLE)
    assert_grad_and_gradgrad(lambda *t: F.layer_norm(t[0], normalized_shape, *t[1:]), inputs)


def test_layer_norm_rejects_a_shape_that_does_not_end_the_input():
    with pytest.raises(RuntimeError, match=r"expected input with shape \[\*, 4\]"):
        F.layer_norm(torch.randn(2, 3), (4,))
    with pytest.raises(RuntimeError, match="expected weight to be of shape"):
        F.layer_norm(torch.randn(2, 3), 3, torch.ones(2))


# ---- parity with PyTorch over manualbp.check's cases ----

# Where the arithmetic differs, why, and so why these rows are bounded rather than bitwise.
NOT_BITWISE = {
    ("LayerNorm", "grad x"): "native_layer_norm_backward sums and scales in its own order (a fused kernel)",
    ("LayerNorm", "grad weight"): "the sums Σ g·x̂ run over the rows in another order",
    ("LayerNorm", "grad bias"): "as the weight: Σ g in another order",
    ("GroupNorm", "grad x"): "native_group_norm_backward sums and scales in its own order (a fused kernel)",
    ("GroupNorm", "grad weight"): "the sums Σ g·x̂ run over the examples and positions in another order",
    ("GroupNorm", "grad bias"): "as the weight: Σ g in another order",
    ("BatchNorm2d(training)", "grad x"): "native_batch_norm_backward sums and scales in its own order (a fused kernel)",
    ("BatchNorm2d(training)", "grad weight"): "the sums Σ g·x̂ run over the examples and positions in another order",
    ("BatchNorm2d(training)", "grad bias"): "as the weight: Σ g in another order",
}


@pytest.mark.parametrize("case", cases("normalization"))
def test_float32_forward_and_grads_match_autograd_bitwise_on_cpu(case):
    assert_case_bitwise_on_cpu(case, NOT_BITWISE)


@pytest.mark.parametrize("key", NOT_BITWISE, ids=" ".join)
def test_float32_rows_that_cannot_be_bitwise_stay_within_a_few_ulps(key):
    assert_row_within_ulps(key, NOT_BITWISE[key])


@pytest.mark.parametrize("case", cases("normalization"))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_forward_and_grads_match_autograd_within_tolerance(case, device, dtype):
    assert_case_within_tolerance(case, device, dtype)


# ---- the modules ----

MODULES = [
    (torch.nn.BatchNorm1d, manualbp.nn.BatchNorm1d, (3,), {}, (5, 3)),
    (torch.nn.BatchNorm1d, manualbp.nn.BatchNorm1d, (3,), {"momentum": None}, (5, 3, 4)),
    (torch.nn.BatchNorm2d, manualbp.nn.BatchNorm2d, (3,), {"affine": False}, (4, 3, 2, 2)),
    (torch.nn.BatchNorm2d, manualbp.nn.BatchNorm2d, (3,), {"track_running_stats": False}, (4, 3, 2, 2)),
    (torch.nn.GroupNorm, manualbp.nn.GroupNorm, (2, 6), {}, (3, 6, 4, 4)),
    (torch.nn.GroupNorm, manualbp.nn.GroupNorm, (3, 6), {"eps": 1e-3, "bias": False}, (3, 6, 5)),
    (torch.nn.GroupNorm, manualbp.nn.GroupNorm, (2, 6), {}, (3, 6)),
    (torch.nn.GroupNorm, manualbp.nn.GroupNorm, (6, 6), {"affine": False}, (3, 6, 4)),
]


@pytest.mark.parametrize(
    "torch_class, manual_class, args, kwargs, shape", MODULES, ids=lambda v: getattr(v, "__name__", None)
)
def test_module_has_torchs_init_and_state_and_matches_it_in_train_and_eval(
    torch_class, manual_class, args, kwargs, shape
):
    assert_module_matches_torch_in_train_and_eval(torch_class, manual_class, args, kwargs, shape)


def test_the_layer_norm_module_matches_torch():
    builtin, manual = module_pair(torch.nn.LayerNorm, (3, 4))
    assert_module_outputs_and_grads(builtin, manual, [leaf(2, 3, 4)])
    assert type(manual).__module__.startswith("manualbp.nn.")


def test_functional_checks_raise_torchs_exception_types_with_clear_messages():
    x = torch.randn(1, 3, 5, 5)
    with pytest.raises(RuntimeError, match="running_mean and running_var"):
        F.batch_norm(x, None, None, training=False)
