"""The whole network as one Function (``manualbp.autograd.MLP``): the textbook backprop loop gives the per-layer
Functions' results to the bit, autograd's within rounding, and passes gradcheck/gradgradcheck with forward AD; and
manualbp.check's MLP case against PyTorch's autograd."""

import importlib

import pytest
import torch
from conftest import is_manualbp_node
from helpers import assert_case_bitwise_on_cpu, assert_case_within_tolerance, cases
from hypothesis import given
from hypothesis import strategies as st
from torch.autograd import gradcheck, gradgradcheck

import manualbp.functional as F
from manualbp.autograd import MLP

NAMES = ["relu", "leaky-relu", "sigmoid", "tanh", "gelu", None]
PER_LAYER = {
    "relu": F.relu,
    "leaky-relu": F.leaky_relu,
    "sigmoid": F.sigmoid,
    "tanh": F.tanh,
    "gelu": F.gelu,
    None: lambda a: a,
}
BUILTIN = {
    "relu": torch.relu,
    "leaky-relu": torch.nn.functional.leaky_relu,
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "gelu": torch.nn.functional.gelu,
    None: lambda a: a,
}


def _network(widths, activations, bias, dtype, seed):
    generator = torch.Generator().manual_seed(seed)
    weights = [
        (torch.randn(n, m, generator=generator, dtype=dtype) / m**0.5).requires_grad_()
        for m, n in zip(widths[:-1], widths[1:], strict=True)
    ]
    biases = [torch.randn(n, generator=generator, dtype=dtype).requires_grad_() if bias else None for n in widths[1:]]
    return weights, biases


def _layer_by_layer(linear, table, x, weights, biases, activations):
    for weight, bias, activation in zip(weights, biases, activations, strict=True):
        x = table[activation](linear(x, weight, bias))
    return x


def _results(fn, x, weights, biases, upstream):
    leaves = [x, *weights, *(b for b in biases if b is not None)]
    output = fn()
    return [output.detach(), *torch.autograd.grad(output, leaves, upstream)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@given(
    widths=st.lists(st.integers(1, 12), min_size=2, max_size=5),
    names=st.lists(st.sampled_from(NAMES), min_size=4, max_size=4),
    rows=st.integers(1, 9),
    bias=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_one_loop_equals_the_per_layer_functions_bitwise(dtype, widths, names, rows, bias, seed):
    activations = tuple(names[: len(widths) - 1])
    weights, biases = _network(widths, activations, bias, dtype, seed)
    x = torch.randn(rows, widths[0], generator=torch.Generator().manual_seed(seed + 1), dtype=dtype).requires_grad_()
    upstream = torch.randn(rows, widths[-1], generator=torch.Generator().manual_seed(seed + 2), dtype=dtype)
    one_node = _results(lambda: F.mlp(x, weights, biases, activations), x, weights, biases, upstream)
    per_layer = _results(
        lambda: _layer_by_layer(F.linear, PER_LAYER, x, weights, biases, activations), x, weights, biases, upstream
    )
    builtin = _results(
        lambda: _layer_by_layer(torch.nn.functional.linear, BUILTIN, x, weights, biases, activations),
        x,
        weights,
        biases,
        upstream,
    )
    for got, layered, torchs in zip(one_node, per_layer, builtin, strict=True):
        assert torch.equal(got, layered), (got - layered).abs().max()
        torch.testing.assert_close(got, torchs)  # GELU's gradient rounds differently from PyTorch's fused kernel


def test_the_whole_network_is_one_autograd_node():
    weights, biases = _network([6, 5, 4, 3], ("relu", "tanh", None), True, torch.float32, 0)
    output = F.mlp(torch.randn(2, 6), weights, biases, ("relu", "tanh", None))
    assert is_manualbp_node(output.grad_fn, "MLP")
    assert {type(node).__name__ for node, _ in output.grad_fn.next_functions if node is not None} == {"AccumulateGrad"}


@pytest.mark.parametrize("activations", [(None,), ("tanh", None), ("gelu", "sigmoid"), ("leaky-relu", "relu", None)])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
def test_mlp_passes_gradcheck_and_gradgradcheck_with_forward_ad(activations, bias):
    widths = [4, 5, 3, 2][: len(activations) + 1]
    weights, biases = _network(widths, activations, bias, torch.float64, 0)
    x = torch.randn(3, widths[0], dtype=torch.float64, requires_grad=True)
    present = [b for b in biases if b is not None]

    def network(x, *parameters):
        ws, bs = parameters[: len(weights)], iter(parameters[len(weights) :])
        return MLP.apply(
            x,
            activations,
            *(t for w, b in zip(ws, biases, strict=True) for t in (w, next(bs) if b is not None else None)),
        )[0]

    inputs = (x, *weights, *present)
    tight = {"atol": 1e-8, "rtol": 1e-6}
    assert gradcheck(
        network, inputs, check_forward_ad=True, check_batched_grad=True, check_batched_forward_grad=True, **tight
    )
    assert gradgradcheck(network, inputs, check_fwd_over_rev=True, check_rev_over_rev=True, **tight)


def test_mlp_under_torch_func_and_compile():
    weights, biases = _network([5, 4, 3], ("tanh", None), True, torch.float64, 0)
    x = torch.randn(6, 5, dtype=torch.float64)
    v = torch.randn_like(x)
    _, tangent = torch.func.jvp(lambda x: F.mlp(x, weights, biases, ("tanh", None)), (x,), (v,))
    _, expected = torch.func.jvp(
        lambda x: _layer_by_layer(torch.nn.functional.linear, BUILTIN, x, weights, biases, ("tanh", None)), (x,), (v,)
    )
    torch.testing.assert_close(tangent, expected)
    per_example = torch.func.vmap(
        torch.func.grad(lambda w, x: F.mlp(x[None], [w, weights[1]], biases, ("tanh", None)).sum()), in_dims=(None, 0)
    )(weights[0].detach(), x)
    assert per_example.shape == (6, 4, 5)
    compiled = torch.compile(lambda x: F.mlp(x, weights, biases, ("tanh", None)), fullgraph=True)
    torch.testing.assert_close(compiled(x), F.mlp(x, weights, biases, ("tanh", None)))


@pytest.mark.parametrize(
    "arguments, error, message",
    [
        (([torch.randn(4, 5)], [None, None], ["relu"]), ValueError, "one entry per layer, got 1, 2 and 1"),
        (([torch.randn(4, 5)], [None], ["softmax"]), ValueError, "activation 'softmax' is not one of"),
        (([torch.randn(4, 6)], [None], [None]), RuntimeError, r"layer 1's weight must be 2-D \(out_features, 5\)"),
        (([torch.randn(4, 5)], [torch.randn(3)], [None]), RuntimeError, r"layer 1's bias must have shape \(4,\)"),
        (([torch.randn(4, 5, dtype=torch.float64)], [None], [None]), RuntimeError, "same dtype"),
        (([torch.randn(4, 5)], [torch.randn(1)], [None]), RuntimeError, r"layer 1's bias must have shape \(4,\)"),
        (([torch.randn(4, 5, device="meta")], [None], [None]), RuntimeError, "same device"),
    ],
)
def test_mlp_rejects_bad_layers_with_a_message(arguments, error, message):
    # a 2-D input in grad mode runs the node unchecked first: each refusal is still the checks' one line
    with pytest.raises(error, match=message) as raised:
        F.mlp(torch.randn(2, 5), *arguments)
    assert str(raised.value).startswith("mlp: ") and "\n" not in str(raised.value)


def test_mlp_with_good_operands_runs_no_check(monkeypatch):
    weights, biases = [torch.randn(4, 5, requires_grad=True)], [torch.randn(4, requires_grad=True)]
    x = torch.randn(3, 5)
    expected = F.mlp(x, weights, biases, ["relu"])

    def refuse(*args, **kwargs):
        raise AssertionError("the checks ran")

    monkeypatch.setattr(importlib.import_module("manualbp.functional.linear"), "_mlp_operands", refuse)
    assert torch.equal(F.mlp(x, weights, biases, ["relu"]), expected)


def test_mlp_refuses_an_input_that_is_not_a_tensor_by_name():
    with pytest.raises(TypeError, match=r"^mlp: input must be a Tensor, got NoneType$"):
        F.mlp(None, [torch.randn(3, 4)], [None], [None])


# ---- parity with PyTorch over manualbp.check's cases ----


@pytest.mark.parametrize("case", cases("mlp"))
def test_float32_forward_and_grads_match_autograd_bitwise_on_cpu(case):
    assert_case_bitwise_on_cpu(case, not_bitwise={})


@pytest.mark.parametrize("case", cases("mlp"))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_forward_and_grads_match_autograd_within_tolerance(case, device, dtype):
    assert_case_within_tolerance(case, device, dtype)


def test_mlp_under_autocast_casts_outside_the_node_and_trains_in_the_parameters_dtype():
    # autocast's casts are the checked path's (outside the node, so its backward runs in one dtype): the unchecked
    # call must not take autocast, where the node's products would meet bfloat16 and float32 operands in its backward
    weights = [torch.randn(4, 5, requires_grad=True), torch.randn(3, 4, requires_grad=True)]
    biases = [torch.randn(4, requires_grad=True), None]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        output = F.mlp(torch.randn(6, 5), weights, biases, ["sigmoid", None])
    output.float().sum().backward()
    assert output.dtype == torch.bfloat16
    assert [w.grad.dtype for w in weights] == [torch.float32, torch.float32] and biases[0].grad.dtype == torch.float32
