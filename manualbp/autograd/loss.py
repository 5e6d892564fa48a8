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

        ∂C/∂z_k = Σ_c u_c ([c = k] − p_k) = u_k − p_k Σ_c u_c  =  g (p_k Σ_c q_c − q_k)

    For the plain case (one-hot q, no weights) this is the familiar ∂C/∂z = (softmax(z) − onehot(t))·g.
    ``reduction="mean"`` divides g by Σ_rows w_t over the rows not ignored (by their count when unweighted);
    ``"sum"`` by 1; ``"none"`` gives each row its own upstream g.

    The log-probabilities ℓ are a second output, so the backward can rebuild p = e^ℓ without a second
    softmax, and so a double backward can differentiate through p; the backward therefore also takes an
    upstream gradient for ℓ itself (None in ordinary use) and adds it to u before the same formula.

    The value C itself is PyTorch's: log-softmax, then (without smoothing) its ``nll_loss`` kernel, which picks
    −ℓ_t, weighs and reduces; the smoothed value is written out. What this Function derives is the backward.

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
        if reduction == "mean":
            return loss.sum() / w_t.sum(), log_probs
        return loss.sum() if reduction == "sum" else loss, log_probs

    @staticmethod
    def setup_context(ctx, inputs, output):
        z, target, weight, ignore_index, label_smoothing, reduction = inputs
        _, log_probs = output
        ctx.save_for_backward(target, weight, log_probs)
        ctx.ignore_index = ignore_index
        ctx.label_smoothing = label_smoothing
        ctx.reduction = reduction
        ctx.set_materialize_grads(False)  # an output nobody used gets None, not a tensor of zeros

    @staticmethod
    def backward(ctx, grad_loss, grad_log_probs):
        target, weight, log_probs = ctx.saved_tensors
        if not ctx.needs_input_grad[0] or (grad_loss is None and grad_log_probs is None):
            return None, None, None, None, None, None
        p = log_probs.exp()
        u = torch.zeros_like(log_probs)  # u = ∂C/∂ℓ
        if grad_loss is not None:
            q = target_distribution(target, weight, ctx.ignore_index, ctx.label_smoothing, log_probs)
            if ctx.reduction == "mean":  # C was divided by Σ_rows w_t over the rows that count
                grad_loss = grad_loss / target_weight(target, weight, ctx.ignore_index, log_probs).sum()
            u = -q * (grad_loss.unsqueeze(1) if ctx.reduction == "none" else grad_loss)
        if grad_log_probs is not None:
            u = u + grad_log_probs
        # ∂C/∂z = u − p Σ_c u_c  (= g(p Σ_c q_c − q) when nothing flows into ℓ itself)
        return u - p * u.sum(1, keepdim=True), None, None, None, None, None


def target_weight(target, weight, ignore_index, log_probs):
    """w_t for each row, shape ``(M,)``: the weight of the row's target class (1 unweighted), 0 if ignored."""
    keep = target != ignore_index
    if weight is None:
        return keep.to(log_probs.dtype)
    return weight[target.where(keep, 0)] * keep


def target_distribution(target, weight, ignore_index, label_smoothing, log_probs):
    """q, shape ``(M, K)``: q_c = (1 − ε) w_t [c = t] + ε w_c / K for each row, zero where t = ``ignore_index``."""
    classes = log_probs.shape[1]
    keep = (target != ignore_index).unsqueeze(1)
    picked = ((1 - label_smoothing) * target_weight(target, weight, ignore_index, log_probs)).unsqueeze(1)
    q = torch.zeros_like(log_probs).scatter(1, target.where(keep.squeeze(1), 0).unsqueeze(1), picked)
    if label_smoothing > 0:
        class_weight = 1 if weight is None else weight
        q = q + (label_smoothing / classes) * class_weight * keep
    return q
