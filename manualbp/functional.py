"""``torch.nn.functional``'s signatures over manualbp's hand-derived Functions.

Each function checks its arguments (the public boundary), raising the exception type that
``torch.nn.functional`` raises with a message naming what was expected and what came, then runs the
``torch.autograd.Function`` of ``manualbp.autograd`` that holds the math, by the fast tier's route
(``manualbp.fast``: the same forward and backward, proven equal bit for bit).
"""

import math
import warnings

import torch
from torch.nn import _reduction

from manualbp import autograd, fast

__all__ = [
    "adaptive_avg_pool2d",
    "avg_pool2d",
    "batch_norm",
    "conv1d",
    "conv2d",
    "cross_entropy",
    "dropout",
    "embedding",
    "gelu",
    "layer_norm",
    "leaky_relu",
    "linear",
    "linear_activation",
    "max_pool2d",
    "log_softmax",
    "mlp",
    "mse_loss",
    "multi_head_attention_forward",
    "relu",
    "scaled_dot_product_attention",
    "sigmoid",
    "softmax",
    "tanh",
]

_REDUCTIONS = ("none", "mean", "sum")


def linear(input, weight, bias=None):
    """z = x Wᵀ + b. See ``manualbp.autograd.Linear`` for the derivation.

    Args:
        input: ``(*, in_features)``.
        weight: ``(out_features, in_features)``.
        bias: ``(out_features,)`` or None.

    Returns:
        ``(*, out_features)``.

    A 1-D weight ``(in_features,)`` is one neuron, as in ``torch.nn.functional.linear``: the output is then
    ``(*)``, and a bias must be a 0-D tensor (on a 1-D input only, as in PyTorch). A bias of shape ``()`` or
    ``(1,)`` is broadcast over the outputs, as PyTorch broadcasts it.
    """
    try:
        if weight.dim() == 1:
            if bias is not None and (bias.dim() != 0 or input.dim() != 1):
                raise RuntimeError(
                    f"linear: with a 1-D weight, a bias must be 0-D and the input 1-D, got bias of shape "
                    f"{tuple(bias.shape)} and input of shape {tuple(input.shape)}"
                )
            row = weight.unsqueeze(0)  # one neuron: a (1, in_features) weight, then its output dimension dropped
            bias = None if bias is None else bias.unsqueeze(0)
            return _on_rows(fast.linear, *_linear_operands("linear", input, row, bias)).squeeze(-1)
        return _on_rows(fast.linear, *_linear_operands("linear", input, weight, bias))
    except AttributeError:  # costs nothing unless raised: a non-tensor argument is torch's TypeError
        _check_tensors("linear", input=input, weight=weight, bias=bias)
        raise


def linear_activation(input, weight, bias=None, activation="relu"):
    """a = f(x Wᵀ + b) as one Function, for f = ``"relu"``, ``"sigmoid"`` or ``"tanh"``: the result and gradients
    of ``relu(linear(input, weight, bias))`` (and so on), with one node in the autograd graph rather than two.
    See ``manualbp.fast.LinearActivation``.
    """
    if activation not in fast.ACTIVATIONS:
        raise ValueError(f"linear_activation: activation must be one of {sorted(fast.ACTIVATIONS)}, got {activation!r}")
    try:
        operands = _linear_operands("linear_activation", input, weight, bias)
    except AttributeError:
        _check_tensors("linear_activation", input=input, weight=weight, bias=bias)
        raise
    return _on_rows(fast.linear_activation, *operands, activation)


def mlp(input, weights, biases, activations):
    """aᴸ = f_L(⋯ f_1(x W₁ᵀ + b₁) ⋯): a whole multilayer perceptron as one Function, one autograd node, whose
    backward is the textbook backpropagation loop. See ``manualbp.autograd.MLP``.

    The outputs and gradients are those of ``linear`` and the activations called layer by layer, to the bit.

    Args:
        input: ``(*, n₀)``.
        weights: one ``(n_l, n_{l−1})`` tensor per layer.
        biases: one ``(n_l,)`` tensor (or None) per layer.
        activations: one name per layer, ``"relu"``, ``"leaky-relu"`` (slope 0.01), ``"sigmoid"``, ``"tanh"`` or
            ``"gelu"``, or None for no activation (a last layer giving logits, say).

    Returns:
        ``(*, n_L)``.
    """
    weights, biases, activations = list(weights), list(biases), tuple(activations)
    if not weights or not len(weights) == len(biases) == len(activations):
        raise ValueError(
            f"mlp: weights, biases and activations need one entry per layer, got {len(weights)}, {len(biases)} "
            f"and {len(activations)}"
        )
    unknown = [name for name in activations if name is not None and name not in autograd.mlp.ACTIVATIONS]
    if unknown:
        raise ValueError(
            f"mlp: activation {unknown[0]!r} is not one of {sorted(autograd.mlp.ACTIVATIONS)} (or None for none)"
        )
    width = input.shape[-1] if input.dim() > 0 else None
    for layer, (weight, bias) in enumerate(zip(weights, biases, strict=True)):
        if weight.dim() != 2 or weight.shape[1] != width:
            raise RuntimeError(
                f"mlp: layer {layer + 1}'s weight must be 2-D (out_features, {width}) to take "
                f"{'the input' if layer == 0 else f'layer {layer} output'} of width {width}, got shape "
                f"{tuple(weight.shape)}"
            )
        if bias is not None and tuple(bias.shape) != (weight.shape[0],):
            raise RuntimeError(
                f"mlp: layer {layer + 1}'s bias must have shape ({weight.shape[0]},), got {tuple(bias.shape)}"
            )
        width = weight.shape[0]
    tensors = {"input": input} | {f"weight {i + 1}": w for i, w in enumerate(weights)}
    tensors |= {f"bias {i + 1}": b for i, b in enumerate(biases) if b is not None}
    if _autocast_enabled(input):  # as for linear: every operand in the autocast dtype, cast outside the Function
        dtype = torch.get_autocast_dtype(input.device.type)
        tensors = {name: t.to(dtype) for name, t in tensors.items()}
    _check_same("mlp", "dtype", **tensors)
    _check_same("mlp", "device", **tensors)
    input = tensors["input"]
    parameters = [tensors.get(f"{kind} {i + 1}") for i in range(len(weights)) for kind in ("weight", "bias")]
    rows = input if input.dim() == 2 else input.reshape(math.prod(input.shape[:-1]), input.shape[-1])
    output = fast.mlp(rows, activations, *parameters)[0]
    return output if input.dim() == 2 else output.reshape(*input.shape[:-1], width)


def _on_rows(route, input, weight, *args):
    """``route(input, weight, *args)`` for an input ``(*, in_features)``: its leading dimensions folded into the
    rows of a matrix and unfolded again, as views outside the Function (so the output is the Function's own)."""
    if input.dim() == 2:
        return route(input, weight, *args)
    rows = input.reshape(math.prod(input.shape[:-1]), input.shape[-1])
    return route(rows, weight, *args).reshape(*input.shape[:-1], weight.shape[0])


def _linear_operands(function, input, weight, bias):
    """Check the operands of a linear map, and cast them as autocast would; return ``(input, weight, bias)``."""
    if weight.dim() != 2:
        raise RuntimeError(
            f"{function}: weight must be 2-D (out_features, in_features) or, for linear, 1-D (in_features,), got "
            f"shape {tuple(weight.shape)}"
        )
    if input.dim() == 0 or input.shape[-1] != weight.shape[1]:
        raise RuntimeError(
            f"{function}: input of shape {tuple(input.shape)} must end in in_features={weight.shape[1]} "
            f"to match weight of shape {tuple(weight.shape)}"
        )
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        if tuple(bias.shape) not in ((), (1,)):
            raise RuntimeError(
                f"{function}: bias must have shape ({weight.shape[0]},) (or () or (1,), broadcast) to match weight "
                f"of shape {tuple(weight.shape)}, got {tuple(bias.shape)}"
            )
        bias = bias.expand(weight.shape[0])  # one number for every output: a view, whose backward sums ∂C/∂b
    if _autocast_enabled(input):
        # what autocast does for torch's own linear: cast every operand to the autocast dtype, as an
        # ordinary (differentiable) cast outside the Function, so the backward runs in that dtype too
        dtype = torch.get_autocast_dtype(input.device.type)
        input, weight = input.to(dtype), weight.to(dtype)
        bias = None if bias is None else bias.to(dtype)
    dtype = input.dtype  # dtypes are singletons: `is` compares them
    if weight.dtype is not dtype or (bias is not None and bias.dtype is not dtype):
        _check_same(function, "dtype", input=input, weight=weight, bias=bias)
    if not _one_device(input, weight, bias):
        _check_same(function, "device", input=input, weight=weight, bias=bias)
    return input, weight, bias


def relu(input, inplace=False):
    """a = max(z, 0). See ``manualbp.autograd.ReLU``.

    With ``inplace=True`` the result is also written into ``input`` (as ``torch.nn.functional.relu`` does),
    and the gradient still flows through manualbp's backward.
    """
    return _maybe_inplace(fast.relu(input), input, inplace)


def leaky_relu(input, negative_slope=0.01, inplace=False):
    """a = z if z > 0 else negative_slope·z. See ``manualbp.autograd.LeakyReLU``.

    ``negative_slope`` is a number (a bool or a 0-D tensor counts, as in PyTorch)."""
    if isinstance(negative_slope, torch.Tensor) and negative_slope.dim() == 0:
        negative_slope = negative_slope.item()
    if not isinstance(negative_slope, (int, float)):
        raise TypeError(f"leaky_relu: negative_slope must be a number, got {type(negative_slope).__name__}")
    return _maybe_inplace(fast.leaky_relu(input, float(negative_slope)), input, inplace)


def sigmoid(input):
    """a = 1 / (1 + e⁻ᶻ). See ``manualbp.autograd.Sigmoid``."""
    return fast.sigmoid(input)


def tanh(input):
    """a = tanh(z). See ``manualbp.autograd.Tanh``."""
    return fast.tanh(input)


def gelu(input, approximate="none"):
    """a = z·Φ(z), exact (``approximate="none"``) or its tanh approximation. See ``manualbp.autograd.GELU``."""
    if approximate not in ("none", "tanh"):
        raise RuntimeError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    return fast.gelu(input, approximate)


def softmax(input, dim=None, _stacklevel=3, dtype=None):
    """p = softmax(z) along ``dim``. See ``manualbp.autograd.Softmax``.

    ``dim=None`` picks a dimension as PyTorch's deprecated implicit choice does (0 for 0-, 1- and 3-D inputs, 1
    otherwise), with its warning; ``dtype`` casts the input first (a differentiable cast, outside the Function).
    """
    dim = _softmax_dim("softmax", input, dim, _stacklevel)
    (input,) = _autocast_to_float32(input if dtype is None else input.to(dtype))
    return fast.softmax(input, dim)


def log_softmax(input, dim=None, _stacklevel=3, dtype=None):
    """ℓ = log softmax(z) along ``dim``. See ``manualbp.autograd.LogSoftmax``; ``dim`` and ``dtype`` as in
    ``softmax``."""
    dim = _softmax_dim("log_softmax", input, dim, _stacklevel)
    (input,) = _autocast_to_float32(input if dtype is None else input.to(dtype))
    return fast.log_softmax(input, dim)


def _softmax_dim(function, input, dim, stacklevel):
    """The dimension to normalise over, checked as PyTorch checks it (TypeError, IndexError)."""
    _check_tensors(function, input=input)
    if dim is None:
        warnings.warn(
            f"Implicit dimension choice for {function} has been deprecated. Change the call to include dim=X as an "
            "argument.",
            stacklevel=stacklevel,
        )
        return 0 if input.dim() in (0, 1, 3) else 1
    if isinstance(dim, bool) or not isinstance(dim, int):
        raise TypeError(f"{function}: dim must be an int, got {type(dim).__name__}")
    span = max(input.dim(), 1)
    if not -span <= dim < span:
        raise IndexError(f"Dimension out of range (expected to be in range of [{-span}, {span - 1}], but got {dim})")
    return dim


def layer_norm(input, normalized_shape, weight=None, bias=None, eps=1e-5):
    """y = γ ⊙ (x − μ)/√(σ² + ε) + β over the last ``len(normalized_shape)`` dimensions.
    See ``manualbp.autograd.LayerNorm`` for the compact backward.

    Args:
        input: ``(*, *normalized_shape)``.
        normalized_shape: an int or a sequence of ints, the trailing shape normalised over.
        weight, bias: ``normalized_shape`` or None.
        eps: added to the variance.
    """
    _check_tensors("layer_norm", input=input, weight=weight, bias=bias)
    normalized_shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    count = len(normalized_shape)
    if count == 0 or tuple(input.shape[input.dim() - count :]) != normalized_shape or input.dim() < count:
        raise RuntimeError(
            f"layer_norm: given normalized_shape={list(normalized_shape)}, expected input with shape "
            f"[*, {', '.join(map(str, normalized_shape))}], but got input of size {list(input.shape)}"
        )
    for name, tensor in (("weight", weight), ("bias", bias)):
        if tensor is not None and tuple(tensor.shape) != normalized_shape:
            raise RuntimeError(
                f"layer_norm: expected {name} to be of shape {list(normalized_shape)}, got {list(tensor.shape)}"
            )
    input, weight, bias = _autocast_to_float32(input, weight, bias)
    _check_same("layer_norm", "dtype", input=input, weight=weight, bias=bias)
    _check_same("layer_norm", "device", input=input, weight=weight, bias=bias)
    return fast.layer_norm(input, normalized_shape, weight, bias, float(eps))


def embedding(input, weight, padding_idx=None, max_norm=None, norm_type=2.0, scale_grad_by_freq=False, sparse=False):
    """a = W[i], a row of ``weight`` per index. See ``manualbp.autograd.Embedding`` (the backward: a scatter-add).

    Args:
        input: ``(*)``, indices into the table (int64 or int32).
        weight: ``(num_embeddings, embedding_dim)``.
        padding_idx: a row that gets no gradient (negative counts from the end), or None.
        max_norm, norm_type: rescale, in place and without gradient, each looked-up row whose ``norm_type``-norm
            exceeds ``max_norm`` (as PyTorch does, before the lookup).
        scale_grad_by_freq: divide each row's gradient by how often its index occurs in ``input``.
        sparse: not supported (NotImplementedError).

    Returns:
        ``(*, embedding_dim)``.
    """
    _check_tensors("embedding", input=input, weight=weight)
    if sparse:
        raise NotImplementedError(
            "embedding: sparse gradients are not implemented in manualbp (its gradient is a dense table); use "
            "torch.nn.functional.embedding for them"
        )
    if weight.dim() != 2:
        raise RuntimeError(f"embedding: weight must be 2-D (num_embeddings, embedding_dim), got {list(weight.shape)}")
    if input.dtype not in (torch.int64, torch.int32):
        raise RuntimeError(f"embedding: expected indices of dtype int64 or int32, got {input.dtype}")
    if padding_idx is not None:
        if not -weight.shape[0] <= padding_idx < weight.shape[0]:
            raise AssertionError(
                f"embedding: padding_idx must be within num_embeddings ({weight.shape[0]}), got {padding_idx}"
            )
        padding_idx = padding_idx % weight.shape[0]
    if max_norm is not None:
        with torch.no_grad():  # PyTorch's own renormalisation of the table: in place, not differentiated
            torch.embedding_renorm_(weight, input.contiguous(), max_norm, norm_type)
    return fast.embedding(input, weight, padding_idx, bool(scale_grad_by_freq))


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
    _check_tensors(function, query=query, key=key, value=value, attn_mask=attn_mask)
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
        if torch.broadcast_shapes(attn_mask.shape, (*batch, length, source)) != (*batch, length, source):
            raise RuntimeError(
                f"{function}: attn_mask of shape {list(attn_mask.shape)} does not broadcast to "
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


def mse_loss(input, target, size_average=None, reduce=None, reduction="mean", weight=None):
    """Mean (or summed) squared error. See ``manualbp.autograd.MSELoss`` for C = Σ(a − y)², ∂C/∂a = 2(a − y).

    Args:
        input: ``(*)``.
        target: ``(*)``, broadcast against ``input`` with a warning when the shapes differ (as PyTorch does).
        size_average, reduce: deprecated, as in PyTorch; use ``reduction``.
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"``.
        weight: optional, the shape of ``input``; weights each squared error (``"mean"`` divides by its sum).
    """
    if size_average is not None or reduce is not None:
        reduction = _reduction.legacy_get_string(size_average, reduce)
    _check_reduction(reduction)
    if target.shape != input.shape:
        warnings.warn(
            f"mse_loss: target size {tuple(target.shape)} differs from input size {tuple(input.shape)}; they "
            "will be broadcast, which is likely not what you want. Make them the same size.",
            stacklevel=2,
        )
        input, target = torch.broadcast_tensors(input, target)
    if weight is not None and weight.shape != input.shape:
        raise ValueError(
            f"mse_loss: weight must have the input's shape {tuple(input.shape)}, got {tuple(weight.shape)}"
        )
    input, target, weight = _autocast_to_float32(input, target, weight)
    if input.dtype != target.dtype:  # PyTorch promotes here rather than refusing
        dtype = torch.promote_types(input.dtype, target.dtype)
        input, target = input.to(dtype), target.to(dtype)
    if weight is not None:
        _check_same("mse_loss", "dtype", input=input, target=target, weight=weight)
    if not _one_device(input, target, weight):
        _check_same("mse_loss", "device", input=input, target=target, weight=weight)
    return fast.mse_loss(input, target, weight, reduction)


def cross_entropy(
    input,
    target,
    weight=None,
    size_average=None,
    ignore_index=-100,
    reduce=None,
    reduction="mean",
    label_smoothing=0.0,
):
    """Softmax cross-entropy from logits, against class indices or class probabilities.
    See ``manualbp.autograd.CrossEntropyLoss``.

    Args:
        input: logits, ``(C,)``, ``(N, C)`` or ``(N, C, d₁, …, d_k)``.
        target: class indices in ``[0, C)`` (an integer tensor), ``()``, ``(N,)`` or ``(N, d₁, …, d_k)``, with
            ``ignore_index`` marking entries that count for nothing; or class probabilities, floating point and of
            the input's shape (PyTorch's rule: a target shaped like the input holds probabilities).
        weight: optional per-class weights, ``(C,)``.
        size_average, reduce: deprecated, as in PyTorch; use ``reduction``.
        reduction: ``"mean"`` (default; divided by the summed weight of the targets for class indices, by the
            number of targets for probabilities), ``"sum"`` or ``"none"``.
        label_smoothing: ε in [0, 1]; the target becomes (1 − ε)·target + ε/C.

    Returns:
        ``()`` for ``"mean"`` and ``"sum"``; the input's shape without the class dimension for ``"none"``.
    """
    if size_average is not None or reduce is not None:
        reduction = _reduction.legacy_get_string(size_average, reduce)
    _check_reduction(reduction)
    if not 0.0 <= label_smoothing <= 1.0:
        raise RuntimeError(f"cross_entropy: label_smoothing must be between 0.0 and 1.0, got {label_smoothing}")
    try:
        floating = input.is_floating_point()
        probabilities = target.shape == input.shape
    except AttributeError:  # costs nothing unless raised: a non-tensor argument is torch's TypeError
        _check_tensors("cross_entropy", input=input, target=target, weight=weight)
        raise
    if not floating:  # torch's type: its log_softmax kernel is not implemented for integers
        raise NotImplementedError(f"cross_entropy: input must hold floating-point logits, got dtype {input.dtype}")
    if probabilities:  # first, as in PyTorch: a 0-D input with a 0-D integer target fails here
        _check_probability_target(target, ignore_index)
    if input.dim() == 0:  # torch's type: the class dimension, 1, is out of range
        raise IndexError("cross_entropy: input must have a class dimension, (C,), (N, C) or (N, C, d₁, …), got ()")
    num_classes = input.shape[0] if input.dim() == 1 else input.shape[1]
    if weight is not None and tuple(weight.shape) != (num_classes,):
        raise RuntimeError(
            f"cross_entropy: weight must have shape ({num_classes},), one per class, got {tuple(weight.shape)}"
        )
    if not probabilities:
        _check_index_target(input, target)
    unbatched = input.dim() == 1
    if unbatched:  # one row; a class index may come as () or, as PyTorch also takes it, (1,)
        input, target = input.unsqueeze(0), target.unsqueeze(0) if probabilities else target.reshape(1)
    input, weight = _autocast_to_float32(input, weight)
    if probabilities and target.dtype is not input.dtype:  # PyTorch promotes here rather than refusing
        dtype = torch.promote_types(input.dtype, target.dtype)
        input, target = input.to(dtype), target.to(dtype)
    if weight is not None:
        _check_same("cross_entropy", "dtype", input=input, weight=weight)
    if not _one_device(input, target, weight):
        _check_same("cross_entropy", "device", input=input, target=target, weight=weight)
    # fold every layout into (rows, classes) and (rows,) or (rows, classes): the Function handles one case only
    logits = input if input.dim() == 2 else input.movedim(1, -1).reshape(-1, num_classes)
    if probabilities:
        rows = target if target.dim() == 2 else target.movedim(1, -1).reshape(-1, num_classes)
        route = fast.cross_entropy
    else:
        rows = (target if target.dim() == 1 else target.reshape(-1)).long()
        span = None if rows.numel() == 0 else fast.target_range(rows)
        if span is not None:
            _check_targets(rows, num_classes, ignore_index, *span)
        one_hot = (
            weight is None and label_smoothing == 0 and span is not None and not span[0] <= ignore_index <= span[1]
        )
        route = fast.one_hot_cross_entropy if one_hot else fast.cross_entropy
    loss, _ = route(logits, rows, weight, ignore_index, float(label_smoothing), reduction)
    if reduction == "none":
        shape = (input.shape[0], *input.shape[2:])
        loss = loss.reshape(shape[1:] if unbatched else shape)
    return loss


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """z = W ⋆ x + b. See ``manualbp.autograd.Conv2d`` for the derivation.

    Args:
        input: ``(N, C_in, H, W)`` or unbatched ``(C_in, H, W)``.
        weight: ``(C_out, C_in / groups, kh, kw)``.
        bias: ``(C_out,)`` or None.
        stride, dilation: an int or a pair. padding: an int, a pair, ``"valid"`` (0) or ``"same"`` (output the
            size of the input; stride 1 only). An odd total of ``"same"`` padding puts the extra zero after the
            input, as PyTorch does, by padding the input before the Function.
        groups: splits the channels into that many independent convolutions.

    Returns:
        ``(N, C_out, H_out, W_out)`` (or unbatched).
    """
    _check_tensors("conv2d", input=input, weight=weight, bias=bias)
    if input.dim() not in (3, 4) or weight.dim() != 4:
        raise RuntimeError(
            f"conv2d: expected a 3-D (unbatched) or 4-D input and a 4-D weight, got input of shape "
            f"{tuple(input.shape)} and weight of shape {tuple(weight.shape)}"
        )
    batched = input if input.dim() == 4 else input.unsqueeze(0)
    if not isinstance(groups, int) or groups < 1 or weight.shape[0] % groups:
        raise RuntimeError(
            f"conv2d: groups must be a positive int dividing out_channels={weight.shape[0]}, got {groups}"
        )
    if batched.shape[1] != weight.shape[1] * groups:
        raise RuntimeError(
            f"conv2d: input of shape {tuple(input.shape)} has {batched.shape[1]} channels, but weight of shape "
            f"{tuple(weight.shape)} with groups={groups} expects {weight.shape[1] * groups}"
        )
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        raise RuntimeError(f"conv2d: bias must have shape ({weight.shape[0]},), got {tuple(bias.shape)}")
    _check_same("conv2d", "dtype", input=input, weight=weight, bias=bias)
    _check_same("conv2d", "device", input=input, weight=weight, bias=bias)
    stride, dilation = _pair("conv2d", "stride", stride, 1), _pair("conv2d", "dilation", dilation, 1)
    if padding == "valid":
        padding = (0, 0)
    elif padding == "same":
        if stride != (1, 1):
            raise ValueError("conv2d: padding='same' is not supported for strided convolutions")
        total = [d * (k - 1) for d, k in zip(dilation, weight.shape[2:], strict=True)]
        padding = (total[0] // 2, total[1] // 2)
        extra_h, extra_w = total[0] - 2 * padding[0], total[1] - 2 * padding[1]
        if extra_h or extra_w:  # the odd zero goes after the input, as in PyTorch
            batched = torch.nn.functional.pad(batched, (0, extra_w, 0, extra_h))
    elif isinstance(padding, str):
        raise ValueError(f"conv2d: padding must be 'valid', 'same', an int or a pair, got {padding!r}")
    else:
        padding = _pair("conv2d", "padding", padding, 0)
    output = fast.conv2d(batched, weight, bias, stride, padding, dilation, groups)
    return output if input.dim() == 4 else output.squeeze(0)


def conv1d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """z = W ⋆ x + b along one axis: ``conv2d`` on an image of height 1 (the same derivation, one node
    ``Conv2dBackward``). Input ``(N, C_in, L)`` or ``(C_in, L)``, weight ``(C_out, C_in / groups, k)``; the other
    arguments an int (or a 1-tuple), padding also ``"valid"`` or ``"same"``."""
    _check_tensors("conv1d", input=input, weight=weight, bias=bias)
    if input.dim() not in (2, 3) or weight.dim() != 3:
        raise RuntimeError(
            f"conv1d: expected a 2-D (unbatched) or 3-D input and a 3-D weight, got input of shape "
            f"{tuple(input.shape)} and weight of shape {tuple(weight.shape)}"
        )
    stride, dilation = _single("conv1d", "stride", stride, 1), _single("conv1d", "dilation", dilation, 1)
    padding = padding if isinstance(padding, str) else (0, _single("conv1d", "padding", padding, 0))
    output = conv2d(input.unsqueeze(-2), weight.unsqueeze(-2), bias, (1, stride), padding, (1, dilation), groups)
    return output.squeeze(-2)


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
    """y = the maximum over each window; the gradient goes to the argmax. See ``manualbp.autograd.MaxPool2d``.

    Input ``(N, C, H, W)`` or ``(C, H, W)``; ``stride`` defaults to ``kernel_size``. With ``return_indices`` also
    returns the argmax of each window, an index into the flattened H · W plane, as PyTorch does.
    """
    _check_tensors("max_pool2d", input=input)
    batched = _batched_image("max_pool2d", input)
    kernel_size = _pair("max_pool2d", "kernel_size", kernel_size, 1)
    stride = kernel_size if _unset(stride) else _pair("max_pool2d", "stride", stride, 1)
    padding, dilation = _pair("max_pool2d", "padding", padding, 0), _pair("max_pool2d", "dilation", dilation, 1)
    output, indices = fast.max_pool2d(batched, kernel_size, stride, padding, dilation, bool(ceil_mode))
    if input.dim() == 3:
        output, indices = output.squeeze(0), indices.squeeze(0)
    return (output, indices) if return_indices else output


def avg_pool2d(
    input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True, divisor_override=None
):
    """y = the mean over each window. See ``manualbp.autograd.AvgPool2d``.

    Input ``(N, C, H, W)`` or ``(C, H, W)``; ``stride`` defaults to ``kernel_size``; ``count_include_pad`` counts
    padding zeros in the divisor; ``divisor_override`` (a nonzero int) replaces the divisor.
    """
    _check_tensors("avg_pool2d", input=input)
    batched = _batched_image("avg_pool2d", input)
    kernel_size = _pair("avg_pool2d", "kernel_size", kernel_size, 1)
    stride = kernel_size if _unset(stride) else _pair("avg_pool2d", "stride", stride, 1)
    padding = _pair("avg_pool2d", "padding", padding, 0)
    if divisor_override is not None and (not isinstance(divisor_override, int) or divisor_override == 0):
        raise RuntimeError(f"avg_pool2d: divisor_override must be a nonzero int or None, got {divisor_override!r}")
    arguments = (kernel_size, stride, padding, bool(ceil_mode), bool(count_include_pad), divisor_override)
    output = fast.avg_pool2d(batched, *arguments)
    return output if input.dim() == 4 else output.squeeze(0)


def adaptive_avg_pool2d(input, output_size):
    """y = the mean over an ``output_size`` grid of windows tiling the input. See
    ``manualbp.autograd.AdaptiveAvgPool2d``. ``output_size``: an int or a pair, None keeping the input's size."""
    _check_tensors("adaptive_avg_pool2d", input=input)
    batched = _batched_image("adaptive_avg_pool2d", input, ValueError)
    if isinstance(output_size, int) or output_size is None:
        output_size = (output_size, output_size)
    if len(output_size) != 2:
        raise RuntimeError(f"adaptive_avg_pool2d: output_size must be an int or a pair, got {output_size!r}")
    output_size = tuple(size if size is not None else batched.shape[2 + i] for i, size in enumerate(output_size))
    output = fast.adaptive_avg_pool2d(batched, output_size)
    return output if input.dim() == 4 else output.squeeze(0)


def batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1, eps=1e-5):
    """y = γ (x − μ)/√(v + ε) + β per channel. See ``manualbp.autograd.BatchNorm``.

    In training, μ and v are the batch's, and ``running_mean``/``running_var`` (if given) are moved towards them
    in place by ``momentum``, as PyTorch moves them; in eval the running statistics are used.

    Args:
        input: ``(N, C, *)``.
        running_mean, running_var, weight, bias: ``(C,)`` or None.
    """
    _check_tensors("batch_norm", input=input, running_mean=running_mean, running_var=running_var)
    _check_tensors("batch_norm", weight=weight, bias=bias)
    if input.dim() < 2:
        raise ValueError(f"batch_norm: expected an input (N, C, *) of 2 or more dimensions, got {input.dim()}-D")
    if not training and (running_mean is None or running_var is None):
        raise RuntimeError("batch_norm: running_mean and running_var must be given in evaluation mode")
    channels = input.shape[1]
    tensors = {"running_mean": running_mean, "running_var": running_var, "weight": weight, "bias": bias}
    for name, value in tensors.items():
        if value is not None and tuple(value.shape) != (channels,):
            raise RuntimeError(f"batch_norm: {name} must have shape ({channels},), got {tuple(value.shape)}")
    return fast.batch_norm(input, weight, bias, running_mean, running_var, bool(training), momentum, eps)


def dropout(input, p=0.5, training=True, inplace=False):
    """y = x · m, m_i = 1/(1 − p) with probability 1 − p, else 0; the identity when not training.
    See ``manualbp.autograd.Dropout``.

    On the CPU the mask is drawn as PyTorch's dropout draws it (``bernoulli_(1 − p)`` on an ``empty_like`` of the
    input, then divided by 1 − p), so the same generator state gives the same mask and the same output, to the
    bit. On CUDA PyTorch runs a fused kernel with its own draws: the masks there differ.
    """
    _check_tensors("dropout", input=input)
    if not 0 <= p <= 1:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
    if not training or p == 0 or input.numel() == 0:
        return input  # as PyTorch: no draw, no node
    # at p = 1 every value is dropped and PyTorch draws nothing: neither do we
    mask = input.new_zeros(()) if p == 1 else torch.empty_like(input).bernoulli_(1 - p).div_(1 - p)
    return _maybe_inplace(fast.dropout(input, mask), input, inplace)


def _check_probability_target(target, ignore_index):
    if not target.is_floating_point():
        raise RuntimeError(
            f"cross_entropy: a target shaped like the input, {tuple(target.shape)}, holds class probabilities and "
            f"must be floating point, got {target.dtype}; class indices leave out the class dimension"
        )
    if ignore_index != -100:
        raise RuntimeError(
            f"cross_entropy: ignore_index={ignore_index} applies to class indices only, not to a target of class "
            "probabilities: leave it at its default"
        )


def _check_index_target(input, target):
    expected = () if input.dim() == 1 else (input.shape[0], *input.shape[2:])
    if target.is_floating_point() or target.dtype not in (torch.int64, torch.uint8):
        raise RuntimeError(
            f"cross_entropy: class-index targets must be int64, got {target.dtype}; a target of class "
            f"probabilities must have the input's shape {tuple(input.shape)}, got {tuple(target.shape)}"
        )
    if input.dim() > 1 and target.dim() > 0 and input.shape[0] != target.shape[0]:
        raise ValueError(
            f"cross_entropy: expected input batch_size ({input.shape[0]}) to match target batch_size "
            f"({target.shape[0]})"
        )
    if tuple(target.shape) != expected and not (input.dim() == 1 and tuple(target.shape) == (1,)):
        raise RuntimeError(
            f"cross_entropy: for input of shape {tuple(input.shape)}, target must have shape {expected} (class "
            f"indices) or {tuple(input.shape)} (class probabilities), got {tuple(target.shape)}"
        )


def _check_tensors(function, **tensors):
    """Raise TypeError, as ``torch.nn.functional`` does, for an argument that is not a tensor (None: absent)."""
    for name, value in tensors.items():
        if value is not None and not isinstance(value, torch.Tensor):
            raise TypeError(f"{function}: {name} must be a Tensor, got {type(value).__name__}")


def _check_reduction(reduction):
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{reduction} is not a valid value for reduction: expected one of {_REDUCTIONS}")


def _one_device(input, other, optional):
    """Whether ``other`` and ``optional`` (None: absent) are on ``input``'s device; a cheap test that lets the
    common case skip ``_check_same``. All on the CPU is one device, found without building device objects."""
    if input.is_cpu and other.is_cpu and (optional is None or optional.is_cpu):
        return True
    return other.device == input.device and (optional is None or optional.device == input.device)


def _check_same(function, attribute, **tensors):
    """Raise if the given tensors (None skipped) disagree on ``attribute`` ("dtype" or "device")."""
    given = {name: getattr(t, attribute) for name, t in tensors.items() if t is not None}
    first = next(iter(given.values()))
    if any(value != first for value in given.values()):
        listed = ", ".join(f"{name} {value}" for name, value in given.items())
        raise RuntimeError(f"{function}: expected every tensor to have the same {attribute}, got {listed}")


def _check_targets(target, num_classes, ignore_index, low, high):
    """Raise if a class index in ``target`` (1-D, lowest ``low``, highest ``high``) is out of range."""
    if low >= 0 and high < num_classes:  # the common case: nothing more to read
        return
    bad = (target != ignore_index) & ((target < 0) | (target >= num_classes))
    if bad.any():
        raise IndexError(
            f"cross_entropy: target {target[bad][0].item()} is out of bounds: class indices must lie in "
            f"[0, {num_classes}) (or equal ignore_index={ignore_index})"
        )


def _autocast_to_float32(input, *tensors):
    """Under autocast, losses run in float32, as PyTorch's own losses do. ``input`` is never None."""
    tensors = (input, *tensors)
    if not _autocast_enabled(input):
        return tensors
    return tuple(None if t is None else t.float() if t.is_floating_point() else t for t in tensors)


def _autocast_enabled(input):
    """Whether autocast is on for ``input``'s device. The first test (any device, 0.07 µs) spares the common
    case the second (0.4 µs, a per-call cost on every layer)."""
    # the first test is private but costs 0.07 µs against 0.4 µs, on every layer's every call
    return torch._C._is_any_autocast_enabled() and torch.is_autocast_enabled(input.device.type)


def _maybe_inplace(output, input, inplace):
    # the copy is recorded by autograd, so a gradient into the modified input still reaches our backward
    return input.copy_(output) if inplace else output


def _pair(function, name, value, low):
    """``value`` (an int or a sequence of one or two ints, each ≥ ``low``) as a pair of ints."""
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) == 1:
        pair = pair * 2
    if len(pair) != 2 or not all(isinstance(v, int) and v >= low for v in pair):
        raise RuntimeError(f"{function}: {name} must be an int ≥ {low} or a pair of them, got {value!r}")
    return pair


def _single(function, name, value, low):
    """``value`` (an int ≥ ``low`` or a 1-sequence of one) as an int."""
    single = value if isinstance(value, int) else tuple(value)
    if isinstance(single, tuple) and len(single) == 1:
        single = single[0]
    if not isinstance(single, int) or single < low:
        raise RuntimeError(f"{function}: {name} must be an int ≥ {low} (or a 1-tuple of one), got {value!r}")
    return single


def _unset(stride):
    """Whether a pooling stride is left to default to the kernel size: None or empty, as PyTorch takes it."""
    return stride is None or (not isinstance(stride, int) and len(stride) == 0)


def _batched_image(function, input, error=RuntimeError):
    """A ``(C, H, W)`` or ``(N, C, H, W)`` input as ``(N, C, H, W)`` (a view); else ``error``, torch's type."""
    if input.dim() not in (3, 4):
        raise error(f"{function}: expected a 3-D (C, H, W) or 4-D (N, C, H, W) input, got {input.dim()}-D")
    return input if input.dim() == 4 else input.unsqueeze(0)
