"""Forward and gradients against PyTorch's built-in autograd: bitwise where the arithmetic is the same."""

import pytest
import torch
from conftest import is_manualbp_node, noncontiguous
from hypothesis import given
from hypothesis import strategies as st

import manualbp.functional as F
from manualbp.check import CASES, compare

# Where the arithmetic differs, why, and so why these rows are bounded rather than bitwise.
NOT_BITWISE = {
    ("GELU", "grad z"): "PyTorch's fused kernel contracts its multiply-adds; the composed formula rounds each step",
    ("GELU(tanh)", "grad z"): "as GELU: one fused kernel against a sequence of rounded tensor ops",
    ("CrossEntropyLoss", "grad z"): "log_softmax_backward's fused kernel evaluates e^ℓ·Σu in one pass",
    ("CrossEntropyLoss(weighted,smoothed)", "forward"): "the smoothing term is summed in a different order",
    ("CrossEntropyLoss(weighted,smoothed)", "grad z"): "as CrossEntropyLoss",
    ("Softmax", "grad z"): "softmax_backward's fused kernel forms p·(g − Σg·p) in one pass, the formula in three",
    ("LogSoftmax", "grad z"): "as Softmax: g − e^ℓ·Σg in one fused kernel against rounded tensor ops",
    ("LayerNorm", "grad x"): "native_layer_norm_backward sums and scales in its own order (a fused kernel)",
    ("LayerNorm", "grad weight"): "the sums Σ g·x̂ run over the rows in another order",
    ("LayerNorm", "grad bias"): "as the weight: Σ g in another order",
    ("GroupNorm", "grad x"): "native_group_norm_backward sums and scales in its own order (a fused kernel)",
    ("GroupNorm", "grad weight"): "the sums Σ g·x̂ run over the examples and positions in another order",
    ("GroupNorm", "grad bias"): "as the weight: Σ g in another order",
    ("Attention", "forward"): "PyTorch's flash-attention CPU kernel accumulates softmax blockwise (online softmax)",
    ("Attention", "grad q"): "as the forward: the fused kernel's backward against the four derived products",
    ("Attention", "grad k"): "as grad q",
    ("Attention", "grad v"): "as grad q",
    ("Conv2d(stride=2,padding=1)", "grad weight"): "Σ over examples and positions of g·colsᵀ, against oneDNN's order",
    ("Conv2d(stride=2,padding=1)", "grad bias"): "Σ g over examples and positions, in another order",
    ("AdaptiveAvgPool2d(5)", "grad x"): "P_hᵀ g P_w as two products, against the kernel's per-window sums",
    ("BatchNorm2d(training)", "grad x"): "native_batch_norm_backward sums and scales in its own order (a fused kernel)",
    ("BatchNorm2d(training)", "grad weight"): "the sums Σ g·x̂ run over the examples and positions in another order",
    ("BatchNorm2d(training)", "grad bias"): "as the weight: Σ g in another order",
}
ULPS = 4
# attention's products sum over the keys in blocks in PyTorch's kernel (online softmax), over all keys at once here
ULPS_FOR = {"Attention": 8}


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_float32_forward_and_grads_match_autograd_bitwise_on_cpu(case):
    for row in compare(case, "cpu", torch.float32):
        if (case.name, row.quantity) in NOT_BITWISE:
            assert row.approximate, row
        else:
            assert row.exact, f"{row} should be bitwise: the arithmetic is the same as PyTorch's"


@pytest.mark.parametrize("key", NOT_BITWISE, ids=" ".join)
def test_float32_rows_that_cannot_be_bitwise_stay_within_a_few_ulps(key):
    case = next(c for c in CASES if c.name == key[0])
    for seed in range(3):
        row = next(r for r in compare(case, "cpu", torch.float32, seed) if r.quantity == key[1])
        ulps = ULPS_FOR.get(key[0], ULPS)
        bound = ulps * torch.finfo(torch.float32).eps * row.reference_max
        assert row.maxdiff <= bound, f"{row}: beyond {ulps} ulps of the largest entry ({NOT_BITWISE[key]})"


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_forward_and_grads_match_autograd_within_tolerance(case, device, dtype):
    for row in compare(case, device, dtype):
        assert row.approximate, row


def _grads(fn, inputs, upstream):
    leaves = [t.detach().clone().requires_grad_() for t in inputs]
    output = fn(*leaves)
    return output, torch.autograd.grad(output, leaves, upstream)


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
    out_m, grads_m = _grads(F.linear, (x, weight, bias), upstream)
    out_r, grads_r = _grads(torch.nn.functional.linear, (x, weight, bias), upstream)
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
    out_m, grads_m = _grads(fns[0], (z,), upstream)
    out_r, grads_r = _grads(fns[1], (z,), upstream)
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
    ("Linear", lambda x: F.linear(x, torch.randn(3, 4, requires_grad=True))),
    ("ReLU", F.relu),
    ("LeakyReLU", F.leaky_relu),
    ("Sigmoid", F.sigmoid),
    ("Tanh", F.tanh),
    ("GELU", F.gelu),
    ("MSELoss", lambda x: F.mse_loss(x, torch.zeros_like(x))),
    ("OneHotCrossEntropyLoss", lambda x: F.cross_entropy(x, torch.tensor([0, 2]))),
    ("CrossEntropyLoss", lambda x: F.cross_entropy(x, torch.tensor([0, 2]), label_smoothing=0.1)),
]


@pytest.mark.parametrize("function_name, call", FUNCTIONS, ids=[name for name, _ in FUNCTIONS])
def test_output_grad_fn_is_manualbps_backward_not_a_builtin(function_name, call):
    output = call(torch.randn(2, 4, requires_grad=True))
    assert is_manualbp_node(output.grad_fn, function_name), type(output.grad_fn).__name__
