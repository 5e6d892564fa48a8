"""The convolution's weight gradient as one matrix product over every example's columns."""

import torch
from torch.nn.functional import conv2d, pad

from manualbp import autograd
from manualbp.fast.torch_internals import functorch_transforms_active


class Conv2d(autograd.Conv2d):
    r"""``manualbp.autograd.Conv2d`` with its ∂C/∂W summed by one product instead of one per example.

    The reference computes ∂C/∂W_g = Σ_n Σ_l g[n, g, :, l] cols[n, g, :, l]ᵀ as it reads: one product per
    example n (the sum over the positions l), then the sum over n. With a deep layer's many channels and few
    positions (resnet18's last stage at 32 × 32 images: 512 channels, one position) the N products are each a
    C_out × C_in · kh · kw matrix, megabytes apiece, written only to be summed. The sum over n and l is one sum
    over the N · L columns, so lay the columns of all examples side by side,

        G = [g_1 … g_N]: (C_out/G, N · L),     Cols = [cols_1 … cols_N]: (N · L, C_in/G · kh · kw),

    and ∂C/∂W_g = G Cols, one product whose sum over N · L runs inside the GEMM. Where each example has more than
    a few positions, the same sum runs faster as a convolution of x with g (examples as channels, g as the
    kernel), which PyTorch's convolution kernel takes over all examples at once too; ``weight_gradient`` picks the
    form by the number of positions, as measured (BENCHMARKS.md, section 6). Either way the same terms are summed
    in another order: not the reference's bits, but within the rounding bound of a sum of N · L products
    (``tests/library/test_fast_conv.py``). ∂C/∂x, ∂C/∂b and the jvp are the reference's own, called unchanged.
    """

    @staticmethod
    def backward(ctx, grad_output):
        x, weight = ctx.saved_tensors
        needs_x_grad, needs_weight_grad, needs_bias_grad = ctx.needs_input_grad[:3]
        # ∂C/∂x and ∂C/∂b by the reference's derivation; only ∂C/∂W is summed differently
        grad_x, _, grad_bias, *options = autograd.Conv2d.gradients(
            grad_output,
            x,
            weight,
            ctx.has_bias,
            *ctx.arguments,
            needs_input_grad=(needs_x_grad, False, needs_bias_grad),
        )
        grad_weight = None
        if needs_weight_grad:
            grad_weight = weight_gradient_under_any_vmap(grad_output, x, weight.shape, *ctx.arguments)
        return grad_x, grad_weight, grad_bias, *options


def weight_gradient_under_any_vmap(grad_output, x, weight_shape, *arguments):
    """``weight_gradient``, or the reference's sum under vmap: neither fast form has a batching rule for every view
    it takes (``Tensor.unfold``'s windows, a batched ``conv2d`` weight). torch.func's vmap says that it runs;
    the legacy vmap of gradcheck's batched-gradient check does not, and is known by its error."""
    if functorch_transforms_active():
        return autograd.Conv2d.weight_gradient(grad_output, x, weight_shape, *arguments)
    try:
        return weight_gradient(grad_output, x, weight_shape, *arguments)
    except RuntimeError as error:
        if "Batching rule not implemented" not in str(error):
            raise
        return autograd.Conv2d.weight_gradient(grad_output, x, weight_shape, *arguments)


# up to this many output positions per example the one product over windows is the faster form (resnet18's last
# stage at batch 16, one position: 5.6 ms against 19 ms for the convolution, 371 ms for the reference); beyond it
# the convolution of x with g (four positions: 11 ms against 35 ms; sixteen: 6.2 against 11.6 ms). One thread,
# interleaved rounds; BENCHMARKS.md, section 6.
FEW_POSITIONS = 1
# up to this many input channels per group the reference's per-example products are the fastest form: each is only
# C_out × C_in · kh · kw, and the convolution of x with g has just C_in "examples" to spread over the cores (the
# trainer CNN's first layer, 1 → 32 channels at 28 × 28: 8.5 ms against 34 at batch 256, 0.8 against 3.6 at 32;
# resnet18's first, 3 → 64, 7 × 7, stride 2, batch 16: 1.8 against 2.2 ms; at 4 channels the convolution wins, 2.9
# against 6.1 ms at batch 100). Two threads, AMD EPYC, torch.utils.benchmark; BENCHMARKS.md, section 6.
FEW_INPUT_CHANNELS = 3


def weight_gradient(grad_output, x, weight_shape, stride, padding, dilation, groups):
    """∂C/∂W = Σ_n Σ_l g colsᵀ, ``autograd.Conv2d.weight_gradient``'s sum, in the fastest of three forms: the
    reference's own for few input channels, else one of two that each sum over every example and position at once.
    ``(C_out, C_in / groups, kh, kw)``."""
    if x.shape[1] // groups <= FEW_INPUT_CHANNELS:
        return autograd.Conv2d.weight_gradient(grad_output, x, weight_shape, stride, padding, dilation, groups)
    # the convolution takes one group, and with no examples it would have no channels to sum over
    many_positions = grad_output.shape[2] * grad_output.shape[3] > FEW_POSITIONS
    if groups == 1 and x.shape[0] > 0 and many_positions:
        return weight_gradient_as_convolution(grad_output, x, weight_shape, stride, padding, dilation)
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
    padded = pad(x, (padding[1], padding[1], padding[0], padding[0]))
    # window (h, w) spans d·(k − 1) + 1 rows and columns from (h·s, w·s); every d-th of them is read
    windows = padded.unfold(2, dilation[0] * (kh - 1) + 1, stride[0]).unfold(3, dilation[1] * (kw - 1) + 1, stride[1])
    windows = windows[..., :: dilation[0], :: dilation[1]].reshape(n, groups, c_in // groups, h_out, w_out, kh, kw)
    g = grad_output.reshape(n, groups, c_out // groups, h_out, w_out)
    return torch.einsum("ngohw,ngchwij->gocij", g, windows).reshape(weight_shape)


def weight_gradient_as_convolution(grad_output, x, weight_shape, stride, padding, dilation):
    """∂C/∂W[o, c, i, j] = Σ_n Σ_(h, w) g[n, o, h, w] x_padded[n, c, i·d + h·s, j·d + w·s]: a convolution of x with
    g, the examples n playing the channels, g the kernel (its taps s apart: the forward pass's stride is this
    one's dilation, and its dilation this one's stride). One group only."""
    _, _, kh, kw = weight_shape
    # (C_in, N, H, W) ⋆ (C_out, N, H_out, W_out) → (C_in, C_out, ≥ kh, ≥ kw): rows and columns past the kernel are
    # the positions that the forward pass's last stride step left unread
    grad_weight = conv2d(x.transpose(0, 1), grad_output.transpose(0, 1), None, dilation, padding, stride)
    return grad_weight[:, :, :kh, :kw].transpose(0, 1).contiguous()
