"""Attention's derivation ladder of docs/derivations.md, rung by rung against autograd, and its closed form against
autograd and against ``ScaledDotProductAttention``'s own gradients."""

import math

import pytest
import torch

from manualbp import autograd as A


def _case(batch, heads, queries, keys, width, value_width, causal, seed):
    """q, k, v, an additive mask (random, with −∞ above the diagonal if ``causal``: every query keeps a key) that is
    broadcast over the batch and heads, and an upstream gradient g = ∂C/∂O; all float64 leaves."""
    generator = torch.Generator().manual_seed(seed)

    def leaf(*shape):
        return torch.randn(*shape, dtype=torch.float64, generator=generator).requires_grad_()

    q, k, v = leaf(batch, heads, queries, width), leaf(batch, heads, keys, width), leaf(batch, heads, keys, value_width)
    mask = torch.randn(queries, keys, dtype=torch.float64, generator=generator)
    if causal:
        mask = mask.masked_fill(torch.ones(queries, keys, dtype=torch.bool).triu(1), float("-inf"))
    g = torch.randn(batch, heads, queries, value_width, dtype=torch.float64, generator=generator)
    return q, k, v, mask.requires_grad_(), g


@pytest.mark.parametrize("causal", [False, True], ids=["dense-mask", "causal-mask"])
def test_each_rung_of_the_attention_ladder_matches_autograd(causal):
    """The forward one operation at a time, then each rung's gradient computed by hand from the rungs above it and
    compared with the gradient autograd finds for that intermediate; then the closed form (the softmax rule
    P ⊙ (∂C/∂P − rowsum(∂C/∂P ⊙ P)) and two matrix products) against autograd and against the Function's own."""
    q, k, v, mask, g = _case(2, 3, 5, 7, 4, 6, causal, seed=11)
    scale = 1 / math.sqrt(q.shape[-1])
    keys = k.shape[-2]
    scores = q.matmul(k.transpose(-2, -1))  # S = q kᵀ
    shifted_in = scores * scale + mask  # S′ = S·scale + M
    m = shifted_in.max(-1, keepdim=True).values  # m = max_s S′, per query row
    shifted = shifted_in - m  # S̃ = S′ − m
    u = shifted.exp()  # U = exp(S̃)
    z = u.sum(-1, keepdim=True)  # Z = Σ_s U
    r = 1 / z  # r = 1/Z
    p = u * r  # P = U · r
    o = p.matmul(v)  # O = P v
    intermediates = {"S": scores, "S′": shifted_in, "m": m, "S̃": shifted, "U": u, "Z": z, "r": r, "P": p, "O": o}
    for tensor in intermediates.values():
        tensor.retain_grad()
    (o * g).sum().backward()  # C = Σ O ⊙ g, so ∂C/∂O = g: a random upstream gradient, not ones

    with torch.no_grad():  # the rungs by hand, from the tensors of the forward above
        d = {"O": g}
        dv = p.transpose(-2, -1).matmul(d["O"])  # O = P v, as Linear: ∂C/∂v = Pᵀ g
        d["P"] = d["O"].matmul(v.transpose(-2, -1))  # ∂C/∂P = g vᵀ
        d["r"] = (d["P"] * u).sum(-1, keepdim=True)  # r multiplies every U of its row
        d["Z"] = -d["r"] / z**2  # d(1/Z) = −dZ / Z²
        d["U"] = d["P"] * r + d["Z"]  # through P, and through Z (∂Z/∂U_s = 1)
        d["S̃"] = d["U"] * u  # d exp = exp
        d["m"] = -d["S̃"].sum(-1, keepdim=True)  # m is subtracted from every S̃_s of its row
        argmax = torch.nn.functional.one_hot(shifted_in.argmax(-1), keys)
        d["S′"] = d["S̃"] + argmax * d["m"]  # through S̃, and through m = S′ at its argmax
        d["S"] = d["S′"] * scale  # S′ = S·scale + M
        dmask = d["S′"].sum((0, 1))  # ∂C/∂M = ∂C/∂S′, summed over the batch and heads M was broadcast on
        dq = d["S"].matmul(k)  # S = q kᵀ, a matrix product: ∂C/∂q = ∂C/∂S k
        dk = d["S"].transpose(-2, -1).matmul(q)  # ∂C/∂k = (∂C/∂S)ᵀ q
    close = {"rtol": 1e-12, "atol": 1e-14}
    for name, tensor in intermediates.items():
        torch.testing.assert_close(d[name], tensor.grad, **close, msg=f"rung d{name}")
    for name, mine, leaf in (("v", dv, v), ("M", dmask, mask), ("q", dq, q), ("k", dk, k)):
        torch.testing.assert_close(mine, leaf.grad, **close, msg=f"rung d{name}")
    assert d["m"].abs().max() < 1e-14  # the shift drops out: Σ_s dS̃_s = Σ_s P_s (dP_s − Σ dP·P) = 0
    if causal:  # a masked key gets no weight, and no gradient: U = e^{−∞} = 0 multiplies it away
        masked = mask.isinf()
        assert (p[..., masked] == 0).all() and (d["S′"][..., masked] == 0).all() and (dmask[masked] == 0).all()

    # the closed form: the rungs from dP to dS′ are the softmax rule, dS′ = P ⊙ (dP − rowsum(dP ⊙ P))
    with torch.no_grad():
        grad_p = g.matmul(v.transpose(-2, -1))
        grad_scores = p * (grad_p - (grad_p * p).sum(-1, keepdim=True))
        closed_form = {
            "q": grad_scores.matmul(k) * scale,
            "k": grad_scores.transpose(-2, -1).matmul(q) * scale,
            "v": p.transpose(-2, -1).matmul(g),
            "M": grad_scores.sum((0, 1)),
        }
    for name, leaf in (("q", q), ("k", k), ("v", v), ("M", mask)):
        torch.testing.assert_close(closed_form[name], leaf.grad, **close, msg=f"closed form d{name} vs autograd")
    output, _ = A.ScaledDotProductAttention.apply(q, k, v, mask, None, scale)
    ours = torch.autograd.grad(output, (q, k, v, mask), g)
    torch.testing.assert_close(output, o, **close)
    for name, grad in zip(("q", "k", "v", "M"), ours, strict=True):
        torch.testing.assert_close(grad, closed_form[name], **close, msg=f"Function's d{name} vs closed form")
