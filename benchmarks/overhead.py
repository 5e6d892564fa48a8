"""Where eager time goes: each layer of a training step, the fixed cost of a Python Function, and the floor.

    python benchmarks/overhead.py [--device cuda] [--quick]

Three tables. The first times forward + backward of every layer of a network at the shapes it has in the training
step (the first Linear's input needs no gradient, as in training), manualbp against torch.nn, so the gap of a
whole step can be read layer by layer. The second isolates what any Python ``torch.autograd.Function`` costs
beyond a built-in operation that does the same arithmetic (``neg`` forward, ``neg`` backward): in the classic
form that manualbp calls in eager mode, and in the ``setup_context`` form, whose every call PyTorch binds with
``inspect.signature``. The third times each training step of ``benchmarks/step.py`` three ways: torch.nn's; manualbp's;
and the floor of any implementation made of Python Functions shaped like manualbp's (one node per Linear and
its activation, one per lone Linear, one for the loss), whose backward passes call PyTorch's own derivative
kernels (``sigmoid_backward``, ``mse_loss_backward``, …), called bare: no ``nn.Module`` call, no argument check.
A fourth variant calls manualbp's own Functions just as bare. Floor over torch.nn is what the Python nodes cost;
bare over floor, manualbp's hand-written arithmetic; manualbp over bare, its argument checks and module calls.
"""

import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import _harness  # noqa: E402
import step  # noqa: E402

from manualbp import fast  # noqa: E402
from manualbp import functional as manual_functional  # noqa: E402
from manualbp import nn as mnn  # noqa: E402
from manualbp.nn.container import FUSABLE  # noqa: E402

QUICK_CASES = [((784, 30, 10), "sigmoid", "mse", 10)]
LAYERS = ("manual", "torch")
CASES = [((784, 30, 10), "sigmoid", "mse", 10), ((784, 256, 10), "relu", "cross-entropy", 100)]


class Negate(torch.autograd.Function):
    """The smallest Function: one built-in operation forward, one backward."""

    @staticmethod
    def forward(x):
        return x.neg()

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def backward(ctx, grad_output):
        return grad_output.neg()


# PyTorch's own derivative of each activation, written in its output a (as manualbp's are)
BUILTIN_DERIVATIVES = {
    "relu": lambda g, a: torch.ops.aten.threshold_backward(g, a, 0),
    "sigmoid": torch.ops.aten.sigmoid_backward,
    "tanh": torch.ops.aten.tanh_backward,
}


class FloorLinearActivation(torch.autograd.Function):
    """manualbp's fused node, with PyTorch's kernel for f′ (Linear's backward already is PyTorch's: mm, mm, sum)."""

    @staticmethod
    def forward(ctx, x, weight, bias, activation):
        a = torch.addmm(bias, x, weight.t())
        a = a if activation is None else getattr(torch, activation)(a)
        ctx.save_for_backward(x, weight, a)
        ctx.activation = activation
        return a

    @staticmethod
    def backward(ctx, grad_output):
        x, weight, a = ctx.saved_tensors
        delta = grad_output if ctx.activation is None else BUILTIN_DERIVATIVES[ctx.activation](grad_output, a)
        grad_x = delta.mm(weight) if ctx.needs_input_grad[0] else None
        return grad_x, delta.t().mm(x), delta.sum(0), None


class FloorMSELoss(torch.autograd.Function):
    """Mean squared error, forward and backward by PyTorch's own kernels."""

    @staticmethod
    def forward(ctx, a, y):
        ctx.save_for_backward(a, y)
        return torch.nn.functional.mse_loss(a, y)

    @staticmethod
    def backward(ctx, grad_output):
        a, y = ctx.saved_tensors
        return torch.ops.aten.mse_loss_backward(grad_output, a, y, 1), None  # 1: mean


class FloorCrossEntropyLoss(torch.autograd.Function):
    """Cross-entropy, forward and backward by PyTorch's own kernels (log-softmax, then NLL)."""

    @staticmethod
    def forward(ctx, z, target):
        log_probs = torch.log_softmax(z, 1)
        loss, total_weight = torch.ops.aten.nll_loss_forward(log_probs, target, None, 1, -100)
        ctx.save_for_backward(log_probs, target, total_weight)
        return loss

    @staticmethod
    def backward(ctx, grad_output):
        log_probs, target, total_weight = ctx.saved_tensors
        grad = torch.ops.aten.nll_loss_backward(grad_output, log_probs, target, None, 1, -100, total_weight)
        return torch.ops.aten._log_softmax_backward_data(grad, log_probs, 1, log_probs.dtype), None


def unchecked_step(sizes, activation, loss, batch_size, device, floor):
    """``step.make_step``'s training step through bare Functions, each called as ``manualbp.nn.Sequential`` groups
    the layers but with no ``nn.Module`` call and no argument check: the Floor Functions above if ``floor``,
    else manualbp's own (their classic-form twins, as ``manualbp.functional`` calls them)."""
    model, x, target, _ = step.make_case(sizes, activation, loss, batch_size, "manual", device)
    modules = list(model)
    layers = []  # (Linear, its activation's name or None)
    for i, module in enumerate(modules):
        if isinstance(module, mnn.Linear):
            following = modules[i + 1] if i + 1 < len(modules) else None
            layers.append((module, FUSABLE.get(type(following))))  # as manualbp.nn.Sequential fuses them
    fused, linear = fast.linear_activation.classic, fast.linear.classic
    mse, cross_entropy = fast.mse_loss.classic, fast.one_hot_cross_entropy.classic

    def layer(a, module, name):
        if floor:
            return FloorLinearActivation.apply(a, module.weight, module.bias, name)
        if name is None:
            return linear.apply(a, module.weight, module.bias)
        return fused.apply(a, module.weight, module.bias, name)

    def cost(a):
        if floor:
            return (FloorMSELoss if loss == "mse" else FloorCrossEntropyLoss).apply(a, target)
        if loss == "mse":
            return mse.apply(a, target, None, "mean")
        return cross_entropy.apply(a, target)[0]  # the plain case: class indices, none ignored, the mean

    def forward():
        a = x
        for module, name in layers:
            a = layer(a, module, name)
        return cost(a)

    return step.training_step(model, forward)


def layer_passes(sizes, activation, loss, batch_size, functional, device):
    """``{layer name: function running its forward and backward}`` at the shapes of the training step."""
    generator = torch.Generator().manual_seed(0)

    def randn(*shape, grad=False):
        return torch.randn(*shape, generator=generator).to(device).requires_grad_(grad)

    passes = {}
    activate = getattr(functional, activation.replace("-", "_"))
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=False)):
        x = randn(batch_size, fan_in, grad=i > 0)
        weight, bias = randn(fan_out, fan_in, grad=True), randn(fan_out, grad=True)
        z, grad_output = randn(batch_size, fan_out, grad=True), randn(batch_size, fan_out)
        passes[f"Linear {fan_in}→{fan_out}"] = lambda x=x, w=weight, b=bias, g=grad_output: functional.linear(
            x, w, b
        ).backward(g)
        if i < len(sizes) - 2 or loss == "mse":
            name = activation if i < len(sizes) - 2 else "sigmoid"
            f = activate if i < len(sizes) - 2 else functional.sigmoid
            passes[f"{name} ({batch_size}×{fan_out})"] = lambda z=z, g=grad_output, f=f: f(z).backward(g)
    logits = randn(batch_size, sizes[-1], grad=True)
    if loss == "mse":
        target = randn(batch_size, sizes[-1])
        passes[f"mse_loss ({batch_size}×{sizes[-1]})"] = lambda: functional.mse_loss(logits, target).backward()
    else:
        labels = torch.randint(0, sizes[-1], (batch_size,), generator=generator).to(device)
        passes[f"cross_entropy ({batch_size}×{sizes[-1]})"] = lambda: functional.cross_entropy(
            logits, labels
        ).backward()
    return passes


def main(argv=None):
    args = _harness.parser(__doc__.split("\n\n")[0]).parse_args(argv)
    device = _harness.check_device(args)
    rounds = args.rounds or (2 if args.quick else 7)
    min_run_time = 0.01 if args.quick else 0.2
    command = _harness.command("overhead.py", args)

    rows = []
    for sizes, activation, loss, batch_size in QUICK_CASES if args.quick else CASES:
        network = f"{'-'.join(map(str, sizes))} {activation}, {loss}, batch {batch_size}"
        manual = layer_passes(sizes, activation, loss, batch_size, manual_functional, device)
        builtin = layer_passes(sizes, activation, loss, batch_size, torch.nn.functional, device)
        whole = {layers: step.make_step(sizes, activation, loss, batch_size, layers, device) for layers in LAYERS}
        times = _harness.compare(whole, device, rounds, min_run_time)
        gap = _harness.median_difference(times["manual"], times["torch"])
        for name in manual:
            pair = {"manual": manual[name], "torch": builtin[name]}
            layer_times = _harness.compare(pair, device, rounds, min_run_time)
            rows.append(
                [
                    network,
                    name,
                    _harness.microseconds(layer_times["manual"]),
                    _harness.microseconds(layer_times["torch"]),
                    f"{_harness.median_difference(layer_times['manual'], layer_times['torch']) * 1e6:+.1f}",
                ]
            )
        rows.append(
            [
                network,
                "**whole training step**",
                _harness.microseconds(times["manual"]),
                _harness.microseconds(times["torch"]),
                f"**{gap * 1e6:+.1f}**",
            ]
        )
    header = ["network", "layer (forward + backward)", "manualbp µs", "torch.nn µs", "difference µs"]
    _harness.report("Where the eager time goes, layer by layer", device, command, _harness.table(header, rows))

    x = torch.randn(10, 30, device=device, requires_grad=True)
    grad_output = torch.randn(10, 30, device=device)
    classic_negate = fast.classic(Negate)
    variants = {
        "built-in `neg`": lambda: x.neg().backward(grad_output),
        "classic-form Function (what manualbp calls)": lambda: classic_negate.apply(x).backward(grad_output),
        "setup_context-form Function, `.apply`": lambda: Negate.apply(x).backward(grad_output),
    }
    times = _harness.compare(variants, device, rounds, min_run_time)
    reference = times["built-in `neg`"]
    rows = [
        [name, _harness.microseconds(values), f"{_harness.median_difference(values, reference) * 1e6:+.1f}"]
        for name, values in times.items()
    ]
    header = ["one (10×30) operation, forward + backward", "µs", "beyond the built-in, µs"]
    _harness.report("The fixed cost of a Python autograd Function", device, command, _harness.table(header, rows))

    rows = []
    for sizes, activation, loss, batch_size in step.QUICK_CASES if args.quick else step.CASES:
        steps = {layers: step.make_step(sizes, activation, loss, batch_size, layers, device) for layers in LAYERS}
        steps["floor"] = unchecked_step(sizes, activation, loss, batch_size, device, floor=True)
        steps["bare"] = unchecked_step(sizes, activation, loss, batch_size, device, floor=False)
        times = _harness.compare(steps, device, rounds, min_run_time)
        rows.append(
            [
                *step.case_cells(sizes, activation, loss, batch_size),
                _harness.microseconds(times["torch"]),
                _harness.format_ratio(times["floor"], times["torch"]),
                _harness.format_ratio(times["bare"], times["torch"]),
                _harness.format_ratio(times["manual"], times["torch"]),
            ]
        )
    header = [
        *step.CASE_HEADER,
        "torch.nn µs",
        "floor ÷ torch.nn (IQR)",
        "bare manualbp Functions ÷ torch.nn (IQR)",
        "manualbp ÷ torch.nn (IQR)",
    ]
    title = "The floor of Python Functions: training steps with PyTorch's derivative kernels inside manualbp's nodes"
    _harness.report(title, device, command, _harness.table(header, rows))


if __name__ == "__main__":
    main()
