"""Convolution (Conv2d, Conv1d): against PyTorch (the forward runs PyTorch's own kernel, so outputs are compared bit
for bit; the backward is ours: ∂C/∂x bit for bit, ∂C/∂W and ∂C/∂b, sums in another order, with ``assert_close``),
gradcheck and gradgradcheck in float64 at atol 1e-8 / rtol 1e-6 with forward AD, batched gradients and batched
forward gradients, the modules, and bad input (the fast tier's weight gradient: test_fast_conv.py)."""

import pytest
import torch
from helpers import (
    DOUBLE,
    TF,
    assert_case_bitwise_on_cpu,
    assert_case_within_tolerance,
    assert_grad_and_gradgrad,
    assert_matches_torch,
    assert_module_matches_torch_in_train_and_eval,
    assert_raises_with_message,
    assert_row_within_ulps,
    assert_torch_raises_the_same_type,
    bad_call,
    cases,
    leaves,
)

import manualbp
import manualbp.functional as F

# ---- parity with PyTorch ----

# Where the arithmetic differs, why, and so why these rows are bounded rather than bitwise.
NOT_BITWISE = {
    ("Conv2d(stride=2,padding=1)", "grad weight"): "Σ over examples and positions of g·colsᵀ, against oneDNN's order",
    ("Conv2d(stride=2,padding=1)", "grad bias"): "Σ g over examples and positions, in another order",
}
# the order of oneDNN's own sums depends on the thread count: these rows measured up to 4.0 ulps from it with two
# threads and 5.0 with one (three seeds each; the test runner's workers use one)
ULPS = 8


@pytest.mark.parametrize("case", cases("conv"))
def test_float32_forward_and_grads_match_autograd_bitwise_on_cpu(case):
    assert_case_bitwise_on_cpu(case, NOT_BITWISE)


@pytest.mark.parametrize("key", NOT_BITWISE, ids=" ".join)
def test_float32_rows_that_cannot_be_bitwise_stay_within_a_few_ulps(key):
    assert_row_within_ulps(key, NOT_BITWISE[key], ULPS)


@pytest.mark.parametrize("case", cases("conv"))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_forward_and_grads_match_autograd_within_tolerance(case, device, dtype):
    assert_case_within_tolerance(case, device, dtype)


# (input shape, weight shape, bias, stride, padding, dilation, groups)
CONV2D = {
    "plain": ((2, 3, 6, 5), (4, 3, 3, 3), True, 1, 0, 1, 1),
    "strided_padded_dilated": ((2, 4, 7, 6), (6, 2, 3, 2), True, (2, 1), (1, 2), (1, 2), 2),
    "stride_past_the_kernel": ((1, 2, 8, 7), (3, 2, 2, 2), False, 3, 1, 1, 1),
    "same_odd_total": ((2, 2, 5, 6), (3, 2, 2, 3), True, 1, "same", 1, 1),
    "same_dilated": ((1, 2, 6, 6), (2, 2, 3, 3), False, 1, "same", 2, 1),
    "valid_depthwise": ((2, 3, 5, 5), (3, 1, 3, 3), True, 1, "valid", 1, 3),
    "unbatched": ((3, 5, 5), (2, 3, 2, 2), True, 1, 1, 1, 1),
}


def _conv2d_inputs(case, dtype):
    input_shape, weight_shape, bias, *_ = CONV2D[case]
    x = torch.randn(*input_shape, dtype=dtype)
    weight = torch.randn(*weight_shape, dtype=dtype)
    b = torch.randn(weight_shape[0], dtype=dtype) if bias else None
    return leaves(x, weight, b)


@pytest.mark.parametrize("dtype", [torch.float32, DOUBLE])
@pytest.mark.parametrize("case", CONV2D)
def test_conv2d_output_is_torchs_and_grads_match_torchs(case, dtype):
    *_, stride, padding, dilation, groups = CONV2D[case]
    assert_matches_torch(
        lambda x, w, b: F.conv2d(x, w, b, stride, padding, dilation, groups),
        lambda x, w, b: TF.conv2d(x, w, b, stride, padding, dilation, groups),
        _conv2d_inputs(case, dtype),
        bitwise=False,
    )


@pytest.mark.parametrize("dtype", [torch.float32, DOUBLE])
@pytest.mark.parametrize("case", CONV2D)
def test_conv2d_input_gradient_is_torchs_to_the_bit_on_cpu(case, dtype):
    # ∂C/∂x is the transposed convolution, which runs PyTorch's own kernel for it (∂C/∂W, summed from the
    # columns, rounds in another order and is compared to tolerance above)
    *_, stride, padding, dilation, groups = CONV2D[case]
    x, weight, bias = _conv2d_inputs(case, dtype)
    grads = []
    for conv2d in (F.conv2d, TF.conv2d):
        output = conv2d(x, weight.detach(), None if bias is None else bias.detach(), stride, padding, dilation, groups)
        torch.manual_seed(1)
        grads.append(torch.autograd.grad(output, x, torch.randn_like(output))[0])
    assert torch.equal(grads[0], grads[1])


def test_conv2d_gradients_of_an_empty_batch_are_torchs():
    x = torch.randn(0, 4, 7, 6, dtype=DOUBLE)
    weight = torch.randn(6, 2, 3, 2, dtype=DOUBLE)
    assert_matches_torch(
        lambda x, w, b: F.conv2d(x, w, b, (2, 1), (1, 2), (1, 2), 2),
        lambda x, w, b: TF.conv2d(x, w, b, (2, 1), (1, 2), (1, 2), 2),
        leaves(x, weight, torch.randn(6, dtype=DOUBLE)),
        bitwise=True,  # zeros: nothing to sum
    )


def test_conv2d_function_applied_directly_takes_ints_as_torch_does_and_refuses_a_padding_word():
    x, weight, bias = _conv2d_inputs("stride_past_the_kernel", DOUBLE)
    assert_matches_torch(
        lambda x, w: manualbp.autograd.Conv2d.apply(x, w, None, 3, 1, 1, 1),
        lambda x, w: TF.conv2d(x, w, None, 3, 1, 1, 1),
        (x, weight),
        bitwise=False,
    )
    with pytest.raises(ValueError, match=r"^Conv2d.apply: padding='same' .* use manualbp.functional.conv2d"):
        manualbp.autograd.Conv2d.apply(x, weight, None, 1, "same", 1, 1)


# ---- gradcheck and gradgradcheck ----


@pytest.mark.parametrize("case", CONV2D)
def test_conv2d_gradcheck_and_gradgradcheck(case):
    *_, stride, padding, dilation, groups = CONV2D[case]
    assert_grad_and_gradgrad(
        lambda x, w, b: F.conv2d(x, w, b, stride, padding, dilation, groups), _conv2d_inputs(case, DOUBLE)
    )


@pytest.mark.parametrize("padding", [0, 2, "same", "valid"])
def test_conv1d_matches_torch_and_passes_gradcheck(padding):
    x, weight, bias = leaves(torch.randn(2, 4, 9, dtype=DOUBLE), torch.randn(6, 2, 3, dtype=DOUBLE), torch.randn(6))
    bias = bias.to(DOUBLE).detach().requires_grad_()
    stride = 1 if isinstance(padding, str) else 2
    ours = lambda x, w, b: F.conv1d(x, w, b, stride, padding, 1, 2)  # noqa: E731
    assert_matches_torch(ours, lambda x, w, b: TF.conv1d(x, w, b, stride, padding, 1, 2), (x, weight, bias), False)
    assert_grad_and_gradgrad(ours, (x, weight, bias))


# ---- the modules ----

MODULES = [
    (torch.nn.Conv2d, manualbp.nn.Conv2d, (3, 4, 3), {"stride": 2, "padding": 1}, (2, 3, 8, 8)),
    (torch.nn.Conv2d, manualbp.nn.Conv2d, (2, 4, 3), {"padding": 1, "padding_mode": "reflect"}, (2, 2, 5, 5)),
    (torch.nn.Conv1d, manualbp.nn.Conv1d, (2, 4, 3), {"padding": "same"}, (2, 2, 9)),
]


@pytest.mark.parametrize(
    "torch_class, manual_class, args, kwargs, shape", MODULES, ids=lambda v: getattr(v, "__name__", None)
)
def test_module_has_torchs_init_and_state_and_matches_it_in_train_and_eval(
    torch_class, manual_class, args, kwargs, shape
):
    assert_module_matches_torch_in_train_and_eval(torch_class, manual_class, args, kwargs, shape)


# ---- bad input ----

BAD_CALLS = [
    # None where a tensor is required: torch's exception type, with a message that names the argument
    bad_call(
        "conv2d weight None", "conv2d", (torch.randn(1, 1, 3, 3), None), TypeError, r"^conv2d: weight must be a Tensor"
    ),
]


@pytest.mark.parametrize("call", BAD_CALLS, ids=lambda call: call.name)
def test_bad_input_raises_torchs_exception_type_with_a_message(call):
    assert_raises_with_message(call)


@pytest.mark.parametrize("call", BAD_CALLS, ids=lambda call: call.name)
def test_torch_raises_the_same_exception_type_for_the_same_input(call):
    assert_torch_raises_the_same_type(call, stricter_than_torch={})


def test_functional_checks_raise_torchs_exception_types_with_clear_messages():
    x, weight = torch.randn(1, 3, 5, 5), torch.randn(4, 3, 3, 3)
    with pytest.raises(RuntimeError, match="channels"):
        F.conv2d(x, torch.randn(4, 2, 3, 3))
    with pytest.raises(ValueError, match="strided"):
        F.conv2d(x, weight, stride=2, padding="same")
    with pytest.raises(ValueError, match="padding must be"):
        F.conv2d(x, weight, padding="full")
    with pytest.raises(TypeError, match="must be a Tensor"):
        F.conv2d(x.tolist(), weight)


def test_window_arguments_take_numpy_integers_as_torch_does_and_refuse_fractions_by_name():
    np = pytest.importorskip("numpy")
    x, weight = torch.randn(1, 2, 7, 7, dtype=DOUBLE), torch.randn(3, 2, 3, 3, dtype=DOUBLE)
    stride = (np.int64(2), np.int32(1))
    torch.testing.assert_close(F.conv2d(x, weight, stride=stride), TF.conv2d(x, weight, stride=stride))
    torch.testing.assert_close(F.max_pool2d(x, np.int64(2)), TF.max_pool2d(x, np.int64(2)))
    x1, weight1 = x[:, :, 0], weight[:, :, 0]
    torch.testing.assert_close(F.conv1d(x1, weight1, stride=np.int64(2)), TF.conv1d(x1, weight1, stride=np.int64(2)))
    with pytest.raises(RuntimeError, match=r"^conv2d: stride must be an int ≥ 1 or a pair of them, got 1.5$"):
        F.conv2d(x, weight, stride=1.5)
    with pytest.raises(RuntimeError, match=r"^conv2d: padding must be an int ≥ 0 or a pair of them, got \(1, 0.5\)$"):
        F.conv2d(x, weight, padding=(1, 0.5))
