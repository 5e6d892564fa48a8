"""Verify your own autograd Function with manualbp.verify: Swish with a learned slope per feature.

    a = x · σ(β x),  β of shape (features,) broadcast over the rows of x (Ramachandran et al., "Searching for
    Activation Functions", 2017)

With s = σ(β x) and σ′ = s (1 − s), the chain rule gives, for g = ∂C/∂a,

    ∂C/∂x = g · (s + β x s (1 − s))
    ∂C/∂β = Σ_rows g · x² s (1 − s)       (β is shared by every row: its gradient sums over them)

and forward mode pushes tangents ẋ, β̇ the other way: ȧ = (s + β x s (1 − s)) ẋ + x² s (1 − s) β̇.

    python examples/verify_custom_function.py                        # the table: every row passes
    python examples/verify_custom_function.py --mistake unsummed     # a mistake, and the rows that catch it
"""

import argparse
import sys

import torch

import manualbp


class Swish(torch.autograd.Function):
    """a = x σ(β x); x: ``(rows, features)``, beta: ``(features,)``."""

    generate_vmap_rule = True  # torch.func.vmap runs forward and backward per sample

    @staticmethod
    def forward(x, beta):
        return x * torch.sigmoid(beta * x)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, beta = inputs
        ctx.save_for_backward(x, beta)
        ctx.save_for_forward(x, beta)

    @staticmethod
    def derivatives(x, beta):
        """(∂a/∂x, ∂a/∂β) element-wise."""
        s = torch.sigmoid(beta * x)
        slope = s * (1 - s)
        return s + beta * x * slope, x * x * slope

    @staticmethod
    def backward(ctx, grad_output):
        x, beta = ctx.saved_tensors
        d_x, d_beta = Swish.derivatives(x, beta)
        grad_x = grad_output * d_x if ctx.needs_input_grad[0] else None
        grad_beta = (grad_output * d_beta).sum(0) if ctx.needs_input_grad[1] else None  # Σ over the rows
        return grad_x, grad_beta

    @staticmethod
    def jvp(ctx, x_tangent, beta_tangent):
        x, beta = ctx.saved_tensors
        d_x, d_beta = Swish.derivatives(x, beta)
        return d_x * x_tangent + d_beta * beta_tangent


def swish_reference(x, beta):
    """The same forward in plain PyTorch: autograd through it is the truth."""
    return x * torch.sigmoid(beta * x)


class SwishOffByATenthOfAPercent(Swish):
    @staticmethod
    def backward(ctx, grad_output):
        grad_x, grad_beta = Swish.backward(ctx, grad_output)
        return None if grad_x is None else grad_x * 1.001, grad_beta


class SwishUnsummed(Swish):
    @staticmethod
    def backward(ctx, grad_output):
        x, beta = ctx.saved_tensors
        d_x, d_beta = Swish.derivatives(x, beta)
        return grad_output * d_x, grad_output * d_beta  # forgets the sum over rows, and needs_input_grad


MISTAKES = {"none": Swish, "scaled": SwishOffByATenthOfAPercent, "unsummed": SwishUnsummed}


def main(argv=None):
    parser = argparse.ArgumentParser(
        description="Run manualbp.verify on a hand-written Swish Function (or a deliberately wrong one) against "
        "plain PyTorch, and print its table. Exits 1 if a row fails.",
    )
    parser.add_argument(
        "--mistake",
        choices=MISTAKES,
        default="none",
        help="none: the right Function; scaled: ∂C/∂x × 1.001 (gradcheck's default tolerance misses it); "
        "unsummed: ∂C/∂β not summed over the rows (default: none)",
    )
    parser.add_argument("--rows", type=int, default=4, help="rows of x (default: 4)")
    parser.add_argument("--features", type=int, default=3, help="features of x and β (default: 3)")
    parser.add_argument("--compile", action="store_true", help="also check torch.compile (tens of seconds)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the inputs (default: 0)")
    args = parser.parse_args(argv)
    for name in ("rows", "features"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be positive, got {getattr(args, name)}")

    generator = torch.Generator().manual_seed(args.seed)
    x = torch.randn(args.rows, args.features, generator=generator)
    beta = torch.rand(args.features, generator=generator) + 0.5
    report = manualbp.verify(MISTAKES[args.mistake], swish_reference, (x, beta), compile=args.compile)
    print(report)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
