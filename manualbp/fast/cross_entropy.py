"""Cross-entropy's plain case at less cost per call: the cheapest read of the class-index targets that choose it,
its ∂C/∂z at an upstream gradient of 1 in two passes, and that gradient computed in the forward pass."""

import functools

import torch

from manualbp import autograd
from manualbp.fast.call import classic, is_one, upstream_one
from manualbp.fast.torch_internals import is_functorch_wrapped, nll_loss

# Up to this many targets, reading them into Python and taking min and max there costs less than a reduction
# kernel and two reads of its results (measured in a training step: ~0 µs against ~8 µs at a batch of 100)
READ_AS_LIST = 256


def target_range(target):
    """``(lowest, highest)`` class index in ``target`` (1-D, non-empty), or None where its values cannot be read
    without cost or at all: on a GPU (reading would stall every step) and under torch.compile or torch.func
    (there are no concrete values)."""
    if not target.is_cpu or torch.compiler.is_compiling() or is_functorch_wrapped(target):
        return None
    if target.numel() <= READ_AS_LIST:
        values = target.tolist()
        return min(values), max(values)
    low, high = torch.aminmax(target)
    return low.item(), high.item()


@functools.lru_cache(maxsize=16)
def _row_share(dtype, device, rows):
    """g/N at g = 1 (the upstream gradient of ``loss.backward()``, shared by N rows) and −g/N as a column, as
    ``OneHotCrossEntropyLoss.gradients`` computes them from a tensor g = 1: made once per batch size, not per call
    (they are only read)."""
    share = upstream_one(dtype, device) / rows
    return share, (-share).expand(rows, 1)


def one_hot_gradient_at_one(target, log_probs):
    """∂C/∂z = (softmax(z) − onehot(t)) / N, ``OneHotCrossEntropyLoss.gradients`` at an upstream gradient of 1:
    the same operations (p · g/N, then −g/N added at each row's target class) on the same numbers, so the same
    bits (``tests/library/test_mlp_loss.py``), in two passes where the reference's general g takes five (its g/N
    and −g/N made once per batch size, and p · g/N in place on eᴸ's new tensor)."""
    share, minus_share = _row_share(log_probs.dtype, log_probs.device, target.shape[0])
    return log_probs.exp().mul_(share).scatter_add_(1, target.unsqueeze(1), minus_share)


def cross_entropy_value(z, target):
    """``(C, ℓ)``: ``OneHotCrossEntropyLoss.forward``'s log-softmax ℓ and its mean negative log-likelihood C, by the
    same two kernels called directly, so the same bits, without ``torch.nn.functional.nll_loss``'s Python around the
    second (its reduction looked up by name): 1–1.5 % of a training step of a 784-256-10 network at batches 64 and 100,
    where the step runs with the caches its matrix products emptied (BENCHMARKS.md; Intel Xeon, 2 threads)."""
    log_probs = torch.log_softmax(z, dim=1)
    return nll_loss(log_probs, target, None, 1, -100), log_probs  # the mean (1), and F.nll_loss's ignore_index, −100


# the reference Function with its value by ``cross_entropy_value``: its setup_context, backward and jvp are its own
_CLASSIC = classic(
    type(
        "OneHotCrossEntropyLoss",
        (autograd.OneHotCrossEntropyLoss,),
        {"__module__": __name__, "forward": staticmethod(cross_entropy_value)},
    )
)


class OneHotCrossEntropyLossGradientFirst(_CLASSIC):
    """``OneHotCrossEntropyLoss`` in eager mode (the classic form of ``manualbp.fast.call``) that computes ∂C/∂z at an
    upstream gradient of 1 in its forward pass, where z needs a gradient on the CPU, as Liger-Kernel's cross-entropy
    does: ``loss.backward()`` then hands it over (``one_hot_gradient_at_one``: the reference's operations, so its
    bits), where the reference's backward makes p, g/N, p · g/N and −g/N and scatters. About 3 % of a training step
    of a 784-256-10 network at batch 64 (AMD EPYC, 2 threads).

    For any other upstream gradient, a gradient into ℓ, a double backward or a second backward through a retained
    graph, the reference's backward from the saved ℓ; its jvp is the reference's.
    """

    @staticmethod
    def forward(ctx, z, target):
        value, log_probs = _CLASSIC.forward(ctx, z, target)
        ctx.gradient = None
        if ctx.needs_input_grad[0] and z.is_cpu:  # on a GPU, reading g to skip the product would stall the stream
            ctx.gradient = one_hot_gradient_at_one(target, log_probs)
        return value, log_probs

    @staticmethod
    def backward(ctx, grad_loss, grad_log_probs):
        gradient, ctx.gradient = ctx.gradient, None  # handed over once: a second backward computes it again
        plain = grad_log_probs is None and grad_loss is not None and not torch.is_grad_enabled()
        if gradient is not None and plain and is_one(grad_loss):
            return gradient, None
        return autograd.OneHotCrossEntropyLoss.backward(ctx, grad_loss, grad_log_probs)
