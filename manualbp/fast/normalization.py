r"""Batch norm's training backward in a few passes over the activations, where the reference's takes about sixteen;
and batch norm's, layer norm's and group norm's backward as one Triton kernel each on a GPU (``BatchNorm``,
``LayerNorm`` and ``GroupNorm``).

The reference (``manualbp/autograd/batch_norm.py``, ``normalization.py``) writes the closed form as it reads,

    ∂C/∂x = σ⁻¹ (ĝ − mean ĝ − x̂ · mean(ĝ x̂)),    ĝ = γ g,    x̂ = (x − μ) σ⁻¹,

each product and difference a pass over the whole (N, C, H, W) tensor: x̂ (four passes, the statistics included),
ĝ, the bracket's five, the scale, and ∂C/∂γ's product and two sums. Everything in the bracket but g and x − μ is one
number per channel, so the same formula regrouped is

    ∂C/∂x = a g + b (x − μ) + c        with, per channel (M values each),
    a = γ σ⁻¹,    b = −γ σ⁻³ Σ g (x − μ) / M,    c = −γ σ⁻¹ Σ g / M,

and ∂C/∂γ = σ⁻¹ Σ g (x − μ), ∂C/∂β = Σ g are the same two sums. So the backward is the statistics (μ, x − μ
and its mean square), the two sums, and a scale, a fused multiply-add and a shift written over x − μ: about
eight passes. On the trainer's CNN (batch 100, one thread) the reference's batch-norm backward was about a third of
manualbp's step, against oneDNN's fused kernel's 8 % of torch.nn's.

The regrouped sum rounds differently from the reference's, so the two agree to rounding, not to the bit:
``tests/library/test_fast_batch_norm.py`` holds the difference to a few units of the result's last place (float32 and
float64). The reference runs wherever this form does not apply: in evaluation (∂C/∂x = σ_r⁻¹ ĝ is one product
already) and in a double backward, which differentiates the backward's own operations and needs them to be the
reference's functions of x.
"""

import math

import torch

from manualbp import autograd
from manualbp.autograd.normalization import channel
from manualbp.fast import kernels
from manualbp.fast.torch_internals import forward_ad_level_open


def training_gradients(grad_output, x, weight, eps, has_bias, needs_input_grad, statistics=()):
    """``(∂C/∂x, ∂C/∂γ, ∂C/∂β)`` of batch norm in training, by the regrouped closed form above; each None where
    ``needs_input_grad`` (x, γ, β) does not ask for it. ``statistics``: the batch's μ and σ⁻¹ ``(C,)`` as the
    forward pass computed them (``BatchNormKeepingStatistics``), or empty to compute them here."""
    needs_x_grad, needs_weight_grad, needs_bias_grad = needs_input_grad[:3]
    count = x.numel() // x.shape[1]  # M, the values of one channel
    if statistics:
        mean, inverse_std = (channel(statistic, x) for statistic in statistics)  # (1, C, 1, …)
        centered = x - mean  # x − μ
    else:
        # the statistics as the reference's normalize computes them (torch.var_mean, one call, is many times slower
        # on the CPU: 36 ms against 2 for mean, x − μ and the mean square at 100 × 32 × 28 × 28)
        axes = [0, *range(2, x.dim())]  # every axis but the channel's
        centered = x - x.mean(axes, keepdim=True)  # x − μ
        inverse_std = torch.rsqrt(centered.square().mean(axes, keepdim=True) + eps)  # σ⁻¹, (1, C, 1, …)
    sum_g = channel_sums(grad_output)  # Σ g
    sum_g_centered = channel_sums(grad_output * centered)  # Σ g (x − μ)
    grad_x = grad_weight = grad_bias = None
    if needs_x_grad:
        scale = inverse_std if weight is None else channel(weight, x) * inverse_std  # a = γ σ⁻¹
        slope = -scale * inverse_std.square() * channel(sum_g_centered / count, x)  # b = −γ σ⁻³ Σ g (x − μ) / M
        offset = -scale * channel(sum_g / count, x)  # c = −γ σ⁻¹ Σ g / M
        grad_x = combined(grad_output, centered, scale, slope, offset)
    if weight is not None and needs_weight_grad:
        grad_weight = inverse_std.reshape(-1) * sum_g_centered  # ∂C/∂γ = Σ g x̂ = σ⁻¹ Σ g (x − μ)
    if has_bias and needs_bias_grad:
        grad_bias = sum_g  # ∂C/∂β = Σ g
    return grad_x, grad_weight, grad_bias


def combined(grad_output, centered, scale, slope, offset):
    """a g + b (x − μ) + c, written over x − μ, which ``training_gradients`` computed for itself: a fresh tensor of
    the activations' size costs its pages' first writes (at 100 × 32 × 28 × 28 on two cores, 0.8 ms for the three
    passes in place against 1.3 out of place). Out of place where the gradient is batched and x − μ is not (the
    legacy vmap of ``torch.autograd.grad(..., is_grads_batched=True)``, which gradcheck's batched check runs), known
    by its error: it refuses the first product, before anything is written."""
    try:
        return centered.mul_(slope).addcmul_(grad_output, scale).add_(offset)
    except RuntimeError as error:
        if "vmap" not in str(error):
            raise
        return torch.addcmul(offset, grad_output, scale).addcmul_(centered, slope)


def channel_sums(t):
    """Σ over every axis but the channel's (1) of ``t`` ``(N, C, *)``: ``(C,)``. The positions first, then the
    examples: on the CPU two reductions along memory run faster than one over axes (0, 2, 3) (0.3 ms against 0.8 at
    256 × 64 × 14 × 14)."""
    return t.sum(tuple(range(2, t.dim()))).sum(0) if t.dim() > 2 else t.sum(0)


class BatchNorm(autograd.BatchNorm):
    """The reference ``BatchNorm`` (forward, setup_context, jvp), its training backward by ``training_gradients``,
    or, where ``kernels.chosen_for_backward`` says so, by one Triton kernel (``kernels.norm.batch_norm_backward``:
    the statistics, both sums and the reference's σ⁻¹(ĝ − mean ĝ − x̂ mean(ĝ x̂)), one program per channel)."""

    @staticmethod
    def backward(ctx, grad_output):
        return BatchNorm.gradients_from(ctx, grad_output, ctx.saved_tensors)

    @staticmethod
    def gradients_from(ctx, grad_output, saved):
        """The backward, from what ``setup_context`` saved: x, γ and the running statistics."""
        if not ctx.training or torch.is_grad_enabled():  # evaluation, or a double backward: the reference's
            options = ctx.training, ctx.eps, ctx.has_bias
            return autograd.BatchNorm.gradients(grad_output, *saved, *options, needs_input_grad=ctx.needs_input_grad)
        x, weight, _, _ = saved
        if kernels.chosen_for_backward(x):
            gradients = kernels.norm.batch_norm_backward(grad_output, x, weight, ctx.eps)
            gradients = _selected(ctx.needs_input_grad[:3], weight, ctx.has_bias, *gradients)
        else:
            gradients = training_gradients(grad_output, x, weight, ctx.eps, ctx.has_bias, ctx.needs_input_grad)
        return *gradients, None, None, None, None, None


class BatchNormKeepingStatistics(torch.autograd.Function):
    """``BatchNorm`` in eager mode on the CPU, in the classic form (``forward(ctx, …)``, see ``manualbp.fast.call``):
    in training, its forward is ATen's ``native_batch_norm``, the very kernel ``torch.nn.functional.batch_norm``
    runs on the CPU (so y and the running statistics are the reference forward's, bit for bit), which also returns
    the batch's μ and σ⁻¹; they are kept, two numbers per channel, so that the backward does not compute them again
    (four of its passes over the activations: at 256 × 32 × 28 × 28 on two cores, 25 ms of 44).

    Everywhere else (evaluation, a CUDA tensor, a double backward) it is ``BatchNorm``'s forward, backward and jvp.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, training, momentum, eps):
        inputs = (x, weight, bias, running_mean, running_var, training, momentum, eps)
        # F.batch_norm refuses one value per channel and ε ≤ 0 in training, and passes an empty batch through, in
        # Python: those take the reference's forward, and its errors
        if training and x.is_cpu and momentum is not None and eps > 0 and x.numel() > x.shape[1]:
            output, *statistics = torch.ops.aten.native_batch_norm(*inputs)
        else:
            output, statistics = BatchNorm.forward(*inputs), ()
        if training:  # as BatchNorm.setup_context: the running statistics have moved, the backward needs the batch's
            running_mean = running_var = None
        ctx.save_for_backward(x, weight, running_mean, running_var, *statistics)
        if forward_ad_level_open():  # as manualbp.fast.call's twins: nothing to keep for a jvp that cannot run
            ctx.save_for_forward(x, weight, running_mean, running_var)
        ctx.training, ctx.eps, ctx.has_bias = training, eps, bias is not None
        return output

    @staticmethod
    def backward(ctx, grad_output):
        x, weight, running_mean, running_var, *statistics = ctx.saved_tensors
        if statistics and not torch.is_grad_enabled() and not kernels.chosen_for(x):
            options = ctx.eps, ctx.has_bias, ctx.needs_input_grad
            gradients = training_gradients(grad_output, x, weight, *options, statistics)
            return *gradients, None, None, None, None, None
        # not kept, a double backward, or a kernel's device: from x, as BatchNorm's
        return BatchNorm.gradients_from(ctx, grad_output, (x, weight, running_mean, running_var))

    jvp = staticmethod(BatchNorm.jvp)


class LayerNorm(autograd.LayerNorm):
    """The reference ``LayerNorm``; its backward, where ``kernels.chosen_for_backward`` says so, is the reference's
    formula as one Triton kernel (``kernels.norm.layer_norm_backward``: the statistics, both row sums and
    σ⁻¹(ĝ − mean ĝ − x̂ mean(ĝ x̂)) in one pass over each row). Everywhere else, and for rows wider than one block,
    the reference's own backward."""

    @staticmethod
    def backward(ctx, grad_output):
        x, weight = ctx.saved_tensors
        shape = x.shape[x.dim() - len(ctx.axes) :]  # normalized_shape
        columns = math.prod(shape)  # N, the normalised entries of one example
        if not (kernels.chosen_for_backward(x) and 0 < columns <= kernels.norm.FUSED_COLUMNS):
            return autograd.LayerNorm.backward(ctx, grad_output)
        grad_x, grad_weight, grad_bias = kernels.norm.layer_norm_backward(grad_output, x, weight, columns, ctx.eps)
        return _asked_for(ctx, weight, grad_x, grad_weight.reshape(shape), grad_bias.reshape(shape))


class GroupNorm(autograd.GroupNorm):
    """The reference ``GroupNorm``; its backward, where ``kernels.chosen_for_backward`` says so and one group fits a
    block, is the reference's formula as one Triton kernel (``kernels.norm.group_norm_backward``); everywhere else
    the reference's own backward."""

    @staticmethod
    def backward(ctx, grad_output):
        x, weight = ctx.saved_tensors
        if not (kernels.chosen_for_backward(x) and _group_fits_a_block(x, ctx.num_groups)):
            return autograd.GroupNorm.backward(ctx, grad_output)
        gradients = kernels.norm.group_norm_backward(grad_output, x, weight, ctx.num_groups, ctx.eps)
        return _asked_for(ctx, weight, *gradients)


def _asked_for(ctx, weight, *gradients):
    """A kernel's three gradients (x, γ, β) as the backward of a Function of (x, options, γ, β, ε) returns them,
    ``_selected`` by the flags of x, γ and β."""
    needs = ctx.needs_input_grad
    grad_x, grad_weight, grad_bias = _selected((needs[0], *needs[2:4]), weight, ctx.has_bias, *gradients)
    return grad_x, None, grad_weight, grad_bias, None


def _selected(needs_input_grad, weight, has_bias, grad_x, grad_weight, grad_bias):
    """``(∂C/∂x, ∂C/∂γ, ∂C/∂β)``, each None where ``needs_input_grad`` (the flags of x, γ and β) does not ask for
    it, or the layer has no γ or β."""
    needs_x_grad, needs_weight_grad, needs_bias_grad = needs_input_grad
    return (
        grad_x if needs_x_grad else None,
        grad_weight if weight is not None and needs_weight_grad else None,
        grad_bias if has_bias and needs_bias_grad else None,
    )


def _group_fits_a_block(x, num_groups):
    """Whether one group of ``x`` ``(N, C, *)`` (C/G channels of all their positions) fits the kernel's block."""
    block_c, block_s = kernels.norm.group_norm_blocks(x.shape[1] // num_groups, math.prod(x.shape[2:]))
    return block_c * block_s <= kernels.norm.FUSED_COLUMNS
