"""Scaled dot-product attention and multi-head attention: against PyTorch's autograd (bitwise where the arithmetic is
the same), gradcheck and gradgradcheck in float64 at the tight tolerance, masks, dropout, grouped queries, the module,
and bad input (the converted transformer encoder and ViT: test_models.py)."""

import re

import pytest
import torch
from conftest import is_manualbp_node
from helpers import (
    BUILT_IN_LAYER_NODES,
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
    node_names,
)

import manualbp
import manualbp.functional as F
import manualbp.nn as mnn
from manualbp import autograd

# ---- parity with PyTorch ----

# Where the arithmetic differs, why, and so why these rows are bounded rather than bitwise.
NOT_BITWISE = {
    ("Attention", "forward"): "PyTorch's flash-attention CPU kernel accumulates softmax blockwise (online softmax)",
    ("Attention", "grad q"): "as the forward: the fused kernel's backward against the four derived products",
    ("Attention", "grad k"): "as grad q",
    ("Attention", "grad v"): "as grad q",
}
# attention's products sum over the keys in blocks in PyTorch's kernel (online softmax), over all keys at once here
ULPS = 8


@pytest.mark.parametrize("case", cases("attention"))
def test_float32_forward_and_grads_match_autograd_bitwise_on_cpu(case):
    assert_case_bitwise_on_cpu(case, NOT_BITWISE)


@pytest.mark.parametrize("key", NOT_BITWISE, ids=" ".join)
def test_float32_rows_that_cannot_be_bitwise_stay_within_a_few_ulps(key):
    assert_row_within_ulps(key, NOT_BITWISE[key], ULPS)


@pytest.mark.parametrize("case", cases("attention"))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_forward_and_grads_match_autograd_within_tolerance(case, device, dtype):
    assert_case_within_tolerance(case, device, dtype)


BATCH, HEADS, L, S, E, EV = 2, 2, 3, 4, 3, 2


def _qkv(dtype=DOUBLE):
    return (
        leaf(BATCH, HEADS, L, E, dtype=dtype),
        leaf(BATCH, HEADS, S, E, dtype=dtype),
        leaf(BATCH, HEADS, S, EV, dtype=dtype),
    )


def _masks(dtype):
    generator = torch.Generator().manual_seed(3)
    boolean = torch.rand(L, S, generator=generator) > 0.4
    boolean[:, 0] = True  # every query sees a key: a fully masked row is nan in some of PyTorch's kernels
    return {
        "none": {},
        "causal": {"is_causal": True},
        "bool": {"attn_mask": boolean},
        "float": {"attn_mask": leaf(HEADS, L, S, dtype=dtype)},  # broadcast over the batch, and differentiated
        "scale": {"scale": 0.7},
    }


@pytest.mark.parametrize("case", ["none", "causal", "bool", "float", "scale"])
@pytest.mark.parametrize("dtype", [torch.float32, DOUBLE])
def test_attention_outputs_and_grads_match_torch(case, dtype):
    q, k, v = _qkv(dtype)
    kwargs = _masks(dtype)[case]
    mask = kwargs.pop("attn_mask", None)
    inputs = (q, k, v) if mask is None else (q, k, v, mask)
    out = F.scaled_dot_product_attention(*inputs, **kwargs)
    assert is_manualbp_node(out.grad_fn, "ScaledDotProductAttention")
    assert_same_outputs_and_grads(
        lambda *t: F.scaled_dot_product_attention(*t, **kwargs),
        lambda *t: torch.nn.functional.scaled_dot_product_attention(*t, **kwargs),
        inputs,
    )


def test_attention_broadcasts_batch_dimensions_as_torch_does():
    q, k, v = leaf(2, 1, L, E), leaf(1, 3, S, E), leaf(S, EV)
    assert_same_outputs_and_grads(
        F.scaled_dot_product_attention, torch.nn.functional.scaled_dot_product_attention, (q, k, v)
    )


@pytest.mark.parametrize("dtype", [torch.float32, DOUBLE])
def test_grouped_query_attention_matches_torch(dtype):
    q, k, v = leaf(2, 4, L, E, dtype=dtype), leaf(2, 2, S, E, dtype=dtype), leaf(2, 2, S, EV, dtype=dtype)
    assert_same_outputs_and_grads(
        lambda *t: F.scaled_dot_product_attention(*t, enable_gqa=True),
        lambda *t: torch.nn.functional.scaled_dot_product_attention(*t, enable_gqa=True),
        (q, k, v),
    )


def test_a_query_with_every_key_masked_gets_zero_output_and_zero_gradient_as_in_torch():
    q, k, v = _qkv()
    mask = torch.ones(L, S, dtype=torch.bool)
    mask[1] = False  # query 1 may look at no key
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    torch.testing.assert_close(out, torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask))
    assert torch.equal(out[:, :, 1], torch.zeros_like(out[:, :, 1]))
    upstream = torch.zeros_like(out)
    upstream[:, :, 1] = 1.0  # a gradient into that query's output alone reaches nothing
    grads = torch.autograd.grad(out, (q, k, v), upstream)
    assert all(torch.equal(g, torch.zeros_like(g)) for g in grads)


def test_attention_dropout_draws_one_mask_per_weight_and_scales_the_kept():
    q, k, v = _qkv()
    torch.manual_seed(5)
    dropped = F.scaled_dot_product_attention(q, k, v, dropout_p=0.5)
    torch.manual_seed(5)
    assert torch.equal(F.scaled_dot_product_attention(q, k, v, dropout_p=0.5), dropped)
    assert not torch.allclose(dropped, F.scaled_dot_product_attention(q, k, v))
    assert torch.equal(F.scaled_dot_product_attention(q, k, v, dropout_p=1.0), torch.zeros_like(dropped))


# ---- gradcheck and gradgradcheck ----


@pytest.mark.parametrize("case", ["none", "causal", "bool", "float"])
def test_attention_gradcheck_and_gradgradcheck(case):
    q, k, v = (leaf(1, 2, n, e) for n, e in ((2, 2), (3, 2), (3, 2)))
    kwargs = {
        "none": {},
        "causal": {"is_causal": True},
        "bool": {"attn_mask": torch.tensor([[True, False, True], [False, True, True]])},
        "float": {"attn_mask": leaf(2, 3)},
    }[case]
    mask = kwargs.pop("attn_mask", None)
    inputs = (q, k, v) if mask is None else (q, k, v, mask)
    assert_grad_and_gradgrad(lambda *t: F.scaled_dot_product_attention(*t, **kwargs), inputs)


def test_attention_function_with_its_weights_output_and_a_dropout_mask_gradchecks():
    # the Function itself, with a fixed dropout mask (0 or 1/(1 − p)) and both outputs, O and P, differentiated
    q, k, v = (leaf(2, n, 2) for n in (2, 3, 3))
    dropout_mask = torch.tensor([[[2.0, 0.0, 2.0], [2.0, 2.0, 0.0]], [[0.0, 2.0, 2.0], [2.0, 2.0, 2.0]]], dtype=DOUBLE)
    attention = autograd.ScaledDotProductAttention.apply
    assert_grad_and_gradgrad(lambda q, k, v: attention(q, k, v, None, dropout_mask, 0.8), (q, k, v))


def test_multi_head_attention_forward_gradcheck_and_gradgradcheck():
    embed, heads = 4, 2
    query, key = leaf(2, 1, embed), leaf(3, 1, embed)  # (L, N, E), (S, N, E)
    in_proj_weight, in_proj_bias = leaf(3 * embed, embed), leaf(3 * embed)
    out_proj_weight, out_proj_bias = leaf(embed, embed), leaf(embed)
    bias_k, bias_v = leaf(1, 1, embed), leaf(1, 1, embed)
    padding = torch.tensor([[False, True, False]])

    def attention(query, key, in_proj_weight, in_proj_bias, out_proj_weight, out_proj_bias, bias_k, bias_v):
        output, weights = F.multi_head_attention_forward(
            query, key, key, embed, heads, in_proj_weight, in_proj_bias, bias_k, bias_v, True, 0.0,
            out_proj_weight, out_proj_bias, key_padding_mask=padding, need_weights=True,
        )  # fmt: skip
        return output, weights

    inputs = (query, key, in_proj_weight, in_proj_bias, out_proj_weight, out_proj_bias, bias_k, bias_v)
    assert_grad_and_gradgrad(attention, inputs)


# ---- the module ----

# module parity (initialisation, repr, state_dict both ways) is in test_modules.py, with every other module


@pytest.mark.parametrize(
    "kwargs, call",
    [
        ({"batch_first": True}, {}),
        ({"batch_first": True}, {"need_weights": True, "average_attn_weights": False}),
        ({}, {"key_padding_mask": "bool"}),
        ({"batch_first": True}, {"attn_mask": "bool", "key_padding_mask": "float"}),
        ({"batch_first": True}, {"attn_mask": "float3d", "need_weights": False}),
        ({"kdim": 5, "vdim": 3}, {}),
        ({"add_bias_kv": True, "add_zero_attn": True}, {"key_padding_mask": "bool", "attn_mask": "bool"}),
        ({"bias": False}, {"unbatched": True}),
    ],
    ids=[
        "plain",
        "per-head-weights",
        "padding",
        "both-masks",
        "3d-mask",
        "kdim-vdim",
        "bias-kv-zero-attn",
        "unbatched",
    ],
)
def test_multihead_attention_matches_torch(kwargs, call):
    embed, heads, batch, length, source = 8, 2, 3, 4, 5
    builtin, manual = module_pair(torch.nn.MultiheadAttention, embed, heads, **kwargs)
    assert type(manual) is mnn.MultiheadAttention
    call = dict(call)
    kdim, vdim = kwargs.get("kdim", embed), kwargs.get("vdim", embed)
    if call.pop("unbatched", False):
        inputs = (leaf(length, embed), leaf(source, kdim), leaf(source, vdim))
    elif kwargs.get("batch_first"):
        inputs = (leaf(batch, length, embed), leaf(batch, source, kdim), leaf(batch, source, vdim))
    else:
        inputs = (leaf(length, batch, embed), leaf(source, batch, kdim), leaf(source, batch, vdim))
    padding = torch.zeros(batch, source, dtype=torch.bool)
    padding[0, 3:] = padding[2, 1] = True  # every query keeps some key
    masks = {
        "bool": torch.rand(length, source) > 0.7,
        "float": torch.randn(batch, source, dtype=DOUBLE),
        "float3d": torch.randn(batch * heads, length, source, dtype=DOUBLE),
    }
    if call.get("attn_mask") == "bool":
        masks["bool"][:, 0] = False
    for name in ("attn_mask", "key_padding_mask"):
        if name in call:
            call[name] = padding if (name, call[name]) == ("key_padding_mask", "bool") else masks[call[name]]
    assert_module_outputs_and_grads(builtin, manual, inputs, forward=lambda m, *t: m(*t, **call))


def test_multihead_attention_node_is_manualbp_attention_under_the_output_projection():
    builtin, manual = module_pair(torch.nn.MultiheadAttention, 4, 2, batch_first=True)
    x = leaf(2, 3, 4)
    names = node_names(manual(x, x, x, need_weights=False)[0])
    assert {"ScaledDotProductAttentionBackward", "LinearBackward"} <= names
    assert not names & BUILT_IN_LAYER_NODES


# ---- bad input ----


def test_attention_refuses_a_mask_with_is_causal_and_heads_that_do_not_group():
    q, k, v = _qkv()
    with pytest.raises(RuntimeError, match="attn_mask should not be set when is_causal"):
        F.scaled_dot_product_attention(q, k, v, attn_mask=torch.ones(L, S, dtype=torch.bool), is_causal=True)
    with pytest.raises(RuntimeError, match="enable_gqa"):
        F.scaled_dot_product_attention(leaf(1, 3, L, E), k, v, enable_gqa=True)


def test_attention_names_the_shapes_the_user_gave_when_they_do_not_fit():
    q, k, v = _qkv()
    with pytest.raises(RuntimeError, match=r"attn_mask of shape \[4, 4\] does not broadcast to \(\*, L, S\) = "):
        F.scaled_dot_product_attention(q, k, v, attn_mask=torch.zeros(4, 4))
    torch_attention, attention = torch.nn.MultiheadAttention(8, 2), manualbp.convert(torch.nn.MultiheadAttention(8, 2))
    query = torch.randn(3, 2, 8)
    mismatched = {
        "key and value lengths": (torch.randn(4, 2, 8), torch.randn(5, 2, 8), AssertionError),
        "key and value widths": (torch.randn(4, 2, 8), torch.randn(4, 2, 6), AssertionError),
        "the query's batch": (torch.randn(4, 3, 8), torch.randn(4, 3, 8), RuntimeError),
    }
    for key, value, error in mismatched.values():  # torch's exception types, the user's shapes in the message
        with pytest.raises(error):
            torch_attention(query, key, value)
        with pytest.raises(
            error, match=re.escape(f"got query [3, 2, 8], key {list(key.shape)} and value {list(value.shape)}")
        ):
            attention(query, key, value)
