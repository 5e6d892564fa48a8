"""Softmax, embedding, attention and the transformer encoder: hand-derived, and equal to PyTorch's (layer norm:
test_normalization.py).

Outputs and gradients against PyTorch's own ops and modules; gradcheck and gradgradcheck (forward AD, batched
gradients, forward-over-reverse) at PyTorch's tight tolerance; drop-in parity of the modules; and a converted
``torch.nn.TransformerEncoder`` whose backward graph holds no built-in node for any layer manualbp derives.
"""

import copy
import re

import pytest
import torch
from conftest import assert_grad_and_gradgrad, is_manualbp_node

import manualbp
import manualbp.functional as F
import manualbp.nn as mnn
from manualbp import autograd

DOUBLE = torch.float64


def _leaf(*shape, requires_grad=True, dtype=DOUBLE):
    return torch.randn(*shape, dtype=dtype).requires_grad_(requires_grad)


def _assert_same_outputs_and_grads(manual_fn, torch_fn, inputs, dtype=DOUBLE):
    """Run both on the same inputs and a random upstream gradient; compare the outputs and every input's gradient."""
    manual_out, torch_out = manual_fn(*inputs), torch_fn(*inputs)
    torch.testing.assert_close(manual_out, torch_out)
    differentiable = [t for t in inputs if isinstance(t, torch.Tensor) and t.requires_grad]
    upstream = torch.randn_like(torch_out)
    manual_grads = torch.autograd.grad(manual_out, differentiable, upstream)
    torch_grads = torch.autograd.grad(torch_out, differentiable, upstream)
    for manual_grad, torch_grad in zip(manual_grads, torch_grads, strict=True):
        torch.testing.assert_close(manual_grad, torch_grad)


# ---- softmax and log-softmax ----

SOFTMAXES = [(F.softmax, torch.softmax, "Softmax"), (F.log_softmax, torch.log_softmax, "LogSoftmax")]


@pytest.mark.parametrize("manual_fn, torch_fn, name", SOFTMAXES, ids=["softmax", "log_softmax"])
@pytest.mark.parametrize("shape, dim", [((5,), 0), ((3, 4), 1), ((3, 4), 0), ((2, 3, 4), -1), ((2, 3, 4), 1)])
@pytest.mark.parametrize("dtype", [torch.float32, DOUBLE])
def test_softmax_outputs_and_grads_match_torch(manual_fn, torch_fn, name, shape, dim, dtype):
    z = _leaf(*shape, dtype=dtype) * 3
    out = manual_fn(z, dim)
    assert is_manualbp_node(out.grad_fn, name)
    _assert_same_outputs_and_grads(lambda z: manual_fn(z, dim), lambda z: torch_fn(z, dim), (z,))


@pytest.mark.parametrize("manual_fn", [F.softmax, F.log_softmax], ids=["softmax", "log_softmax"])
@pytest.mark.parametrize("shape, dim", [((4,), 0), ((2, 3), 1), ((2, 3, 2), 0)])
def test_softmax_gradcheck_and_gradgradcheck(manual_fn, shape, dim):
    assert_grad_and_gradgrad(lambda z: manual_fn(z, dim), (_leaf(*shape),))


def test_softmax_checks_its_dim_as_torch_does():
    with pytest.raises(IndexError, match="Dimension out of range"):
        F.softmax(torch.randn(2, 3), 2)
    with pytest.raises(TypeError, match="dim must be an int"):
        F.log_softmax(torch.randn(2, 3), 1.0)
    with pytest.warns(UserWarning, match="Implicit dimension choice"):
        out = F.softmax(torch.randn(2, 3))
    torch.testing.assert_close(out.sum(1), torch.ones(2))


# ---- embedding ----


@pytest.mark.parametrize("padding_idx", [None, 2, -1])
@pytest.mark.parametrize("dtype", [torch.float32, DOUBLE])
def test_embedding_outputs_and_grads_match_torch_padding_row_included(padding_idx, dtype):
    weight = _leaf(6, 3, dtype=dtype)
    indices = torch.tensor([[0, 2, 5, 2], [5, 1, 2, 0]])  # repeats, and the padding row, 2 or 5
    out = F.embedding(indices, weight, padding_idx)
    assert is_manualbp_node(out.grad_fn, "Embedding")
    _assert_same_outputs_and_grads(
        lambda w: F.embedding(indices, w, padding_idx),
        lambda w: torch.nn.functional.embedding(indices, w, padding_idx),
        (weight,),
    )
    if padding_idx is not None:
        (grad,) = torch.autograd.grad(out, weight, torch.randn_like(out))
        assert grad[padding_idx].abs().sum() == 0


def test_embedding_gradcheck_and_gradgradcheck():
    # the padding row is left out: its zero gradient is a convention, not the derivative finite differences see
    indices = torch.tensor([[0, 2, 3], [3, 1, 2]])
    assert_grad_and_gradgrad(lambda w: F.embedding(indices, w, padding_idx=4), (_leaf(5, 2),))


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
    weight = _leaf(6, 3)
    indices = torch.tensor([[0, 2, 5, 2], [5, 2, 1, 0]])  # 2 three times, 0 and 5 twice
    _assert_same_outputs_and_grads(
        lambda w: F.embedding(indices, w, padding_idx, scale_grad_by_freq=True),
        lambda w: torch.nn.functional.embedding(indices, w, padding_idx, scale_grad_by_freq=True),
        (weight,),
    )


def test_embedding_refuses_what_it_does_not_implement():
    with pytest.raises(NotImplementedError, match="sparse"):
        F.embedding(torch.tensor([1]), torch.randn(3, 2), sparse=True)
    with pytest.raises(RuntimeError, match="int64 or int32"):
        F.embedding(torch.tensor([1.0]), torch.randn(3, 2))


# ---- scaled dot-product attention ----

BATCH, HEADS, L, S, E, EV = 2, 2, 3, 4, 3, 2


def _qkv(dtype=DOUBLE):
    return (
        _leaf(BATCH, HEADS, L, E, dtype=dtype),
        _leaf(BATCH, HEADS, S, E, dtype=dtype),
        _leaf(BATCH, HEADS, S, EV, dtype=dtype),
    )


def _masks(dtype):
    generator = torch.Generator().manual_seed(3)
    boolean = torch.rand(L, S, generator=generator) > 0.4
    boolean[:, 0] = True  # every query sees a key: a fully masked row is nan in some of PyTorch's kernels
    return {
        "none": {},
        "causal": {"is_causal": True},
        "bool": {"attn_mask": boolean},
        "float": {"attn_mask": _leaf(HEADS, L, S, dtype=dtype)},  # broadcast over the batch, and differentiated
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
    _assert_same_outputs_and_grads(
        lambda *t: F.scaled_dot_product_attention(*t, **kwargs),
        lambda *t: torch.nn.functional.scaled_dot_product_attention(*t, **kwargs),
        inputs,
    )


def test_attention_broadcasts_batch_dimensions_as_torch_does():
    q, k, v = _leaf(2, 1, L, E), _leaf(1, 3, S, E), _leaf(S, EV)
    _assert_same_outputs_and_grads(
        F.scaled_dot_product_attention, torch.nn.functional.scaled_dot_product_attention, (q, k, v)
    )


@pytest.mark.parametrize("case", ["none", "causal", "bool", "float"])
def test_attention_gradcheck_and_gradgradcheck(case):
    q, k, v = (_leaf(1, 2, n, e) for n, e in ((2, 2), (3, 2), (3, 2)))
    kwargs = {
        "none": {},
        "causal": {"is_causal": True},
        "bool": {"attn_mask": torch.tensor([[True, False, True], [False, True, True]])},
        "float": {"attn_mask": _leaf(2, 3)},
    }[case]
    mask = kwargs.pop("attn_mask", None)
    inputs = (q, k, v) if mask is None else (q, k, v, mask)
    assert_grad_and_gradgrad(lambda *t: F.scaled_dot_product_attention(*t, **kwargs), inputs)


def test_attention_function_with_its_weights_output_and_a_dropout_mask_gradchecks():
    # the Function itself, with a fixed dropout mask (0 or 1/(1 − p)) and both outputs, O and P, differentiated
    q, k, v = (_leaf(2, n, 2) for n in (2, 3, 3))
    dropout_mask = torch.tensor([[[2.0, 0.0, 2.0], [2.0, 2.0, 0.0]], [[0.0, 2.0, 2.0], [2.0, 2.0, 2.0]]], dtype=DOUBLE)
    attention = autograd.ScaledDotProductAttention.apply
    assert_grad_and_gradgrad(lambda q, k, v: attention(q, k, v, None, dropout_mask, 0.8), (q, k, v))


def test_attention_dropout_draws_one_mask_per_weight_and_scales_the_kept():
    q, k, v = _qkv()
    torch.manual_seed(5)
    dropped = F.scaled_dot_product_attention(q, k, v, dropout_p=0.5)
    torch.manual_seed(5)
    assert torch.equal(F.scaled_dot_product_attention(q, k, v, dropout_p=0.5), dropped)
    assert not torch.allclose(dropped, F.scaled_dot_product_attention(q, k, v))
    assert torch.equal(F.scaled_dot_product_attention(q, k, v, dropout_p=1.0), torch.zeros_like(dropped))


def test_attention_refuses_a_mask_with_is_causal_and_heads_that_do_not_group():
    q, k, v = _qkv()
    with pytest.raises(RuntimeError, match="attn_mask should not be set when is_causal"):
        F.scaled_dot_product_attention(q, k, v, attn_mask=torch.ones(L, S, dtype=torch.bool), is_causal=True)
    with pytest.raises(RuntimeError, match="enable_gqa"):
        F.scaled_dot_product_attention(_leaf(1, 3, L, E), k, v, enable_gqa=True)


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


@pytest.mark.parametrize("dtype", [torch.float32, DOUBLE])
def test_grouped_query_attention_matches_torch(dtype):
    q, k, v = _leaf(2, 4, L, E, dtype=dtype), _leaf(2, 2, S, E, dtype=dtype), _leaf(2, 2, S, EV, dtype=dtype)
    _assert_same_outputs_and_grads(
        lambda *t: F.scaled_dot_product_attention(*t, enable_gqa=True),
        lambda *t: torch.nn.functional.scaled_dot_product_attention(*t, enable_gqa=True),
        (q, k, v),
    )


# ---- the modules ----

# module parity (initialisation, repr, state_dict both ways) is in test_modules.py, with every other module


def _module_pair(torch_class, *args, dtype=DOUBLE, **kwargs):
    builtin = torch_class(*args, **kwargs).to(dtype)
    with torch.no_grad():  # no zero biases or unit scales, which could hide a wrong formula
        for p in builtin.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    return builtin, manualbp.convert(copy.deepcopy(builtin))


def _assert_module_outputs_and_grads(builtin, manual, inputs, forward=lambda m, *t: m(*t)):
    """Compare outputs and the gradients of the parameters and the floating-point inputs."""
    inputs = [t.detach().requires_grad_() if t.is_floating_point() else t for t in inputs]
    outs = [forward(m, *inputs) for m in (builtin, manual)]
    outs = [[o for o in (out if isinstance(out, tuple) else (out,)) if o is not None] for out in outs]
    for o_manual, o_torch in zip(outs[1], outs[0], strict=True):
        torch.testing.assert_close(o_manual, o_torch)
    upstream = [torch.randn_like(o) for o in outs[0]]
    wrt = [t for t in inputs if t.is_floating_point()]
    grads = [
        torch.autograd.grad(out, [*wrt, *m.parameters()], upstream)
        for out, m in zip(outs, (builtin, manual), strict=True)
    ]
    for g_manual, g_torch in zip(grads[1], grads[0], strict=True):
        torch.testing.assert_close(g_manual, g_torch)


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
    builtin, manual = _module_pair(torch.nn.MultiheadAttention, embed, heads, **kwargs)
    assert type(manual) is mnn.MultiheadAttention
    call = dict(call)
    kdim, vdim = kwargs.get("kdim", embed), kwargs.get("vdim", embed)
    if call.pop("unbatched", False):
        inputs = (_leaf(length, embed), _leaf(source, kdim), _leaf(source, vdim))
    elif kwargs.get("batch_first"):
        inputs = (_leaf(batch, length, embed), _leaf(batch, source, kdim), _leaf(batch, source, vdim))
    else:
        inputs = (_leaf(length, batch, embed), _leaf(source, batch, kdim), _leaf(source, batch, vdim))
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
    _assert_module_outputs_and_grads(builtin, manual, inputs, forward=lambda m, *t: m(*t, **call))


def test_multihead_attention_node_is_manualbp_attention_under_the_output_projection():
    builtin, manual = _module_pair(torch.nn.MultiheadAttention, 4, 2, batch_first=True)
    x = _leaf(2, 3, 4)
    names = _node_names(manual(x, x, x, need_weights=False)[0])
    assert {"ScaledDotProductAttentionBackward", "LinearBackward"} <= names
    assert not names & BUILT_IN_LAYER_NODES


@pytest.mark.parametrize("module_class", [torch.nn.LayerNorm, torch.nn.Embedding, torch.nn.Softmax])
def test_the_small_modules_match_torch(module_class):
    if module_class is torch.nn.Embedding:
        builtin, manual = _module_pair(module_class, 6, 3, padding_idx=1)
        _assert_module_outputs_and_grads(builtin, manual, [torch.tensor([[1, 2, 5], [0, 1, 1]])])
    elif module_class is torch.nn.LayerNorm:
        builtin, manual = _module_pair(module_class, (3, 4))
        _assert_module_outputs_and_grads(builtin, manual, [_leaf(2, 3, 4)])
    else:
        builtin, manual = _module_pair(module_class, dim=-1)
        _assert_module_outputs_and_grads(builtin, manual, [_leaf(2, 3, 4)])
    assert type(manual).__module__.startswith("manualbp.nn.")


# ---- the transformer encoder, converted ----

# PyTorch's own backward nodes for the layers manualbp derives: none may remain in a converted model's graph
BUILT_IN_LAYER_NODES = {
    "AddmmBackward0",
    "MmBackward0",
    "BmmBackward0",
    "MatmulBackward0",
    "LinearBackward0",
    "SoftmaxBackward0",
    "LogSoftmaxBackward0",
    "NativeLayerNormBackward0",
    "LayerNormBackward0",
    "EmbeddingBackward0",
    "ScaledDotProductAttentionBackward0",
    "ScaledDotProductFlashAttentionForCpuBackward0",
    "ScaledDotProductEfficientAttentionBackward0",
    "ScaledDotProductFlashAttentionBackward0",
    "ScaledDotProductCudnnAttentionBackward0",
    "ReluBackward0",
    "GeluBackward0",
    "NativeDropoutBackward0",
}
# what may remain: views, reshapes, transposes, adds, concatenations, the mask arithmetic and the parameters
ALLOWED_NODES = {
    "AccumulateGrad",
    "AddBackward0",
    "ViewBackward0",
    "UnsafeViewBackward0",
    "ReshapeAliasBackward0",
    "TransposeBackward0",
    "PermuteBackward0",
    "ExpandBackward0",
    "SplitBackward0",
    "SliceBackward0",
    "CloneBackward0",
    "CatBackward0",
    "UnsqueezeBackward0",
    "SqueezeBackward0",
    "SqueezeBackward1",
}
MANUALBP_NODES = {
    "Conv2dBackward",  # the ViT's patch embedding, converted by manualbp's CNN layers
    "DropoutBackward",
    "LinearBackward",
    "ReLUBackward",
    "GELUBackward",
    "LayerNormBackward",
    "ScaledDotProductAttentionBackward",
}


def _node_names(output):
    """The type names of every node of ``output``'s backward graph, found by walking ``next_functions``."""
    seen, names, stack = set(), set(), [output.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        names.add(type(node).__name__)
        stack.extend(next_node for next_node, _ in node.next_functions)
    return names


def _encoder(activation, dtype, norm_first=False):
    torch.manual_seed(0)
    layer = torch.nn.TransformerEncoderLayer(
        d_model=8,
        nhead=2,
        dim_feedforward=16,
        dropout=0.0,
        activation=activation,
        batch_first=True,
        norm_first=norm_first,
    )
    encoder = torch.nn.TransformerEncoder(layer, num_layers=2, norm=torch.nn.LayerNorm(8), enable_nested_tensor=False)
    return _module_pair_of(encoder.to(dtype))


def _module_pair_of(builtin):
    with torch.no_grad():
        for p in builtin.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    return builtin, manualbp.convert(copy.deepcopy(builtin))


def _relative_error(manual, builtin):
    return ((manual - builtin).abs().max() / builtin.abs().max()).item()


@pytest.mark.parametrize("dtype, tolerance", [(torch.float32, 1e-5), (DOUBLE, 1e-10)], ids=["float32", "float64"])
@pytest.mark.parametrize("activation", ["relu", "gelu", "gelu-module"])
@pytest.mark.parametrize("masks", ["none", "padding-and-causal"])
def test_converted_transformer_encoder_matches_torch_and_its_graph_holds_no_built_in_layer(
    dtype, tolerance, activation, masks
):
    function = {"relu": torch.nn.functional.relu, "gelu": torch.nn.functional.gelu, "gelu-module": torch.nn.GELU()}
    builtin, manual = _encoder(function[activation], dtype, norm_first=activation == "gelu")
    assert type(manual) is mnn.TransformerEncoder
    for layer in manual.layers:
        assert type(layer) is mnn.TransformerEncoderLayer and type(layer.self_attn) is mnn.MultiheadAttention
        assert type(layer.norm1) is mnn.LayerNorm and type(layer.linear1) is mnn.Linear
        assert layer.activation in (F.relu, F.gelu) or type(layer.activation) is mnn.GELU
    x = torch.randn(3, 5, 8, dtype=dtype)
    kwargs = {}
    if masks != "none":
        padding = torch.zeros(3, 5, dtype=torch.bool)
        padding[1, 3:] = True
        kwargs = {
            "mask": torch.ones(5, 5, dtype=torch.bool).triu(1),  # True: may not look ahead
            "src_key_padding_mask": padding,
        }
    upstream = torch.randn(3, 5, 8, dtype=dtype)
    results = []
    for model in (builtin, manual):
        x_leaf = x.clone().requires_grad_()
        out = model(x_leaf, **kwargs)
        results.append((out, torch.autograd.grad(out, [x_leaf, *model.parameters()], upstream)))
    (out_torch, grads_torch), (out_manual, grads_manual) = results
    assert _relative_error(out_manual, out_torch) <= tolerance
    for g_manual, g_torch in zip(grads_manual, grads_torch, strict=True):
        assert _relative_error(g_manual, g_torch) <= tolerance
    names = _node_names(out_manual)
    assert not names & BUILT_IN_LAYER_NODES, sorted(names & BUILT_IN_LAYER_NODES)
    assert names - MANUALBP_NODES <= ALLOWED_NODES, sorted(names - MANUALBP_NODES - ALLOWED_NODES)
    expected = {"LinearBackward", "LayerNormBackward", "ScaledDotProductAttentionBackward"}
    expected.add("ReLUBackward" if activation == "relu" else "GELUBackward")
    assert expected <= names
    assert _node_names(out_torch) & BUILT_IN_LAYER_NODES  # the walk can fail: the unconverted graph has them


def test_converted_encoder_layer_never_takes_the_fused_inference_path(monkeypatch):
    builtin, manual = _module_pair(torch.nn.TransformerEncoderLayer, 8, 2, 16, dtype=torch.float32, batch_first=True)
    builtin.eval(), manual.eval()
    x = torch.randn(2, 4, 8)
    calls = []
    fused = torch._transformer_encoder_layer_fwd

    def record(*args, **kwargs):
        calls.append(1)
        return fused(*args, **kwargs)

    monkeypatch.setattr(torch, "_transformer_encoder_layer_fwd", record)
    with torch.no_grad():
        expected = builtin(x)
        assert calls, "the unconverted layer should take the fast path here, or this test proves nothing"
        calls.clear()
        torch.testing.assert_close(manual(x), expected)
    assert not calls


def test_convert_swaps_a_function_valued_activation_and_back():
    layer = torch.nn.TransformerEncoderLayer(8, 2, 16, activation=torch.nn.functional.gelu)
    manualbp.convert(layer)
    assert layer.activation is F.gelu and type(layer.self_attn) is mnn.MultiheadAttention
    manualbp.convert(layer, to="torch")
    assert layer.activation is torch.nn.functional.gelu
    assert type(layer) is torch.nn.TransformerEncoderLayer and type(layer.norm1) is torch.nn.LayerNorm


def test_converted_torchvision_vit_matches_torch_and_its_graph_holds_no_built_in_transformer_layer():
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    vit = torchvision.models.VisionTransformer(
        image_size=16, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32, num_classes=5
    ).double()
    builtin, manual = _module_pair_of(vit)
    x = torch.randn(2, 3, 16, 16, dtype=DOUBLE)
    upstream = torch.randn(2, 5, dtype=DOUBLE)
    results = []
    for model in (builtin, manual):
        x_leaf = x.clone().requires_grad_()
        out = model(x_leaf)
        results.append((out, torch.autograd.grad(out, [x_leaf, *model.parameters()], upstream)))
    (out_torch, grads_torch), (out_manual, grads_manual) = results
    assert _relative_error(out_manual, out_torch) <= 1e-10
    for g_manual, g_torch in zip(grads_manual, grads_torch, strict=True):
        assert _relative_error(g_manual, g_torch) <= 1e-10
    # the class token is concatenated, its row selected for the head, the position embedding added
    names = _node_names(out_manual) - {"SelectBackward0"}
    assert not names & BUILT_IN_LAYER_NODES, sorted(names & BUILT_IN_LAYER_NODES)
    assert names - MANUALBP_NODES <= ALLOWED_NODES, sorted(names - MANUALBP_NODES - ALLOWED_NODES)


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


def test_multi_head_attention_forward_gradcheck_and_gradgradcheck():
    embed, heads = 4, 2
    query, key = _leaf(2, 1, embed), _leaf(3, 1, embed)  # (L, N, E), (S, N, E)
    in_proj_weight, in_proj_bias = _leaf(3 * embed, embed), _leaf(3 * embed)
    out_proj_weight, out_proj_bias = _leaf(embed, embed), _leaf(embed)
    bias_k, bias_v = _leaf(1, 1, embed), _leaf(1, 1, embed)
    padding = torch.tensor([[False, True, False]])

    def attention(query, key, in_proj_weight, in_proj_bias, out_proj_weight, out_proj_bias, bias_k, bias_v):
        output, weights = F.multi_head_attention_forward(
            query, key, key, embed, heads, in_proj_weight, in_proj_bias, bias_k, bias_v, True, 0.0,
            out_proj_weight, out_proj_bias, key_padding_mask=padding, need_weights=True,
        )  # fmt: skip
        return output, weights

    inputs = (query, key, in_proj_weight, in_proj_bias, out_proj_weight, out_proj_bias, bias_k, bias_v)
    assert_grad_and_gradgrad(attention, inputs)


@pytest.mark.parametrize("padding_idx, scale_grad_by_freq", [(1, False), (None, True), (1, True)])
def test_embedding_jvp_is_the_transpose_of_its_backward_under_the_padding_and_frequency_conventions(
    padding_idx, scale_grad_by_freq
):
    # finite differences cannot check these conventions (they are not the derivative), but forward and reverse mode
    # must agree: ⟨J u, g⟩ = ⟨u, Jᵀ g⟩ for any direction u and gradient g
    indices = torch.tensor([[0, 1, 3, 1], [3, 1, 2, 0]])
    weight, direction = _leaf(4, 3), torch.randn(4, 3, dtype=DOUBLE)

    def lookup(w):
        return F.embedding(indices, w, padding_idx, scale_grad_by_freq=scale_grad_by_freq)

    _, tangent = torch.func.jvp(lookup, (weight,), (direction,))
    g = torch.randn_like(tangent)
    (grad_weight,) = torch.autograd.grad(lookup(weight), weight, g)
    torch.testing.assert_close((tangent * g).sum(), (direction * grad_weight).sum())
