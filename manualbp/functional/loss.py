"""The losses: ``mse_loss`` and ``cross_entropy`` (class indices or class probabilities)."""

import warnings

import torch

from manualbp import fast
from manualbp.fast.torch_internals import any_autocast_enabled, legacy_reduction
from manualbp.functional._checks import (
    OPERAND_ERRORS,
    _autocast_to_float32,
    _check_reduction,
    _check_same,
    _check_tensors,
    _one_device,
)

__all__ = ["cross_entropy", "mse_loss"]


def mse_loss(input, target, size_average=None, reduce=None, reduction="mean", weight=None):
    """Mean (or summed) squared error. See ``manualbp.autograd.MSELoss`` for C = Σ(a − y)², ∂C/∂a = 2(a − y).

    Args:
        input: ``(*)``.
        target: ``(*)``, broadcast against ``input`` with a warning when the shapes differ (as PyTorch does).
        size_average, reduce: deprecated, as in PyTorch; use ``reduction``.
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"``.
        weight: optional, the shape of ``input``; weights each squared error (``"mean"`` divides by its sum).
    """
    if size_average is not None or reduce is not None:
        reduction = legacy_reduction(size_average, reduce)
    _check_reduction(reduction)
    try:
        same_shape = target.shape == input.shape
    except AttributeError:  # costs nothing unless raised; torch's type here (its mse_loss reads target.size())
        _check_tensors("mse_loss", ("input", "target"), AttributeError, input=input, target=target)
        raise
    if not same_shape:
        warnings.warn(
            f"mse_loss: target size {tuple(target.shape)} differs from input size {tuple(input.shape)}; they "
            "will be broadcast, which is likely not what you want. Make them the same size.",
            stacklevel=2,
        )
        input, target = torch.broadcast_tensors(input, target)
    if weight is not None and weight.shape != input.shape:
        raise ValueError(
            f"mse_loss: weight must have the input's shape {tuple(input.shape)}, got {tuple(weight.shape)}"
        )
    input, target, weight = _autocast_to_float32(input, target, weight)
    if input.dtype != target.dtype:  # PyTorch promotes here rather than refusing
        dtype = torch.promote_types(input.dtype, target.dtype)
        input, target = input.to(dtype), target.to(dtype)
    if weight is not None:
        _check_same("mse_loss", "dtype", input=input, target=target, weight=weight)
    if not _one_device(input, target, weight):
        _check_same("mse_loss", "device", input=input, target=target, weight=weight)
    return fast.mse_loss(input, target, weight, reduction)


def cross_entropy(
    input,
    target,
    weight=None,
    size_average=None,
    ignore_index=-100,
    reduce=None,
    reduction="mean",
    label_smoothing=0.0,
):
    """Softmax cross-entropy from logits, against class indices or class probabilities.

    The plain case (class indices, no ``ignore_index`` hit, no weights, no smoothing, the mean) runs
    ``manualbp.autograd.OneHotCrossEntropyLoss``, ∂C/∂z = (softmax(z) − onehot(t))/N; everything else runs
    ``manualbp.autograd.CrossEntropyLoss``, which derives what each option adds. (Where the targets cannot be read
    cheaply, on a GPU or under torch.compile or torch.func, the general one runs: it is equal on the plain case.)

    Args:
        input: logits, ``(C,)``, ``(N, C)`` or ``(N, C, d₁, …, d_k)``.
        target: class indices in ``[0, C)`` (an integer tensor), ``()``, ``(N,)`` or ``(N, d₁, …, d_k)``, with
            ``ignore_index`` marking entries that count for nothing; or class probabilities, floating point and of
            the input's shape (PyTorch's rule: a target shaped like the input holds probabilities).
        weight: optional per-class weights, ``(C,)``.
        size_average, reduce: deprecated, as in PyTorch; use ``reduction``.
        reduction: ``"mean"`` (default; divided by the summed weight of the targets for class indices, by the
            number of targets for probabilities), ``"sum"`` or ``"none"``.
        label_smoothing: ε in [0, 1]; the target becomes (1 − ε)·target + ε/C.

    Returns:
        ``()`` for ``"mean"`` and ``"sum"``; the input's shape without the class dimension for ``"none"``.
    """
    try:
        if _plain_unchecked(input, target, weight, ignore_index, reduction, label_smoothing, size_average, reduce):
            return fast.one_hot_cross_entropy(input, target)[0]
    except OPERAND_ERRORS:  # an operation refused an operand: the checks below name it, in one line
        pass
    if size_average is not None or reduce is not None:
        reduction = legacy_reduction(size_average, reduce)
    _check_reduction(reduction)
    if not 0.0 <= label_smoothing <= 1.0:
        raise RuntimeError(f"cross_entropy: label_smoothing must be between 0.0 and 1.0, got {label_smoothing}")
    try:
        floating = input.is_floating_point()
        probabilities = target.shape == input.shape
    except AttributeError:  # costs nothing unless raised: a non-tensor argument is torch's TypeError
        _check_tensors("cross_entropy", ("input", "target"), input=input, target=target, weight=weight)
        raise
    if not floating:  # torch's type: its log_softmax kernel is not implemented for integers
        raise NotImplementedError(f"cross_entropy: input must hold floating-point logits, got dtype {input.dtype}")
    if probabilities:  # first, as in PyTorch: a 0-D input with a 0-D integer target fails here
        _check_probability_target(target, ignore_index)
    if input.dim() == 0:  # torch's type: the class dimension, 1, is out of range
        raise IndexError("cross_entropy: input must have a class dimension, (C,), (N, C) or (N, C, d₁, …), got ()")
    num_classes = input.shape[0] if input.dim() == 1 else input.shape[1]
    if weight is not None and tuple(weight.shape) != (num_classes,):
        raise RuntimeError(
            f"cross_entropy: weight must have shape ({num_classes},), one per class, got {tuple(weight.shape)}"
        )
    if not probabilities:
        _check_index_target(input, target)
    unbatched = input.dim() == 1
    if unbatched:  # one row; a class index may come as () or, as PyTorch also takes it, (1,)
        input, target = input.unsqueeze(0), target.unsqueeze(0) if probabilities else target.reshape(1)
    input, weight = _autocast_to_float32(input, weight)
    if probabilities and target.dtype is not input.dtype:  # PyTorch promotes here rather than refusing
        dtype = torch.promote_types(input.dtype, target.dtype)
        input, target = input.to(dtype), target.to(dtype)
    if weight is not None:
        _check_same("cross_entropy", "dtype", input=input, weight=weight)
    if not _one_device(input, target, weight):
        _check_same("cross_entropy", "device", input=input, target=target, weight=weight)
    # fold every layout into (rows, classes) and (rows,) or (rows, classes): the Function handles one case only
    logits = input if input.dim() == 2 else input.movedim(1, -1).reshape(-1, num_classes)
    if probabilities:
        rows = target if target.dim() == 2 else target.movedim(1, -1).reshape(-1, num_classes)
    else:
        rows = (target if target.dim() == 1 else target.reshape(-1)).long()
        span = None if rows.numel() == 0 else fast.target_range(rows)
        if span is not None:
            _check_targets(rows, num_classes, ignore_index, *span)
        # the plain case, (softmax(z) − onehot(t))/N, where the targets are known to ignore no row (read cheaply)
        if (
            reduction == "mean"
            and weight is None
            and label_smoothing == 0
            and span is not None
            and not span[0] <= ignore_index <= span[1]
        ):
            return fast.one_hot_cross_entropy(logits, rows)[0]
    loss, _ = fast.cross_entropy(logits, rows, weight, ignore_index, float(label_smoothing), reduction)
    if reduction == "none":
        shape = (input.shape[0], *input.shape[2:])
        loss = loss.reshape(shape[1:] if unbatched else shape)
    return loss


def _plain_unchecked(input, target, weight, ignore_index, reduction, label_smoothing, size_average, reduce):
    """Whether cross-entropy's plain case can run on the CPU without the checks and the read of the targets that
    choose it (5.5 µs at 64 × 10 on an AMD EPYC, against 0.7 µs for this test): every option at its default, rows of
    logits and one int64 class index per row, in plain eager mode and outside autocast.

    The plain node's own operations refuse what the checks would: ``log_softmax`` logits that are not floating
    point, ``nll_loss`` a target of the wrong length or out of bounds, and, where z needs a gradient, the one-hot's
    ``scatter_add_`` a target equal to ignore_index (−100), whose row the plain case cannot leave out; the caller then
    runs the checks, which name the operand or take the general case. Where no gradient is computed, ``nll_loss``
    leaves such a row out itself, as the general case does, to the same bits."""
    return (
        weight is None
        and ignore_index == -100
        and reduction == "mean"
        and label_smoothing == 0
        and size_average is None
        and reduce is None
        and input.dim() == 2
        and target.dim() == 1
        and target.dtype is torch.int64
        and input.is_cpu
        and target.is_cpu
        and not any_autocast_enabled()
        and fast.plain_eager()
    )


def _check_probability_target(target, ignore_index):
    if not target.is_floating_point():
        raise RuntimeError(
            f"cross_entropy: a target shaped like the input, {tuple(target.shape)}, holds class probabilities and "
            f"must be floating point, got {target.dtype}; class indices leave out the class dimension"
        )
    if ignore_index != -100:
        raise RuntimeError(
            f"cross_entropy: ignore_index={ignore_index} applies to class indices only, not to a target of class "
            "probabilities: leave it at its default"
        )


def _check_index_target(input, target):
    if input.dim() == 2 and target.dtype is torch.int64 and target.shape == input.shape[:1]:
        return  # a batch of rows and one int64 class index per row: the common case, checked at once
    expected = () if input.dim() == 1 else (input.shape[0], *input.shape[2:])
    if target.is_floating_point() or target.dtype not in (torch.int64, torch.uint8):
        raise RuntimeError(
            f"cross_entropy: class-index targets must be int64, got {target.dtype}; a target of class "
            f"probabilities must have the input's shape {tuple(input.shape)}, got {tuple(target.shape)}"
        )
    if input.dim() > 1 and target.dim() > 0 and input.shape[0] != target.shape[0]:
        raise ValueError(
            f"cross_entropy: expected input batch_size ({input.shape[0]}) to match target batch_size "
            f"({target.shape[0]})"
        )
    if tuple(target.shape) != expected and not (input.dim() == 1 and tuple(target.shape) == (1,)):
        raise RuntimeError(
            f"cross_entropy: for input of shape {tuple(input.shape)}, target must have shape {expected} (class "
            f"indices) or {tuple(input.shape)} (class probabilities), got {tuple(target.shape)}"
        )


def _check_targets(target, num_classes, ignore_index, low, high):
    """Raise if a class index in ``target`` (1-D, lowest ``low``, highest ``high``) is out of range."""
    if low >= 0 and high < num_classes:  # the common case: nothing more to read
        return
    bad = (target != ignore_index) & ((target < 0) | (target >= num_classes))
    if bad.any():
        raise IndexError(
            f"cross_entropy: target {target[bad][0].item()} is out of bounds: class indices must lie in "
            f"[0, {num_classes}) (or equal ignore_index={ignore_index})"
        )
