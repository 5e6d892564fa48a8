"""Cross-entropy's loss and its gradient over the logits in one pass over each row, as one Triton kernel."""

import torch
import triton
import triton.language as tl
from torch.library import triton_op, wrap_triton

from manualbp.autograd.cross_entropy import target_weight


@triton.jit(debug=True)  # keeps the device_assert on targets: a bad index must not read past the row
def cross_entropy_kernel(
    z_ptr,
    z_row_stride,
    target_ptr,
    weight_ptr,
    options_ptr,
    loss_ptr,
    grad_ptr,
    grad_row_stride,
    classes,
    ignore_index,
    HAS_WEIGHT: tl.constexpr,
    HAS_SMOOTHING: tl.constexpr,
    COMPUTE: tl.constexpr,
    BLOCK: tl.constexpr,
):
    r"""One row of ``CrossEntropyLoss.forward`` and ``CrossEntropyLoss.gradients`` at g = 1 (class indices).

    With q_c = (1 − ε) w_t [c = t] + ε w_c / K the row's target distribution (0 where t is ``ignore_index``) and
    ℓ = z − log Σ_k e^{z_k}:

        C_row = −Σ_c q_c ℓ_c = −(1 − ε) w_t ℓ_t − (ε/K) Σ_c w_c ℓ_c
        ∂C/∂z_k = s · (p_k Σ_c q_c − q_k),    p = e^ℓ,  Σ_c q_c = (1 − ε) w_t + (ε/K) Σ_c w_c

    where s = ``options[0]`` is 1/D for the mean (D = Σ_rows w_t, read from the device: no host synchronisation)
    and 1 otherwise, and ε = ``options[1]`` (a tensor in the computing precision, not an argument, which Triton
    would round to float32). The first pass keeps a running maximum m and Σ e^{z − m} (rescaled when m grows, as
    an online softmax does) and Σ w_c z_c; the second writes ∂C/∂z. The log-probabilities are never written.
    """
    row = tl.program_id(0).to(tl.int64)
    z_ptr += row * z_row_stride
    grad_ptr += row * grad_row_stride
    target = tl.load(target_ptr + row)
    if target == ignore_index:  # q = 0: the row costs nothing and its gradient is 0
        for start in range(0, classes, BLOCK):
            columns = start + tl.arange(0, BLOCK)
            tl.store(grad_ptr + columns, tl.zeros([BLOCK], grad_ptr.dtype.element_ty), mask=columns < classes)
        tl.store(loss_ptr + row, 0.0)
        return
    # on a GPU the targets are not read by the host, so no Python check saw them: the kernel asserts, as torch's do
    tl.device_assert((target >= 0) & (target < classes), "cross_entropy: a class index is outside [0, classes)")
    z_target = tl.load(z_ptr + target).to(COMPUTE)  # half precision is computed in float32
    running_max = z_target  # any entry of the row starts the running maximum
    running_sum = tl.full([], 0.0, COMPUTE)  # Σ e^{z − m}
    weighted_z_sum = tl.full([], 0.0, COMPUTE)  # Σ_c w_c z_c
    weight_sum = tl.full([], 0.0, COMPUTE)  # Σ_c w_c
    for start in range(0, classes, BLOCK):
        columns = start + tl.arange(0, BLOCK)
        inside = columns < classes
        z = tl.load(z_ptr + columns, mask=inside, other=float("-inf")).to(COMPUTE)
        block_max = tl.maximum(running_max, tl.max(z, 0))
        running_sum = running_sum * tl.exp(running_max - block_max) + tl.sum(tl.exp(z - block_max), 0)
        running_max = block_max
        if HAS_SMOOTHING:
            if HAS_WEIGHT:
                w = tl.load(weight_ptr + columns, mask=inside, other=0.0).to(COMPUTE)
            else:
                w = tl.where(inside, 1.0, 0.0).to(COMPUTE)
            weighted_z_sum += tl.sum(w * tl.where(inside, z, 0.0), 0)  # 0, not 0 · (−∞), past the row
            weight_sum += tl.sum(w, 0)
    log_sum_exp = running_max + tl.log(running_sum)
    w_t = tl.load(weight_ptr + target).to(COMPUTE) if HAS_WEIGHT else tl.full([], 1.0, COMPUTE)
    label_smoothing = tl.load(options_ptr + 1)
    picked = (1 - label_smoothing) * w_t  # q_t without the smoothing's share
    spread = label_smoothing / classes  # ε/K
    loss = -picked * (z_target - log_sum_exp)
    q_sum = picked  # Σ_c q_c
    if HAS_SMOOTHING:
        loss -= spread * (weighted_z_sum - log_sum_exp * weight_sum)
        q_sum += spread * weight_sum
    tl.store(loss_ptr + row, loss)
    scale = tl.load(options_ptr)
    for start in range(0, classes, BLOCK):
        columns = start + tl.arange(0, BLOCK)
        inside = columns < classes
        z = tl.load(z_ptr + columns, mask=inside, other=0.0).to(COMPUTE)
        q = tl.where(columns == target, picked, 0.0)
        if HAS_SMOOTHING:
            if HAS_WEIGHT:
                q += spread * tl.load(weight_ptr + columns, mask=inside, other=0.0).to(COMPUTE)
            else:
                q += spread
        p = tl.exp(z - log_sum_exp)
        grad = scale * (p * q_sum - q)  # ∂C/∂z = s(p Σq − q)
        tl.store(grad_ptr + columns, grad.to(grad_ptr.dtype.element_ty), mask=inside)


@triton_op("manualbp::cross_entropy_rows", mutates_args={})
def cross_entropy_rows(
    z: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None,
    scale: torch.Tensor,
    ignore_index: int,
    label_smoothing: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's loss ``(M,)`` and ∂C/∂z ``(M, K)`` at g = 1 times ``scale`` (a 0-dim tensor in the computing
    precision), by ``cross_entropy_kernel``, one program per row. z must have unit stride along the classes."""
    rows, classes = z.shape
    options = torch.stack([scale, torch.full_like(scale, label_smoothing)])
    loss = torch.empty(rows, dtype=z.dtype, device=z.device)
    grad = torch.empty_like(z, memory_format=torch.contiguous_format)
    wrap_triton(cross_entropy_kernel)[(rows,)](
        z,
        z.stride(0),
        target,
        z if weight is None else weight,  # never read without a weight: any pointer will do
        options,
        loss,
        grad,
        grad.stride(0),
        classes,
        ignore_index,
        HAS_WEIGHT=weight is not None,
        HAS_SMOOTHING=label_smoothing != 0,
        COMPUTE=tl.float64 if scale.dtype == torch.float64 else tl.float32,
        BLOCK=min(4096, triton.next_power_of_2(classes)),
    )
    return loss, grad


def cross_entropy(z, target, weight, ignore_index, label_smoothing, reduction):
    """C reduced as ``reduction`` says, and ∂C/∂z at g = 1 (per row for ``"none"``), in one kernel launch plus
    the reduction of the row losses. Shapes as ``CrossEntropyLoss``'s, class-index targets only."""
    z = z if z.stride(1) == 1 else z.contiguous()
    compute = torch.float64 if z.dtype == torch.float64 else torch.float32
    if reduction == "mean":
        divisor = target_weight(target, weight, ignore_index, z).sum()  # D = Σ_rows w_t, kept on the device
        scale = (1 / divisor).to(compute)
    else:
        divisor, scale = None, torch.ones((), dtype=compute, device=z.device)
    loss, grad = cross_entropy_rows(z, target, weight, scale, ignore_index, label_smoothing)
    if reduction == "none":
        return loss, grad
    return (loss.sum() / divisor if reduction == "mean" else loss.sum()), grad


class CrossEntropy(torch.autograd.Function):
    """``autograd.CrossEntropyLoss`` for class-index targets, its gradient written by the forward kernel: the
    backward only multiplies it by the upstream gradient g. It always multiplies: skipping g = 1 would mean reading g
    on the host, a synchronisation with the GPU on every step. Differentiable once (no jvp, no double backward:
    the fast tier runs the reference Function where those are needed)."""

    @staticmethod
    def forward(ctx, z, target, weight, ignore_index, label_smoothing, reduction):
        loss, grad = cross_entropy(z, target, weight, ignore_index, label_smoothing, reduction)
        ctx.save_for_backward(grad)
        ctx.reduction = reduction
        return loss

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_loss):
        (grad,) = ctx.saved_tensors
        grad_loss = grad_loss.unsqueeze(1) if ctx.reduction == "none" else grad_loss
        return grad * grad_loss, None, None, None, None, None
