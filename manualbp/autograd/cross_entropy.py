"""Softmax cross-entropy, C = −Σ_c q_c log softmax(z)_c, with ∂C/∂z derived by hand: first the plain case
(``OneHotCrossEntropyLoss``: class indices, the mean), then PyTorch's every option (``CrossEntropyLoss``)."""

import torch


class OneHotCrossEntropyLoss(torch.autograd.Function):
    r"""The plain case: N rows of logits z over K classes, one class index t per row, the mean over the rows,
    C = −(1/N) Σ_rows log p_t with p = softmax(z).

    Write ℓ = log p = z − log Σ_k e^{z_k} (log-softmax). Its Jacobian is ∂ℓ_c/∂z_k = [c = k] − p_k, and a row's
    cost −ℓ_t reaches only ℓ_t, so with g the upstream gradient (1 for ``C.backward()``) the chain rule gives

        ∂C/∂z_k = −(g/N) ([t = k] − p_k) = (p_k − [t = k]) · g/N,    that is    ∂C/∂z = (softmax(z) − onehot(t)) · g/N

    ``docs/derivations.md`` takes the same gradient one intermediate at a time (the derivation ladder) and arrives
    at this closed form.

    Forward mode (``jvp``) applies the same Jacobian to a direction ż: ℓ̇_c = ż_c − Σ_k p_k ż_k, and
    Ċ = −(1/N) Σ_rows ℓ̇_t.

    The log-probabilities ℓ are a second output, so that the backward rebuilds p = e^ℓ without a second softmax,
    and so that a double backward, which differentiates the backward through p, reaches z through this Function;
    a gradient v into ℓ itself (None in ordinary use) adds the log-softmax's own backward, v − p Σ_c v_c.

    ``gradients`` and ``tangent`` hold the two derivations without a ctx (``backward`` and ``jvp`` only unpack ctx
    into them), for callers that have the saved tensors themselves; see ``manualbp.autograd.MSELoss`` for why the
    first is not called ``vjp``.

    The value C is PyTorch's: log-softmax, then its ``nll_loss`` kernel, which picks −ℓ_t and takes the mean.
    ``CrossEntropyLoss`` below is PyTorch's every option (class weights, label smoothing, ``ignore_index``, class
    probabilities, every reduction), starting from this one; on this case the two agree bit for bit.

    Shapes: z: ``(N, K)``; target: ``(N,)``, int64 class indices in [0, K); loss: ``()``; log-probabilities:
    ``(N, K)``.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(z, target):
        log_probs = torch.log_softmax(z, dim=1)
        return torch.nn.functional.nll_loss(log_probs, target), log_probs

    @staticmethod
    def setup_context(ctx, inputs, output):
        _, target = inputs
        _, log_probs = output
        ctx.save_for_backward(target, log_probs)
        ctx.save_for_forward(target, log_probs)
        ctx.set_materialize_grads(False)  # an output with no gradient gets None, not a tensor of zeros

    @staticmethod
    def backward(ctx, grad_loss, grad_log_probs):
        return OneHotCrossEntropyLoss.gradients(grad_loss, grad_log_probs, *ctx.saved_tensors)

    @staticmethod
    def jvp(ctx, z_tangent, _):
        return OneHotCrossEntropyLoss.tangent(z_tangent, *ctx.saved_tensors)

    @staticmethod
    def gradients(grad_loss, grad_log_probs, target, log_probs, needs_input_grad=None):
        """∂C/∂z (and None for the target) from the gradients of the loss and of ℓ, either of which may be None.
        z is the only input with a gradient, so ``needs_input_grad`` asks nothing that is not already known."""
        p = log_probs.exp()
        grad_z = None
        if grad_loss is not None:
            g = grad_loss / len(target)  # the mean: each row's share of the upstream gradient
            # ∂C/∂z = (p − onehot(t))·g/N: p·g/N, then g/N taken off at each row's target class
            grad_z = (p * g).scatter_add_(1, target.unsqueeze(1), (-g).expand(len(target), 1))
        if grad_log_probs is not None:  # a double backward: v − p Σ_c v_c, through the same Jacobian
            from_log_probs = grad_log_probs - p * grad_log_probs.sum(1, keepdim=True)
            grad_z = from_log_probs if grad_z is None else grad_z + from_log_probs
        return grad_z, None

    @staticmethod
    def tangent(z_tangent, target, log_probs):
        """Ċ and ℓ̇ along a direction ż of the logits (the class indices have no tangent)."""
        log_probs_tangent = z_tangent - (log_probs.exp() * z_tangent).sum(1, keepdim=True)  # ℓ̇ = ż − Σ_k p_k ż_k
        loss_tangent = -log_probs_tangent.gather(1, target.unsqueeze(1)).mean()  # Ċ = −(1/N) Σ_rows ℓ̇_t
        return loss_tangent, log_probs_tangent


class CrossEntropyLoss(torch.autograd.Function):
    r"""PyTorch's whole cross-entropy: ``OneHotCrossEntropyLoss`` (class indices, the mean) with every option added.

    The plain case's cost is C = −ℓ_t per row, ℓ = log softmax(z); write it as C = −Σ_c q_c ℓ_c with q = onehot(t),
    the row's target distribution. Each option changes q, or the number the mean divides by, and nothing else:

    - class weights w ``(K,)``: q = w_t · onehot(t), and ``"mean"`` divides by Σ_rows w_t rather than N;
    - ``ignore_index``: a row whose target is ``ignore_index`` has q = 0 and counts for nothing in the mean;
    - label smoothing ε: q_c = (1 − ε) w_t [c = t] + ε w_c / K;
    - class probabilities y ``(M, K)`` (a floating-point target, PyTorch's "soft" targets):
      q_c = ((1 − ε) y_c + ε/K) w_c, the mean divides by the number of rows M, and C depends on y as well:
      ∂C/∂y_c = −(1 − ε) w_c ℓ_c · g;
    - ``reduction``: ``"sum"`` divides by nothing, ``"none"`` gives each row its own upstream gradient.

    The plain case's Jacobian ∂ℓ_c/∂z_k = [c = k] − p_k is the same; what changes is that Σ_c q_c need no longer
    be 1. With u = ∂C/∂ℓ = −q·g (g the row's share of the upstream gradient), summing over every ℓ_c that z_k feeds,

        ∂C/∂z_k = Σ_c u_c ([c = k] − p_k) = u_k − p_k Σ_c u_c  =  g (p_k Σ_c q_c − q_k)

    which for q = onehot(t), Σ_c q_c = 1, is the plain (p − onehot(t))·g again, to the bit
    (``tests/library/test_loss.py``).
    The log-probabilities ℓ are a second output, as in the plain case; a gradient into ℓ itself is added to u before
    the same formula.

    Forward mode (``jvp``) pushes a tangent ż through the same two steps the other way: ℓ̇_c = ż_c − Σ_k p_k ż_k
    (the softmax Jacobian, now applied to a direction), then Ċ = −Σ_c q_c ℓ̇_c per row (and −Σ_c (1 − ε) w_c ẏ_c ℓ_c
    for a direction ẏ of soft targets), reduced as C is. The log-probabilities' tangent is ℓ̇ itself.

    The value C itself is PyTorch's: log-softmax, then (without smoothing) its ``nll_loss`` kernel, which picks
    −ℓ_t, weighs and reduces; the smoothed value is written out. What this Function derives is the backward, in
    ``gradients``, and the jvp, in ``tangent``, as in the plain case.

    Shapes: z: ``(M, K)``; target: ``(M,)`` of class indices or ``(M, K)`` of class probabilities; weight:
    ``(K,)`` or None; loss: ``()`` for ``"mean"`` and ``"sum"``, ``(M,)`` for ``"none"``; log-probabilities:
    ``(M, K)``.
    ``manualbp.functional.cross_entropy`` folds every other layout PyTorch accepts into this one, and calls
    ``OneHotCrossEntropyLoss`` where the plain case applies.
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
        ctx.options = ignore_index, label_smoothing, reduction  # what the derivation needs besides tensors
        ctx.set_materialize_grads(False)  # an output (or input) with no gradient gets None, not a tensor of zeros

    @staticmethod
    def backward(ctx, grad_loss, grad_log_probs):
        return CrossEntropyLoss.gradients(
            grad_loss, grad_log_probs, *ctx.saved_tensors, *ctx.options, needs_input_grad=ctx.needs_input_grad
        )

    @staticmethod
    def jvp(ctx, z_tangent, target_tangent, *_):
        return CrossEntropyLoss.tangent(z_tangent, target_tangent, *ctx.saved_tensors, *ctx.options)

    @staticmethod
    def gradients(
        grad_loss,
        grad_log_probs,
        target,
        weight,
        log_probs,
        ignore_index,
        label_smoothing,
        reduction,
        needs_input_grad=None,
    ):
        """∂C/∂z, ∂C/∂y (class probabilities only) and None for the rest, from the gradients of the loss and of ℓ,
        either of which may be None."""
        needs_z_grad, needs_target_grad = (True, True) if needs_input_grad is None else needs_input_grad[:2]
        grad_z = grad_target = None
        if grad_loss is not None:
            grad_loss = _per_row(grad_loss, reduction, mean_divisor(target, weight, ignore_index, log_probs))
        if needs_z_grad and (grad_loss is not None or grad_log_probs is not None):
            u = torch.zeros_like(log_probs)  # u = ∂C/∂ℓ
            if grad_loss is not None:
                u = -target_distribution(target, weight, ignore_index, label_smoothing, log_probs) * grad_loss
                if not target.is_floating_point():
                    # an ignored row asks nothing: its q is 0, but g/D is inf when every row is ignored (D = 0)
                    u = u.where((target != ignore_index).unsqueeze(1), 0)
            if grad_log_probs is not None:
                u = u + grad_log_probs
            # ∂C/∂z = u − p Σ_c u_c  (= g(p Σ_c q_c − q) when nothing flows into ℓ itself)
            grad_z = u - log_probs.exp() * u.sum(1, keepdim=True)
        if needs_target_grad and grad_loss is not None:  # class probabilities: ∂C/∂y_c = −(1 − ε) w_c ℓ_c g
            class_weight = 1 if weight is None else weight
            grad_target = -(1 - label_smoothing) * class_weight * log_probs * grad_loss
        return grad_z, grad_target, None, None, None, None

    @staticmethod
    def tangent(z_tangent, target_tangent, target, weight, log_probs, ignore_index, label_smoothing, reduction):
        """Ċ and ℓ̇ along directions ż and ẏ (None where zero); the class weights are constants, with no tangent."""
        log_probs_tangent = torch.zeros_like(log_probs)
        if z_tangent is not None:  # ℓ̇ = ż − Σ_k p_k ż_k
            log_probs_tangent = z_tangent - (log_probs.exp() * z_tangent).sum(1, keepdim=True)
        q = target_distribution(target, weight, ignore_index, label_smoothing, log_probs)
        loss_tangent = -(q * log_probs_tangent).sum(1)  # Ċ = −Σ_c q_c ℓ̇_c per row
        if target_tangent is not None:  # soft targets: −Σ_c (1 − ε) w_c ẏ_c ℓ_c
            class_weight = 1 if weight is None else weight
            loss_tangent = loss_tangent - ((1 - label_smoothing) * class_weight * target_tangent * log_probs).sum(1)
        divisor = mean_divisor(target, weight, ignore_index, log_probs)
        return _reduce_rows(loss_tangent, reduction, divisor), log_probs_tangent


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
        # the mask as the logits' dtype: a product with the bool mask itself would be float32 when unweighted
        q = q + (label_smoothing / classes) * class_weight * keep.to(q.dtype)
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
