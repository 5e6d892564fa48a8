"""The softmax and log-softmax backward over the last dimension, one program per row, as Triton kernels."""

import torch
import triton
import triton.language as tl
from torch.library import triton_op, wrap_triton


@triton.jit
def softmax_backward_kernel(
    g_ptr, saved_ptr, out_ptr, columns, LOG: tl.constexpr, COMPUTE: tl.constexpr, BLOCK: tl.constexpr
):
    r"""One row of ``Softmax.times_jacobian(g, p, -1)`` = p ⊙ (g − Σ g·p) (``LOG`` false; ``saved`` is p), or of
    ``LogSoftmax.gradients(g, ℓ, -1)`` = g − p Σg with p = e^ℓ (``LOG`` true; ``saved`` is ℓ).

    The first pass over the row takes the sum, the second writes the product; rows are contiguous, of ``columns``
    entries. Half precision is computed in float32.
    """
    row = tl.program_id(0).to(tl.int64)
    g_ptr += row * columns
    saved_ptr += row * columns
    out_ptr += row * columns
    total = tl.full([], 0.0, COMPUTE)  # Σ g·p (softmax) or Σ g (log-softmax)
    for start in range(0, columns, BLOCK):
        offsets = start + tl.arange(0, BLOCK)
        inside = offsets < columns
        g = tl.load(g_ptr + offsets, mask=inside, other=0.0).to(COMPUTE)
        if LOG:
            total += tl.sum(g, 0)
        else:
            total += tl.sum(g * tl.load(saved_ptr + offsets, mask=inside, other=0.0).to(COMPUTE), 0)
    for start in range(0, columns, BLOCK):
        offsets = start + tl.arange(0, BLOCK)
        inside = offsets < columns
        g = tl.load(g_ptr + offsets, mask=inside, other=0.0).to(COMPUTE)
        saved = tl.load(saved_ptr + offsets, mask=inside, other=0.0).to(COMPUTE)
        out = g - tl.exp(saved) * total if LOG else saved * (g - total)  # g − p Σg, or p ⊙ (g − Σ g·p)
        tl.store(out_ptr + offsets, out.to(out_ptr.dtype.element_ty), mask=inside)


@triton_op("manualbp::softmax_backward", mutates_args={})
def softmax_backward(grad_output: torch.Tensor, saved: torch.Tensor, log: bool) -> torch.Tensor:
    """∂C/∂z of softmax (``log`` false, ``saved`` = p) or log-softmax (``log`` true, ``saved`` = ℓ) over the last
    dimension, from ∂C/∂(output) ``grad_output``; both of shape ``(*, K)``."""
    grad_output, saved = grad_output.contiguous(), saved.contiguous()
    columns = saved.shape[-1]
    out = torch.empty_like(saved)
    wrap_triton(softmax_backward_kernel)[(saved.numel() // max(columns, 1),)](
        grad_output,
        saved,
        out,
        columns,
        LOG=log,
        COMPUTE=tl.float64 if saved.dtype == torch.float64 else tl.float32,
        BLOCK=min(4096, triton.next_power_of_2(columns)),
    )
    return out
