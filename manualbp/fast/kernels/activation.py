"""t · f′ for the element-wise activations, one Triton kernel for all five (the activation a constexpr)."""

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


@triton.jit
def times_derivative_kernel(t_ptr, kept_ptr, slope_ptr, out_ptr, numel, KIND: tl.constexpr, BLOCK: tl.constexpr):
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
    offsets = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    inside = offsets < numel
    t = tl.load(t_ptr + offsets, mask=inside)
    kept = tl.load(kept_ptr + offsets, mask=inside)
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
    tl.store(out_ptr + offsets, out, mask=inside)


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
