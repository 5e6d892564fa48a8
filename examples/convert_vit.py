"""Fine-tune a torchvision Vision Transformer whose Linear, GELU, LayerNorm, attention, dropout and patch-embedding
convolution layers run manualbp's backward passes.

    python examples/convert_vit.py

``manualbp.convert`` swaps every ``torch.nn.Linear``, ``GELU``, ``LayerNorm``, ``MultiheadAttention``, ``Dropout``
and ``Conv2d`` of a model (among others) for manualbp's twins in place (same parameters, same state_dict), and
prints how many of each it swapped. Subclasses are left alone: the attention's ``out_proj`` (a
``NonDynamicallyQuantizableLinear``) and torchvision's ``MLPBlock`` (a ``Sequential`` subclass) stay as they are,
their parents' forward calling them. This builds a small, randomly initialised ViT, keeps an unconverted copy, and
fine-tunes the converted one on a fixed batch; at every step the unconverted copy, given the same weights, must
produce the same gradients (up to float rounding).
"""

import argparse
import collections
import copy

import torch
import torchvision

import manualbp


def main(steps=10, seed=0):
    """Fine-tune the converted ViT; at every step also take the unconverted one's gradients on the same weights.

    Returns ``(converted modules by type name, largest relative gradient difference over all steps, losses)``.
    """
    torch.manual_seed(seed)
    original = torchvision.models.VisionTransformer(
        image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64, num_classes=10
    )
    converted = manualbp.convert(copy.deepcopy(original))
    # what convert swapped: the modules whose class is now manualbp's
    counts = collections.Counter(
        type(m).__name__ for m in converted.modules() if type(m).__module__.startswith("manualbp")
    )

    images, labels = torch.randn(16, 3, 32, 32), torch.randint(0, 10, (16,))
    optimizer = torch.optim.AdamW(converted.parameters(), lr=1e-3)
    losses, worst = [], 0.0
    for _ in range(steps):
        original.load_state_dict(converted.state_dict())  # the same weights in both, every step
        reference = torch.autograd.grad(
            torch.nn.functional.cross_entropy(original(images), labels), list(original.parameters())
        )
        loss = torch.nn.functional.cross_entropy(converted(images), labels)
        optimizer.zero_grad()
        loss.backward()
        for parameter, theirs in zip(converted.parameters(), reference, strict=True):
            worst = max(worst, ((parameter.grad - theirs).abs().max() / theirs.abs().max().clamp_min(1e-12)).item())
        optimizer.step()
        losses.append(loss.item())
    return counts, worst, losses


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=10, help="fine-tuning steps (default: 10)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the weights and the data (default: 0)")
    args = parser.parse_args()
    if args.steps < 1:
        parser.error(f"--steps must be positive, got {args.steps}")
    counts, worst, losses = main(steps=args.steps, seed=args.seed)
    containers = counts.pop("Sequential", 0)
    kinds = ", ".join(f"{count} {name}" for name, count in counts.most_common())
    print(
        f"converted {sum(counts.values())} layers of a torchvision VisionTransformer ({kinds}) and {containers} "
        "Sequential containers"
    )
    print("fine-tuning losses: " + " ".join(f"{v:.4f}" for v in losses))
    print(f"largest gradient difference over the fine-tuning steps: {worst:.2e} of the largest entry")
