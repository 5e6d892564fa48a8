"""Pooling (max, average, adaptive average): against PyTorch (the forward runs PyTorch's own kernel, so outputs are
compared bit for bit; max-pool's backward, a scatter, bit for bit too, the averages with ``assert_close``),
gradcheck and gradgradcheck in float64 at atol 1e-8 / rtol 1e-6 with forward AD, batched gradients and batched
forward gradients, empty batches, the modules, and bad input."""

import pytest
import torch
from helpers import (
    DOUBLE,
    TF,
    assert_case_bitwise_on_cpu,
    assert_case_within_tolerance,
    assert_empty_batch_like_torch,
    assert_grad_and_gradgrad,
    assert_matches_torch,
    assert_module_matches_torch_in_train_and_eval,
    assert_row_within_ulps,
    cases,
    leaves,
)

import manualbp
import manualbp.functional as F

# ---- parity with PyTorch ----

# Where the arithmetic differs, why, and so why these rows are bounded rather than bitwise.
NOT_BITWISE = {
    ("AdaptiveAvgPool2d(5)", "grad x"): "P_hᵀ g P_w as two products, against the kernel's per-window sums",
}


@pytest.mark.parametrize("case", cases("pooling"))
def test_float32_forward_and_grads_match_autograd_bitwise_on_cpu(case):
    assert_case_bitwise_on_cpu(case, NOT_BITWISE)


@pytest.mark.parametrize("key", NOT_BITWISE, ids=" ".join)
def test_float32_rows_that_cannot_be_bitwise_stay_within_a_few_ulps(key):
    assert_row_within_ulps(key, NOT_BITWISE[key])


@pytest.mark.parametrize("case", cases("pooling"))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_forward_and_grads_match_autograd_within_tolerance(case, device, dtype):
    assert_case_within_tolerance(case, device, dtype)


# (kernel_size, stride, padding, dilation, ceil_mode)
MAX_POOL = {
    "two_by_two": (2, None, 0, 1, False),
    "overlapping_padded_dilated_ceil": ((3, 2), (2, 1), 1, (1, 2), True),
    "ceil_with_overhang": (3, 2, 1, 1, True),
}


@pytest.mark.parametrize("dtype", [torch.float32, DOUBLE])
@pytest.mark.parametrize("case", MAX_POOL)
def test_max_pool2d_output_indices_and_grads_are_torchs_bitwise(case, dtype):
    x = leaves(torch.randn(2, 3, 7, 8, dtype=dtype))
    assert_matches_torch(
        lambda x: F.max_pool2d(x, *MAX_POOL[case]), lambda x: TF.max_pool2d(x, *MAX_POOL[case]), x, True
    )
    _, indices = F.max_pool2d(x[0], *MAX_POOL[case], return_indices=True)
    assert torch.equal(indices, TF.max_pool2d(x[0], *MAX_POOL[case], return_indices=True)[1])


# (kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)
AVG_POOL = {
    "two_by_two": (2, None, 0, False, True, None),
    "padded_ceil_counting_padding": ((3, 2), (2, 1), 1, True, True, None),
    "padded_ceil_not_counting_padding": (3, 2, 1, True, False, None),
    "divisor_override": (3, (3, 2), (1, 0), True, False, 5),
}


@pytest.mark.parametrize("dtype", [torch.float32, DOUBLE])
@pytest.mark.parametrize("case", AVG_POOL)
def test_avg_pool2d_output_is_torchs_and_grads_match_torchs(case, dtype):
    x = leaves(torch.randn(2, 3, 7, 8, dtype=dtype))
    assert_matches_torch(
        lambda x: F.avg_pool2d(x, *AVG_POOL[case]), lambda x: TF.avg_pool2d(x, *AVG_POOL[case]), x, False
    )


@pytest.mark.parametrize("case", AVG_POOL)
def test_avg_pool2d_function_applied_directly_takes_torchs_arguments(case):
    # ints for pairs and stride None, as torch.nn.functional.avg_pool2d takes them
    x = leaves(torch.randn(2, 3, 7, 8, dtype=DOUBLE))
    assert_matches_torch(
        lambda x: manualbp.autograd.AvgPool2d.apply(x, *AVG_POOL[case]),
        lambda x: TF.avg_pool2d(x, *AVG_POOL[case]),
        x,
        bitwise=False,
    )


@pytest.mark.parametrize("dtype", [torch.float32, DOUBLE])
@pytest.mark.parametrize("output_size", [1, (3, 3), (5, 3), (None, 2), (7, 8)])
def test_adaptive_avg_pool2d_output_is_torchs_grads_match_and_gradcheck_passes(output_size, dtype):
    x = leaves(torch.randn(2, 3, 7, 8, dtype=dtype))
    ours = lambda x: F.adaptive_avg_pool2d(x, output_size)  # noqa: E731
    assert_matches_torch(ours, lambda x: TF.adaptive_avg_pool2d(x, output_size), x, bitwise=False)
    if dtype is DOUBLE:
        assert_grad_and_gradgrad(ours, leaves(x[0][:1, :2]))


@pytest.mark.parametrize("output_size", [1, (None, 2), (5, 3)])
def test_adaptive_avg_pool2d_function_applied_directly_takes_torchs_output_sizes(output_size):
    x = leaves(torch.randn(2, 3, 7, 8, dtype=DOUBLE))
    ours = lambda x: manualbp.autograd.AdaptiveAvgPool2d.apply(x, output_size)  # noqa: E731
    assert_matches_torch(ours, lambda x: TF.adaptive_avg_pool2d(x, output_size), x, bitwise=False)


EMPTY_BATCH = {
    "max_pool2d": (lambda f, x: f.max_pool2d(x, 2), (0, 3, 8, 8)),
    "avg_pool2d": (lambda f, x: f.avg_pool2d(x, 2, 1, 1), (0, 3, 8, 8)),
    "adaptive_avg_pool2d": (lambda f, x: f.adaptive_avg_pool2d(x, 3), (0, 3, 8, 8)),
}


@pytest.mark.parametrize("case", EMPTY_BATCH)
def test_an_empty_batch_gives_torchs_output_and_empty_gradient(case):
    assert_empty_batch_like_torch(*EMPTY_BATCH[case])


# ---- gradcheck and gradgradcheck ----


@pytest.mark.parametrize("case", MAX_POOL)
def test_max_pool2d_gradcheck_and_gradgradcheck(case):
    assert_grad_and_gradgrad(lambda x: F.max_pool2d(x, *MAX_POOL[case]), leaves(torch.randn(1, 2, 7, 8).double()))


@pytest.mark.parametrize("case", AVG_POOL)
def test_avg_pool2d_gradcheck_and_gradgradcheck(case):
    assert_grad_and_gradgrad(lambda x: F.avg_pool2d(x, *AVG_POOL[case]), leaves(torch.randn(1, 2, 7, 8).double()))


# ---- the modules ----

MODULES = [
    (torch.nn.MaxPool2d, manualbp.nn.MaxPool2d, (3,), {"stride": 2, "padding": 1, "ceil_mode": True}, (2, 3, 7, 7)),
    (torch.nn.AvgPool2d, manualbp.nn.AvgPool2d, (3,), {"stride": 2, "count_include_pad": False}, (2, 3, 7, 7)),
    (torch.nn.AdaptiveAvgPool2d, manualbp.nn.AdaptiveAvgPool2d, ((2, 3),), {}, (2, 3, 7, 7)),
]


@pytest.mark.parametrize(
    "torch_class, manual_class, args, kwargs, shape", MODULES, ids=lambda v: getattr(v, "__name__", None)
)
def test_module_has_torchs_init_and_state_and_matches_it_in_train_and_eval(
    torch_class, manual_class, args, kwargs, shape
):
    assert_module_matches_torch_in_train_and_eval(torch_class, manual_class, args, kwargs, shape)


# ---- bad input ----


def test_functional_checks_raise_torchs_exception_types_with_clear_messages():
    with pytest.raises(RuntimeError, match="3-D .* or 4-D"):
        F.max_pool2d(torch.randn(5, 5), 2)
