"""``fast.LinearChain``: a run of Linear layers and their activations in a ``manualbp.nn.Sequential`` as one node,
held to the layers one by one to the bit, and to autograd by gradcheck."""

import inspect

import pytest
import torch
from conftest import is_manualbp_node
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.autograd import gradcheck, gradgradcheck

import manualbp.nn as mnn
from manualbp import fast

MODULES = {"relu": mnn.ReLU, "sigmoid": mnn.Sigmoid, "tanh": mnn.Tanh}


def _network(widths, activations, biases, dtype):
    """A ``manualbp.nn.Sequential`` of Linear layers, each followed by the named activation (None: none)."""
    modules = []
    for n, (activation, bias) in enumerate(zip(activations, biases, strict=True)):
        modules.append(mnn.Linear(widths[n], widths[n + 1], bias=bias, dtype=dtype))
        if activation is not None:
            modules.append(MODULES[activation]())
    return mnn.Sequential(*modules)


def _outputs_and_grads(model, x, upstream, forward):
    output = forward(x)
    inputs = [tensor for tensor in (x, *model.parameters()) if tensor.requires_grad]
    return [output.detach(), *torch.autograd.grad(output, inputs, upstream)]


@settings(max_examples=30, deadline=None)
@given(
    depth=st.integers(2, 4),
    data=st.data(),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    x_grad=st.booleans(),
)
def test_the_chain_equals_the_layers_one_by_one_bitwise(depth, data, dtype, x_grad):
    widths = data.draw(st.lists(st.integers(1, 9), min_size=depth + 1, max_size=depth + 1))
    activations = data.draw(st.lists(st.sampled_from([None, *MODULES]), min_size=depth, max_size=depth))
    biases = data.draw(st.lists(st.booleans(), min_size=depth, max_size=depth))
    torch.manual_seed(0)
    model = _network(widths, activations, biases, dtype)
    x = torch.randn(5, widths[0], dtype=dtype, requires_grad=x_grad)
    upstream = torch.randn(5, widths[-1], dtype=dtype)
    assert is_manualbp_node(model(x).grad_fn, "LinearChain")
    got = _outputs_and_grads(model, x, upstream, model)
    expected = _outputs_and_grads(model, x, upstream, lambda x: torch.nn.Sequential.forward(model, x))
    assert len(got) == len(expected)
    for chained, one_by_one in zip(got, expected, strict=True):
        assert torch.equal(chained, one_by_one)


@pytest.mark.parametrize("x_grad", [True, False], ids=["x-grad", "no-x-grad"])
def test_the_chain_passes_gradcheck_and_gradgradcheck(x_grad):
    generator = torch.Generator().manual_seed(0)
    shapes = [(4, 5), (4,), (3, 4), None, (2, 3), (2,)]  # the middle layer has no bias
    parameters = [
        None if shape is None else torch.randn(shape, generator=generator, dtype=torch.float64) for shape in shapes
    ]
    x = torch.randn(6, 5, generator=generator, dtype=torch.float64).requires_grad_(x_grad)
    for tensor in parameters:
        if tensor is not None:
            tensor.requires_grad_()
    operands = [tensor for tensor in (x, *parameters) if tensor is not None and tensor.requires_grad]

    def chain(*tensors):
        given = iter(tensors)
        taken = [next(given) if t is not None and t.requires_grad else t for t in (x, *parameters)]
        return fast.LinearChain.apply(taken[0], ("tanh", None, "sigmoid"), *taken[1:])

    assert gradcheck(chain, operands)
    assert gradgradcheck(chain, operands)


def test_a_retained_graph_gives_the_same_gradients_twice():
    torch.manual_seed(0)
    model = _network([6, 5, 4, 3], ["relu", "sigmoid", None], [True, True, True], torch.float64)
    output = model(torch.randn(7, 6, dtype=torch.float64)).square().sum()
    first = torch.autograd.grad(output, list(model.parameters()), retain_graph=True)
    second = torch.autograd.grad(output, list(model.parameters()))
    for one, other in zip(first, second, strict=True):
        assert torch.equal(one, other)


def test_frozen_layers_get_no_gradient_and_a_frozen_first_layer_runs_layer_by_layer():
    torch.manual_seed(0)
    model = _network([6, 5, 4, 3], ["tanh", "tanh", None], [True, True, True], torch.float64)
    model[2].weight.requires_grad_(False)  # a frozen middle weight: the chain still runs, and leaves it alone
    x = torch.randn(7, 6, dtype=torch.float64)
    model(x).sum().backward()
    assert model[2].weight.grad is None
    assert model[0].weight.grad is not None and model[0].weight.grad.shape == (5, 6)
    model[0].weight.requires_grad_(False)  # the chain would keep x, which the layers do not: one by one
    assert not is_manualbp_node(model(x).grad_fn, "LinearChain")


def test_other_inputs_and_modes_run_the_layers_one_by_one():
    torch.manual_seed(0)
    model = _network([6, 5, 3], ["relu", None], [True, True], torch.float32)
    x = torch.randn(2, 7, 6)  # three dimensions: each layer folds the rows itself
    assert not is_manualbp_node(model(x).grad_fn, "LinearChain")
    assert torch.equal(model(x), torch.nn.Sequential.forward(model, x))
    flat = torch.randn(7, 6)
    tangent = torch.randn(7, 6)
    with torch.autograd.forward_ad.dual_level():  # forward-mode AD: the layers' jvps
        dual = model(torch.autograd.forward_ad.make_dual(flat, tangent))
        _, got = torch.autograd.forward_ad.unpack_dual(dual)
    expected = torch.func.jvp(lambda x: torch.nn.Sequential.forward(model, x), (flat,), (tangent,))[1]
    torch.testing.assert_close(got, expected)


def test_an_operand_of_the_wrong_dtype_is_named_by_the_layers_checks():
    model = _network([4, 3, 2], ["relu", None], [True, True], torch.float32)
    model[2].weight = torch.nn.Parameter(torch.zeros(2, 3, dtype=torch.float64))
    with pytest.raises(RuntimeError, match="linear: expected every tensor to have the same dtype"):
        model(torch.randn(5, 4))


def _chain_operands(widths, biases, dtype, requires_grad):
    """``(x, parameters)`` for ``fast.LinearChain``: x, then W¹, b¹, W², …, each requiring a gradient as
    ``requires_grad`` (x's first) says; a bias None where ``biases`` says."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(5, widths[0], generator=generator, dtype=dtype).requires_grad_(requires_grad[0])
    parameters = []
    for n, bias in enumerate(biases):
        parameters.append(torch.randn(widths[n + 1], widths[n], generator=generator, dtype=dtype))
        parameters.append(torch.randn(widths[n + 1], generator=generator, dtype=dtype) if bias else None)
    for tensor, needs in zip(parameters, requires_grad[1:], strict=True):
        if tensor is not None:
            tensor.requires_grad_(needs)
    return x, parameters


@pytest.mark.parametrize(
    "activations, biases, requires_grad",
    [
        (("sigmoid", "sigmoid"), (True, True), (False, True, True, True, True)),
        (("relu", None, "tanh"), (True, False, True), (True, True, True, True, False, False, True)),
        ((None, "relu"), (False, True), (True, True, False, False, True)),
    ],
)
def test_the_programs_gpu_backward_equals_its_cpu_backward_on_the_cpu(activations, biases, requires_grad):
    # on a GPU each layer's backward is one call of fused.gradients (its one-kernel δ and Σ δ); on the CPU that call
    # takes the same two steps as the CPU program, so the two programs must agree to the bit there
    widths = [6, 5, 4, 3][: len(activations) + 1]
    x, parameters = _chain_operands(widths, biases, torch.float64, requires_grad)
    needs = (x.requires_grad, False, *[tensor is not None and tensor.requires_grad for tensor in parameters])
    program = fast.LinearChain.program(activations, needs)
    output, saved = program["forward"](x, *parameters)
    upstream = torch.randn_like(output)
    cpu, gpu = program["backward"](upstream, *saved), program["backward_on_gpu"](upstream, *saved)
    assert len(cpu) == len(gpu) == 2 + 2 * len(activations)
    for on_cpu, on_gpu in zip(cpu, gpu, strict=True):
        assert (on_cpu is None and on_gpu is None) or torch.equal(on_cpu, on_gpu)
    asked = [tensor for tensor in (x, *parameters) if tensor is not None and tensor.requires_grad]
    assert sum(grad is not None for grad in cpu) == len(asked)  # a gradient for each input that asks, no more


def test_the_programs_backward_stops_at_the_lowest_layer_asked_for_a_gradient():
    # a frozen first layer and an x that needs no gradient: nothing is computed below the second layer
    frozen_below = (False, False, False) + (True,) * 4  # x, W¹, b¹, then W², b², W³, b³
    x, parameters = _chain_operands([6, 5, 4, 3], (True, True, True), torch.float64, frozen_below)
    activations = ("tanh", "sigmoid", None)
    needs = (False, False, False, False, *[True] * 4)
    backward = inspect.getsource(fast.LinearChain.program(activations, needs)["backward"])
    assert "grad_W2" in backward and "grad_W1, grad_b1 =" not in backward and "delta1" not in backward
    output = fast.LinearChain.apply(x, activations, *parameters)
    upstream = torch.randn_like(output)
    got = torch.autograd.grad(output, parameters[2:], upstream)
    a = x
    for n, activation in enumerate(activations):  # the reference's layers, one node each
        a = torch.nn.functional.linear(a, parameters[2 * n], parameters[2 * n + 1])
        a = a if activation is None else getattr(torch, activation)(a)
    expected = torch.autograd.grad(a, parameters[2:], upstream)
    for chained, reference in zip(got, expected, strict=True):
        torch.testing.assert_close(chained, reference, rtol=1e-12, atol=1e-12)
