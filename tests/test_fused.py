"""LinearActivation, and manualbp.nn.Sequential that uses it: the results of the two layers it fuses, to the bit."""

import pytest
import torch
from torch.autograd import gradcheck, gradgradcheck

import manualbp
import manualbp.functional as F
import manualbp.nn as mnn
from manualbp.autograd import LinearActivation
from manualbp.autograd.function import classic

ACTIVATIONS = {"relu": F.relu, "sigmoid": F.sigmoid, "tanh": F.tanh}
MODULES = {"relu": mnn.ReLU, "sigmoid": mnn.Sigmoid, "tanh": mnn.Tanh}


def _inputs(shape, bias, input_grad, dtype=torch.float64):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(*shape, 5, generator=generator, dtype=dtype).requires_grad_(input_grad)
    weight = torch.randn(4, 5, generator=generator, dtype=dtype).requires_grad_()
    b = torch.randn(4, generator=generator, dtype=dtype).requires_grad_() if bias else None
    return x, weight, b


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
@pytest.mark.parametrize("input_grad", [True, False], ids=["x-grad", "no-x-grad"])
@pytest.mark.parametrize("shape", [(3,), (2, 3)], ids=["2-D", "3-D"])
def test_linear_activation_passes_gradcheck_and_gradgradcheck(activation, bias, input_grad, shape):
    x, weight, b = _inputs(shape, bias, input_grad)
    inputs = tuple(t for t in (x, weight, b) if t is not None and t.requires_grad)

    def fused(*tensors):
        given = iter(tensors)
        operands = [next(given) if t is not None and t.requires_grad else t for t in (x, weight, b)]
        return LinearActivation.apply(*operands, activation)

    assert gradcheck(fused, inputs)
    assert gradgradcheck(fused, inputs)


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
def test_linear_activation_equals_the_two_layers_it_fuses_bitwise(activation, bias):
    x, weight, b = _inputs((64,), bias, True, dtype=torch.float32)
    grad_output = torch.randn(64, 4, generator=torch.Generator().manual_seed(1))
    results = []
    for call in (
        lambda: F.linear_activation(x, weight, b, activation),
        lambda: ACTIVATIONS[activation](F.linear(x, weight, b)),
    ):
        output = call()
        leaves = [t for t in (x, weight, b) if t is not None]
        results.append([output, *torch.autograd.grad(output, leaves, grad_output)])
    for fused, separate in zip(*results, strict=True):
        assert torch.equal(fused, separate)


def test_linear_activation_rejects_an_activation_it_cannot_fuse():
    x, weight, b = _inputs((3,), True, True)
    with pytest.raises(ValueError, match=r"activation must be one of \['relu', 'sigmoid', 'tanh'\], got 'gelu'"):
        F.linear_activation(x, weight, b, "gelu")


def _pair(activation):
    torch.manual_seed(0)
    modules = [mnn.Linear(6, 8), MODULES[activation](), mnn.Linear(8, 8), MODULES[activation](), mnn.Linear(8, 3)]
    fused = mnn.Sequential(*modules)
    separate = torch.nn.Sequential(*modules)  # the same module objects, run one by one
    return fused, separate


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_sequential_fuses_each_linear_and_activation_with_the_same_results(activation):
    fused, separate = _pair(activation)
    x = torch.randn(5, 6)
    outputs, grads = [], []
    for model in (fused, separate):
        output = model(x)
        outputs.append(output)
        grads.append(torch.autograd.grad(output.square().sum(), list(model.parameters())))
    assert torch.equal(outputs[0], outputs[1])
    for a, b in zip(*grads, strict=True):
        assert torch.equal(a, b)
    assert isinstance(outputs[0].grad_fn, classic(manualbp.autograd.Linear)._backward_cls)  # the last, unfused
    first = outputs[0].grad_fn.next_functions[0][0]
    assert isinstance(first, classic(LinearActivation)._backward_cls)


def test_sequential_runs_hooked_modules_one_by_one_so_their_hooks_fire():
    fused, separate = _pair("relu")
    seen = []
    fused[1].register_forward_hook(lambda module, inputs, output: seen.append(tuple(output.shape)))
    x = torch.randn(5, 6)
    output = fused(x)
    assert seen == [(5, 8)]  # the hooked ReLU ran as a module
    assert torch.equal(output, separate(x))
    relu_node = output.grad_fn.next_functions[0][0].next_functions[0][0]  # last Linear ← fused pair ← ReLU
    assert isinstance(relu_node, classic(manualbp.autograd.ReLU)._backward_cls)


def test_sequential_state_dict_and_conversion_are_torch_nn_sequentials():
    fused, _ = _pair("tanh")
    plain = torch.nn.Sequential(
        torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3)
    )
    plain.load_state_dict(fused.state_dict())
    x = torch.randn(4, 6)
    torch.testing.assert_close(plain(x), fused(x))
    assert type(manualbp.convert(fused, to="torch")) is torch.nn.Sequential


def test_fused_sequential_compiles_and_vmaps():
    fused, _ = _pair("sigmoid")
    x = torch.randn(5, 6)
    compiled = torch.compile(fused, fullgraph=True)
    torch.testing.assert_close(compiled(x), fused(x))
    parameters = {name: p.detach() for name, p in fused.named_parameters()}

    def loss(parameters, example):
        return torch.func.functional_call(fused, parameters, (example.unsqueeze(0),)).square().sum()

    per_sample = torch.func.vmap(torch.func.grad(loss), in_dims=(None, 0))(parameters, x)
    for i in range(len(x)):
        expected = torch.autograd.grad(fused(x[i : i + 1]).square().sum(), list(fused.parameters()))
        for name, grad in zip(parameters, expected, strict=True):
            torch.testing.assert_close(per_sample[name][i], grad)
