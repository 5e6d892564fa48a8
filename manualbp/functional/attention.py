"""Attention: ``scaled_dot_product_attention`` and ``multi_head_attention_forward``."""

import math

import torch

from manualbp import fast
from manualbp.functional._checks import _autocast_enabled, _check_same, _check_tensors
from manualbp.functional.linear import linear

__all__ = ["multi_head_attention_forward", "scaled_dot_product_attention"]


def scaled_dot_product_attention(
    query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False
):
    """O = softmax(q kᵀ·scale + mask) v. See ``manualbp.autograd.ScaledDotProductAttention`` for the backward.

    Args:
        query: ``(*, L, E)``; key: ``(*, S, E)``; value: ``(*, S, Ev)``; the ``*`` broadcast together.
        attn_mask: broadcastable to ``(*, L, S)``: boolean (True: the query may look at the key) or floating
            point, added to the scores (and differentiated). None: no mask.
        dropout_p: the probability of dropping each attention weight (applied whenever > 0, as in PyTorch).
        is_causal: query i looks at keys 0 … i only (the mask ``ones(L, S).tril()``); no attn_mask with it.
        scale: the scores' factor; None: 1/√E.
        enable_gqa: grouped-query attention: key and value may have fewer heads (dimension -3) than the query,
            each serving a group of consecutive query heads.

    Returns:
        ``(*, L, Ev)``.
    """
    output, _ = _attention(
        "scaled_dot_product_attention", query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa
    )
    return output


def _attention(function, query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa=False):
    """Check and broadcast the operands of scaled dot-product attention, turn its mask additive, draw its
    dropout mask, and run the Function: return its ``(output, weights)``."""
    _check_tensors(function, ("query", "key", "value"), query=query, key=key, value=value, attn_mask=attn_mask)
    if min(query.dim(), key.dim(), value.dim()) < 2:
        raise RuntimeError(f"{function}: query, key and value must have at least 2 dimensions, (*, L or S, E)")
    if query.shape[-1] != key.shape[-1] or key.shape[-2] != value.shape[-2]:
        raise RuntimeError(
            f"{function}: expected query (*, L, E), key (*, S, E) and value (*, S, Ev), got "
            f"{list(query.shape)}, {list(key.shape)} and {list(value.shape)}"
        )
    if enable_gqa and query.dim() >= 3 and key.dim() >= 3 and value.dim() >= 3:
        key, value = _share_heads(function, query, key, value)
    if not 0.0 <= dropout_p <= 1.0:
        raise ValueError(f"{function}: dropout_p must be between 0 and 1, got {dropout_p}")
    if is_causal and attn_mask is not None:
        raise RuntimeError(f"{function}: explicit attn_mask should not be set when is_causal=True")
    if _autocast_enabled(query):
        dtype = torch.get_autocast_dtype(query.device.type)
        query, key, value = query.to(dtype), key.to(dtype), value.to(dtype)
        if attn_mask is not None and attn_mask.is_floating_point():
            attn_mask = attn_mask.to(dtype)
    _check_same(function, "dtype", query=query, key=key, value=value)
    _check_same(function, "device", query=query, key=key, value=value, attn_mask=attn_mask)
    batch = torch.broadcast_shapes(query.shape[:-2], key.shape[:-2], value.shape[:-2])
    length, source = query.shape[-2], key.shape[-2]
    # broadcast views outside the Function: their backward sums each gradient back to its operand's shape
    query = query.expand(*batch, *query.shape[-2:])
    key = key.expand(*batch, *key.shape[-2:])
    value = value.expand(*batch, *value.shape[-2:])
    if is_causal:
        attn_mask = torch.ones(length, source, dtype=torch.bool, device=query.device).tril()
    if attn_mask is not None:
        try:
            broadcasts = torch.broadcast_shapes(attn_mask.shape, (*batch, length, source)) == (*batch, length, source)
        except RuntimeError:
            broadcasts = False
        if not broadcasts:
            raise RuntimeError(
                f"{function}: attn_mask of shape {list(attn_mask.shape)} does not broadcast to (*, L, S) = "
                f"{[*batch, length, source]}"
            )
        attn_mask = _additive_mask(function, attn_mask, query.dtype, allowed=True)
    dropout_mask = None
    if dropout_p > 0:
        keep = torch.empty(*batch, length, source, dtype=query.dtype, device=query.device).bernoulli_(1 - dropout_p)
        dropout_mask = keep / (1 - dropout_p) if dropout_p < 1 else keep
    scale = 1 / math.sqrt(query.shape[-1]) if scale is None else float(scale)
    return fast.scaled_dot_product_attention(query, key, value, attn_mask, dropout_mask, scale)


def _share_heads(function, query, key, value):
    """Grouped-query attention: each of the Hk key/value heads serves Hq/Hk consecutive query heads, so each is
    repeated that many times (a broadcast view and a copy, whose backward sums the group's gradients)."""
    query_heads, key_heads, value_heads = query.shape[-3], key.shape[-3], value.shape[-3]
    if key_heads != value_heads or query_heads % key_heads != 0:
        raise RuntimeError(
            f"{function}: with enable_gqa=True, key and value need the same number of heads, dividing the query's "
            f"{query_heads}; got {key_heads} and {value_heads}"
        )
    group = query_heads // key_heads

    def repeat(t):
        return t.unsqueeze(-3).expand(*t.shape[:-2], group, *t.shape[-2:]).reshape(*t.shape[:-3], -1, *t.shape[-2:])

    return repeat(key), repeat(value)


def _additive_mask(function, mask, dtype, allowed):
    """A boolean mask as 0 and −∞ (−∞ where ``mask != allowed``); a floating-point mask as it is."""
    if mask.dtype is torch.bool:
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(mask != allowed, float("-inf"))
    if not mask.is_floating_point():
        raise RuntimeError(f"{function}: a mask must be boolean or floating point, got {mask.dtype}")
    if mask.dtype is not dtype:
        raise RuntimeError(f"{function}: a floating-point mask must have the query's dtype {dtype}, got {mask.dtype}")
    return mask


def multi_head_attention_forward(
    query,
    key,
    value,
    embed_dim_to_check,
    num_heads,
    in_proj_weight,
    in_proj_bias,
    bias_k,
    bias_v,
    add_zero_attn,
    dropout_p,
    out_proj_weight,
    out_proj_bias,
    training=True,
    key_padding_mask=None,
    need_weights=True,
    attn_mask=None,
    use_separate_proj_weight=False,
    q_proj_weight=None,
    k_proj_weight=None,
    v_proj_weight=None,
    static_k=None,
    static_v=None,
    average_attn_weights=True,
    is_causal=False,
):
    """Multi-head attention, ``torch.nn.functional.multi_head_attention_forward``'s signature and sequence-first
    layout: the input projections and the output projection by ``linear``, each head by
    ``scaled_dot_product_attention``'s Function; everything else is views and concatenations.

    Args:
        query: ``(L, N, E)`` or unbatched ``(L, E)``; key, value: ``(S, N, E)`` or ``(S, E)``.
        key_padding_mask: ``(N, S)`` or ``(S,)``, boolean (True: that key is padding, ignored) or floating point
            (added).
        attn_mask: ``(L, S)`` or ``(N·num_heads, L, S)``, boolean (True: not allowed) or floating point (added).
        is_causal: a hint that attn_mask is causal; as in PyTorch, an attn_mask is then still required.
        static_k, static_v: not supported (NotImplementedError).
        The others as in ``torch.nn.MultiheadAttention``.

    Returns:
        ``(output, weights)``: output ``(L, N, E)`` (or ``(L, E)``); weights, when ``need_weights``, ``(N, L, S)``
        averaged over the heads or ``(N, num_heads, L, S)`` (without N when unbatched), else None. The weights are
        those before dropout.
    """
    function = "multi_head_attention_forward"
    if static_k is not None or static_v is not None:
        raise NotImplementedError(f"{function}: static_k and static_v are not implemented in manualbp")
    if is_causal and attn_mask is None:
        raise RuntimeError(
            f"{function}: need attn_mask if specifying the is_causal hint; pass the causal mask as attn_mask"
        )
    batched = query.dim() == 3
    if query.dim() not in (2, 3) or key.dim() != query.dim() or value.dim() != query.dim():
        raise RuntimeError(
            f"{function}: expected query, key and value all 3-D (L, N, E) or all 2-D (L, E), got "
            f"{list(query.shape)}, {list(key.shape)} and {list(value.shape)}"
        )
    # key and value: one shape, but for their widths when they have projections of their own (kdim, vdim)
    paired = key.shape[:-1] == value.shape[:-1] if use_separate_proj_weight else key.shape == value.shape
    if not paired or key.shape[1:-1] != query.shape[1:-1]:
        raise (RuntimeError if paired else AssertionError)(  # torch's types: an assertion for a mismatched pair
            f"{function}: expected key (S, N, E_k) and value (S, N, E_v) for query (L, N, E), with E_k = E_v = E "
            f"unless kdim and vdim are given, got query {list(query.shape)}, key {list(key.shape)} and value "
            f"{list(value.shape)}"
        )
    if not batched:
        query, key, value = query.unsqueeze(1), key.unsqueeze(1), value.unsqueeze(1)
        key_padding_mask = None if key_padding_mask is None else key_padding_mask.unsqueeze(0)
    length, batch, embed_dim = query.shape
    if embed_dim != embed_dim_to_check or embed_dim % num_heads != 0:
        raise AssertionError(
            f"{function}: expected query of embedding size {embed_dim_to_check}, divisible by num_heads={num_heads}, "
            f"got {embed_dim}"
        )
    head_dim = embed_dim // num_heads
    # the packed (3E, E) weight as three views, one per projection
    weights = (q_proj_weight, k_proj_weight, v_proj_weight) if use_separate_proj_weight else in_proj_weight.chunk(3)
    biases = (None, None, None) if in_proj_bias is None else in_proj_bias.chunk(3)
    q, k, v = (linear(x, w, b) for x, w, b in zip((query, key, value), weights, biases, strict=True))
    if attn_mask is not None:
        attn_mask = _additive_mask(function, attn_mask, q.dtype, allowed=False)
        expected = (length, key.shape[0]) if attn_mask.dim() == 2 else (batch * num_heads, length, key.shape[0])
        if tuple(attn_mask.shape) != expected:
            raise RuntimeError(f"{function}: attn_mask must have shape {list(expected)}, got {list(attn_mask.shape)}")
    if key_padding_mask is not None:
        key_padding_mask = _additive_mask(function, key_padding_mask, q.dtype, allowed=False)
        if tuple(key_padding_mask.shape) != (batch, key.shape[0]):
            raise RuntimeError(
                f"{function}: key_padding_mask must have shape {[batch, key.shape[0]]}, got "
                f"{list(key_padding_mask.shape)}"
            )
    if bias_k is not None and bias_v is not None:  # one more key and value, learned, that every query may see
        k = torch.cat([k, bias_k.expand(1, batch, embed_dim)])
        v = torch.cat([v, bias_v.expand(1, batch, embed_dim)])
        attn_mask = _pad_last(attn_mask)
        key_padding_mask = _pad_last(key_padding_mask)
    # (L, N, E) → (N, heads, L, head_dim): the heads as a batch dimension
    q, k, v = (x.reshape(x.shape[0], batch, num_heads, head_dim).permute(1, 2, 0, 3) for x in (q, k, v))
    if add_zero_attn:  # one more key and value of zeros
        k = torch.cat([k, k.new_zeros(batch, num_heads, 1, head_dim)], dim=2)
        v = torch.cat([v, v.new_zeros(batch, num_heads, 1, head_dim)], dim=2)
        attn_mask = _pad_last(attn_mask)
        key_padding_mask = _pad_last(key_padding_mask)
    mask = None
    if attn_mask is not None:
        mask = attn_mask if attn_mask.dim() == 2 else attn_mask.reshape(batch, num_heads, length, k.shape[2])
    if key_padding_mask is not None:
        padding = key_padding_mask.reshape(batch, 1, 1, k.shape[2])
        mask = padding if mask is None else mask + padding
    output, weights = _attention(function, q, k, v, mask, dropout_p if training else 0.0, False, None)
    output = output.permute(2, 0, 1, 3).reshape(length, batch, embed_dim)  # back to (L, N, E)
    output = linear(output, out_proj_weight, out_proj_bias)
    if not need_weights:
        weights = None
    elif average_attn_weights:
        weights = weights.mean(dim=1)
    if not batched:
        output = output.squeeze(1)
        weights = None if weights is None else weights.squeeze(0)
    return output, weights


def _pad_last(mask):
    """An additive mask with one more key, allowed (a 0 appended to its last dimension); None stays None."""
    return None if mask is None else torch.cat([mask, mask.new_zeros(*mask.shape[:-1], 1)], dim=-1)
