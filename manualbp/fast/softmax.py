"""Softmax's and log-softmax's backward as one Triton kernel on a GPU, over the last dimension."""

from manualbp import autograd
from manualbp.fast import kernels


def _kernel_runs(saved, dim):
    """Whether the backward runs ``kernels.softmax.softmax_backward``: where ``kernels.chosen_for_backward`` says so,
    over the last dimension (the kernel's rows)."""
    return kernels.chosen_for_backward(saved) and saved.dim() > 0 and dim in (-1, saved.dim() - 1)


class Softmax(autograd.Softmax):
    """The reference ``Softmax``; its backward p ⊙ (g − Σ g·p) by one kernel where ``_kernel_runs``, the
    reference's ``times_jacobian`` everywhere else."""

    @staticmethod
    def backward(ctx, grad_output):
        (p,) = ctx.saved_tensors
        if _kernel_runs(p, ctx.dim):
            return kernels.softmax.softmax_backward(grad_output, p, False), None
        return autograd.Softmax.backward(ctx, grad_output)


class LogSoftmax(autograd.LogSoftmax):
    """The reference ``LogSoftmax``; its backward g − p Σ g by one kernel where ``_kernel_runs``, the reference's
    ``gradients`` everywhere else."""

    @staticmethod
    def backward(ctx, grad_output):
        (log_p,) = ctx.saved_tensors
        if _kernel_runs(log_p, ctx.dim):
            return kernels.softmax.softmax_backward(grad_output, log_p, True), None
        return autograd.LogSoftmax.backward(ctx, grad_output)
