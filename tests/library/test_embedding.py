"""Embedding: against PyTorch's autograd (bitwise where the arithmetic is the same), gradcheck and gradgradcheck in
float64 at the tight tolerance, the padding and frequency conventions, the module, and bad input."""

import pytest
import torch
from conftest import is_manualbp_node
from helpers import (
    DOUBLE,
    assert_case_bitwise_on_cpu,
    assert_case_within_tolerance,
    assert_grad_and_gradgrad,
    assert_module_outputs_and_grads,
    assert_raises_with_message,
    assert_same_outputs_and_grads,
    assert_torch_raises_the_same_type,
    bad_call,
    cases,
    leaf,
    module_pair,
)

import manualbp.functional as F

# ---- parity with PyTorch ----


@pytest.mark.parametrize("case", cases("embedding"))
def test_float32_forward_and_grads_match_autograd_bitwise_on_cpu(case):
    assert_case_bitwise_on_cpu(case, not_bitwise={})


@pytest.mark.parametrize("case", cases("embedding"))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_forward_and_grads_match_autograd_within_tolerance(case, device, dtype):
    assert_case_within_tolerance(case, device, dtype)


@pytest.mark.parametrize("padding_idx", [None, 2, -1])
@pytest.mark.parametrize("dtype", [torch.float32, DOUBLE])
def test_embedding_outputs_and_grads_match_torch_padding_row_included(padding_idx, dtype):
    weight = leaf(6, 3, dtype=dtype)
    indices = torch.tensor([[0, 2, 5, 2], [5, 1, 2, 0]])  # repeats, and the padding row, 2 or 5
    out = F.embedding(indices, weight, padding_idx)
    assert is_manualbp_node(out.grad_fn, "Embedding")
    assert_same_outputs_and_grads(
        lambda w: F.embedding(indices, w, padding_idx),
        lambda w: torch.nn.functional.embedding(indices, w, padding_idx),
        (weight,),
    )
    if padding_idx is not None:
        (grad,) = torch.autograd.grad(out, weight, torch.randn_like(out))
        assert grad[padding_idx].abs().sum() == 0


def test_embedding_max_norm_renormalises_the_table_as_torch_does():
    weight = torch.randn(5, 3) * 4
    manual_weight, torch_weight = weight.clone().requires_grad_(), weight.clone().requires_grad_()
    indices = torch.tensor([1, 3, 3])
    manual = F.embedding(indices, manual_weight, max_norm=1.0)
    builtin = torch.nn.functional.embedding(indices, torch_weight, max_norm=1.0)
    torch.testing.assert_close(manual, builtin)
    torch.testing.assert_close(manual_weight, torch_weight)


@pytest.mark.parametrize("padding_idx", [None, 0])
def test_embedding_scale_grad_by_freq_matches_torch(padding_idx):
    weight = leaf(6, 3)
    indices = torch.tensor([[0, 2, 5, 2], [5, 2, 1, 0]])  # 2 three times, 0 and 5 twice
    assert_same_outputs_and_grads(
        lambda w: F.embedding(indices, w, padding_idx, scale_grad_by_freq=True),
        lambda w: torch.nn.functional.embedding(indices, w, padding_idx, scale_grad_by_freq=True),
        (weight,),
    )


# ---- gradcheck and gradgradcheck, and the conventions finite differences cannot see ----


def test_embedding_gradcheck_and_gradgradcheck():
    # the padding row is left out: its zero gradient is a convention, not the derivative finite differences see
    indices = torch.tensor([[0, 2, 3], [3, 1, 2]])
    assert_grad_and_gradgrad(lambda w: F.embedding(indices, w, padding_idx=4), (leaf(5, 2),))


@pytest.mark.parametrize("padding_idx, scale_grad_by_freq", [(1, False), (None, True), (1, True)])
def test_embedding_jvp_is_the_transpose_of_its_backward_under_the_padding_and_frequency_conventions(
    padding_idx, scale_grad_by_freq
):
    # finite differences cannot check these conventions (they are not the derivative), but forward and reverse mode
    # must agree: ⟨J u, g⟩ = ⟨u, Jᵀ g⟩ for any direction u and gradient g
    indices = torch.tensor([[0, 1, 3, 1], [3, 1, 2, 0]])
    weight, direction = leaf(4, 3), torch.randn(4, 3, dtype=DOUBLE)

    def lookup(w):
        return F.embedding(indices, w, padding_idx, scale_grad_by_freq=scale_grad_by_freq)

    _, tangent = torch.func.jvp(lookup, (weight,), (direction,))
    g = torch.randn_like(tangent)
    (grad_weight,) = torch.autograd.grad(lookup(weight), weight, g)
    torch.testing.assert_close((tangent * g).sum(), (direction * grad_weight).sum())


# ---- the module ----


def test_the_embedding_module_matches_torch():
    builtin, manual = module_pair(torch.nn.Embedding, 6, 3, padding_idx=1)
    assert_module_outputs_and_grads(builtin, manual, [torch.tensor([[1, 2, 5], [0, 1, 1]])])
    assert type(manual).__module__.startswith("manualbp.nn.")


# ---- bad input ----

BAD_CALLS = [
    # None where a tensor is required: torch's exception type, with a message that names the argument
    bad_call(
        "embedding weight None", "embedding", (torch.tensor([0]), None), TypeError, r"^embedding: weight must be a"
    ),
]


@pytest.mark.parametrize("call", BAD_CALLS, ids=lambda call: call.name)
def test_bad_input_raises_torchs_exception_type_with_a_message(call):
    assert_raises_with_message(call)


@pytest.mark.parametrize("call", BAD_CALLS, ids=lambda call: call.name)
def test_torch_raises_the_same_exception_type_for_the_same_input(call):
    assert_torch_raises_the_same_type(call, stricter_than_torch={})


def test_embedding_refuses_what_it_does_not_implement():
    with pytest.raises(NotImplementedError, match="sparse"):
        F.embedding(torch.tensor([1]), torch.randn(3, 2), sparse=True)
    with pytest.raises(RuntimeError, match="int64 or int32"):
        F.embedding(torch.tensor([1.0]), torch.randn(3, 2))
