"""Write your own nn.Module on manualbp's functional API: a residual MLP block, trained on a toy regression.

    python examples/functional_module.py

``manualbp.functional`` has ``torch.nn.functional``'s signatures, so a module written against one runs on the
other by changing a single name. The blocks below take the functional module as an argument; the script trains
with manualbp's gradients and, at every step, checks them against torch.nn.functional's on the same weights.
"""

import argparse
import math

import torch

import manualbp.functional


class ResidualBlock(torch.nn.Module):
    """x + W₂ gelu(W₁ LayerNorm(x) + b₁) + b₂, its linear and GELU steps taken from ``functional``."""

    def __init__(self, width, hidden, functional=manualbp.functional):
        super().__init__()
        self.functional = functional
        self.norm = torch.nn.LayerNorm(width)
        self.w1 = torch.nn.Parameter(torch.randn(hidden, width) / math.sqrt(width))
        self.b1 = torch.nn.Parameter(torch.zeros(hidden))
        self.w2 = torch.nn.Parameter(torch.randn(width, hidden) / math.sqrt(hidden))
        self.b2 = torch.nn.Parameter(torch.zeros(width))

    def forward(self, x):
        f = self.functional
        return x + f.linear(f.gelu(f.linear(self.norm(x), self.w1, self.b1)), self.w2, self.b2)


class Regressor(torch.nn.Module):
    def __init__(self, functional=manualbp.functional, width=16, depth=2):
        super().__init__()
        self.functional = functional
        self.embed = torch.nn.Parameter(torch.randn(width, 4) / 2)
        self.blocks = torch.nn.ModuleList(ResidualBlock(width, 4 * width, functional) for _ in range(depth))
        self.head = torch.nn.Parameter(torch.randn(1, width) / 4)

    def forward(self, x):
        h = self.functional.linear(x, self.embed)
        for block in self.blocks:
            h = block(h)
        return self.functional.linear(h, self.head).squeeze(-1)


def use(model, functional):
    """Point every block of ``model`` at ``functional`` (``manualbp.functional`` or ``torch.nn.functional``)."""
    for module in model.modules():
        if hasattr(module, "functional"):
            module.functional = functional


def main(steps=200, seed=0):
    """Train with manualbp's gradients; at every step, also take torch.nn.functional's on the same weights.

    Returns ``(first loss, last loss, largest relative gradient difference over all steps)``.
    """
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(256, 4, generator=generator)
    y = torch.sin(x[:, 0]) + x[:, 1] * x[:, 2]  # a smooth target the blocks can fit
    torch.manual_seed(seed)
    model = Regressor(manualbp.functional)
    parameters = list(model.parameters())
    optimizer = torch.optim.Adam(parameters, lr=3e-3)
    losses, worst = [], 0.0
    for _ in range(steps):
        use(model, torch.nn.functional)
        reference = torch.autograd.grad(torch.nn.functional.mse_loss(model(x), y), parameters)
        use(model, manualbp.functional)
        loss = manualbp.functional.mse_loss(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        for parameter, theirs in zip(parameters, reference, strict=True):
            worst = max(worst, ((parameter.grad - theirs).abs().max() / theirs.abs().max().clamp_min(1e-12)).item())
        optimizer.step()
        losses.append(loss.item())
    return losses[0], losses[-1], worst


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=200, help="training steps (default: 200)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the weights and the data (default: 0)")
    args = parser.parse_args()
    if args.steps < 1:
        parser.error(f"--steps must be positive, got {args.steps}")
    first, last, worst = main(steps=args.steps, seed=args.seed)
    print(f"mean squared error: {first:.4f} before training, {last:.4f} after")
    print(f"largest gradient difference against torch.nn.functional: {worst:.2e} of the largest entry")
