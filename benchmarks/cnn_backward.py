"""The CNN's backward passes piece by piece: each form of the fast tier (and the reference's) against PyTorch's own
kernel for the same gradient, on the shapes of the trainer's CNN and of resnet18.

    python benchmarks/cnn_backward.py [--device cuda] [--quick]

Three tables, each row one layer's shape, each cell the median time of one call and its ratio to PyTorch's kernel
for the same gradient (``aten.convolution_backward`` asked for ∂C/∂W alone; ``native_batch_norm_backward``;
``max_pool2d_with_indices_backward``), interleaved rounds:

- the convolution's ∂C/∂W: the reference's per-example products, the fast tier's one product over all windows, and
  the backward-weights kernel that the fast tier calls past one output position;
- batch norm's training backward (∂C/∂x, ∂C/∂γ, ∂C/∂β from the forward's μ and σ⁻¹): the reference's closed form,
  and the fast tier's regrouped form (``fast.normalization.training_gradients``);
- max pooling's ∂C/∂x: the reference's scatter-add into a copy of its zeros, and the fast tier's in place.
"""

import os
import sys

import torch
from torch.nn.functional import conv2d, max_pool2d

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import _harness  # noqa: E402

from manualbp import autograd, fast  # noqa: E402
from manualbp.fast import conv as fast_conv  # noqa: E402
from manualbp.fast.normalization import training_gradients  # noqa: E402

# (batch, C_in, C_out, side, kernel, stride, padding): the trainer's CNN at batch 100 and 256, resnet18 at batch 16
CONVOLUTIONS = [
    (100, 1, 32, 28, 3, 1, 1),
    (100, 32, 64, 14, 3, 1, 1),
    (100, 64, 128, 7, 3, 1, 1),
    (256, 32, 64, 14, 3, 1, 1),
    (16, 64, 64, 8, 3, 1, 1),
    (16, 256, 256, 2, 3, 1, 1),
    (16, 256, 512, 2, 3, 2, 1),
    (16, 512, 512, 1, 3, 1, 1),
]
QUICK_CONVOLUTIONS = [(4, 3, 4, 6, 3, 1, 1), (4, 8, 8, 1, 3, 1, 1)]
# (N, C, H, W) of the CNN's three batch norms and max pools
ACTIVATIONS = [(100, 32, 28, 28), (100, 64, 14, 14), (100, 128, 7, 7), (256, 32, 28, 28)]
QUICK_ACTIVATIONS = [(4, 3, 6, 6)]


def convolution_variants(case, device):
    n, c_in, c_out, side, kernel, stride, padding = case
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(n, c_in, side, side, generator=generator).to(device)
    weight = torch.randn(c_out, c_in, kernel, kernel, generator=generator).to(device)
    g = torch.randn_like(conv2d(x, weight, None, stride, padding))
    arguments = (stride, stride), (padding, padding), (1, 1), 1
    return {
        "PyTorch": lambda: torch.ops.aten.convolution_backward(
            g, x, weight, None, [stride] * 2, [padding] * 2, [1, 1], False, [0, 0], 1, [False, True, False]
        ),
        "reference": lambda: autograd.Conv2d.weight_gradient(g, x, weight.shape, *arguments),
        "over windows": lambda: fast_conv.weight_gradient_over_windows(g, x, weight.shape, *arguments),
        "kernel": lambda: fast_conv.weight_gradient_by_kernel(g, x, weight.shape, *arguments),
    }


def batch_norm_variants(shape, device):
    generator = torch.Generator().manual_seed(0)
    x = (torch.randn(shape, generator=generator) * 2 + 1).to(device)
    g = torch.randn(shape, generator=generator).to(device)
    weight, bias = torch.randn(shape[1]).to(device), torch.randn(shape[1]).to(device)
    _, mean, inverse_std = torch.ops.aten.native_batch_norm(x, weight, bias, None, None, True, 0.1, 1e-5)
    needs = (True,) * 3 + (False,) * 5
    return {
        "PyTorch": lambda: torch.ops.aten.native_batch_norm_backward(
            g, x, weight, None, None, mean, inverse_std, True, 1e-5, [True] * 3
        ),
        "reference": lambda: autograd.BatchNorm.gradients(g, x, weight, None, None, True, 1e-5, True, needs),
        "regrouped": lambda: training_gradients(g, x, weight, 1e-5, True, needs, (mean, inverse_std)),
    }


class _Context:
    """What ``MaxPool2d.backward`` reads of its ctx."""

    def __init__(self, indices, input_shape):
        self.saved_tensors, self.input_shape = (indices,), input_shape


def max_pool_variants(shape, device):
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(device)
    _, indices = max_pool2d(x, 2, 2, return_indices=True)
    g = torch.randn(indices.shape, device=device)
    ctx = _Context(indices, x.shape)
    return {
        "PyTorch": lambda: torch.ops.aten.max_pool2d_with_indices_backward(
            g, x, [2, 2], [2, 2], [0, 0], [1, 1], False, indices
        ),
        "reference": lambda: autograd.MaxPool2d.gradients(g, indices, x.shape),
        "in place": lambda: fast.MaxPool2d.backward(ctx, g, None),
    }


def measure(cases, make_variants, label, device, rounds, min_run_time):
    """One table: a row per case, each variant's median µs and its ratio to PyTorch's kernel."""
    rows, names = [], None
    for case in cases:
        variants = make_variants(case, device)
        names = [name for name in variants if name != "PyTorch"]
        times = _harness.compare(variants, device, rounds, min_run_time)
        cells = [" × ".join(map(str, case)), _harness.microseconds(times["PyTorch"])]
        for name in names:
            cells += [_harness.microseconds(times[name]), _harness.format_ratio(times[name], times["PyTorch"])]
        rows.append(cells)
    header = [label, "PyTorch's kernel µs"]
    for name in names:
        header += [f"{name} µs", f"{name} ÷ PyTorch (IQR)"]
    return _harness.table(header, rows)


def main(argv=None):
    parser = _harness.parser(__doc__.split("\n\n")[0])
    args = parser.parse_args(argv)
    device, rounds, min_run_time = _harness.timing(args)
    convolutions = QUICK_CONVOLUTIONS if args.quick else CONVOLUTIONS
    activations = QUICK_ACTIVATIONS if args.quick else ACTIVATIONS
    command = _harness.command("cnn_backward.py", args)
    label = "batch × C_in × C_out × side × kernel × stride × padding"
    body = measure(convolutions, convolution_variants, label, device, rounds, min_run_time)
    _harness.report("The convolution's weight gradient", device, command, body)
    body = measure(activations, batch_norm_variants, "N × C × H × W", device, rounds, min_run_time)
    _harness.report("Batch norm's training backward", device, command, body)
    body = measure(activations, max_pool_variants, "N × C × H × W (2 × 2 windows)", device, rounds, min_run_time)
    _harness.report("Max pooling's backward", device, command, body)


if __name__ == "__main__":
    main()
