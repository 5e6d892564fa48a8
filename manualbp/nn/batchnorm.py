"""``BatchNorm1d`` and ``BatchNorm2d``: y = γ x̂ + β per channel, drop-in twins of ``torch.nn``'s."""

import torch

from manualbp import functional as F
from manualbp.fast.torch_internals import check_batch_norm_input
from manualbp.nn.module import HandDerived

__all__ = ["BatchNorm1d", "BatchNorm2d"]


def _batch_norm(module, input):
    """``torch.nn.modules.batchnorm._BatchNorm.forward``, line for line, calling ``manualbp.functional.batch_norm``:
    the same choice of batch or running statistics, the same momentum (or the cumulative average when momentum is
    None) and the same count of batches."""
    check_batch_norm_input(module, input)
    momentum = 0.0 if module.momentum is None else module.momentum
    if module.training and module.track_running_stats and module.num_batches_tracked is not None:
        module.num_batches_tracked.add_(1)
        momentum = 1.0 / float(module.num_batches_tracked) if module.momentum is None else module.momentum
    # batch statistics in training, and in eval too when there are no running statistics to use
    use_batch = module.training or (module.running_mean is None and module.running_var is None)
    keep_running = not module.training or module.track_running_stats
    return F.batch_norm(
        input,
        module.running_mean if keep_running else None,
        module.running_var if keep_running else None,
        module.weight,
        module.bias,
        use_batch,
        momentum,
        module.eps,
    )


class BatchNorm1d(HandDerived, torch.nn.BatchNorm1d):
    r"""y = γ x̂ + β, x̂ = (x − μ) σ⁻¹ per channel over a batch ``(N, C)`` or ``(N, C, L)``, with the compact backward
    ∂C/∂x = σ⁻¹ (ĝ − mean ĝ − x̂ · mean(ĝ x̂)), ĝ = γ g (``manualbp.autograd.BatchNorm``).

    Args, Shape and Attributes: those of ``torch.nn.BatchNorm1d`` (num_features, eps, momentum, affine,
    track_running_stats, device, dtype); running statistics move in training as in PyTorch.

    Examples::

        >>> manualbp.nn.BatchNorm1d(4)(torch.randn(8, 4)).shape
        torch.Size([8, 4])
    """

    def forward(self, input):
        return _batch_norm(self, input)


class BatchNorm2d(HandDerived, torch.nn.BatchNorm2d):
    r"""y = γ x̂ + β, x̂ = (x − μ) σ⁻¹ per channel of an image batch ``(N, C, H, W)``, μ and σ⁻¹ over N, H and W;
    the compact backward of ``manualbp.autograd.BatchNorm``.

    Args, Shape and Attributes: those of ``torch.nn.BatchNorm2d``.

    Examples::

        >>> manualbp.nn.BatchNorm2d(3)(torch.randn(2, 3, 4, 4)).shape
        torch.Size([2, 3, 4, 4])
    """

    def forward(self, input):
        return _batch_norm(self, input)
