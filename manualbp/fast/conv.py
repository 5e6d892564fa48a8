"""The convolution's weight gradient summed over every example at once: one product over all examples' windows, or
PyTorch's own kernel for that sum."""

import torch

from manualbp import autograd
from manualbp.fast.torch_internals import functorch_transforms_active


class Conv2d(autograd.Conv2d):
    r"""``manualbp.autograd.Conv2d`` with its ∂C/∂W summed over all examples at once instead of one product each.

    The reference computes ∂C/∂W_g = Σ_n Σ_l g[n, g, :, l] cols[n, g, :, l]ᵀ as it reads: one product per
    example n (the sum over the positions l), then the sum over n. With a deep layer's many channels and few
    positions (resnet18's last stage at 32 × 32 images: 512 channels, one position) the N products are each a
    C_out × C_in · kh · kw matrix, megabytes apiece, written only to be summed. The sum over n and l is one sum
    over the N · L columns, so lay the columns of all examples side by side,

        G = [g_1 … g_N]: (C_out/G, N · L),     Cols = [cols_1 … cols_N]: (N · L, C_in/G · kh · kw),

    and ∂C/∂W_g = G Cols, one product whose sum over N · L runs inside the GEMM. Written out per weight, the same
    sum is a convolution of x with g (the examples playing the channels, g the kernel),

        ∂C/∂W[o, c, i, j] = Σ_n Σ_(h, w) g[n, o, h, w] · x_padded[n, c, i·d + h·s, j·d + w·s],

    which is what a convolution library's "backward weights" kernel computes (oneDNN's on the CPU, cuDNN's on a
    GPU). PyTorch calls it as ``aten.convolution_backward`` with only the weight's gradient asked for; it computes
    nothing else of PyTorch's backward pass. ``weight_gradient`` runs that kernel wherever each example has more
    than one output position, and the one product over windows where it has one (resnet18's 512 × 512 layer at
    batch 16: 0.91 ms against the kernel's 1.33), as measured (BENCHMARKS.md). Either way the same terms
    are summed in another order: not the reference's bits, but within the rounding bound of a sum of N · L products
    (``tests/library/test_fast_conv.py``). ∂C/∂x, ∂C/∂b and the jvp are the reference's own, called unchanged, and
    so is ∂C/∂W in a double backward, which differentiates the backward's own operations.
    """

    @staticmethod
    def backward(ctx, grad_output):
        x, weight = ctx.saved_tensors
        needs_x_grad, needs_weight_grad, needs_bias_grad = ctx.needs_input_grad[:3]
        # ∂C/∂x and ∂C/∂b by the reference's derivation; only ∂C/∂W is summed differently
        grad_x, grad_weight, grad_bias, *options = autograd.Conv2d.gradients(
            grad_output,
            x,
            weight,
            ctx.has_bias,
            *ctx.arguments,
            needs_input_grad=(needs_x_grad, needs_weight_grad and torch.is_grad_enabled(), needs_bias_grad),
        )
        if needs_weight_grad and grad_weight is None:
            grad_weight = weight_gradient_under_any_vmap(grad_output, x, weight.shape, *ctx.arguments)
        return grad_x, grad_weight, grad_bias, *options


def weight_gradient_under_any_vmap(grad_output, x, weight_shape, *arguments):
    """``weight_gradient``, or the reference's sum under vmap: neither fast form has a batching rule for every view
    it takes (``Tensor.unfold``'s windows, a batched weight gradient). torch.func's vmap says that it runs; the
    legacy vmap of gradcheck's batched-gradient check does not, and is known by its error."""
    if functorch_transforms_active():
        return autograd.Conv2d.weight_gradient(grad_output, x, weight_shape, *arguments)
    try:
        return weight_gradient(grad_output, x, weight_shape, *arguments)
    except RuntimeError as error:
        if "Batching rule not implemented" not in str(error):
            raise
        return autograd.Conv2d.weight_gradient(grad_output, x, weight_shape, *arguments)


# up to this many output positions per example the one product over windows is the faster form; beyond it the
# convolution library's kernel. Two threads, AMD EPYC, interleaved rounds, ms, kernel against windows: resnet18 at
# batch 16, one position (512 → 512): 1.33 against 0.91, (256 → 512, stride 2): 0.72 against 0.56; four positions
# (256 → 256): 0.52 against 0.99; the trainer's CNN at batch 100, 32 → 64 channels at 14 × 14: 1.85 against 11.0.
# ``python benchmarks/cnn_backward.py``; BENCHMARKS.md, "The CNN's backward, piece by piece".
FEW_POSITIONS = 1


def weight_gradient(grad_output, x, weight_shape, stride, padding, dilation, groups):
    """∂C/∂W = Σ_n Σ_l g colsᵀ, ``autograd.Conv2d.weight_gradient``'s sum over every example and position at once,
    in the faster of two forms for the number of positions. ``(C_out, C_in / groups, kh, kw)``."""
    if grad_output.shape[2] * grad_output.shape[3] > FEW_POSITIONS and x.shape[0] > 0:
        return weight_gradient_by_kernel(grad_output, x, weight_shape, stride, padding, dilation, groups)
    return weight_gradient_over_windows(grad_output, x, weight_shape, stride, padding, dilation, groups)


def weight_gradient_over_windows(grad_output, x, weight_shape, stride, padding, dilation, groups):
    """∂C/∂W_g = G Cols, one product per group over all N · L columns.

    The columns are not built by ``unfold`` (im2col) and then laid side by side, two copies: each is a window of
    the padded input, so ``Tensor.unfold`` gives them all as one view, windows: ``(N, C_in, H_out, W_out, kh,
    kw)``, and ``einsum`` copies that view once into the operand of its one product, contracting over n and the
    positions (h, w)."""
    n, c_in = x.shape[:2]
    c_out, _, kh, kw = weight_shape
    h_out, w_out = grad_output.shape[2:]
    padded = torch.nn.functional.pad(x, (padding[1], padding[1], padding[0], padding[0]))
    # window (h, w) spans d·(k − 1) + 1 rows and columns from (h·s, w·s); every d-th of them is read
    windows = padded.unfold(2, dilation[0] * (kh - 1) + 1, stride[0]).unfold(3, dilation[1] * (kw - 1) + 1, stride[1])
    windows = windows[..., :: dilation[0], :: dilation[1]].reshape(n, groups, c_in // groups, h_out, w_out, kh, kw)
    g = grad_output.reshape(n, groups, c_out // groups, h_out, w_out)
    return torch.einsum("ngohw,ngchwij->gocij", g, windows).reshape(weight_shape)


def weight_gradient_by_kernel(grad_output, x, weight_shape, stride, padding, dilation, groups):
    """∂C/∂W[o, c, i, j] = Σ_n Σ_(h, w) g[n, o, h, w] x_padded[n, c, i·d + h·s, j·d + w·s], by the convolution
    library's backward-weights kernel: ``aten.convolution_backward`` asked for the weight's gradient alone (its
    output mask), the weight given as an empty tensor of the weight's shape, which the kernel reads for nothing
    but that shape."""
    weight = grad_output.new_empty(weight_shape)
    options = list(stride), list(padding), list(dilation), False, [0, 0], groups
    _, grad_weight, _ = torch.ops.aten.convolution_backward(
        grad_output, x, weight, None, *options, [False, True, False]
    )
    return grad_weight
