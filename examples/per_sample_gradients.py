"""Per-sample gradients of a manualbp model with torch.func: vmap over grad, one call for the whole batch.

    python examples/per_sample_gradients.py

Every manualbp Function is written in the form torch.func needs (a separate ``setup_context``, and
``generate_vmap_rule = True``), so ``torch.func.vmap(torch.func.grad(...))`` runs its hand-derived backward
passes batched. The script checks the result against the slow way: one backward pass per example.
"""

import argparse

import torch
from torch.func import functional_call, grad, vmap

import manualbp.functional as F
import manualbp.nn as mnn


def main(batch_size=32, seed=0):
    """Return ``(per-sample gradient shapes, largest absolute difference from one-at-a-time backward passes)``."""
    torch.manual_seed(seed)
    model = mnn.Sequential(mnn.Linear(784, 64), mnn.Tanh(), mnn.Linear(64, 10))
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch_size, 784, generator=generator)
    labels = torch.randint(0, 10, (batch_size,), generator=generator)
    parameters = {name: p.detach() for name, p in model.named_parameters()}

    def loss_of_one(parameters, example, label):
        logits = functional_call(model, parameters, (example.unsqueeze(0),))
        return F.cross_entropy(logits, label.unsqueeze(0))

    per_sample = vmap(grad(loss_of_one), in_dims=(None, 0, 0))(parameters, x, labels)

    worst = 0.0
    for i in range(batch_size):  # the slow way, for the check
        model.zero_grad()
        F.cross_entropy(model(x[i : i + 1]), labels[i : i + 1]).backward()
        for name, p in model.named_parameters():
            worst = max(worst, (per_sample[name][i] - p.grad).abs().max().item())
    return {name: tuple(g.shape) for name, g in per_sample.items()}, worst


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=32, help="examples in the batch (default: 32)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the weights and the data (default: 0)")
    args = parser.parse_args()
    if args.batch_size < 1:
        parser.error(f"--batch-size must be positive, got {args.batch_size}")
    shapes, worst = main(batch_size=args.batch_size, seed=args.seed)
    for name, shape in shapes.items():
        print(f"{name:>8}: per-sample gradients of shape {shape}")
    print(f"largest difference from one backward pass per example: {worst:.2e}")
