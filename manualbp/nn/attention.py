"""``MultiheadAttention``, the drop-in twin of ``torch.nn.MultiheadAttention``."""

import torch

from manualbp import functional as F
from manualbp.nn.module import HandDerived

__all__ = ["MultiheadAttention"]


class MultiheadAttention(HandDerived, torch.nn.MultiheadAttention):
    r"""Multi-head attention: per head h, O_h = softmax(q_h k_hᵀ/√d + mask) v_h, with q, k, v the input projections
    and the heads' outputs joined and projected again. Every product runs through manualbp's ``linear`` and
    ``scaled_dot_product_attention`` (whose backward is derived in ``manualbp.autograd.ScaledDotProductAttention``).

    The constructor, parameters (``in_proj_weight`` or ``q/k/v_proj_weight``, ``in_proj_bias``, ``out_proj``,
    ``bias_k``, ``bias_v``) and ``state_dict`` are ``torch.nn.MultiheadAttention``'s. Unlike it, there is no
    inference fast path: the same hand-derived code runs in every mode. The returned weights are those before
    attention dropout (PyTorch's are after it), and a query whose every key is masked attends to nothing (its
    output is the output projection's bias) where PyTorch's gives nan.

    Shape: query ``(N, L, E)`` with ``batch_first``, ``(L, N, E)`` without, or ``(L, E)`` unbatched; key and value
    likewise with S; output of query's shape; weights ``(N, L, S)`` or ``(N, num_heads, L, S)``.

    Examples::

        >>> attention = manualbp.nn.MultiheadAttention(8, 2, batch_first=True)
        >>> x = torch.randn(3, 5, 8)
        >>> attention(x, x, x)[0].shape
        torch.Size([3, 5, 8])
    """

    def forward(
        self,
        query,
        key,
        value,
        key_padding_mask=None,
        need_weights=True,
        attn_mask=None,
        average_attn_weights=True,
        is_causal=False,
    ):
        batched = query.dim() == 3
        if self.batch_first and batched:  # the functional form is sequence-first, (L, N, E)
            query, key, value = (x.transpose(0, 1) for x in (query, key, value))
        output, weights = F.multi_head_attention_forward(
            query,
            key,
            value,
            self.embed_dim,
            self.num_heads,
            self.in_proj_weight,
            self.in_proj_bias,
            self.bias_k,
            self.bias_v,
            self.add_zero_attn,
            self.dropout,
            self.out_proj.weight,
            self.out_proj.bias,
            training=self.training,
            key_padding_mask=key_padding_mask,
            need_weights=need_weights,
            attn_mask=attn_mask,
            use_separate_proj_weight=not self._qkv_same_embed_dim,
            q_proj_weight=self.q_proj_weight,
            k_proj_weight=self.k_proj_weight,
            v_proj_weight=self.v_proj_weight,
            average_attn_weights=average_attn_weights,
            is_causal=is_causal,
        )
        if self.batch_first and batched:
            output = output.transpose(0, 1)
        return output, weights
