"""Dropout: torch's mask drawn from the same generator state, bit for bit on the CPU, the edge probabilities, eval,
gradcheck and gradgradcheck for a fixed mask, the module, and bad input."""

import pytest
import torch
from helpers import (
    DOUBLE,
    TF,
    assert_grad_and_gradgrad,
    assert_matches_torch,
    assert_module_matches_torch_in_train_and_eval,
    leaves,
)

import manualbp
import manualbp.functional as F
from manualbp import fast


@pytest.mark.parametrize("dtype", [torch.float32, DOUBLE])
@pytest.mark.parametrize("p", [0.2, 0.5, 0.9])
def test_dropout_draws_torchs_mask_on_the_cpu_bitwise(p, dtype):
    x = leaves(torch.randn(4, 5, 6, dtype=dtype))
    assert_matches_torch(lambda x: F.dropout(x, p), lambda x: TF.dropout(x, p), x, bitwise=True)
    torch.manual_seed(3)
    F.dropout(x[0], p)
    after_ours = torch.rand(3)
    torch.manual_seed(3)
    TF.dropout(x[0], p)
    assert torch.equal(after_ours, torch.rand(3)), "the generator is left where torch's dropout leaves it"


@pytest.mark.parametrize("p", [0.0, 1.0])
def test_dropout_at_p_zero_and_one_matches_torch(p):
    x = leaves(torch.tensor([1.0, -2.0, float("inf")]))
    assert_matches_torch(lambda x: F.dropout(x, p), lambda x: TF.dropout(x, p), x, bitwise=True)


def test_dropout_is_the_identity_in_eval_and_rejects_a_probability_outside_zero_one():
    x = torch.randn(3)
    assert F.dropout(x, 0.5, training=False) is x
    with pytest.raises(ValueError, match="between 0 and 1"):
        F.dropout(x, 1.5)


def test_dropout_gradcheck_and_gradgradcheck_for_a_fixed_mask():
    x = leaves(torch.randn(3, 4, dtype=DOUBLE))
    mask = torch.empty_like(x[0]).bernoulli_(0.6).div_(0.6)
    assert_grad_and_gradgrad(lambda x: fast.dropout(x, mask), x)


MODULES = [
    (torch.nn.Dropout, manualbp.nn.Dropout, (0.3,), {}, (4, 5)),
]


@pytest.mark.parametrize(
    "torch_class, manual_class, args, kwargs, shape", MODULES, ids=lambda v: getattr(v, "__name__", None)
)
def test_module_has_torchs_init_and_state_and_matches_it_in_train_and_eval(
    torch_class, manual_class, args, kwargs, shape
):
    assert_module_matches_torch_in_train_and_eval(torch_class, manual_class, args, kwargs, shape)
