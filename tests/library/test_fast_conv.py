"""The fast convolution (``manualbp.fast.Conv2d``) against the reference (``manualbp.autograd.Conv2d``).

Its ∂C/∂x, ∂C/∂b and jvp are the reference's own calls, so they are compared bit for bit. Its ∂C/∂W sums the same
N · L terms g[n, o, l] · cols[n, p, l] as the reference, in another order (one product over all columns rather
than one per example, then a sum over examples), so it is held to the rounding bound of two such sums: each is
within γ_m · Σ|terms| of the exact sum (m = N · L terms, γ_m = m·u / (1 − m·u), u = eps / 2, the standard bound
for any order of summation, blocked and fused ones included), so the two differ by at most about m · eps · Σ|terms|.
"""

import pytest
import torch
from torch.autograd import forward_ad
from torch.nn.functional import conv2d, unfold

import manualbp.autograd as A
import manualbp.functional as F
from manualbp import fast
from manualbp.fast import conv as fast_conv

DTYPES = [torch.float32, torch.float64]

# (input shape, weight shape, stride, padding, dilation, groups)
CASES = {
    "plain": ((3, 3, 6, 5), (4, 3, 3, 3), (1, 1), (0, 0), (1, 1), 1),
    "strided_padded_dilated_grouped": ((2, 4, 7, 6), (6, 2, 3, 2), (2, 1), (1, 2), (1, 2), 2),
    "stride_past_the_kernel": ((2, 2, 8, 7), (3, 2, 2, 2), (3, 3), (1, 1), (1, 1), 1),
    "one_position_deep_layer": ((16, 64, 1, 1), (32, 64, 3, 3), (1, 1), (1, 1), (1, 1), 1),  # resnet18's last stage
    "one_position_grouped": ((4, 6, 2, 2), (6, 2, 2, 2), (1, 1), (0, 0), (1, 1), 3),
    "depthwise": ((3, 3, 5, 5), (3, 1, 3, 3), (1, 1), (1, 1), (1, 1), 3),
    "pointwise_strided": ((5, 8, 6, 6), (4, 8, 1, 1), (2, 2), (0, 0), (1, 1), 1),
    "dilated_strided_unequal": ((2, 3, 9, 8), (4, 3, 3, 2), (2, 1), (1, 2), (2, 1), 1),
    "empty_batch": ((0, 2, 5, 5), (3, 2, 3, 3), (1, 1), (0, 0), (1, 1), 1),
    "four_channels_padded": ((3, 4, 6, 5), (5, 4, 3, 3), (1, 1), (1, 1), (1, 1), 1),
    "one_input_channel": ((4, 1, 9, 9), (5, 1, 3, 3), (1, 1), (1, 1), (1, 1), 1),  # the trainer CNN's first layer
}


def _inputs(case, dtype, seed=0):
    input_shape, weight_shape, stride, padding, dilation, groups = CASES[case]
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(*input_shape, dtype=dtype, generator=generator)
    weight = torch.randn(*weight_shape, dtype=dtype, generator=generator)
    bias = torch.randn(weight_shape[0], dtype=dtype, generator=generator)
    arguments = (stride, padding, dilation, groups)
    g = torch.randn_like(conv2d(x, weight, bias, *arguments))  # a random upstream gradient, not .sum()'s ones
    return x, weight, bias, arguments, g


def _gradients(function, x, weight, bias, arguments, g):
    leaves = [t.detach().clone().requires_grad_() for t in (x, weight, bias)]
    output = function.apply(*leaves, *arguments)
    return [output.detach(), *torch.autograd.grad(output, leaves, g)]


def _rounding_bound(x, weight_shape, arguments, g):
    """m · eps · Σ_n Σ_l |g[n, o, l]| |cols[n, p, l]| for every weight, m = N · L, in float64."""
    stride, padding, dilation, groups = arguments
    n, (c_out, _, kh, kw) = x.shape[0], weight_shape
    patch, positions = x.shape[1] // groups * kh * kw, g.shape[2] * g.shape[3]
    cols = unfold(x.double(), (kh, kw), dilation, padding, stride).abs().reshape(n, groups, patch, positions)
    g_abs = g.double().abs().reshape(n, groups, c_out // groups, positions)
    magnitude = torch.einsum("ngol,ngpl->gop", g_abs, cols).reshape(weight_shape)
    return n * positions * torch.finfo(x.dtype).eps * magnitude


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", CASES)
def test_fast_conv2d_weight_gradient_is_the_references_within_the_rounding_bound_of_its_sum(case, dtype):
    x, weight, bias, arguments, g = _inputs(case, dtype)
    _, _, fast_weight_grad, _ = _gradients(fast.Conv2d, x, weight, bias, arguments, g)
    _, _, reference_weight_grad, _ = _gradients(A.Conv2d, x, weight, bias, arguments, g)
    assert fast_weight_grad.dtype == dtype and fast_weight_grad.shape == weight.shape
    difference = (fast_weight_grad - reference_weight_grad).abs().double()
    bound = _rounding_bound(x, weight.shape, arguments, g)
    assert (difference <= bound).all(), (difference - bound).max()


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", [case for case in CASES if CASES[case][0][0] > 0])
@pytest.mark.parametrize("form", ["over_windows", "by_kernel"])
def test_both_forms_of_the_weight_gradient_are_the_references_within_the_rounding_bound(form, case, dtype):
    # weight_gradient picks one form by the number of positions: each is held to the bound on every shape
    x, weight, bias, arguments, g = _inputs(case, dtype)
    got = getattr(fast_conv, f"weight_gradient_{form}")(g, x, weight.shape, *arguments)
    expected = A.Conv2d.weight_gradient(g, x, weight.shape, *arguments)
    assert got.dtype == dtype and got.shape == weight.shape and got.is_contiguous()
    assert ((got - expected).abs().double() <= _rounding_bound(x, weight.shape, arguments, g)).all()


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", CASES)
def test_fast_conv2d_output_input_and_bias_gradients_are_the_references_bitwise(case, dtype):
    x, weight, bias, arguments, g = _inputs(case, dtype)
    fast_output, fast_x_grad, _, fast_bias_grad = _gradients(fast.Conv2d, x, weight, bias, arguments, g)
    output, x_grad, _, bias_grad = _gradients(A.Conv2d, x, weight, bias, arguments, g)
    for got, expected in [(fast_output, output), (fast_x_grad, x_grad), (fast_bias_grad, bias_grad)]:
        assert got.dtype == expected.dtype and torch.equal(got, expected)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("positions", [1, 4])
def test_fast_conv2d_weight_gradient_takes_the_product_over_windows_for_one_position_and_the_kernel_past_it(
    positions, dtype
):
    side = int(positions**0.5)
    x, weight = torch.randn(6, 8, side, side, dtype=dtype), torch.randn(5, 8, 3, 3, dtype=dtype)
    arguments = ((1, 1), (1, 1), (1, 1), 1)
    g = torch.randn(6, 5, side, side, dtype=dtype)
    got = fast_conv.weight_gradient(g, x, weight.shape, *arguments)
    form = "over_windows" if positions <= fast_conv.FEW_POSITIONS else "by_kernel"
    assert torch.equal(got, getattr(fast_conv, f"weight_gradient_{form}")(g, x, weight.shape, *arguments))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_fast_conv2d_weight_gradient_equals_the_reference_bitwise_with_one_example_and_one_position(dtype):
    # one term per weight in each sum: no order to differ in, so the bits must agree
    x = torch.randn(1, 5, 3, 3, dtype=dtype)
    weight = torch.randn(4, 5, 3, 3, dtype=dtype)
    g = torch.randn(1, 4, 1, 1, dtype=dtype)
    arguments = ((1, 1), (0, 0), (1, 1), 1)
    fast_grads = _gradients(fast.Conv2d, x, weight, torch.zeros(4, dtype=dtype), arguments, g)
    reference_grads = _gradients(A.Conv2d, x, weight, torch.zeros(4, dtype=dtype), arguments, g)
    assert torch.equal(fast_grads[2], reference_grads[2])


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_fast_conv2d_jvp_is_the_references_bitwise(dtype):
    x, weight, bias, arguments, _ = _inputs("strided_padded_dilated_grouped", dtype)
    tangents = [torch.randn_like(t) for t in (x, weight, bias)]
    results = []
    for function in (fast.Conv2d, A.Conv2d):
        with forward_ad.dual_level():
            duals = [forward_ad.make_dual(t, dt) for t, dt in zip((x, weight, bias), tangents, strict=True)]
            results.append(forward_ad.unpack_dual(function.apply(*duals, *arguments)).tangent)
    assert torch.equal(results[0], results[1])


def test_functional_conv2d_takes_the_fast_route_and_skips_the_weight_gradient_when_no_one_wants_it():
    x, weight, bias, arguments, g = _inputs("plain", torch.float64)
    x, weight = x.requires_grad_(), weight.requires_grad_()
    output = F.conv2d(x, weight, None, *arguments)
    assert type(output.grad_fn).__name__ == "Conv2dBackward"
    expected = _gradients(fast.Conv2d, x, weight, torch.zeros(4, dtype=torch.float64), arguments, g)
    x_grad, weight_grad = torch.autograd.grad(output, (x, weight), g)
    assert torch.equal(x_grad, expected[1]) and torch.equal(weight_grad, expected[2])
    frozen = F.conv2d(x, weight.detach(), None, *arguments)
    (x_grad_alone,) = torch.autograd.grad(frozen, (x,), g)
    assert torch.equal(x_grad_alone, expected[1])


def test_fast_conv2d_passes_gradcheck_and_gradgradcheck():
    x, weight, bias, arguments, _ = _inputs("strided_padded_dilated_grouped", torch.float64)
    leaves = [t.requires_grad_() for t in (x[:1], weight, bias)]
    function = lambda x, w, b: fast.Conv2d.apply(x, w, b, *arguments)  # noqa: E731
    assert torch.autograd.gradcheck(function, leaves, check_forward_ad=True)
    assert torch.autograd.gradgradcheck(function, leaves)
