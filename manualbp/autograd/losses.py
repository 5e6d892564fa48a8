"""Losses C(a, y) with ∂C/∂a derived by hand."""

import torch


def _reduce(loss, reduction):
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


class MSELoss(torch.autograd.Function):
    r"""The quadratic cost, C = Σᵢ (aᵢ − yᵢ)², and its derivative ∂C/∂aᵢ = 2(aᵢ − yᵢ).

    ``reduction`` is PyTorch's: ``"sum"`` is C itself; ``"mean"`` is C / n for n = a.numel(), so
    ∂C/∂aᵢ = 2(aᵢ − yᵢ) / n; ``"none"`` returns every (aᵢ − yᵢ)² and takes an upstream gradient for each.
    Since C depends on y through (a − y) alone, ∂C/∂y = −∂C/∂a.

    With an element-wise ``weight`` w (PyTorch's ``mse_loss(..., weight=w)``), C = Σᵢ wᵢ(aᵢ − yᵢ)² and
    ∂C/∂aᵢ = 2wᵢ(aᵢ − yᵢ), ∂C/∂wᵢ = (aᵢ − yᵢ)²; ``"mean"`` then divides by W = Σᵢ wᵢ rather than n, and by the
    quotient rule ∂(C/W)/∂wᵢ = ((aᵢ − yᵢ)² − C/W) / W.

    Shapes: a, y and weight: ``(*)``, all the same shape (``manualbp.functional.mse_loss`` broadcasts a and y
    first); the output: ``()`` for ``"mean"`` and ``"sum"``, ``(*)`` for ``"none"``.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(a, y, weight, reduction):
        if weight is None:
            # C itself, by PyTorch's one-pass kernel (the forward is not what this project derives)
            return torch.nn.functional.mse_loss(a, y, reduction=reduction)
        weighted = (a - y).square() * weight
        return weighted.sum() / weight.sum() if reduction == "mean" else _reduce(weighted, reduction)

    @staticmethod
    def setup_context(ctx, inputs, output):
        a, y, weight, reduction = inputs
        ctx.save_for_backward(a, y, weight)
        ctx.reduction = reduction

    @staticmethod
    def backward(ctx, grad_output):
        a, y, weight = ctx.saved_tensors
        mean = ctx.reduction == "mean"
        diff = a - y
        grad_a = grad_weight = None
        if weight is None:
            # the scale first, as PyTorch's kernel does, so the rounding (and so every bit) is the same
            scale = 2 / a.numel() if mean else 2.0
            grad_a = scale * diff * grad_output
        else:
            total = weight.sum() if mean else 1
            grad_a = 2 * weight * diff * grad_output / total
            if ctx.needs_input_grad[2]:
                squared_error = diff.square()
                if mean:
                    squared_error = squared_error - (squared_error * weight).sum() / total
                grad_weight = squared_error * grad_output / total
        return (
            grad_a if ctx.needs_input_grad[0] else None,
            -grad_a if ctx.needs_input_grad[1] else None,
            grad_weight,
            None,
        )


class CrossEntropyLoss(torch.autograd.Function):
    r"""Softmax and the negative log-likelihood in one Function, C = −Σ_c q_c log p_c with p = softmax(z).

    ``z`` holds the logits of M rows over K classes. For a row with class-index target t, the target
    distribution q is one-hot at t, scaled by the class weight w_t; with label smoothing ε it becomes
    q_c = (1 − ε) w_t [c = t] + ε w_c / K. Rows whose target is ``ignore_index`` have q = 0.

    Write ℓ = log p = z − log Σ_k e^{z_k} (log-softmax, computed stably by subtracting max z first).
    Then ∂ℓ_c/∂z_k = [c = k] − p_k, and with u = ∂C/∂ℓ = −q·g (g the upstream gradient of the row) the
    chain rule, summing over every ℓ_c that z_k feeds, gives

        ∂C/∂z_k = Σ_c u_c ([c = k] − p_k) = u_k − p_k Σ_c u_c

    For the plain case (one-hot q, no weights) this is the familiar ∂C/∂z = (softmax(z) − onehot(t))·g.
    ``reduction="mean"`` divides by Σ_rows w_t over the rows not ignored (by their count when unweighted);
    ``"sum"`` by 1; ``"none"`` gives each row its own upstream g.

    The log-probabilities ℓ are a second output, so the backward can rebuild p = e^ℓ without a second
    softmax, and so a double backward can differentiate through p; the backward therefore also takes an
    upstream gradient for ℓ itself (None in ordinary use) and sends it through the same formula.

    The value C itself is PyTorch's: log-softmax, then (without smoothing) its ``nll_loss`` kernel, which picks
    −ℓ_t, weighs and reduces; the smoothed value is written out. What this Function derives is the backward.

    ``ignore_index=None`` promises that no row is ignored (``manualbp.functional.cross_entropy`` passes it when
    it has read the targets): without class weights or smoothing, the backward is then p·g with g subtracted at
    each row's target, no masks and no scatter into zeros, which at small batches costs as much as the arithmetic.

    Shapes: z: ``(M, K)``; target: ``(M,)`` of class indices; weight: ``(K,)`` or None; loss: ``()`` for
    ``"mean"`` and ``"sum"``, ``(M,)`` for ``"none"``; log-probabilities: ``(M, K)``.
    ``manualbp.functional.cross_entropy`` folds every other layout PyTorch accepts into this one.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(z, target, weight, ignore_index, label_smoothing, reduction):
        log_probs = torch.log_softmax(z, dim=1)
        if label_smoothing == 0:
            # C = −w_t ℓ_t per row, reduced: PyTorch's nll_loss kernel picks, weighs and sums exactly that
            ignore = _NO_TARGET if ignore_index is None else ignore_index
            loss = torch.nn.functional.nll_loss(log_probs, target, weight, ignore_index=ignore, reduction=reduction)
            return loss, log_probs
        keep, safe_target, target_weight = _rows(target, weight, ignore_index, z.dtype)
        loss = -log_probs.gather(1, safe_target.unsqueeze(1)).squeeze(1)
        smooth = -(log_probs if weight is None else log_probs * weight).sum(1)
        if keep is not None:
            # where(), not a product with the mask: an ignored row may hold −inf, and −inf · 0 is nan
            loss, smooth = torch.where(keep, loss, 0), torch.where(keep, smooth, 0)
        if target_weight is not None:
            loss = loss * target_weight
        loss = (1 - label_smoothing) * loss + label_smoothing / z.shape[1] * smooth
        if reduction == "mean":
            loss = loss.sum() / _total_weight(target_weight, len(target))
        elif reduction == "sum":
            loss = loss.sum()
        return loss, log_probs

    @staticmethod
    def setup_context(ctx, inputs, output):
        z, target, weight, ignore_index, label_smoothing, reduction = inputs
        _, log_probs = output
        ctx.save_for_backward(target, weight, log_probs)
        ctx.ignore_index = ignore_index
        ctx.label_smoothing = label_smoothing
        ctx.reduction = reduction
        ctx.set_materialize_grads(False)

    @staticmethod
    def backward(ctx, grad_loss, grad_log_probs):
        target, weight, log_probs = ctx.saved_tensors
        if not ctx.needs_input_grad[0]:
            return None, None, None, None, None, None
        p = log_probs.exp()
        if grad_log_probs is None:  # the usual case: u = −q·g, so u − p Σ_c u_c = p Σ_c q_c·g − q·g
            if grad_loss is None:
                return None, None, None, None, None, None
            if weight is None and ctx.ignore_index is None and ctx.label_smoothing == 0:
                # q one-hot at t, Σ_c q_c = 1: ∂C/∂z = p·g − onehot(t)·g, the second term added at column t
                rows = len(target)
                g = grad_loss / rows if ctx.reduction == "mean" else grad_loss
                g = g.unsqueeze(1) if g.dim() else g  # a column for "none", else one number for every row
                grad = (p * g).scatter_add_(1, target.unsqueeze(1), (-g).expand(rows, 1))
                return grad, None, None, None, None, None
            q_g, q_g_row_sum = _target_distribution(ctx, target, weight, log_probs, grad_loss)
            return p * q_g_row_sum - q_g, None, None, None, None, None
        u = grad_log_probs
        if grad_loss is not None:
            u = u - _target_distribution(ctx, target, weight, log_probs, grad_loss)[0]
        return u - p * u.sum(1, keepdim=True), None, None, None, None, None


# an ignore_index no class index can equal, for nll_loss when the caller promised that no row is ignored
_NO_TARGET = -100


def _rows(target, weight, ignore_index, dtype):
    """For each row: whether it counts, its target made a valid index, and its class weight w_t.

    ``keep`` is None when every row counts (``ignore_index`` None), ``target_weight`` None when unweighted: the
    common case then costs no masking at all. An ignored row's index is 0 and its weight 0.
    """
    if ignore_index is None:
        return None, target, None if weight is None else weight[target]
    keep = target != ignore_index
    safe_target = target.masked_fill(~keep, 0)
    target_weight = keep.to(dtype) if weight is None else weight[safe_target] * keep
    return keep, safe_target, target_weight


def _total_weight(target_weight, rows):
    """What ``reduction="mean"`` divides by: Σ w_t over the rows that count, or the number of rows."""
    return rows if target_weight is None else target_weight.sum()


def _target_distribution(ctx, target, weight, log_probs, grad_loss):
    """q·g, each row's target distribution q scaled by that row's upstream gradient g, shape ``(M, K)``, and
    its sum over the classes, shape ``(M, 1)`` or ``()``."""
    keep, safe_target, target_weight = _rows(target, weight, ctx.ignore_index, log_probs.dtype)
    rows, classes = log_probs.shape
    if ctx.reduction == "mean":
        grad_loss = grad_loss / _total_weight(target_weight, rows)
    row_scale = grad_loss if target_weight is None else target_weight * grad_loss  # g_i · w_t for every row i
    eps = ctx.label_smoothing
    src = ((1 - eps) * row_scale if eps > 0 else row_scale).expand(rows).unsqueeze(1)
    q_g = torch.zeros_like(log_probs).scatter(1, safe_target.unsqueeze(1), src)
    if eps == 0:  # one non-zero entry per row: its sum is row_scale itself, exactly
        return q_g, row_scale if row_scale.dim() == 0 else row_scale.unsqueeze(1)
    counted = grad_loss if keep is None else keep.to(log_probs.dtype) * grad_loss
    class_weight = 1 if weight is None else weight
    q_g = q_g + (eps / classes) * counted.expand(rows).unsqueeze(1) * class_weight
    return q_g, q_g.sum(1, keepdim=True)
