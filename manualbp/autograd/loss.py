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

    Forward mode (``jvp``): with tangents ȧ, ẏ, ẇ, each term wᵢ(aᵢ − yᵢ)² changes by
    2wᵢ(aᵢ − yᵢ)(ȧᵢ − ẏᵢ) + ẇᵢ(aᵢ − yᵢ)², the same partial derivatives as above; ``"sum"`` adds them up, ``"mean"``
    divides by n, or, weighted, takes the quotient rule: (C/W)˙ = (Ċ − (C/W)·Ẇ) / W with Ẇ = Σᵢ ẇᵢ.

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
        ctx.save_for_forward(a, y, weight)
        ctx.reduction = reduction

    @staticmethod
    def backward(ctx, grad_output):
        a, y, weight = ctx.saved_tensors
        mean = ctx.reduction == "mean"
        diff = a - y
        grad_a = grad_weight = None
        if weight is None:
            # the scale first, as PyTorch's kernel does, so the rounding (and so every bit) is the same
            scale = 2 / a.numel() if mean and a.numel() else 2.0  # (no elements: an empty gradient, any scale)
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

    @staticmethod
    def jvp(ctx, a_tangent, y_tangent, weight_tangent, _):
        a, y, weight = ctx.saved_tensors
        diff = a - y
        tangent = 2 * diff * (a_tangent - y_tangent)  # ∂/∂a · ȧ + ∂/∂y · ẏ, with ∂/∂y = −∂/∂a
        if weight is not None:
            tangent = tangent * weight + weight_tangent * diff.square()  # and ∂/∂w · ẇ
        if ctx.reduction == "none":
            return tangent
        if ctx.reduction == "sum":
            return tangent.sum()
        if weight is None:
            return tangent.sum() / a.numel()
        total = weight.sum()
        mean = (diff.square() * weight).sum() / total
        return (tangent.sum() - mean * weight_tangent.sum()) / total  # the quotient rule


class CrossEntropyLoss(torch.autograd.Function):
    r"""Softmax and the negative log-likelihood in one Function, C = −Σ_c q_c log p_c with p = softmax(z).

    ``z`` holds the logits of M rows over K classes. For a row with class-index target t, the target
    distribution q is one-hot at t, scaled by the class weight w_t; with label smoothing ε it becomes
    q_c = (1 − ε) w_t [c = t] + ε w_c / K. Rows whose target is ``ignore_index`` have q = 0. A target of class
    probabilities y (a floating-point ``(M, K)``, PyTorch's "soft" targets) gives q_c = ((1 − ε) y_c + ε/K) w_c.

    Write ℓ = log p = z − log Σ_k e^{z_k} (log-softmax, computed stably by subtracting max z first).
    Then ∂ℓ_c/∂z_k = [c = k] − p_k, and with u = ∂C/∂ℓ = −q·g (g the upstream gradient of the row) the
    chain rule, summing over every ℓ_c that z_k feeds, gives

        ∂C/∂z_k = Σ_c u_c ([c = k] − p_k) = u_k − p_k Σ_c u_c  =  g (p_k Σ_c q_c − q_k)

    For the plain case (one-hot q, no weights) this is the familiar ∂C/∂z = (softmax(z) − onehot(t))·g.
    ``reduction="mean"`` divides g by Σ_rows w_t over the rows not ignored (by their count when unweighted; by M
    for class probabilities); ``"sum"`` by 1; ``"none"`` gives each row its own upstream g. With class
    probabilities C depends on y too: ∂C/∂y_c = −(1 − ε) w_c ℓ_c · g.

    Forward mode (``jvp``) pushes a tangent ż through the same two steps the other way: ℓ̇_c = ż_c − Σ_k p_k ż_k
    (the softmax Jacobian, now applied to a direction), then Ċ = −Σ_c q_c ℓ̇_c per row (and −Σ_c (1 − ε) w_c ẏ_c ℓ_c
    for a direction ẏ of soft targets), reduced as C is. The log-probabilities' tangent is ℓ̇ itself.

    The log-probabilities ℓ are a second output, so the backward can rebuild p = e^ℓ without a second
    softmax, and so a double backward can differentiate through p; the backward therefore also takes an
    upstream gradient for ℓ itself (None in ordinary use) and adds it to u before the same formula.

    The value C itself is PyTorch's: log-softmax, then (without smoothing) its ``nll_loss`` kernel, which picks
    −ℓ_t, weighs and reduces; the smoothed value is written out. What this Function derives is the backward.

    Shapes: z: ``(M, K)``; target: ``(M,)`` of class indices or ``(M, K)`` of class probabilities; weight:
    ``(K,)`` or None; loss: ``()`` for ``"mean"`` and ``"sum"``, ``(M,)`` for ``"none"``; log-probabilities:
    ``(M, K)``.
    ``manualbp.functional.cross_entropy`` folds every other layout PyTorch accepts into this one.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(z, target, weight, ignore_index, label_smoothing, reduction):
        log_probs = torch.log_softmax(z, dim=1)
        if target.is_floating_point():  # class probabilities: C = −Σ_c q_c ℓ_c per row
            loss = -(target_distribution(target, weight, ignore_index, label_smoothing, log_probs) * log_probs).sum(1)
            return _reduce_rows(loss, reduction, mean_divisor(target, weight, ignore_index, log_probs)), log_probs
        if label_smoothing == 0:
            # C = −w_t ℓ_t per row, reduced: PyTorch's nll_loss kernel picks, weighs and sums exactly that
            loss = torch.nn.functional.nll_loss(
                log_probs, target, weight, ignore_index=ignore_index, reduction=reduction
            )
            return loss, log_probs
        # C = (1 − ε)·(−w_t ℓ_t) + ε/K·(−Σ_c w_c ℓ_c) per row: −Σ_c q_c ℓ_c with the two parts of q apart
        keep = target != ignore_index
        w_t = target_weight(target, weight, ignore_index, log_probs)
        picked = -log_probs.gather(1, target.where(keep, 0).unsqueeze(1)).squeeze(1) * w_t
        spread = -(log_probs if weight is None else log_probs * weight).sum(1)
        # where(), not a product with the mask: an ignored row may hold −inf, and −inf · 0 is nan
        loss = (1 - label_smoothing) * torch.where(keep, picked, 0)
        loss = loss + label_smoothing / z.shape[1] * torch.where(keep, spread, 0)
        return _reduce_rows(loss, reduction, w_t.sum()), log_probs

    @staticmethod
    def setup_context(ctx, inputs, output):
        z, target, weight, ignore_index, label_smoothing, reduction = inputs
        _, log_probs = output
        ctx.save_for_backward(target, weight, log_probs)
        ctx.save_for_forward(target, weight, log_probs)
        ctx.ignore_index = ignore_index
        ctx.label_smoothing = label_smoothing
        ctx.reduction = reduction
        ctx.set_materialize_grads(False)  # an output (or input) with no gradient gets None, not a tensor of zeros

    @staticmethod
    def backward(ctx, grad_loss, grad_log_probs):
        target, weight, log_probs = ctx.saved_tensors
        grad_z = grad_target = None
        if grad_loss is not None:
            grad_loss = _per_row(grad_loss, ctx.reduction, mean_divisor(target, weight, ctx.ignore_index, log_probs))
        if ctx.needs_input_grad[0] and (grad_loss is not None or grad_log_probs is not None):
            u = torch.zeros_like(log_probs)  # u = ∂C/∂ℓ
            if grad_loss is not None:
                u = -target_distribution(target, weight, ctx.ignore_index, ctx.label_smoothing, log_probs) * grad_loss
                if not target.is_floating_point():
                    # an ignored row asks nothing: its q is 0, but g/D is inf when every row is ignored (D = 0)
                    u = u.where((target != ctx.ignore_index).unsqueeze(1), 0)
            if grad_log_probs is not None:
                u = u + grad_log_probs
            # ∂C/∂z = u − p Σ_c u_c  (= g(p Σ_c q_c − q) when nothing flows into ℓ itself)
            grad_z = u - log_probs.exp() * u.sum(1, keepdim=True)
        if ctx.needs_input_grad[1] and grad_loss is not None:  # class probabilities: ∂C/∂y_c = −(1 − ε) w_c ℓ_c g
            class_weight = 1 if weight is None else weight
            grad_target = -(1 - ctx.label_smoothing) * class_weight * log_probs * grad_loss
        return grad_z, grad_target, None, None, None, None

    @staticmethod
    def jvp(ctx, z_tangent, target_tangent, weight_tangent, *_):
        target, weight, log_probs = ctx.saved_tensors
        log_probs_tangent = torch.zeros_like(log_probs)
        if z_tangent is not None:  # ℓ̇ = ż − Σ_k p_k ż_k
            log_probs_tangent = z_tangent - (log_probs.exp() * z_tangent).sum(1, keepdim=True)
        q = target_distribution(target, weight, ctx.ignore_index, ctx.label_smoothing, log_probs)
        loss_tangent = -(q * log_probs_tangent).sum(1)  # Ċ = −Σ_c q_c ℓ̇_c per row
        if target_tangent is not None:  # soft targets: −Σ_c (1 − ε) w_c ẏ_c ℓ_c
            class_weight = 1 if weight is None else weight
            loss_tangent = loss_tangent - ((1 - ctx.label_smoothing) * class_weight * target_tangent * log_probs).sum(1)
        divisor = mean_divisor(target, weight, ctx.ignore_index, log_probs)
        return _reduce_rows(loss_tangent, ctx.reduction, divisor), log_probs_tangent


def target_weight(target, weight, ignore_index, log_probs):
    """w_t for each row of class-index targets, shape ``(M,)``: its target class's weight (1 unweighted), 0 if
    ignored."""
    keep = target != ignore_index
    if weight is None:
        return keep.to(log_probs.dtype)
    return weight[target.where(keep, 0)] * keep


def mean_divisor(target, weight, ignore_index, log_probs):
    """What ``reduction="mean"`` divides by: Σ_rows w_t over the rows that count (class indices), or the number
    of rows M (class probabilities), as PyTorch does."""
    if target.is_floating_point():
        return log_probs.shape[0]
    return target_weight(target, weight, ignore_index, log_probs).sum()


def target_distribution(target, weight, ignore_index, label_smoothing, log_probs):
    """q, shape ``(M, K)``: for class indices q_c = (1 − ε) w_t [c = t] + ε w_c / K, zero where t is
    ``ignore_index``; for class probabilities y, q_c = ((1 − ε) y_c + ε / K) w_c."""
    classes = log_probs.shape[1]
    class_weight = 1 if weight is None else weight
    if target.is_floating_point():
        return ((1 - label_smoothing) * target + label_smoothing / classes) * class_weight
    keep = (target != ignore_index).unsqueeze(1)
    picked = ((1 - label_smoothing) * target_weight(target, weight, ignore_index, log_probs)).unsqueeze(1)
    q = torch.zeros_like(log_probs).scatter(1, target.where(keep.squeeze(1), 0).unsqueeze(1), picked)
    if label_smoothing > 0:
        q = q + (label_smoothing / classes) * class_weight * keep
    return q


def _reduce_rows(loss, reduction, divisor):
    """Per-row values ``(M,)`` reduced as ``reduction`` says; ``"mean"`` divides the sum by ``divisor``."""
    if reduction == "mean":
        return loss.sum() / divisor
    return loss.sum() if reduction == "sum" else loss


def _per_row(grad_loss, reduction, divisor):
    """The upstream gradient as each row sees it: a column ``(M, 1)`` for ``"none"``, else one number for every
    row (divided by ``divisor`` for ``"mean"``, as C was)."""
    if reduction == "none":
        return grad_loss.unsqueeze(1)
    return grad_loss / divisor if reduction == "mean" else grad_loss
