"""``TransformerEncoderLayer`` and ``TransformerEncoder``, drop-in twins of ``torch.nn``'s that always run the plain
path (attention, residual, layer norm, feed-forward), never PyTorch's fused inference kernels."""

import torch

from manualbp.nn.module import HandDerived

__all__ = ["TransformerEncoder", "TransformerEncoderLayer"]


class TransformerEncoderLayer(HandDerived, torch.nn.TransformerEncoderLayer):
    r"""x + attention(x), then x + feed-forward(x), each with a layer norm (after, or before with ``norm_first``).

    Built from its submodules, so its gradients are manualbp's where they are (``manualbp.convert`` makes the
    attention, the layer norms, the linears and the activation manualbp's, a function-valued ``activation``
    such as ``torch.nn.functional.relu`` included). Unlike ``torch.nn.TransformerEncoderLayer``, it never takes the
    inference fast path (``torch._transformer_encoder_layer_fwd``, in eval mode without gradients), which would run
    PyTorch's fused kernels instead of the submodules: the plain path runs in every mode.

    The constructor, parameters and ``state_dict`` are ``torch.nn.TransformerEncoderLayer``'s.

    Shape: src ``(N, L, E)`` with ``batch_first``, else ``(L, N, E)``, or ``(L, E)``; output the same.

    Examples::

        >>> layer = manualbp.nn.TransformerEncoderLayer(d_model=8, nhead=2, dim_feedforward=16, batch_first=True)
        >>> layer(torch.randn(3, 5, 8)).shape
        torch.Size([3, 5, 8])
    """

    def forward(self, src, src_mask=None, src_key_padding_mask=None, is_causal=False):
        x = src
        if self.norm_first:
            x = x + self._self_attention(self.norm1(x), src_mask, src_key_padding_mask, is_causal)
            return x + self._feed_forward(self.norm2(x))
        x = self.norm1(x + self._self_attention(x, src_mask, src_key_padding_mask, is_causal))
        return self.norm2(x + self._feed_forward(x))

    def _self_attention(self, x, attn_mask, key_padding_mask, is_causal):
        x = self.self_attn(
            x, x, x, attn_mask=attn_mask, key_padding_mask=key_padding_mask, need_weights=False, is_causal=is_causal
        )[0]
        return self.dropout1(x)

    def _feed_forward(self, x):
        return self.dropout2(self.linear2(self.dropout(self.activation(self.linear1(x)))))


class TransformerEncoder(HandDerived, torch.nn.TransformerEncoder):
    r"""A stack of encoder layers (and an optional final norm), run one after the other on the plain path: unlike
    ``torch.nn.TransformerEncoder``, it never packs padded inputs into nested tensors for the fused inference
    kernels, so every layer's own ``forward`` runs.

    The constructor, parameters and ``state_dict`` are ``torch.nn.TransformerEncoder``'s.

    Shape: src as for ``TransformerEncoderLayer``; mask ``(L, L)`` or ``(N·nhead, L, L)``; src_key_padding_mask
    ``(N, L)``; output of src's shape.

    Examples::

        >>> layer = manualbp.nn.TransformerEncoderLayer(d_model=8, nhead=2, dim_feedforward=16, batch_first=True)
        >>> manualbp.nn.TransformerEncoder(layer, num_layers=2)(torch.randn(3, 5, 8)).shape
        torch.Size([3, 5, 8])
    """

    def forward(self, src, mask=None, src_key_padding_mask=None, is_causal=None):
        output = src
        for layer in self.layers:
            output = layer(output, src_mask=mask, src_key_padding_mask=src_key_padding_mask, is_causal=bool(is_causal))
        return output if self.norm is None else self.norm(output)
