"""The quadratic cost, C = Σᵢ (aᵢ − yᵢ)², with ∂C/∂a derived by hand."""

import torch


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

    ``gradients`` and ``tangent`` hold the two derivations without a ctx, for callers that have the saved tensors
    themselves; ``backward`` and ``jvp`` only unpack ctx into them. (Not ``vjp``: ``torch.autograd.Function``
    already has a ``vjp``, an alias of ``backward``, and refuses a class that defines both.)

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
        if reduction == "mean":
            return weighted.sum() / weight.sum()
        return weighted.sum() if reduction == "sum" else weighted

    @staticmethod
    def setup_context(ctx, inputs, output):
        a, y, weight, reduction = inputs
        ctx.save_for_backward(a, y, weight)
        ctx.save_for_forward(a, y, weight)
        ctx.reduction = reduction

    @staticmethod
    def backward(ctx, grad_output):
        return MSELoss.gradients(grad_output, *ctx.saved_tensors, ctx.reduction, needs_input_grad=ctx.needs_input_grad)

    @staticmethod
    def jvp(ctx, a_tangent, y_tangent, weight_tangent, _):
        return MSELoss.tangent(a_tangent, y_tangent, weight_tangent, *ctx.saved_tensors, ctx.reduction)

    @staticmethod
    def gradients(grad_output, a, y, weight, reduction, needs_input_grad=None):
        """∂C/∂a, ∂C/∂y, ∂C/∂w (and None for ``reduction``), from the upstream gradient ``grad_output``."""
        needs_a_grad, needs_y_grad, needs_weight_grad, _ = needs_input_grad or (True,) * 4
        mean = reduction == "mean"
        diff = a - y
        grad_a = grad_weight = None
        if weight is None:
            # the scale first, as PyTorch's kernel does, so the rounding (and so every bit) is the same
            scale = 2 / a.numel() if mean and a.numel() else 2.0  # (no elements: an empty gradient, any scale)
            grad_a = scale * diff * grad_output
        else:
            total = weight.sum() if mean else 1
            grad_a = 2 * weight * diff * grad_output / total
            if needs_weight_grad:
                squared_error = diff.square()
                if mean:
                    squared_error = squared_error - (squared_error * weight).sum() / total
                grad_weight = squared_error * grad_output / total
        return grad_a if needs_a_grad else None, -grad_a if needs_y_grad else None, grad_weight, None

    @staticmethod
    def tangent(a_tangent, y_tangent, weight_tangent, a, y, weight, reduction):
        """Ċ along the directions ȧ, ẏ, ẇ (tensors of zeros where an input has no tangent)."""
        diff = a - y
        tangent = 2 * diff * (a_tangent - y_tangent)  # ∂/∂a · ȧ + ∂/∂y · ẏ, with ∂/∂y = −∂/∂a
        if weight is not None:
            tangent = tangent * weight + weight_tangent * diff.square()  # and ∂/∂w · ẇ
        if reduction == "none":
            return tangent
        if reduction == "sum":
            return tangent.sum()
        if weight is None:
            return tangent.sum() / a.numel()
        total = weight.sum()
        mean = (diff.square() * weight).sum() / total
        return (tangent.sum() - mean * weight_tangent.sum()) / total  # the quotient rule
