"""The network and its loss as one node (``manualbp.functional.mlp_loss``, ``manualbp.nn.MLP``): every gradient the
per-layer reference path's to the bit, autograd's within rounding, and the node works where every Function here
works (gradcheck, gradgradcheck, forward AD, vmap, torch.compile, autocast, no_grad)."""

import importlib
import inspect
import os
import textwrap
import traceback

import pytest
import torch
from conftest import TIGHT
from hypothesis import given
from hypothesis import strategies as st

import manualbp
import manualbp.functional as F
from manualbp import autograd as A
from manualbp import nn as mnn
from manualbp.fast.cross_entropy import cross_entropy_value, one_hot_gradient_at_one
from manualbp.fast.mse import mse_gradient, mse_value

GUIDE = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "docs", "derivations.md"
)
FAST_MLP_LOSS = importlib.import_module("manualbp.fast.mlp_loss")  # the module (manualbp.fast.mlp_loss is the route)

NAMES = ["relu", "leaky-relu", "sigmoid", "tanh", "gelu", None]
REFERENCE_ACTIVATION = {
    "relu": A.ReLU.apply,
    "leaky-relu": lambda z: A.LeakyReLU.apply(z, 0.01),
    "sigmoid": A.Sigmoid.apply,
    "tanh": A.Tanh.apply,
    "gelu": lambda z: A.GELU.apply(z, "none"),
    None: lambda z: z,
}
TORCH_ACTIVATION = {
    "relu": torch.relu,
    "leaky-relu": torch.nn.functional.leaky_relu,
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "gelu": torch.nn.functional.gelu,
    None: lambda z: z,
}


def _network(widths, bias, dtype, seed=0):
    generator = torch.Generator().manual_seed(seed)
    weights = [
        (torch.randn(n, m, generator=generator, dtype=dtype) / m**0.5).requires_grad_()
        for m, n in zip(widths[:-1], widths[1:], strict=True)
    ]
    biases = [torch.randn(n, generator=generator, dtype=dtype).requires_grad_() if bias else None for n in widths[1:]]
    return weights, biases


def _data(widths, rows, loss, dtype, seed=1):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, widths[0], generator=generator, dtype=dtype).requires_grad_()
    if loss == "cross-entropy":
        return x, torch.randint(widths[-1], (rows,), generator=generator)
    return x, torch.randn(rows, widths[-1], generator=generator, dtype=dtype)


def _per_layer_reference(x, target, weights, biases, activations, loss):
    """The same loss by the reference tier's Functions called one layer at a time."""
    a = x
    for weight, bias, activation in zip(weights, biases, activations, strict=True):
        a = REFERENCE_ACTIVATION[activation](A.Linear.apply(a, weight, bias))
    if loss == "cross-entropy":
        return A.OneHotCrossEntropyLoss.apply(a, target)[0]
    return A.MSELoss.apply(a, target, None, "mean")


def _torch(x, target, weights, biases, activations, loss):
    a = x
    for weight, bias, activation in zip(weights, biases, activations, strict=True):
        a = TORCH_ACTIVATION[activation](torch.nn.functional.linear(a, weight, bias))
    if loss == "cross-entropy":
        return torch.nn.functional.cross_entropy(a, target)
    return torch.nn.functional.mse_loss(a, target)


def _loss_and_grads(function, x, target, weights, biases, activations, loss):
    leaves = [x, *weights, *(b for b in biases if b is not None)]
    value = function(x, target, weights, biases, activations, loss)
    return [value.detach(), *torch.autograd.grad(value, leaves)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@given(
    widths=st.lists(st.integers(1, 12), min_size=2, max_size=5),
    names=st.lists(st.sampled_from(NAMES), min_size=4, max_size=4),
    rows=st.integers(1, 9),
    bias=st.booleans(),
    loss=st.sampled_from(["cross-entropy", "mse"]),
)
def test_mlp_loss_equals_the_per_layer_reference_path_bitwise_and_autograd_closely(
    dtype, widths, names, rows, bias, loss
):
    activations = names[: len(widths) - 1]
    weights, biases = _network(widths, bias, dtype)
    x, target = _data(widths, rows, loss, dtype)
    one_node = _loss_and_grads(F.mlp_loss, x, target, weights, biases, activations, loss)
    per_layer = _loss_and_grads(_per_layer_reference, x, target, weights, biases, activations, loss)
    for ours, theirs in zip(one_node, per_layer, strict=True):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
    for ours, theirs in zip(
        one_node, _loss_and_grads(_torch, x, target, weights, biases, activations, loss), strict=True
    ):
        torch.testing.assert_close(ours, theirs)


def test_mlp_loss_is_one_node_whose_inputs_are_the_leaves():
    weights, biases = _network([6, 5, 3], True, torch.float32)
    x, target = _data([6, 5, 3], 4, "cross-entropy", torch.float32)
    value = F.mlp_loss(x, target, weights, biases, ["relu", None])
    assert type(value.grad_fn).__name__ == "MLPLossBackward"
    # every input of the node is a leaf's accumulator: no other node for the layers or the loss
    assert all(type(node).__name__ == "AccumulateGrad" for node, _ in value.grad_fn.next_functions if node is not None)


@pytest.mark.parametrize("grad_enabled", [True, False])
def test_mlp_loss_returns_the_networks_output_detached_when_asked(grad_enabled):
    weights, biases = _network([5, 4, 3], True, torch.float32)
    x, target = _data([5, 4, 3], 6, "cross-entropy", torch.float32)
    with torch.set_grad_enabled(grad_enabled):
        value, output = F.mlp_loss(x, target, weights, biases, ["relu", None], return_output=True)
    torch.testing.assert_close(output, F.mlp(x, weights, biases, ["relu", None]), rtol=0, atol=0)
    assert not output.requires_grad and value.requires_grad == grad_enabled
    torch.testing.assert_close(value, F.mlp_loss(x, target, weights, biases, ["relu", None]), rtol=0, atol=0)


def test_mlp_loss_backward_scales_by_an_upstream_gradient_that_is_not_one():
    weights, biases = _network([5, 4, 3], True, torch.float64)
    x, target = _data([5, 4, 3], 6, "mse", torch.float64)
    once = torch.autograd.grad(F.mlp_loss(x, target, weights, biases, ["tanh", None], "mse"), weights)
    thrice = torch.autograd.grad(3 * F.mlp_loss(x, target, weights, biases, ["tanh", None], "mse"), weights)
    for one, three in zip(once, thrice, strict=True):
        torch.testing.assert_close(three, 3 * one, rtol=1e-15, atol=0)


def test_mlp_loss_a_retained_graph_gives_the_same_gradients_twice():
    weights, biases = _network([5, 4, 3], True, torch.float64)
    x, target = _data([5, 4, 3], 6, "cross-entropy", torch.float64)
    value = F.mlp_loss(x, target, weights, biases, ["sigmoid", None])
    first = torch.autograd.grad(value, weights, retain_graph=True)
    second = torch.autograd.grad(value, weights)
    for one, two in zip(first, second, strict=True):
        torch.testing.assert_close(one, two)


@pytest.mark.parametrize("loss", ["cross-entropy", "mse"])
@pytest.mark.parametrize("activations", [("tanh", None), ("gelu", "sigmoid")], ids=str)
def test_mlp_loss_gradcheck_and_gradgradcheck_with_forward_ad(loss, activations):
    weights, biases = _network([4, 3, 3], True, torch.float64)
    x, target = _data([4, 3, 3], 5, loss, torch.float64)

    def function(x, *parameters):
        return F.mlp_loss(x, target, parameters[::2], parameters[1::2], activations, loss)

    inputs = (x, *(p for pair in zip(weights, biases, strict=True) for p in pair))
    assert torch.autograd.gradcheck(function, inputs, **TIGHT, check_forward_ad=True, check_batched_grad=True)
    assert torch.autograd.gradgradcheck(function, inputs, **TIGHT, check_fwd_over_rev=True, check_rev_over_rev=True)


def test_mlp_loss_under_vmap_gives_per_example_gradients():
    weights, biases = _network([5, 4, 3], True, torch.float64)
    x, target = _data([5, 4, 3], 6, "cross-entropy", torch.float64)
    params = {"weights": [w.detach() for w in weights], "biases": [b.detach() for b in biases]}

    def loss_of(params, x, t):
        return F.mlp_loss(x.unsqueeze(0), t.unsqueeze(0), params["weights"], params["biases"], ["relu", None])

    per_example = torch.func.vmap(torch.func.grad(loss_of), in_dims=(None, 0, 0))(params, x.detach(), target)
    for row in range(len(x)):
        expected = torch.autograd.grad(
            _torch(x[row : row + 1].detach(), target[row : row + 1], weights, biases, ["relu", None], "cross-entropy"),
            weights,
        )
        for got, want in zip(per_example["weights"], expected, strict=True):
            torch.testing.assert_close(got[row], want)


def test_mlp_loss_under_no_grad_computes_no_gradient(monkeypatch):
    weights, biases = _network([5, 4, 3], True, torch.float32)
    x, target = _data([5, 4, 3], 6, "cross-entropy", torch.float32)
    expected = F.mlp_loss(x, target, weights, biases, ["relu", None]).detach()

    def refuse(*args, **kwargs):
        raise AssertionError("a gradient was computed")

    monkeypatch.setattr(A.Linear, "gradients", staticmethod(refuse))  # what every layer's gradients come from
    monkeypatch.setattr(A.MLP, "gradients", staticmethod(refuse))
    with torch.no_grad():
        value = F.mlp_loss(x, target, weights, biases, ["relu", None])
    plain = [t.detach() for t in (x, *weights, *biases)]
    value_of_constants = F.mlp_loss(plain[0], target, plain[1:3], plain[3:], ["relu", None])
    torch.testing.assert_close(value, expected, rtol=0, atol=0)
    torch.testing.assert_close(value_of_constants, expected, rtol=0, atol=0)


def test_mlp_loss_under_autocast_matches_torch():
    weights, biases = _network([8, 6, 4], True, torch.float32)
    x, target = _data([8, 6, 4], 5, "cross-entropy", torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours = _loss_and_grads(F.mlp_loss, x, target, weights, biases, ["relu", None], "cross-entropy")
        theirs = _loss_and_grads(_torch, x, target, weights, biases, ["relu", None], "cross-entropy")
    assert ours[0].dtype == theirs[0].dtype == torch.float32
    for got, want in zip(ours, theirs, strict=True):
        torch.testing.assert_close(got, want, rtol=2e-2, atol=2e-2)


@pytest.mark.slow
def test_mlp_loss_under_torch_compile_fullgraph():
    weights, biases = _network([6, 5, 3], True, torch.float32)
    x, target = _data([6, 5, 3], 4, "cross-entropy", torch.float32)
    compiled = torch.compile(F.mlp_loss, fullgraph=True, backend="aot_eager")
    ours = _loss_and_grads(compiled, x, target, weights, biases, ("relu", None), "cross-entropy")
    theirs = _loss_and_grads(_torch, x, target, weights, biases, ("relu", None), "cross-entropy")
    for got, want in zip(ours, theirs, strict=True):
        torch.testing.assert_close(got, want)


def _bad_arguments(change, requires_grad):
    """mlp_loss's arguments for a small network with ``change`` made; a change's value may name an edit below."""
    weights, biases = _network([5, 4, 3], True, torch.float32)
    if not requires_grad:
        weights, biases = [w.detach() for w in weights], [b.detach() for b in biases]
    edits = {
        "width": lambda: [weights[0], torch.randn(3, 2)],
        "float64": lambda: [weights[0], weights[1].double()],
        "meta": lambda: [weights[0].to("meta"), weights[1]],
        "(1,)": lambda: [torch.randn(1), biases[1]],
    }
    arguments = {
        "input": torch.randn(4, 5),
        "target": torch.tensor([0, 1, 2, 0]),
        "weights": weights,
        "biases": biases,
        "activations": ["relu", None],
        "loss": "cross-entropy",
    }
    return arguments | {
        name: edits[value]() if isinstance(value, str) and value in edits else value for name, value in change.items()
    }


@pytest.mark.parametrize(
    ("change", "error", "message"),
    [
        ({"loss": "hinge"}, ValueError, "loss must be one of"),
        ({"target": torch.zeros(4, dtype=torch.int32)}, RuntimeError, "int64 class indices of shape"),
        ({"target": torch.tensor([0, 1, 2, 3])}, IndexError, "target 3 is out of bounds"),
        ({"loss": "mse", "target": torch.zeros(4, 2)}, ValueError, "mse targets must have the output's shape"),
        ({"activations": ["relu"]}, ValueError, "one entry per layer"),
        ({"target": None}, TypeError, "target"),
        ({"loss": "mse", "target": torch.zeros(4, 3, dtype=torch.float64)}, RuntimeError, "same dtype"),
    ],
    ids=["loss", "target-dtype", "target-range", "mse-shape", "layers", "none", "mse-dtype"],
)
def test_mlp_loss_refuses_bad_input_in_one_line(change, error, message):
    with pytest.raises(error, match=message) as raised:
        F.mlp_loss(**_bad_arguments(change, requires_grad=True))
    assert "\n" not in str(raised.value)


# bad operands that the node's own operations refuse (the first four) or would take silently (the rest)
UNCHECKED_REFUSALS = {
    "weight-width": ({"weights": "width"}, RuntimeError, "layer 2's weight must be 2-D"),
    "weight-dtype": ({"weights": "float64"}, RuntimeError, "same dtype"),
    "activation": ({"activations": ["relu", "softplus"]}, ValueError, "activation 'softplus' is not one of"),
    "target-range": ({"target": torch.tensor([0, 1, 3, 0])}, IndexError, "target 3 is out of bounds"),
    "target-ignore-index": ({"target": torch.tensor([0, -100, 1, 0])}, IndexError, "target -100 is out of bounds"),
    "target-uint8": ({"target": torch.tensor([0, 1, 2, 0], dtype=torch.uint8)}, RuntimeError, "int64 class indices"),
    "bias-broadcast": ({"biases": "(1,)"}, RuntimeError, "layer 1's bias must have shape"),
    "weight-meta": ({"weights": "meta"}, RuntimeError, "same device"),
    "mse-broadcast": ({"loss": "mse", "target": torch.zeros(1, 3)}, ValueError, "mse targets must have the output's"),
}


@pytest.mark.parametrize("requires_grad", [True, False], ids=["training", "constants"])
@pytest.mark.parametrize(("change", "error", "message"), UNCHECKED_REFUSALS.values(), ids=UNCHECKED_REFUSALS)
def test_mlp_loss_in_grad_mode_refuses_what_its_checks_refuse_with_the_same_line(change, error, message, requires_grad):
    # in grad mode the node runs unchecked, and the checks run only where an operation refused: every refusal,
    # including those no operation makes, must still be the checks' one line, the same as under no_grad
    with pytest.raises(error, match=message) as trained:
        F.mlp_loss(**_bad_arguments(change, requires_grad))
    with torch.no_grad(), pytest.raises(error) as evaluated:
        F.mlp_loss(**_bad_arguments(change, requires_grad))
    assert str(trained.value) == str(evaluated.value) and "\n" not in str(trained.value)


def test_mlp_loss_in_grad_mode_runs_no_check_on_good_operands(monkeypatch):
    # the point of the unchecked call: a training step pays for none of _checked_mlp_loss's checks
    linear = importlib.import_module("manualbp.functional.linear")

    def refuse(*args, **kwargs):
        raise AssertionError("the checks ran")

    weights, biases = _network([5, 4, 3], True, torch.float32)
    for loss, target in [("cross-entropy", torch.tensor([0, 1, 2, 0])), ("mse", torch.randn(4, 3))]:
        expected = F.mlp_loss(
            torch.randn(4, 5, generator=torch.Generator().manual_seed(0)), target, weights, biases, ["relu", None], loss
        )
        with monkeypatch.context() as patch:
            patch.setattr(linear, "_checked_mlp_loss", refuse)
            patch.setattr(linear, "_mlp_operands", refuse)
            value = F.mlp_loss(
                torch.randn(4, 5, generator=torch.Generator().manual_seed(0)),
                target,
                weights,
                biases,
                ["relu", None],
                loss,
            )
        assert torch.equal(value, expected) and value.requires_grad


def test_the_mlp_module_keeps_torch_sequentials_state_dict_and_its_loss_is_the_layers_loss_bitwise():
    torch.manual_seed(0)
    model = mnn.MLP([6, 5, 4, 3], activation="tanh")
    plain = torch.nn.Sequential(
        torch.nn.Linear(6, 5), torch.nn.Tanh(), torch.nn.Linear(5, 4), torch.nn.Tanh(), torch.nn.Linear(4, 3)
    )
    assert list(model.state_dict()) == list(plain.state_dict()) == [
        "0.weight", "0.bias", "2.weight", "2.bias", "4.weight", "4.bias"
    ]  # fmt: skip
    plain.load_state_dict(model.state_dict())
    x, target = torch.randn(7, 6), torch.randint(3, (7,))
    torch.testing.assert_close(model(x), plain(x))
    ours = torch.autograd.grad(model.loss(x, target), list(model.parameters()))
    layers = manualbp.convert(plain)  # the same modules, one at a time
    theirs = torch.autograd.grad(
        F.cross_entropy(torch.nn.Sequential.forward(layers, x), target), list(layers.parameters())
    )
    for got, want in zip(ours, theirs, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_converting_the_mlp_module_to_torch_gives_torch_nn_sequential_and_back_manualbps_sequential():
    model = mnn.MLP([4, 3, 2], activation="sigmoid")
    x = torch.randn(5, 4)
    expected = model(x)
    manualbp.convert(model, to="torch")
    assert type(model) is torch.nn.Sequential and type(model[0]) is torch.nn.Linear
    assert type(model(x).grad_fn).__name__ == "AddmmBackward0"  # torch.nn's own graph again
    torch.testing.assert_close(model(x), expected)
    manualbp.convert(model)
    assert type(model) is mnn.Sequential and type(model[1]) is mnn.Sigmoid


def test_the_mlp_module_runs_module_by_module_when_a_hook_must_fire():
    model = mnn.MLP([4, 3, 2], activation="relu")
    seen = []
    model[0].register_forward_hook(lambda module, inputs, output: seen.append(output.shape))
    x, target = torch.randn(5, 4), torch.randint(2, (5,))
    value = model.loss(x, target)
    assert seen == [torch.Size([5, 3])]
    assert type(value.grad_fn).__name__ != "MLPLossBackward"
    with pytest.raises(ValueError, match="loss must be one of"):
        model.loss(x, target, loss="hinge")


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"sizes": [4]}, "at least two positive ints"),
        ({"sizes": [4, 0, 2]}, "at least two positive ints"),
        ({"sizes": [4, 2], "activation": "swish"}, "activation must be one of"),
        ({"sizes": [4, 2], "activation": None}, "need an activation"),
    ],
)
def test_the_mlp_module_refuses_bad_sizes_and_activations(arguments, message):
    with pytest.raises(ValueError, match=message):
        mnn.MLP(**arguments)


def test_mlp_loss_backward_hands_its_gradients_over_without_a_copy(monkeypatch):
    # the gradients computed in the forward pass become .grad as they are: the backward makes no new tensor
    computed = []  # each layer's (∂C/∂W, ∂C/∂b) as Linear.gradients made them, the last layer first
    gradients = A.Linear.gradients

    def recording(*args, **kwargs):
        _, grad_weight, grad_bias = result = gradients(*args, **kwargs)
        computed.append((grad_weight.data_ptr(), grad_bias.data_ptr()))  # no reference kept
        return result

    monkeypatch.setattr(A.Linear, "gradients", staticmethod(recording))
    weights, biases = _network([5, 4, 3], True, torch.float32)
    x, target = _data([5, 4, 3], 6, "cross-entropy", torch.float32)
    F.mlp_loss(x.detach(), target, weights, biases, ["relu", None]).backward()
    grads = [(weights[1].grad, biases[1].grad), (weights[0].grad, biases[0].grad)]
    assert [(w.data_ptr(), b.data_ptr()) for w, b in grads] == computed


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@given(rows=st.integers(0, 40), columns=st.integers(1, 40), seed=st.integers(0, 2**31 - 1))
def test_mlp_losss_one_kernel_mse_gradient_and_loss_are_the_references_to_the_bit(dtype, rows, columns, seed):
    generator = torch.Generator().manual_seed(seed)
    a, y = (torch.randn(rows, columns, generator=generator, dtype=dtype) * 3 for _ in range(2))
    g = torch.rand((), generator=generator, dtype=dtype) + 0.5
    for grad_loss in (torch.ones((), dtype=dtype), g):
        expected = A.MSELoss.gradients(grad_loss, a, y, None, "mean", needs_input_grad=(True, False, False, False))[0]
        bits = torch.int64 if dtype == torch.float64 else torch.int32
        assert torch.equal(mse_gradient(grad_loss, a, y).view(bits), expected.view(bits))
    # and the loss itself, by the kernel that torch.nn.functional.mse_loss calls
    assert torch.equal(mse_value(a, y).view(bits), A.MSELoss.forward(a, y, None, "mean").view(bits))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@given(rows=st.integers(1, 40), classes=st.integers(1, 40), seed=st.integers(0, 2**31 - 1))
def test_mlp_losss_cross_entropy_gradient_at_one_is_the_references_to_the_bit(dtype, rows, classes, seed):
    generator = torch.Generator().manual_seed(seed)
    z = torch.randn(rows, classes, generator=generator, dtype=dtype) * 5
    target = torch.randint(classes, (rows,), generator=generator)
    _, log_probs = A.OneHotCrossEntropyLoss.forward(z, target)
    expected, _ = A.OneHotCrossEntropyLoss.gradients(torch.ones((), dtype=dtype), None, target, log_probs)
    bits = torch.int64 if dtype == torch.float64 else torch.int32
    for _ in range(2):  # the second call reads the g/N it made once for this batch size
        assert torch.equal(one_hot_gradient_at_one(target, log_probs).view(bits), expected.view(bits))
    # and the loss and log-probabilities themselves, by the two kernels the reference's forward calls
    value, fast_log_probs = cross_entropy_value(z, target)
    reference_value, _ = A.OneHotCrossEntropyLoss.forward(z, target)
    assert torch.equal(value.view(bits), reference_value.view(bits))
    assert torch.equal(fast_log_probs.view(bits), log_probs.view(bits))


def test_the_nodes_program_is_the_unrolled_loop_that_the_guide_prints():
    # the guide shows the program of a sigmoid 784-30-10 network with MSE, x a constant: it is what the node runs
    program = manualbp.fast.MLPLoss.program(("sigmoid", "sigmoid"), "mse", (False,) * 4 + (True,) * 4)
    with open(GUIDE, encoding="utf-8") as guide:
        assert textwrap.indent(inspect.getsource(program), "    ") in guide.read()


@pytest.mark.parametrize("loss", ["cross-entropy", "mse"])
def test_the_nodes_program_has_one_line_per_layer_and_equation_and_none_without_a_gradient(loss):
    activations = ("relu", "gelu", None)
    trained = inspect.getsource(manualbp.fast.MLPLoss.program(activations, loss, (True,) * 10))
    evaluated = inspect.getsource(manualbp.fast.MLPLoss.program(activations, loss, (False,) * 10))
    for source in (trained, evaluated):
        assert [source.count(f"Linear.forward(a{n - 1}, W{n}, b{n})") for n in (1, 2, 3)] == [1, 1, 1]
        assert "f3.activate" not in source  # the logits: no activation
    assert [trained.count(f", a{n - 1}, W{n}, b{n} is not None,") for n in (1, 2, 3)] == [1, 1, 1]  # Linear.gradients
    assert "Linear.gradients(grad_a3, a2, W3" in trained  # the logits' layer: δ is ∂C/∂a itself
    assert "delta2 = f2.times_derivative(grad_a2, z2)" in trained  # GELU's f′ reads z, ReLU's reads a
    assert "delta1 = f1.times_derivative(grad_a1, a1)" in trained
    # each tensor freed once nothing below reads it: ReLU's z at once, GELU's z after its f′, each δ after its layer
    assert "    del z1\n" in trained and "    del z2\n" not in trained and "    del grad_a2, z2\n" in trained
    assert "    del delta2, a2\n" in trained and "    del delta1, a1\n" in trained
    assert "gradients" not in evaluated and evaluated.rstrip().endswith("return C, a3, None")


def test_an_error_in_the_nodes_program_shows_its_line_in_the_traceback():
    weights, biases = _network([5, 4, 3], True, torch.float32)
    x, target = _data([5, 4, 3], 6, "cross-entropy", torch.float32)
    with pytest.raises(RuntimeError) as raised:  # the second layer's weight does not fit the first's output
        manualbp.fast.mlp_loss(x, target, "cross-entropy", ("relu", None), weights[0], biases[0], weights[0], biases[1])
    assert "a2 = Linear.forward(a1, W2, b2)" in "".join(traceback.format_exception(raised.value))


def test_the_node_called_directly_refuses_a_parameter_count_that_does_not_fit_its_layers():
    weights, biases = _network([5, 4, 3], True, torch.float32)
    x, target = _data([5, 4, 3], 6, "mse", torch.float32)
    with pytest.raises(ValueError, match=r"^MLPLoss: 2 activations need 4 parameters \(W¹, b¹, …\), got 3$"):
        manualbp.fast.mlp_loss(x, target, "mse", ("relu", None), weights[0], biases[0], weights[1])
