"""The embedding lookup, a = W[i], whose backward is a scatter-add of rows."""

import torch


class Embedding(torch.autograd.Function):
    r"""a = W[i]: each index i picks row i of the table W (``weight``), one row per index.

    Output row n is a_n = W_{i_n}, so ∂a_{n,d}/∂W_{k,d} = [i_n = k]: a row of W feeds every output row that
    looked it up, and nothing else. With g = ∂C/∂a the chain rule sums over those output rows:

        ∂C/∂W_k = Σ_{n : i_n = k} g_n

    a scatter-add of the rows of g into a table of zeros (``index_add``). A row never looked up gets 0. The row
    ``padding_idx`` gets 0 too, by convention (PyTorch's): its g rows are zeroed before the scatter, so padding
    never trains. That is a choice, not the derivative: the output does depend on W[padding_idx].

    With ``scale_grad_by_freq`` (PyTorch's option, again a convention rather than a derivative), each row's sum is
    divided by the number of times c_k its index occurs in the batch: ∂C/∂W_k = (1/c_k) Σ_{n : i_n = k} g_n, which
    is the scatter-add of the rows g_n / c_{i_n}.

    The jvp is the lookup again, of the tangent table: ȧ_n = Ẇ_{i_n}, zero at ``padding_idx`` to match the backward
    (both treat the padding row as a constant), and divided by c_{i_n} with ``scale_grad_by_freq`` (the transpose
    of the backward above). The indices are not differentiable.

    Shapes: indices: ``(*)``, integer; weight: ``(num_embeddings, embedding_dim)``; a and grad_output:
    ``(*, embedding_dim)``.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(indices, weight, padding_idx, scale_grad_by_freq):
        return torch.nn.functional.embedding(indices, weight)

    @staticmethod
    def setup_context(ctx, inputs, output):
        indices, weight, padding_idx, scale_grad_by_freq = inputs
        ctx.save_for_backward(indices)
        ctx.save_for_forward(indices)
        ctx.num_embeddings, ctx.padding_idx, ctx.scale_grad_by_freq = weight.shape[0], padding_idx, scale_grad_by_freq

    @staticmethod
    def backward(ctx, grad_output):
        return Embedding.gradients(
            grad_output, *ctx.saved_tensors, ctx.num_embeddings, ctx.padding_idx, ctx.scale_grad_by_freq
        )

    @staticmethod
    def jvp(ctx, _, weight_tangent, __, ___):
        return Embedding.tangent(
            weight_tangent, *ctx.saved_tensors, ctx.num_embeddings, ctx.padding_idx, ctx.scale_grad_by_freq
        )

    @staticmethod
    def gradients(grad_output, indices, num_embeddings, padding_idx, scale_grad_by_freq):
        rows = Embedding.prepare(grad_output, indices, padding_idx, scale_grad_by_freq, num_embeddings)
        rows = rows.reshape(-1, grad_output.shape[-1])
        grad_weight = grad_output.new_zeros(num_embeddings, grad_output.shape[-1])
        # ∂C/∂W_k = Σ_{n : i_n = k} g_n: a repeated index adds its rows up
        return None, grad_weight.index_add(0, indices.reshape(-1), rows), None, None

    @staticmethod
    def tangent(weight_tangent, indices, num_embeddings, padding_idx, scale_grad_by_freq):
        rows = weight_tangent[indices]  # ȧ = Ẇ[i]
        return Embedding.prepare(rows, indices, padding_idx, scale_grad_by_freq, num_embeddings)

    @staticmethod
    def prepare(rows, indices, padding_idx, scale_grad_by_freq, num_embeddings):
        """``rows`` (one per index) with the rows of padding_idx set to 0 (all kept when it is None), and each divided
        by how often its index occurs when ``scale_grad_by_freq``."""
        if padding_idx is not None:
            rows = rows.masked_fill((indices == padding_idx).unsqueeze(-1), 0)
        if scale_grad_by_freq:
            counts = torch.bincount(indices.reshape(-1), minlength=num_embeddings)
            rows = rows / counts[indices].unsqueeze(-1)
        return rows
