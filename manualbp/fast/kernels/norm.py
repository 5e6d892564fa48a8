"""The layer-norm, group-norm and batch-norm backward: the statistics, the two sums and the combination in one Triton
kernel each, as Liger's and llm.c's layer norm."""

import torch
import triton
import triton.language as tl
from torch.library import triton_op, wrap_triton

PROGRAMS = 256  # at most this many programs, each taking a run of rows and one partial sum of ∂C/∂γ and ∂C/∂β
# the widest row the kernel holds in one block (as Liger-Kernel's fused layer norm): wider rows take the reference
FUSED_COLUMNS = 65536
BATCH_NORM_BLOCK = 1024  # the values of one channel that the batch-norm kernel takes at a time


@triton.jit
def layer_norm_backward_kernel(
    g_ptr,
    x_ptr,
    weight_ptr,
    grad_x_ptr,
    partial_weight_ptr,
    partial_bias_ptr,
    rows,
    columns,
    rows_per_program,
    eps,
    HAS_WEIGHT: tl.constexpr,
    COMPUTE: tl.constexpr,
    BLOCK: tl.constexpr,
):
    r"""``LayerNorm.backward`` for ``rows`` examples of ``columns`` = N entries (the normalized shape, flattened),
    one run of rows per program:

        x̂ = (x − μ) r,  r = 1/√(σ² + ε)  (``LayerNorm.normalize``, σ² the biased variance, taken about μ)
        ĝ = g ⊙ γ,  ∂C/∂x = (r/N)(N ĝ − Σ ĝ − x̂ Σ(ĝ ⊙ x̂))  (``LayerNorm.times_jacobian``)
        ∂C/∂γ = Σ_examples g ⊙ x̂,  ∂C/∂β = Σ_examples g

    μ, σ², Σ ĝ and Σ ĝ ⊙ x̂ are taken over the row held whole in one block (N ≤ ``BLOCK``); each program writes its
    rows' share of the last two sums, which the launcher adds up.
    """
    program = tl.program_id(0).to(tl.int64)
    offsets = tl.arange(0, BLOCK)
    inside = offsets < columns
    if HAS_WEIGHT:
        weight = tl.load(weight_ptr + offsets, mask=inside, other=0.0).to(COMPUTE)
    grad_weight = tl.zeros([BLOCK], COMPUTE)
    grad_bias = tl.zeros([BLOCK], COMPUTE)
    for i in range(0, rows_per_program):
        row = program * rows_per_program + i
        held = inside & (
            tl.full([BLOCK], row, tl.int64) < rows
        )  # the last program's run may pass the last row: g = 0 there adds nothing
        start = row * columns
        x = tl.load(x_ptr + start + offsets, mask=held, other=0.0).to(COMPUTE)
        g = tl.load(g_ptr + start + offsets, mask=held, other=0.0).to(COMPUTE)
        mean = tl.sum(x, 0) / columns
        centred = tl.where(inside, x - mean, 0.0)
        r = 1 / tl.sqrt(tl.sum(centred * centred, 0) / columns + eps)
        x_hat = centred * r
        g_hat = g * weight if HAS_WEIGHT else g  # ĝ = g ⊙ γ
        grad_x = (r / columns) * (columns * g_hat - tl.sum(g_hat, 0) - x_hat * tl.sum(g_hat * x_hat, 0))
        tl.store(grad_x_ptr + start + offsets, grad_x.to(grad_x_ptr.dtype.element_ty), mask=held)
        grad_weight += g * x_hat
        grad_bias += g
    tl.store(partial_weight_ptr + program * columns + offsets, grad_weight, mask=inside)
    tl.store(partial_bias_ptr + program * columns + offsets, grad_bias, mask=inside)


@triton_op("manualbp::layer_norm_backward", mutates_args={})
def layer_norm_backward(
    grad_output: torch.Tensor, x: torch.Tensor, weight: torch.Tensor | None, columns: int, eps: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """∂C/∂x ``(*, *normalized_shape)``, ∂C/∂γ and ∂C/∂β (flattened, ``(N,)``, N = ``columns`` =
    prod(normalized_shape)) from ∂C/∂y ``grad_output`` and the saved input x, as ``LayerNorm.backward``."""
    grad_output, x = grad_output.contiguous(), x.contiguous()
    rows = x.numel() // columns
    programs = max(1, min(rows, PROGRAMS))
    compute, grad_x, partial_weight, partial_bias = _gradient_buffers(x, (programs, columns))
    wrap_triton(layer_norm_backward_kernel)[(programs,)](
        grad_output,
        x,
        x if weight is None else weight.contiguous(),  # never read without a weight: any pointer will do
        grad_x,
        partial_weight,
        partial_bias,
        rows,
        columns,
        triton.cdiv(rows, programs),
        eps,
        HAS_WEIGHT=weight is not None,
        COMPUTE=tl.float64 if compute == torch.float64 else tl.float32,
        BLOCK=triton.next_power_of_2(columns),
    )
    return grad_x, partial_weight.sum(0).to(x.dtype), partial_bias.sum(0).to(x.dtype)


@triton.jit
def group_norm_backward_kernel(
    g_ptr,
    x_ptr,
    weight_ptr,
    grad_x_ptr,
    partial_weight_ptr,
    partial_bias_ptr,
    groups,
    channels_per_group,
    positions,
    eps,
    HAS_WEIGHT: tl.constexpr,
    COMPUTE: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_S: tl.constexpr,
):
    r"""``GroupNorm.gradients`` for one example's group of channels per program, held whole as a
    ``(channels, positions)`` block: M = (C/G) · positions values,

        x̂ = (x − μ) r,  r = 1/√(σ² + ε)  (``normalize`` over the group's M values)
        ĝ = γ g (γ of each value's channel),  ∂C/∂x = (r/M)(M ĝ − Σ ĝ − x̂ Σ(ĝ ⊙ x̂))  (``times_jacobian``)
        ∂C/∂γ_c = Σ_{n, positions} g x̂,  ∂C/∂β_c = Σ_{n, positions} g

    Each program writes its example's share of the last two, one number per channel of its group, which the launcher
    sums over the examples.
    """
    row = tl.program_id(0).to(tl.int64)  # example n's group: n · G + group
    group = row % groups
    channel = tl.arange(0, BLOCK_C)
    position = tl.arange(0, BLOCK_S)
    channel_inside = channel < channels_per_group
    inside = channel_inside[:, None] & (position[None, :] < positions)
    count = channels_per_group * positions
    offsets = row * count + channel[:, None] * positions + position[None, :]
    x = tl.load(x_ptr + offsets, mask=inside, other=0.0).to(COMPUTE)
    g = tl.load(g_ptr + offsets, mask=inside, other=0.0).to(COMPUTE)
    mean = tl.sum(tl.sum(x, 1), 0) / count
    centred = tl.where(inside, x - mean, 0.0)
    r = 1 / tl.sqrt(tl.sum(tl.sum(centred * centred, 1), 0) / count + eps)
    x_hat = centred * r
    if HAS_WEIGHT:
        weight = tl.load(weight_ptr + group * channels_per_group + channel, mask=channel_inside, other=0.0)
        g_hat = g * weight.to(COMPUTE)[:, None]  # ĝ = γ g
    else:
        g_hat = g
    sum_g_hat = tl.sum(tl.sum(g_hat, 1), 0)
    sum_g_hat_x_hat = tl.sum(tl.sum(g_hat * x_hat, 1), 0)
    grad_x = (r / count) * (count * g_hat - sum_g_hat - x_hat * sum_g_hat_x_hat)
    tl.store(grad_x_ptr + offsets, grad_x.to(grad_x_ptr.dtype.element_ty), mask=inside)
    shares = row * channels_per_group + channel  # (n, c) in an (N, C) tensor: the group's channels are consecutive
    tl.store(partial_weight_ptr + shares, tl.sum(g * x_hat, 1), mask=channel_inside)
    tl.store(partial_bias_ptr + shares, tl.sum(g, 1), mask=channel_inside)


def group_norm_blocks(channels_per_group, positions):
    """The ``(BLOCK_C, BLOCK_S)`` block that holds one group of ``channels_per_group`` channels of ``positions``
    values each; the kernel applies where their product is at most ``FUSED_COLUMNS``."""
    return triton.next_power_of_2(channels_per_group), triton.next_power_of_2(positions)


@triton_op("manualbp::group_norm_backward", mutates_args={})
def group_norm_backward(
    grad_output: torch.Tensor, x: torch.Tensor, weight: torch.Tensor | None, num_groups: int, eps: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """∂C/∂x ``(N, C, *)``, ∂C/∂γ and ∂C/∂β ``(C,)`` from ∂C/∂y ``grad_output`` and the saved input x, as
    ``GroupNorm.gradients``."""
    grad_output, x = grad_output.contiguous(), x.contiguous()
    examples, channels = x.shape[:2]
    positions = x.numel() // max(examples * channels, 1)
    compute, grad_x, partial_weight, partial_bias = _gradient_buffers(x, (examples, channels))
    if examples * num_groups > 0:
        block_c, block_s = group_norm_blocks(channels // num_groups, positions)
        wrap_triton(group_norm_backward_kernel)[(examples * num_groups,)](
            grad_output,
            x,
            x if weight is None else weight.contiguous(),  # never read without a weight: any pointer will do
            grad_x,
            partial_weight,
            partial_bias,
            num_groups,
            channels // num_groups,
            positions,
            eps,
            HAS_WEIGHT=weight is not None,
            COMPUTE=tl.float64 if compute == torch.float64 else tl.float32,
            BLOCK_C=block_c,
            BLOCK_S=block_s,
        )
    return grad_x, partial_weight.sum(0).to(x.dtype), partial_bias.sum(0).to(x.dtype)


@triton.jit
def batch_norm_backward_kernel(
    g_ptr,
    x_ptr,
    weight_ptr,
    grad_x_ptr,
    grad_weight_ptr,
    grad_bias_ptr,
    examples,
    channels,
    positions,
    eps,
    HAS_WEIGHT: tl.constexpr,
    COMPUTE: tl.constexpr,
    BLOCK: tl.constexpr,
):
    r"""``BatchNorm.gradients`` in training for one channel per program: its M = N · positions values, strided
    through the ``(N, C, positions)`` tensor, taken in three runs of blocks,

        μ = Σ x / M                                                     (first run)
        r = 1/√(Σ (x − μ)² / M + ε),  Σ g,  Σ g (x − μ)                 (second run: ``normalize`` and both sums)
        ∂C/∂x = r (ĝ − mean ĝ − x̂ mean(ĝ x̂)),  ĝ = γ g,  x̂ = (x − μ) r  (third run: ``times_jacobian``)

    with mean ĝ = γ Σ g / M and mean(ĝ x̂) = γ r Σ g (x − μ) / M; and the channel's ∂C/∂γ = Σ g x̂ = r Σ g (x − μ)
    and ∂C/∂β = Σ g (``affine_gradients``). The variance is taken about μ, as the reference's, never as
    Σx² − M μ², which cancels.
    """
    c = tl.program_id(0).to(tl.int64)
    count = examples * positions
    offsets = tl.arange(0, BLOCK)
    total = tl.zeros([BLOCK], COMPUTE)
    for start in range(0, count, BLOCK):
        i = start + offsets
        at = (i // positions) * channels * positions + c * positions + i % positions  # value i of channel c
        total += tl.load(x_ptr + at, mask=i < count, other=0.0).to(COMPUTE)
    mean = tl.sum(total, 0) / count
    squares = tl.zeros([BLOCK], COMPUTE)
    sum_g = tl.zeros([BLOCK], COMPUTE)
    sum_g_centred = tl.zeros([BLOCK], COMPUTE)
    for start in range(0, count, BLOCK):
        i = start + offsets
        inside = i < count
        at = (i // positions) * channels * positions + c * positions + i % positions
        centred = tl.where(inside, tl.load(x_ptr + at, mask=inside, other=0.0).to(COMPUTE) - mean, 0.0)
        g = tl.load(g_ptr + at, mask=inside, other=0.0).to(COMPUTE)
        squares += centred * centred
        sum_g += g
        sum_g_centred += g * centred
    r = 1 / tl.sqrt(tl.sum(squares, 0) / count + eps)
    sum_g_total = tl.sum(sum_g, 0)
    sum_g_centred_total = tl.sum(sum_g_centred, 0)
    weight = tl.load(weight_ptr + c).to(COMPUTE) if HAS_WEIGHT else tl.full([], 1.0, COMPUTE)  # γ of channel c
    mean_g_hat = weight * sum_g_total / count  # mean ĝ
    mean_g_hat_x_hat = weight * r * sum_g_centred_total / count  # mean(ĝ x̂)
    for start in range(0, count, BLOCK):
        i = start + offsets
        inside = i < count
        at = (i // positions) * channels * positions + c * positions + i % positions
        x_hat = (tl.load(x_ptr + at, mask=inside, other=0.0).to(COMPUTE) - mean) * r
        g_hat = weight * tl.load(g_ptr + at, mask=inside, other=0.0).to(COMPUTE)
        grad_x = r * (g_hat - mean_g_hat - x_hat * mean_g_hat_x_hat)
        tl.store(grad_x_ptr + at, grad_x.to(grad_x_ptr.dtype.element_ty), mask=inside)
    tl.store(grad_weight_ptr + c, r * sum_g_centred_total)
    tl.store(grad_bias_ptr + c, sum_g_total)


@triton_op("manualbp::batch_norm_backward", mutates_args={})
def batch_norm_backward(
    grad_output: torch.Tensor, x: torch.Tensor, weight: torch.Tensor | None, eps: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """∂C/∂x ``(N, C, *)``, ∂C/∂γ and ∂C/∂β ``(C,)`` of batch norm in training (the batch's statistics) from ∂C/∂y
    ``grad_output`` and the saved input x, as ``BatchNorm.gradients``; one program per channel."""
    grad_output, x = grad_output.contiguous(), x.contiguous()
    examples, channels = x.shape[:2]
    positions = x.numel() // max(examples * channels, 1)
    compute, grad_x, grad_weight, grad_bias = _gradient_buffers(x, (channels,))
    if examples * positions > 0:
        wrap_triton(batch_norm_backward_kernel)[(channels,)](
            grad_output,
            x,
            x if weight is None else weight.contiguous(),  # never read without a weight: any pointer will do
            grad_x,
            grad_weight,
            grad_bias,
            examples,
            channels,
            positions,
            eps,
            HAS_WEIGHT=weight is not None,
            COMPUTE=tl.float64 if compute == torch.float64 else tl.float32,
            BLOCK=BATCH_NORM_BLOCK,
        )
    return grad_x, grad_weight.to(x.dtype), grad_bias.to(x.dtype)


def _gradient_buffers(x, shape):
    """What a norm's backward launcher fills: the computing dtype (float64 for float64 x, float32 otherwise), an
    empty ∂C/∂x like x, and two zeroed ``shape`` tensors in that dtype for the sums of ∂C/∂γ and ∂C/∂β."""
    compute = torch.float64 if x.dtype == torch.float64 else torch.float32
    sums = (torch.zeros(shape, dtype=compute, device=x.device) for _ in range(2))
    return compute, torch.empty_like(x), *sums
