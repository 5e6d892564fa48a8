"""t · f′ for the element-wise activations, one Triton kernel for all five (the activation a constexpr), and a second
that also takes its column sums, a Linear layer's bias gradient, in the same pass."""

import math

import torch
import triton
import triton.language as tl
from torch.library import triton_op, wrap_triton

# the numbers of manualbp.autograd.activation's GELU (constexpr: a Triton kernel reads no other global)
_SQRT_HALF = tl.constexpr(math.sqrt(0.5))
_INV_SQRT_2PI = tl.constexpr(0.5 * math.sqrt(2 / math.pi))
_SQRT_2_OVER_PI = tl.constexpr(math.sqrt(2 / math.pi))
_KAPPA = tl.constexpr(0.044715)

KINDS = ("relu", "leaky_relu", "sigmoid", "tanh", "gelu", "gelu_tanh")
BLOCK = 1024
ROW_BLOCK, COLUMN_BLOCK = 64, 32  # the (rows, columns) tile of the kernel that also sums the columns


@triton.jit
def _times_derivative(t, kept, slope_ptr, KIND: tl.constexpr):
    r"""``<Activation>.times_derivative(t, kept)`` = t · f′, element by element, for the activation ``KIND``:

    - ``"relu"``: ``ReLU.times_derivative(t, a)``, f′ = sign(a) with NaN made 1 (a = max(z, 0) ≥ 0);
    - ``"leaky_relu"``: ``LeakyReLU.times_derivative(t, side, s)``, t where side > 0, else t · s;
    - ``"sigmoid"``: ``Sigmoid.times_derivative(t, a)``, t · (1 − a) · a, left to right;
    - ``"tanh"``: ``Tanh.times_derivative(t, a)``, t · (1 − a·a), the bracket one fused multiply-add;
    - ``"gelu"``: ``GELU.times_derivative(t, z, "none")``, t · (Φ(z) + z φ(z)), Φ(z) = ½(1 + erf(z/√2)),
      φ(z) = e^(−z²/2)/√(2π);
    - ``"gelu_tanh"``: ``GELU.times_derivative(t, z, "tanh")``, t · (½(1 + tanh u) + ½z(1 − tanh²u)√(2/π)(1 + 3κz²)),
      u = √(2/π)(z + κz³), written with σ(2u) = ½(1 + tanh u).

    Computed in the tensors' precision, as the reference's torch ops are.
    """
    if KIND == "relu":
        # sign(a), 1 at NaN: a ≥ 0, so a > 0 gives 1 and a = 0 gives 0; a NaN fails both comparisons
        derivative = tl.where(kept == 0, 0.0, 1.0).to(t.dtype)
        out = t * derivative
    elif KIND == "leaky_relu":
        out = tl.where(kept > 0, t, t * tl.load(slope_ptr))  # s from a tensor: an argument would be rounded to float32
    elif KIND == "sigmoid":
        out = t * (1 - kept) * kept
    elif KIND == "tanh":
        out = t * tl.fma(-kept, kept, 1.0)
    elif KIND == "gelu":
        cdf = 0.5 * (1 + tl.math.erf(kept * _SQRT_HALF))
        pdf = _INV_SQRT_2PI * tl.exp(kept * kept * -0.5)
        out = t * (cdf + kept * pdf)
    else:  # "gelu_tanh"
        z_squared = kept * kept
        u = _SQRT_2_OVER_PI * (kept + _KAPPA * z_squared * kept)
        # ½(1 + tanh u) = σ(2u) and 1 − tanh²u = 4σ(2u)(1 − σ(2u)): the same f′ without tanh, which has no
        # interpreter twin in triton.language, and without the cancellation of 1 − 2/(e^{2u} + 1) near u = 0
        half_one_plus_tanh = tl.sigmoid(2 * u)
        du_dz = _SQRT_2_OVER_PI * (1 + 3 * _KAPPA * z_squared)
        out = t * (half_one_plus_tanh + 2 * kept * half_one_plus_tanh * (1 - half_one_plus_tanh) * du_dz)
    return out


@triton.jit
def times_derivative_kernel(t_ptr, kept_ptr, slope_ptr, out_ptr, numel, KIND: tl.constexpr, BLOCK: tl.constexpr):
    """t · f′ (``_times_derivative``) over ``numel`` elements, ``BLOCK`` per program."""
    offsets = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    inside = offsets < numel
    t = tl.load(t_ptr + offsets, mask=inside)
    kept = tl.load(kept_ptr + offsets, mask=inside)
    tl.store(out_ptr + offsets, _times_derivative(t, kept, slope_ptr, KIND), mask=inside)


@triton.jit
def times_derivative_and_column_sum_kernel(
    t_ptr,
    kept_ptr,
    slope_ptr,
    out_ptr,
    sum_ptr,
    rows,
    columns,
    KIND: tl.constexpr,
    COMPUTE: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    r"""δ = t · f′ (``_times_derivative``) of an ``(M, N)`` matrix and Σ_rows δ ``(N,)`` in the same pass: a
    Linear layer's ∂C/∂z and ∂C/∂b = Σ_rows ∂C/∂z (``LinearActivation.backward``: the activation's
    ``times_derivative``, then ``Linear.gradients``' bias sum). One program per ``BLOCK_N`` columns walks every row,
    so each column's sum is taken in one fixed order (the same bits on every run) and δ is never read back."""
    column = tl.program_id(0).to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N)
    column_inside = column < columns
    total = tl.zeros([BLOCK_N], COMPUTE)
    for start in range(0, rows, BLOCK_M):
        row = start + tl.arange(0, BLOCK_M).to(tl.int64)
        inside = (row < rows)[:, None] & column_inside[None, :]
        offsets = row[:, None] * columns + column[None, :]
        t = tl.load(t_ptr + offsets, mask=inside, other=0.0)
        kept = tl.load(kept_ptr + offsets, mask=inside, other=0.0)
        delta = _times_derivative(t, kept, slope_ptr, KIND)
        tl.store(out_ptr + offsets, delta, mask=inside)
        total += tl.sum(tl.where(inside, delta.to(COMPUTE), 0.0), 0)
    tl.store(sum_ptr + column, total.to(sum_ptr.dtype.element_ty), mask=column_inside)


@triton_op("manualbp::times_derivative", mutates_args={})
def times_derivative(t: torch.Tensor, kept: torch.Tensor, kind: str, negative_slope: float = 0.0) -> torch.Tensor:
    """t · f′ for the activation ``kind`` (one of ``KINDS``) from what its reference Function keeps (``kept``, the
    output a or the input z). t and kept: the same shape ``(*)`` and dtype; computed over their contiguous copies."""
    t, kept = t.contiguous(), kept.contiguous()
    out = torch.empty_like(t)
    numel = t.numel()
    wrap_triton(times_derivative_kernel)[(triton.cdiv(numel, BLOCK),)](
        t, kept, torch.full((1,), negative_slope, dtype=t.dtype, device=t.device), out, numel, KIND=kind, BLOCK=BLOCK
    )
    return out


@triton_op("manualbp::times_derivative_and_column_sum", mutates_args={})
def times_derivative_and_column_sum(
    t: torch.Tensor, kept: torch.Tensor, kind: str, negative_slope: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(t · f′, Σ_rows t · f′)`` for the activation ``kind`` (one of ``KINDS``): t and kept ``(M, N)``, the same
    dtype; the sum ``(N,)``, accumulated in float32 (float64 for float64)."""
    t, kept = t.contiguous(), kept.contiguous()
    rows, columns = t.shape
    out = torch.empty_like(t)
    column_sum = torch.empty(columns, dtype=t.dtype, device=t.device)
    if columns == 0:
        return out, column_sum
    wrap_triton(times_derivative_and_column_sum_kernel)[(triton.cdiv(columns, COLUMN_BLOCK),)](
        t,
        kept,
        torch.full((1,), negative_slope, dtype=t.dtype, device=t.device),
        out,
        column_sum,
        rows,
        columns,
        KIND=kind,
        COMPUTE=tl.float64 if t.dtype == torch.float64 else tl.float32,
        BLOCK_M=ROW_BLOCK,
        BLOCK_N=COLUMN_BLOCK,
    )
    return out, column_sum
