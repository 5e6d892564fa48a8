"""Small MNIST-shaped IDX files for the trainer's tests: ten noisy class templates, learnable in an epoch."""

import gzip
import os
import struct

import torch

IMAGES_MAGIC, LABELS_MAGIC = 2051, 2049


def idx_bytes(tensor):
    magic = IMAGES_MAGIC if tensor.dim() == 3 else LABELS_MAGIC
    header = struct.pack(f">I{tensor.dim()}I", magic, *tensor.shape)
    return header + tensor.to(torch.uint8).numpy().tobytes()


def synthetic_split(n, seed, noise=200, block=1):
    generator = torch.Generator().manual_seed(1234)  # the same templates for every split
    # templates of block×block squares of one value: shifted by a pixel or two, still the same template
    templates = torch.rand(10, 28 // block, 28 // block, generator=generator) * 255
    templates = templates.repeat_interleave(block, 1).repeat_interleave(block, 2)
    generator.manual_seed(seed)
    labels = torch.randint(0, 10, (n,), generator=generator)
    images = templates[labels] + noise * torch.randn(n, 28, 28, generator=generator)
    return images.clamp(0, 255).round(), labels


def write_idx_dir(folder, n_train=400, n_test=200, gz=False, noise=200, block=1):
    """Write the four IDX files into ``folder``; return it. ``noise`` is the pixels' standard deviation around
    their class template (whose pixels are uniform in [0, 255], in squares of ``block``×``block``, 28 a multiple
    of ``block``)."""
    os.makedirs(folder, exist_ok=True)
    splits = {"train": synthetic_split(n_train, 1, noise, block), "t10k": synthetic_split(n_test, 2, noise, block)}
    for split, (images, labels) in splits.items():
        for kind, tensor in (("images-idx3", images), ("labels-idx1", labels)):
            name = os.path.join(folder, f"{split}-{kind}-ubyte")
            payload = idx_bytes(tensor)
            if gz:
                with gzip.open(name + ".gz", "wb") as f:
                    f.write(payload)
            else:
                with open(name, "wb") as f:
                    f.write(payload)
    return folder
