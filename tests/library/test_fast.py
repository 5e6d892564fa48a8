"""The fast tier against the reference tier: every fast path gives the reference's outputs and gradients to the bit.

The fast tier (``manualbp.fast``) derives nothing; these tests prove that each of its routes (the classic-form
call, the fused Linear + activation node, the fusing Sequential, the one-hot cross-entropy) computes exactly what
the reference Functions (``manualbp.autograd``, called by ``Function.apply``) compute, in float32 and float64,
over shapes drawn by hypothesis. The tests against PyTorch's autograd are in each layer family's file
(test_linear.py, test_activation.py, ...).
"""

import pytest
import torch
from conftest import is_manualbp_node, noncontiguous
from hypothesis import given
from hypothesis import strategies as st
from torch.autograd import gradcheck, gradgradcheck

import manualbp
import manualbp.autograd as A
import manualbp.functional as F
import manualbp.nn as mnn
from manualbp import fast

DTYPES = [torch.float32, torch.float64]
ACTIVATIONS = {"relu": A.ReLU, "sigmoid": A.Sigmoid, "tanh": A.Tanh}


def _outputs_and_grads(fn, tensors, upstream):
    """``fn``'s output and the gradients of ``upstream · output`` for every tensor that requires grad."""
    leaves = [None if t is None else t.detach().clone().requires_grad_(t.requires_grad) for t in tensors]
    output = fn(*leaves)
    wanted = [t for t in leaves if t is not None and t.requires_grad]
    return [output.detach(), *torch.autograd.grad(output, wanted, upstream)]


def _assert_bitwise(fast_results, reference_results):
    assert len(fast_results) == len(reference_results)
    for got, expected in zip(fast_results, reference_results, strict=True):
        assert got.dtype == expected.dtype and got.shape == expected.shape
        # exactly equal, a NaN where the other has one (every row ignored: a mean over none, 0/0, by either route)
        torch.testing.assert_close(got, expected, rtol=0, atol=0, equal_nan=True)


shapes = st.lists(st.integers(1, 9), min_size=0, max_size=2)


def _on_rows(fn):
    """``fn`` of a reference Function, which takes a matrix of rows, applied to ``x`` of shape ``(*, in_features)``:
    the leading dimensions folded into rows and unfolded, as ``manualbp.functional`` does."""

    def call(x, weight, *args):
        rows = x.reshape(-1, x.shape[-1])
        return fn(rows, weight, *args).reshape(*x.shape[:-1], weight.shape[0])

    return call


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@given(
    leading=shapes,
    in_features=st.integers(1, 17),
    out_features=st.integers(1, 17),
    activation=st.sampled_from(sorted(ACTIVATIONS)),
    bias=st.booleans(),
    x_grad=st.booleans(),
    make_noncontiguous=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_fused_linear_activation_equals_the_reference_linear_then_activation_bitwise(
    dtype, leading, in_features, out_features, activation, bias, x_grad, make_noncontiguous, seed
):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(*leading, in_features, generator=generator, dtype=dtype).requires_grad_(x_grad)
    weight = torch.randn(out_features, in_features, generator=generator, dtype=dtype).requires_grad_()
    b = torch.randn(out_features, generator=generator, dtype=dtype).requires_grad_() if bias else None
    upstream = torch.randn(*leading, out_features, generator=generator, dtype=dtype)
    if make_noncontiguous:
        x, upstream = noncontiguous(x).requires_grad_(x_grad), noncontiguous(upstream)
    reference = _outputs_and_grads(
        _on_rows(lambda x, w, b: ACTIVATIONS[activation].apply(A.Linear.apply(x, w, b))), (x, weight, b), upstream
    )
    fused = _outputs_and_grads(lambda x, w, b: F.linear_activation(x, w, b, activation), (x, weight, b), upstream)
    _assert_bitwise(fused, reference)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@given(
    rows=st.integers(1, 300),  # both sides of fast.cross_entropy.READ_AS_LIST
    classes=st.integers(2, 12),
    reduction=st.sampled_from(["mean", "sum", "none"]),
    ignore_index=st.sampled_from([-100, 0, 5]),
    seed=st.integers(0, 2**16),
)
def test_cross_entropy_by_either_route_equals_the_general_reference_bitwise(
    dtype, rows, classes, reduction, ignore_index, seed
):
    generator = torch.Generator().manual_seed(seed)
    z = torch.randn(rows, classes, generator=generator, dtype=dtype) * 3
    target = torch.randint(0, classes, (rows,), generator=generator)
    upstream = torch.randn((rows,) if reduction == "none" else (), generator=generator, dtype=dtype)
    reference = _outputs_and_grads(
        lambda z: A.CrossEntropyLoss.apply(z, target, None, ignore_index, 0.0, reduction)[0],
        (z.requires_grad_(),),
        upstream,
    )
    public = _outputs_and_grads(
        lambda z: F.cross_entropy(z, target, ignore_index=ignore_index, reduction=reduction), (z,), upstream
    )
    _assert_bitwise(public, reference)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@given(rows=st.integers(1, 300), classes=st.integers(1, 12), seed=st.integers(0, 2**16))
def test_plain_cross_entropys_gradient_from_its_forward_is_the_references_bitwise(dtype, rows, classes, seed):
    # loss.backward() (g = 1): the gradient the forward computed is handed over, and the reference's backward never
    # runs; it is the reference's to the bit, and so is a second backward through the retained graph (recomputed)
    generator = torch.Generator().manual_seed(seed)
    z = (torch.randn(rows, classes, generator=generator, dtype=dtype) * 3).requires_grad_()
    target = torch.randint(0, classes, (rows,), generator=generator)
    expected = _outputs_and_grads(
        lambda z: A.OneHotCrossEntropyLoss.apply(z, target)[0], (z,), torch.ones((), dtype=dtype)
    )
    loss = F.cross_entropy(z, target)
    assert is_manualbp_node(loss.grad_fn, "OneHotCrossEntropyLoss")
    with pytest.MonkeyPatch.context() as patched:
        patched.setattr(A.OneHotCrossEntropyLoss, "gradients", None)  # calling the reference's would raise
        (first,) = torch.autograd.grad(loss, z, retain_graph=True)
    _assert_bitwise([loss.detach(), first], expected)
    (second,) = torch.autograd.grad(loss, z)
    _assert_bitwise([second], expected[1:])


def test_plain_cross_entropy_scales_by_an_upstream_gradient_and_differentiates_twice():
    z = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    target = torch.tensor([0, 3, 1, 1, 2])
    (thrice,) = torch.autograd.grad(3 * F.cross_entropy(z, target), z)
    (reference,) = torch.autograd.grad(3 * A.OneHotCrossEntropyLoss.apply(z, target)[0], z)
    _assert_bitwise([thrice], [reference])
    assert gradgradcheck(lambda z: F.cross_entropy(z, target), (z,))


def test_cross_entropy_takes_the_plain_function_only_when_no_row_is_ignored_unweighted_unsmoothed_and_the_mean():
    z = torch.randn(6, 4, requires_grad=True)
    target = torch.tensor([0, 1, 2, 3, 0, 1])
    assert is_manualbp_node(F.cross_entropy(z, target).grad_fn, "OneHotCrossEntropyLoss")
    general = ({"ignore_index": 3}, {"weight": torch.rand(4)}, {"label_smoothing": 0.1}, {"reduction": "sum"})
    for kwargs in general:
        assert is_manualbp_node(F.cross_entropy(z, target, **kwargs).grad_fn, "CrossEntropyLoss"), kwargs


FUNCTIONAL = {
    "linear": (lambda x, w, b: F.linear(x, w, b), _on_rows(A.Linear.apply)),
    "relu": (lambda z: F.relu(z), lambda z: A.ReLU.apply(z)),
    "leaky_relu": (lambda z: F.leaky_relu(z, 0.2), lambda z: A.LeakyReLU.apply(z, 0.2)),
    "sigmoid": (lambda z: F.sigmoid(z), lambda z: A.Sigmoid.apply(z)),
    "tanh": (lambda z: F.tanh(z), lambda z: A.Tanh.apply(z)),
    "gelu": (lambda z: F.gelu(z), lambda z: A.GELU.apply(z, "none")),
    "gelu_tanh": (lambda z: F.gelu(z, approximate="tanh"), lambda z: A.GELU.apply(z, "tanh")),
    "mse_loss": (lambda a, y: F.mse_loss(a, y, reduction="none"), lambda a, y: A.MSELoss.apply(a, y, None, "none")),
    "softmax": (lambda z: F.softmax(z, -1), lambda z: A.Softmax.apply(z, -1)),
    "log_softmax": (lambda z: F.log_softmax(z, 0), lambda z: A.LogSoftmax.apply(z, 0)),
    "layer_norm": (
        lambda z: F.layer_norm(z, z.shape[-1:]),
        lambda z: A.LayerNorm.apply(z, tuple(z.shape[-1:]), None, None, 1e-5),
    ),
    "group_norm": (  # z and −z as two examples (N, C, *) of one group each; the first one's output
        lambda z: F.group_norm(torch.stack([z, -z]), 1)[0],
        lambda z: A.GroupNorm.apply(torch.stack([z, -z]), 1, None, None, 1e-5)[0],
    ),
}


@pytest.mark.parametrize("name", FUNCTIONAL)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@given(shape=st.lists(st.integers(1, 9), min_size=1, max_size=3), seed=st.integers(0, 2**16))
def test_the_classic_form_call_route_equals_function_apply_bitwise(name, dtype, shape, seed):
    generator = torch.Generator().manual_seed(seed)
    fast_call, reference_call = FUNCTIONAL[name]
    if name == "linear":
        tensors = (
            torch.randn(*shape, generator=generator, dtype=dtype),
            torch.randn(5, shape[-1], generator=generator, dtype=dtype),
            torch.randn(5, generator=generator, dtype=dtype),
        )
        out_shape = (*shape[:-1], 5)
    else:
        arity = 2 if name == "mse_loss" else 1
        tensors = tuple(torch.randn(*shape, generator=generator, dtype=dtype) * 3 for _ in range(arity))
        out_shape = shape
    tensors = tuple(t.requires_grad_() for t in tensors)
    upstream = torch.randn(*out_shape, generator=generator, dtype=dtype)
    _assert_bitwise(
        _outputs_and_grads(fast_call, tensors, upstream), _outputs_and_grads(reference_call, tensors, upstream)
    )


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@given(shape=st.lists(st.integers(1, 9), min_size=1, max_size=3), seed=st.integers(0, 2**16))
def test_mse_losss_mean_by_one_kernel_each_way_is_the_references_to_the_bit(dtype, shape, seed):
    # the unweighted mean with targets that take no gradient (a training loop's): C and ∂C/∂a by ATen's mse_loss and
    # mse_loss_backward, the reference's bits; a target that wants a gradient takes the reference's backward
    from unittest import mock

    from manualbp.fast import mse

    generator = torch.Generator().manual_seed(seed)
    a, y = (torch.randn(*shape, generator=generator, dtype=dtype) * 3 for _ in range(2))
    upstream = torch.randn((), generator=generator, dtype=dtype)
    with mock.patch.object(mse, "mse_gradient", wraps=mse.mse_gradient) as one_kernel:
        a.requires_grad_()
        expected = _outputs_and_grads(lambda a: A.MSELoss.apply(a, y, None, "mean"), (a,), upstream)
        _assert_bitwise(_outputs_and_grads(lambda a: F.mse_loss(a, y), (a,), upstream), expected)
        assert one_kernel.call_count == 1
        y.requires_grad_()
        expected = _outputs_and_grads(lambda a, y: A.MSELoss.apply(a, y, None, "mean"), (a, y), upstream)
        _assert_bitwise(_outputs_and_grads(lambda a, y: F.mse_loss(a, y), (a, y), upstream), expected)
        assert one_kernel.call_count == 1


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_the_call_route_keeps_what_jvp_needs_only_inside_a_forward_ad_level(activation, dtype):
    # outside a dual level the eager route skips save_for_forward; inside one it must keep it, every time
    import torch.autograd.forward_ad as fwAD

    generator = torch.Generator().manual_seed(0)
    x, x_tangent = (torch.randn(6, 4, generator=generator, dtype=dtype) for _ in range(2))
    weight, bias = torch.randn(3, 4, generator=generator, dtype=dtype), torch.randn(3, generator=generator, dtype=dtype)
    leaf = x.clone().requires_grad_()
    fast.linear_activation(leaf, weight, bias, activation).sum().backward()  # an eager node first: no tangents
    expected = ACTIVATIONS[activation].apply(A.Linear.apply(x, weight, bias))
    with fwAD.dual_level():
        reference = fwAD.unpack_dual(
            ACTIVATIONS[activation].apply(A.Linear.apply(fwAD.make_dual(x, x_tangent), weight, bias))
        ).tangent
        for _ in range(2):
            primal, tangent = fwAD.unpack_dual(
                fast.linear_activation(fwAD.make_dual(x, x_tangent), weight, bias, activation)
            )
            assert torch.equal(primal, expected)
            assert torch.equal(tangent, reference)
    assert leaf.grad is not None and leaf.grad.shape == x.shape


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_a_converted_torch_sequential_equals_the_reference_layer_by_layer_bitwise(activation, dtype):
    torch.manual_seed(0)
    builtin = {"relu": torch.nn.ReLU, "sigmoid": torch.nn.Sigmoid, "tanh": torch.nn.Tanh}[activation]
    model = torch.nn.Sequential(
        torch.nn.Linear(7, 9, dtype=dtype),
        builtin(),
        torch.nn.Linear(9, 9, dtype=dtype),
        builtin(),
        torch.nn.Linear(9, 3, dtype=dtype),
    )
    weights = [p.detach().clone() for p in model.parameters()]
    x = torch.randn(11, 7, dtype=dtype)
    upstream = torch.randn(11, 3, dtype=dtype)

    def reference(x, *p):
        f = ACTIVATIONS[activation].apply
        return A.Linear.apply(f(A.Linear.apply(f(A.Linear.apply(x, p[0], p[1])), p[2], p[3])), p[4], p[5])

    expected = _outputs_and_grads(reference, (x, *(w.requires_grad_() for w in weights)), upstream)
    manualbp.convert(model)
    assert type(model) is mnn.Sequential
    output = model(x)
    got = [output.detach(), *torch.autograd.grad(output, list(model.parameters()), upstream)]
    _assert_bitwise(got, expected[:1] + expected[1:])
    # the three layers, two of them with their activation, as one node
    assert is_manualbp_node(output.grad_fn, "LinearChain")


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
@pytest.mark.parametrize("input_grad", [True, False], ids=["x-grad", "no-x-grad"])
def test_linear_activation_passes_gradcheck_and_gradgradcheck(activation, bias, input_grad):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(6, 5, generator=generator, dtype=torch.float64).requires_grad_(input_grad)
    weight = torch.randn(4, 5, generator=generator, dtype=torch.float64).requires_grad_()
    b = torch.randn(4, generator=generator, dtype=torch.float64).requires_grad_() if bias else None
    operands = [t for t in (x, weight, b) if t is not None and t.requires_grad]

    def fused(*tensors):
        given = iter(tensors)
        return fast.LinearActivation.apply(
            *[next(given) if t is not None and t.requires_grad else t for t in (x, weight, b)], activation
        )

    assert gradcheck(fused, operands)
    assert gradgradcheck(fused, operands)


def test_linear_activation_rejects_an_activation_it_cannot_fuse():
    x, weight = torch.randn(2, 3), torch.randn(4, 3)
    with pytest.raises(ValueError, match=r"activation must be one of \['relu', 'sigmoid', 'tanh'\], got 'gelu'"):
        F.linear_activation(x, weight, None, "gelu")


def _pair(activation):
    torch.manual_seed(0)
    module = {"relu": mnn.ReLU, "sigmoid": mnn.Sigmoid, "tanh": mnn.Tanh}[activation]
    modules = [mnn.Linear(6, 8), module(), mnn.Linear(8, 8), module(), mnn.Linear(8, 3)]
    return mnn.Sequential(*modules), torch.nn.Sequential(*modules)  # the same module objects, fused or one by one


def test_sequential_runs_hooked_modules_one_by_one_so_their_hooks_fire():
    fused, separate = _pair("relu")
    seen = []
    fused[1].register_forward_hook(lambda module, inputs, output: seen.append(tuple(output.shape)))
    x = torch.randn(5, 6)
    output = fused(x)
    assert seen == [(5, 8)]  # the hooked ReLU ran as a module
    assert torch.equal(output, separate(x))
    assert is_manualbp_node(output.grad_fn, "LinearChain")  # the layers after the hook, one node
    relu_node = output.grad_fn.next_functions[0][0]
    assert is_manualbp_node(relu_node, "ReLU")
    assert is_manualbp_node(relu_node.next_functions[0][0], "Linear")  # the first Linear alone: its ReLU is hooked


def test_sequential_runs_module_by_module_under_a_global_hook():
    fused, separate = _pair("tanh")
    seen = []
    handle = torch.nn.modules.module.register_module_forward_hook(lambda m, i, o: seen.append(type(m).__name__))
    try:
        output = fused(torch.randn(2, 6))
    finally:
        handle.remove()
    assert seen == ["Linear", "Tanh", "Linear", "Tanh", "Linear", "Sequential"]
    assert is_manualbp_node(output.grad_fn.next_functions[0][0], "Tanh")


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
