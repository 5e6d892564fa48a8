"""The fast tier's Triton kernels against the torch-op path they replace and against torch.nn: forward and backward
of each layer that runs one.

    python benchmarks/kernels.py --device cuda [--quick] [--rounds N]

Three variants of each call, interleaved in every round: ``kernel`` (manualbp as it runs on a GPU, where
``kernels.chosen_for`` picks the Triton kernels), ``torch ops`` (manualbp with ``kernels.chosen_for`` switched off:
the reference's own operations, what runs where Triton is absent) and ``torch.nn`` (``torch.nn.functional``).
Each call is the layer's forward and ``torch.autograd.grad`` of its output with a fixed upstream gradient. The
CUDA peak is the memory allocated at the most during one such call, above what was allocated before it.

On the CPU (``--device cpu``, which ``--quick`` in CI uses to prove the script runs) the ``kernel`` variant runs
the kernels in Triton's interpreter on CPU tensors: its times there say nothing of a kernel's speed. (There the
plain cross-entropy takes its one-hot path in every variant: on the CPU manualbp reads the targets, which on a GPU
would wait for it.)
"""

import os
import sys

if "--device" not in sys.argv or sys.argv[sys.argv.index("--device") + 1] != "cuda":
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is imported: the kernels on CPU tensors

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import _harness  # noqa: E402

from manualbp import functional as F  # noqa: E402
from manualbp.fast import kernels  # noqa: E402

T = torch.nn.functional


def cases(quick):
    """``(name, shape, call(functional, x, *parameters), parameter shapes)``, at the layer grid's sizes (quick:
    tiny ones). ``call`` takes ``manualbp.functional`` or ``torch.nn.functional``."""
    rows, width, image = (8, 16, (4, 6, 5, 5)) if quick else (4096, 1024, (256, 64, 28, 28))
    classes = [10] if quick else [10, 32768]
    found = [
        (f"cross-entropy, {rows} × {k}", (rows, k), lambda f, z: f.cross_entropy(z, _labels(z)), []) for k in classes
    ]
    found += [
        (
            f"layer norm, {rows} × {width}",
            (rows, width),
            lambda f, x, w, b: f.layer_norm(x, x.shape[-1:], w, b),
            [(width,), (width,)],
        ),
        (
            f"group norm (32 groups), {tuple(image)}" if not quick else f"group norm (2 groups), {image}",
            image,
            lambda f, x, w, b: f.group_norm(x, 2 if quick else 32, w, b),
            [(image[1],), (image[1],)],
        ),
        (
            f"batch norm, training, {image}",
            image,
            lambda f, x, w, b: f.batch_norm(x, None, None, w, b, training=True),
            [(image[1],), (image[1],)],
        ),
        (f"softmax, {rows} × {width}", (rows, width), lambda f, x: f.softmax(x, -1), []),
        (f"log-softmax, {rows} × {width}", (rows, width), lambda f, x: f.log_softmax(x, -1), []),
        (
            f"GELU, {rows} × {width * (1 if quick else 4)}",
            (rows, width * (1 if quick else 4)),
            lambda f, x: f.gelu(x),
            [],
        ),
        (
            f"Linear {width} → {width} + tanh, {rows} rows (δ and ∂C/∂b in one pass)",
            (rows, width),
            lambda f, x, w, b: f.linear_activation(x, w, b, "tanh") if f is F else torch.tanh(f.linear(x, w, b)),
            [(width, width), (width,)],
        ),
        (
            f"leaky ReLU, {rows} × {width * (1 if quick else 4)}",
            (rows, width * (1 if quick else 4)),
            lambda f, x: f.leaky_relu(x, 0.01),
            [],
        ),
    ]
    return found


def _labels(z):
    return torch.arange(z.shape[0], device=z.device) % z.shape[1]


def make_call(call, functional, shape, parameter_shapes, device, kernels_on):
    """One forward and backward of ``call`` on fixed random inputs, with the kernels chosen as ``kernels_on``
    says (None: as the fast tier chooses)."""
    generator = torch.Generator().manual_seed(0)
    inputs = [torch.randn(s, generator=generator).to(device).requires_grad_() for s in [shape, *parameter_shapes]]
    with torch.no_grad():
        g = torch.randn(call(T, *inputs).shape, generator=generator).to(device)  # the upstream gradient, fixed
    chosen_for = kernels.chosen_for

    def run():
        if kernels_on is not None:
            kernels.chosen_for = lambda tensor: kernels_on
        try:
            torch.autograd.grad(call(functional, *inputs), inputs, g)
        finally:
            kernels.chosen_for = chosen_for

    return run


def peak(run, device):
    """CUDA memory allocated at the most during ``run()``, above what was allocated before, or None on the CPU."""
    if device.type != "cuda":
        return None
    run()  # warmed up: cuBLAS's and Triton's first-call allocations are not the call's
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    baseline = torch.cuda.memory_allocated(device)
    run()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) - baseline


def main(argv=None):
    parser = _harness.parser(__doc__.split("\n\n")[0])
    args = parser.parse_args(argv)
    device = _harness.check_device(args)
    if not kernels.AVAILABLE:
        sys.exit(f"{sys.argv[0]}: error: Triton is not installed here, so there are no kernels to time")
    rounds = args.rounds or (2 if args.quick else 7)
    min_run_time = 0.01 if args.quick else 0.2
    # on the CPU the kernels are the interpreter's, chosen by hand; on a GPU the fast tier chooses them itself
    kernel_choice = True if device.type == "cpu" else None
    if device.type == "cpu":
        from manualbp.fast.kernels import activation, cross_entropy, norm, softmax

        for module in (activation, cross_entropy, norm, softmax):  # the modules import only where CUDA is
            setattr(kernels, module.__name__.rsplit(".", 1)[1], module)
    rows = []
    for name, shape, call, parameter_shapes in cases(args.quick):
        variants = {
            "kernel": make_call(call, F, shape, parameter_shapes, device, kernel_choice),
            "torch ops": make_call(call, F, shape, parameter_shapes, device, False),
            "torch.nn": make_call(call, T, shape, parameter_shapes, device, None),
        }
        times = _harness.compare(variants, device, rounds, min_run_time)
        peaks = {variant: peak(run, device) for variant, run in variants.items()}
        rows.append(
            [
                name,
                *(_harness.microseconds(times[variant]) for variant in variants),
                _harness.format_ratio(times["kernel"], times["torch ops"]),
                _harness.format_ratio(times["kernel"], times["torch.nn"]),
                *(_harness.count(peaks[variant]) for variant in variants),
            ]
        )
    header = [
        "layer (forward + backward)",
        "kernel µs",
        "torch ops µs",
        "torch.nn µs",
        "kernel ÷ torch ops",
        "kernel ÷ torch.nn",
        "CUDA peak, kernel (bytes)",
        "torch ops",
        "torch.nn",
    ]
    command = _harness.command("kernels.py", args, *(["--quick"] if args.quick else []))
    _harness.report("The Triton kernels, forward + backward", device, command, _harness.table(header, rows))


if __name__ == "__main__":
    main()
