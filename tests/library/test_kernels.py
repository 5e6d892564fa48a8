"""The fast tier's Triton kernels against the reference tier's derivations they are written from.

Without a GPU they run on CPU tensors through Triton's interpreter (``TRITON_INTERPRET=1``, set in conftest.py before
anything imports triton); with one, on the GPU. Shapes are small and odd, so that blocks end inside a row and the
interpreter stays quick. Each kernel is compared with the reference method its docstring names: bitwise where the
arithmetic is the same (the element-wise t · f′ of ReLU, LeakyReLU, sigmoid and tanh), otherwise within a bound in
units of the dtype's machine epsilon ε, stated at each comparison, for float32 and float64.
"""

import importlib
import subprocess
import sys
import types

import pytest
import torch

from manualbp import autograd, fast
from manualbp import functional as F
from manualbp.fast import kernels

triton = pytest.importorskip("triton", reason="Triton is not installed: the fast tier's torch-op path is all there is")

from manualbp.fast.kernels import activation, cross_entropy, norm, softmax  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"  # cpu: through the interpreter
DTYPES = [torch.float32, torch.float64]
SHAPES = [(5, 123), (1, 1), pytest.param((3, 1000), marks=pytest.mark.slow)]


def assert_within(actual, expected, bound, scale):
    """|actual − expected| ≤ bound · ε · scale, elementwise (``scale`` a number or a tensor broadcast to them)."""
    eps = torch.finfo(expected.dtype).eps
    excess = (actual - expected).abs() - bound * eps * scale
    assert excess.max() <= 0, f"off by up to {((actual - expected).abs().max() / eps).item()} ε (bound {bound} ε)"


def logits(shape, dtype, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return (3 * torch.randn(shape, generator=generator, dtype=dtype)).to(DEVICE)


# the reference's target_distribution multiplies ε/K by the bool mask ``keep`` (and by 1, unweighted), which makes
# a float32 tensor: its float64 gradient carries ε/K rounded to float32 (~1e-9 off); the kernel agrees with torch's
# own autograd there (test_cross_entropy_kernel_matches_torch_autograd_within_8_eps)

CROSS_ENTROPY_OPTIONS = {
    "plain": dict(weighted=False, ignore_index=-100, label_smoothing=0.0),
    "ignore_index": dict(weighted=False, ignore_index=0, label_smoothing=0.0),
    "weights_smoothing_ignore": dict(weighted=True, ignore_index=2, label_smoothing=0.1),
    "smoothing": dict(weighted=False, ignore_index=-100, label_smoothing=0.25),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("options", CROSS_ENTROPY_OPTIONS, ids=str)
@pytest.mark.parametrize("reduction", ["mean", "none", pytest.param("sum", marks=pytest.mark.slow)])
def test_cross_entropy_kernel_loss_and_gradient_match_the_reference_within_8_eps(dtype, shape, options, reduction):
    # CrossEntropyLoss.forward and .gradients at g = 1 against the one-pass kernel: the sums run in another order
    # (an online log-sum-exp), so within 8 ε of the largest |value| (loss: of the loss's scale, Σ|C_row|)
    options = CROSS_ENTROPY_OPTIONS[options]
    z = logits(shape, dtype)
    target = torch.randint(0, shape[1], (shape[0],), generator=torch.Generator().manual_seed(1)).to(DEVICE)
    if shape[0] > 1:
        target[1] = 0  # a row that ``ignore_index=0`` ignores
    weight = torch.rand(shape[1], dtype=dtype).to(DEVICE) + 0.5 if options["weighted"] else None
    ignore_index, label_smoothing = options["ignore_index"], options["label_smoothing"]
    loss, grad = cross_entropy.cross_entropy(z, target, weight, ignore_index, label_smoothing, reduction)
    expected_loss, log_probs = autograd.CrossEntropyLoss.forward(
        z, target, weight, ignore_index, label_smoothing, reduction
    )
    expected_grad, *_ = autograd.CrossEntropyLoss.gradients(
        torch.ones_like(expected_loss), None, target, weight, log_probs, ignore_index, label_smoothing, reduction
    )
    assert loss.shape == expected_loss.shape and grad.shape == z.shape
    if expected_loss.isnan().all():  # every row ignored under "mean": 0/0, as PyTorch gives
        assert loss.isnan().all()
    else:
        row_losses = autograd.CrossEntropyLoss.forward(z, target, weight, ignore_index, label_smoothing, "none")[0]
        assert_within(loss, expected_loss, 8, row_losses.abs().sum().clamp_min(1))
    assert_within(grad, expected_grad, 8, expected_grad.abs().max().clamp_min(torch.finfo(dtype).tiny))
    ignored = target == ignore_index
    assert torch.equal(grad[ignored], torch.zeros_like(grad[ignored]))  # an ignored row's gradient is exactly 0


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("options", CROSS_ENTROPY_OPTIONS, ids=str)
def test_cross_entropy_kernel_matches_torch_autograd_within_8_eps(dtype, options):
    # a second referee, PyTorch's own cross-entropy and autograd, on every option, the mean over 5 × 123
    options = CROSS_ENTROPY_OPTIONS[options]
    z = logits((5, 123), dtype).requires_grad_()
    target = torch.tensor([0, 5, 122, 2, 9], device=DEVICE)
    weight = torch.rand(123, dtype=dtype).to(DEVICE) + 0.5 if options["weighted"] else None
    expected_loss = torch.nn.functional.cross_entropy(
        z, target, weight, ignore_index=options["ignore_index"], label_smoothing=options["label_smoothing"]
    )
    (expected_grad,) = torch.autograd.grad(expected_loss, z)
    loss, grad = cross_entropy.cross_entropy(
        z.detach(), target, weight, options["ignore_index"], options["label_smoothing"], "mean"
    )
    assert_within(loss, expected_loss, 8, expected_loss.abs())
    assert_within(grad, expected_grad, 8, expected_grad.abs().max())


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_cross_entropy_kernel_function_passes_gradcheck_in_float64(reduction):
    # the kernel's Function end to end: forward kernel, then the backward's product with a random upstream gradient;
    # 3 × 5 logits, since gradcheck launches the kernel twice per entry (~0.1 s a launch under the interpreter)
    z = logits((3, 5), torch.float64).requires_grad_()
    target = torch.tensor([3, 2, 4], device=DEVICE)
    weight = torch.rand(5, dtype=torch.float64).to(DEVICE) + 0.5

    def loss(z):
        return cross_entropy.CrossEntropy.apply(z, target, weight, 2, 0.1, reduction)

    assert torch.autograd.gradcheck(loss, (z,), eps=1e-6, atol=1e-8, rtol=1e-6)


def test_cross_entropy_kernel_function_scales_by_the_upstream_gradient():
    z = logits((5, 123), torch.float64).requires_grad_()
    target = torch.arange(5, device=DEVICE) * 20
    g = torch.randn(5, dtype=torch.float64).to(DEVICE)
    (grad,) = torch.autograd.grad(cross_entropy.CrossEntropy.apply(z, target, None, -100, 0.0, "none"), z, g)
    _, log_probs = autograd.CrossEntropyLoss.forward(z.detach(), target, None, -100, 0.0, "none")
    expected, *_ = autograd.CrossEntropyLoss.gradients(g, None, target, None, log_probs, -100, 0.0, "none")
    assert_within(grad, expected, 8, expected.abs().max())


ELEMENTWISE = {
    "relu": (autograd.ReLU, lambda z: torch.relu(z), ()),
    "leaky_relu": (autograd.LeakyReLU, lambda z: torch.nn.functional.leaky_relu(z, 0.1), (0.1,)),
    "sigmoid": (autograd.Sigmoid, torch.sigmoid, ()),
    "tanh": (autograd.Tanh, torch.tanh, ()),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ELEMENTWISE)
def test_activation_kernel_times_derivative_matches_the_reference_bitwise(kind, dtype):
    # the same operations in the same order as the reference's times_derivative: the same bits, NaN and ±0 included
    function, forward, options = ELEMENTWISE[kind]
    z = logits((5, 123), dtype)
    z[0, :4] = torch.tensor([0.0, -0.0, float("nan"), 1e-30])
    t = logits((5, 123), dtype, seed=1)
    kept = forward(z)
    actual = activation.times_derivative(t, kept, kind, *options)
    expected = function.times_derivative(t, kept, *options)
    assert torch.equal(actual.nan_to_num(7.0), expected.nan_to_num(7.0))
    assert actual.isnan().equal(expected.isnan())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("kind", "approximate", "bound"), [("gelu", "none", 4), ("gelu_tanh", "tanh", 64)])
def test_gelu_kernel_times_derivative_within_its_bound(kind, approximate, bound, dtype):
    # erf and exp are Triton's (numpy's, under the interpreter), not torch's: within 4 ε·|t| for the exact form; the
    # tanh form writes ½(1 + tanh u) as σ(2u), and the reference's 1 − tanh²u cancels where |u| is large: 64 ε·|t|
    z = logits((3, 1000), dtype)
    t = logits((3, 1000), dtype, seed=1)
    actual = activation.times_derivative(t, z, kind)
    assert_within(actual, autograd.GELU.times_derivative(t, z, approximate), bound, t.abs())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(5, 123), (2, 3, 7), pytest.param((3, 1000), marks=pytest.mark.slow)])
def test_softmax_and_log_softmax_backward_kernels_within_4_eps_of_the_row_sum(shape, dtype):
    # Softmax.times_jacobian and LogSoftmax.gradients: one row sum each, in another order than torch's sum, so
    # within 4 ε · Σ_row |g| (the rounding a sum of the row can carry)
    z = logits(shape, dtype)
    g = logits(shape, dtype, seed=1)
    p, log_p = torch.softmax(z, -1), torch.log_softmax(z, -1)
    scale = g.abs().sum(-1, keepdim=True)
    assert_within(softmax.softmax_backward(g, p, False), autograd.Softmax.times_jacobian(g, p, -1), 4, scale)
    assert_within(softmax.softmax_backward(g, log_p, True), autograd.LogSoftmax.gradients(g, log_p, -1)[0], 4, scale)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    ("shape", "normalized_shape"),
    [((5, 123), (123,)), ((2, 3, 4, 7), (4, 7)), pytest.param((3, 1000), (1000,), marks=pytest.mark.slow)],
)
def test_layer_norm_backward_kernel_within_8_eps_of_the_reference(shape, normalized_shape, dtype):
    # LayerNorm.backward: the mean, variance and both row sums in one kernel, each in another order than torch's,
    # so within 8 ε of the largest |gradient| of each
    x = (logits(shape, dtype) + 1).requires_grad_()
    weight = logits(normalized_shape, dtype, seed=2).requires_grad_()
    bias = logits(normalized_shape, dtype, seed=3).requires_grad_()
    g = logits(shape, dtype, seed=1)
    y = autograd.LayerNorm.apply(x, normalized_shape, weight, bias, 1e-5)
    expected = torch.autograd.grad(y, (x, weight, bias), g)
    columns = weight.numel()
    actual = norm.layer_norm_backward(g, x.detach(), weight.detach(), columns, 1e-5)
    for a, e in zip(actual, expected, strict=True):
        assert_within(a.reshape(e.shape), e, 8, e.abs().max())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    ("shape", "groups", "affine"),
    [((3, 6, 5, 7), 2, True), ((2, 4, 9), 4, False), ((4, 6), 3, True), ((0, 6, 3), 2, True)],
    ids=["2d-positions", "instance-norm", "no-positions", "no-examples"],
)
def test_group_norm_backward_kernel_within_8_eps_of_the_reference(shape, groups, affine, dtype):
    # GroupNorm.gradients: the statistics and both sums of each group in one program, in another order than the
    # reference's, so within 8 ε of the largest |gradient| of each; ∂C/∂γ and ∂C/∂β summed over the examples after
    x = (logits(shape, dtype) + 1).requires_grad_()
    weight, bias = (logits(shape[1], dtype, seed=s).requires_grad_() if affine else None for s in (2, 3))
    g = logits(shape, dtype, seed=1)
    wanted = [t for t in (x, weight, bias) if t is not None]
    expected = torch.autograd.grad(autograd.GroupNorm.apply(x, groups, weight, bias, 1e-5), wanted, g)
    grad_x, grad_weight, grad_bias = norm.group_norm_backward(
        g, x.detach(), None if weight is None else weight.detach(), groups, 1e-5
    )
    actual = [grad_x, *([grad_weight, grad_bias] if affine else [])]
    for a, e in zip(actual, expected, strict=True):
        assert a.shape == e.shape
        if x.numel() == 0:  # no examples: an empty ∂C/∂x, and sums over nothing, 0
            assert torch.equal(a, e)
        else:
            assert_within(a, e, 8, e.abs().max())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    ("shape", "affine"),
    [((3, 5, 4, 7), True), ((8, 4), False), ((2, 3, 1500), True), ((0, 3, 2), True)],
    ids=["2d-positions", "no-positions", "several-blocks", "no-examples"],
)
def test_batch_norm_backward_kernel_within_8_eps_of_the_reference(shape, affine, dtype):
    # BatchNorm.gradients in training: each channel's statistics and both sums in one program, over blocks of its
    # values strided through the batch (a channel of 3000 values takes three), so within 8 ε of the largest |gradient|
    x = (3 * logits(shape, dtype) + 1).requires_grad_()
    weight, bias = (logits(shape[1], dtype, seed=s).requires_grad_() if affine else None for s in (2, 3))
    g = logits(shape, dtype, seed=1)
    wanted = [t for t in (x, weight, bias) if t is not None]
    if x.numel() == 0:  # torch's batch norm refuses an empty batch: the kernel writes nothing and sums nothing
        expected = [torch.zeros_like(t) for t in wanted]
    else:
        expected = torch.autograd.grad(
            autograd.BatchNorm.apply(x, weight, bias, None, None, True, 0.1, 1e-5), wanted, g
        )
    grad_x, grad_weight, grad_bias = norm.batch_norm_backward(
        g, x.detach(), None if weight is None else weight.detach(), 1e-5
    )
    actual = [grad_x, *([grad_weight, grad_bias] if affine else [])]
    for a, e in zip(actual, expected, strict=True):
        assert a.shape == e.shape and a.dtype == e.dtype
        if x.numel() == 0:
            assert torch.equal(a, e)
        else:
            assert_within(a, e, 8, e.abs().max())


def test_kernels_are_chosen_only_for_cuda_tensors_with_triton(monkeypatch):
    cuda_tensor = types.SimpleNamespace(is_cuda=True)  # stands in for one: only .is_cuda is read
    assert kernels.chosen_for(cuda_tensor) and not kernels.chosen_for(torch.zeros(1))
    monkeypatch.setattr(kernels, "AVAILABLE", False)
    assert not kernels.chosen_for(cuda_tensor)


def test_fast_cross_entropy_runs_the_kernel_where_chosen(monkeypatch):
    # the dispatch line in manualbp.fast, driven onto the kernel on this device: same loss and gradient as the
    # reference path within the kernel's bound
    z = logits((5, 123), torch.float64).requires_grad_()
    target = torch.tensor([0, 5, 122, 7, 9], device=DEVICE)
    weight = torch.rand(123, dtype=torch.float64).to(DEVICE) + 0.5
    expected_loss = F.cross_entropy(z, target, weight, label_smoothing=0.1)
    (expected_grad,) = torch.autograd.grad(expected_loss, z)
    monkeypatch.setattr(kernels, "chosen_for", lambda tensor: True)
    monkeypatch.setattr(kernels, "cross_entropy", cross_entropy, raising=False)
    loss, log_probs = fast.cross_entropy(z, target, weight, -100, 0.1, "mean")
    assert log_probs is None  # the kernel's path: ℓ is never written
    (grad,) = torch.autograd.grad(loss, z)
    assert_within(loss, expected_loss, 8, expected_loss.abs())
    assert_within(grad, expected_grad, 8, expected_grad.abs().max())


def _choose_kernels(monkeypatch):
    """Drive the fast tier's dispatch onto the kernels on this device (the interpreter's, without a GPU)."""
    monkeypatch.setattr(kernels, "chosen_for", lambda tensor: True)
    for module in (activation, norm, softmax):
        monkeypatch.setattr(kernels, module.__name__.rsplit(".", 1)[1], module, raising=False)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("affine", [True, False])
def test_fast_layer_norm_runs_the_kernel_in_its_backward_where_chosen(monkeypatch, dtype, affine):
    # the fast tier's LayerNorm, called through manualbp.functional: its gradients by the kernel, within the
    # kernel's bound of the reference path's; a double backward takes the reference's operations, to the bit
    x = (logits((2, 3, 4, 7), dtype) + 1).requires_grad_()
    weight, bias = (logits((4, 7), dtype, seed=s).requires_grad_() if affine else None for s in (2, 3))
    g = logits((2, 3, 4, 7), dtype, seed=1)
    wanted = [t for t in (x, weight, bias) if t is not None]
    expected = torch.autograd.grad(F.layer_norm(x, (4, 7), weight, bias), wanted, g)
    calls = []
    _choose_kernels(monkeypatch)
    monkeypatch.setattr(norm, "layer_norm_backward", _counted(norm.layer_norm_backward, calls))
    actual = torch.autograd.grad(F.layer_norm(x, (4, 7), weight, bias), wanted, g)
    assert len(calls) == 1
    for a, e in zip(actual, expected, strict=True):
        assert a.shape == e.shape
        assert_within(a, e, 8, e.abs().max())
    twice = torch.autograd.grad(F.layer_norm(x, (4, 7), weight, bias), wanted, g, create_graph=True)
    assert len(calls) == 1 and twice[0].requires_grad  # ∂C/∂x, a function of x and γ to differentiate again
    monkeypatch.undo()
    reference = torch.autograd.grad(F.layer_norm(x, (4, 7), weight, bias), wanted, g, create_graph=True)
    assert all(torch.equal(a, e) for a, e in zip(twice, reference, strict=True))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("log", [False, True])
def test_fast_softmax_runs_the_kernel_in_its_backward_over_the_last_dimension_only(monkeypatch, dtype, log):
    function = F.log_softmax if log else F.softmax
    z = logits((2, 5, 9), dtype).requires_grad_()
    g = logits((2, 5, 9), dtype, seed=1)
    expected = {dim: torch.autograd.grad(function(z, dim), z, g)[0] for dim in (-1, 1)}
    calls = []
    _choose_kernels(monkeypatch)
    monkeypatch.setattr(softmax, "softmax_backward", _counted(softmax.softmax_backward, calls))
    (last,) = torch.autograd.grad(function(z, -1), z, g)
    assert len(calls) == 1
    assert_within(last, expected[-1], 4, g.abs().sum(-1, keepdim=True))
    (middle,) = torch.autograd.grad(function(z, 1), z, g)  # not the kernel's rows: the reference, to the bit
    assert len(calls) == 1 and torch.equal(middle, expected[1])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    ("call", "bound"),
    [
        (lambda z: F.gelu(z), 4),
        (lambda z: F.gelu(z, approximate="tanh"), 64),
        (lambda z: F.leaky_relu(z, 0.1), 0),  # the reference's arithmetic: the same bits
        (lambda z: F.leaky_relu(z, -0.5), 0),  # a negative slope: f′ read from z, as the reference keeps it
    ],
    ids=["gelu", "gelu_tanh", "leaky_relu", "leaky_relu_negative_slope"],
)
def test_fast_gelu_and_leaky_relu_run_the_activation_kernel_in_their_backward_where_chosen(
    monkeypatch, dtype, call, bound
):
    z = logits((5, 123), dtype).requires_grad_()
    g = logits((5, 123), dtype, seed=1)
    (expected,) = torch.autograd.grad(call(z), z, g)
    calls = []
    _choose_kernels(monkeypatch)
    monkeypatch.setattr(activation, "times_derivative", _counted(activation.times_derivative, calls))
    (actual,) = torch.autograd.grad(call(z), z, g)
    assert len(calls) == 1
    assert_within(actual, expected, bound, g.abs())


@pytest.mark.parametrize("dtype", DTYPES)
def test_fast_group_norm_runs_the_kernel_in_its_backward_where_chosen(monkeypatch, dtype):
    x = (logits((3, 6, 5, 7), dtype) + 1).requires_grad_()
    weight, bias = (logits(6, dtype, seed=s).requires_grad_() for s in (2, 3))
    g = logits((3, 6, 5, 7), dtype, seed=1)
    expected = torch.autograd.grad(F.group_norm(x, 2, weight, bias), (x, weight, bias), g)
    calls = []
    _choose_kernels(monkeypatch)
    monkeypatch.setattr(norm, "group_norm_backward", _counted(norm.group_norm_backward, calls))
    actual = torch.autograd.grad(F.group_norm(x, 2, weight, bias), (x, weight, bias), g)
    assert len(calls) == 1
    for a, e in zip(actual, expected, strict=True):
        assert_within(a, e, 8, e.abs().max())
    twice = torch.autograd.grad(F.group_norm(x, 2, weight, bias), (x, weight, bias), g, create_graph=True)
    assert len(calls) == 1 and twice[0].requires_grad  # a double backward: the reference's operations


@pytest.mark.parametrize("dtype", DTYPES)
def test_fast_batch_norm_runs_the_kernel_in_its_training_backward_where_chosen(monkeypatch, dtype):
    # training: the kernel, within its bound of the reference path; evaluation and a double backward: the
    # reference's own operations, the kernel never called
    x = (3 * logits((4, 3, 5, 6), dtype) + 1).requires_grad_()
    weight, bias = (logits(3, dtype, seed=s).requires_grad_() for s in (2, 3))
    running_mean, running_var = torch.zeros(3, dtype=dtype, device=DEVICE), torch.ones(3, dtype=dtype, device=DEVICE)
    g = logits((4, 3, 5, 6), dtype, seed=1)

    def gradients(training, create_graph=False):
        y = F.batch_norm(x, running_mean.clone(), running_var.clone(), weight, bias, training=training)
        return torch.autograd.grad(y, (x, weight, bias), g, create_graph=create_graph)

    expected = {training: gradients(training) for training in (True, False)}
    calls = []
    _choose_kernels(monkeypatch)
    monkeypatch.setattr(norm, "batch_norm_backward", _counted(norm.batch_norm_backward, calls))
    actual = gradients(True)
    assert len(calls) == 1
    for a, e in zip(actual, expected[True], strict=True):
        assert_within(a, e, 8, e.abs().max())
    evaluation = gradients(False)
    assert len(calls) == 1 and all(torch.equal(a, e) for a, e in zip(evaluation, expected[False], strict=True))
    twice = gradients(True, create_graph=True)
    assert len(calls) == 1 and twice[0].requires_grad  # a function of x and γ, to differentiate again


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["relu", "sigmoid", "tanh"])
@pytest.mark.parametrize("shape", [(130, 45), (1, 1), (3, 0)], ids=["rows-past-a-tile", "one", "no-columns"])
def test_times_derivative_and_column_sum_kernel_is_the_references_delta_bitwise_and_its_sum_within_bound(
    shape, kind, dtype
):
    # δ: the element-wise kernel's arithmetic, so the reference's bits; Σ_rows δ: the rows in another order than
    # torch's sum, so within M ε Σ|δ| of it
    t = logits(shape, dtype, seed=1)
    function, _ = autograd.mlp.ACTIVATIONS[kind]
    a = function.forward(logits(shape, dtype))
    expected = function.times_derivative(t, a)
    delta, column_sum = activation.times_derivative_and_column_sum(t, a, kind)
    assert torch.equal(delta, expected)
    assert column_sum.shape == (shape[1],) and column_sum.dtype == dtype
    if column_sum.numel():
        assert_within(column_sum, expected.sum(0), shape[0], expected.abs().sum(0))


@pytest.mark.parametrize("dtype", DTYPES)
def test_fast_linear_activation_takes_delta_and_the_bias_gradient_from_one_kernel_where_chosen(monkeypatch, dtype):
    x = logits((70, 13), dtype).requires_grad_()
    weight, bias = (logits(shape, dtype, seed=s).requires_grad_() for s, shape in ((2, (9, 13)), (3, (9,))))
    g = logits((70, 9), dtype, seed=1)
    expected = torch.autograd.grad(F.linear_activation(x, weight, bias, "tanh"), (x, weight, bias), g)
    expected_no_bias = torch.autograd.grad(F.linear_activation(x, weight, None, "tanh"), (x, weight), g)
    calls = []
    _choose_kernels(monkeypatch)
    monkeypatch.setattr(
        activation, "times_derivative_and_column_sum", _counted(activation.times_derivative_and_column_sum, calls)
    )
    actual = torch.autograd.grad(F.linear_activation(x, weight, bias, "tanh"), (x, weight, bias), g)
    assert len(calls) == 1
    assert torch.equal(actual[0], expected[0]) and torch.equal(actual[1], expected[1])  # δ's bits, the same products
    assert_within(actual[2], expected[2], 70, g.abs().sum(0))
    no_bias = torch.autograd.grad(F.linear_activation(x, weight, None, "tanh"), (x, weight), g)  # no sum to take
    assert len(calls) == 1 and all(torch.equal(a, e) for a, e in zip(no_bias, expected_no_bias, strict=True))


@pytest.mark.parametrize("dtype", DTYPES)
def test_mlp_loss_takes_cross_entropy_from_the_kernel_where_chosen_and_only_for_a_gradient(monkeypatch, dtype):
    # the one-node network's loss and every gradient within the kernel's bound of the reference path; under
    # no_grad the kernel (which writes ∂C/∂z) is not called, and the loss is the reference's to the bit
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(7, 13, generator=generator, dtype=dtype).to(DEVICE)
    target = torch.tensor([0, 4, 9, 2, 2, 8, 5], device=DEVICE)
    parameters = [
        (torch.randn(shape, generator=generator, dtype=dtype) / 3).to(DEVICE).requires_grad_()
        for shape in [(11, 13), (11,), (10, 11), (10,)]
    ]
    weights, biases = parameters[::2], parameters[1::2]
    expected_loss = F.mlp_loss(x, target, weights, biases, ["gelu", None])
    expected = torch.autograd.grad(expected_loss, parameters)
    with torch.no_grad():
        expected_evaluation = F.mlp_loss(x, target, weights, biases, ["gelu", None])
    calls = []
    _choose_kernels(monkeypatch)
    monkeypatch.setattr(kernels, "cross_entropy", cross_entropy, raising=False)
    monkeypatch.setattr(cross_entropy, "cross_entropy", _counted(cross_entropy.cross_entropy, calls))
    loss = F.mlp_loss(x, target, weights, biases, ["gelu", None])
    assert len(calls) == 1 and type(loss.grad_fn).__name__ == "MLPLossBackward"
    assert_within(loss, expected_loss, 8, expected_loss.abs())
    for a, e in zip(torch.autograd.grad(loss, parameters), expected, strict=True):
        assert_within(a, e, 16, e.abs().max())
    with torch.no_grad():
        evaluation = F.mlp_loss(x, target, weights, biases, ["gelu", None])
    assert len(calls) == 1 and torch.equal(evaluation, expected_evaluation)


@pytest.mark.parametrize(
    "call",
    [
        lambda x, w, b: F.layer_norm(x, (3, 4), w.reshape(3, 4), b.reshape(3, 4)),
        lambda x, w, b: F.group_norm(x, 2, w[:2], b[:2]),
        lambda x, w, b: F.batch_norm(x, None, None, w[:2], b[:2], training=True),
        lambda x, w, b: F.softmax(x, -1),
        lambda x, w, b: F.log_softmax(x, -1) + F.gelu(x) * F.leaky_relu(x, 0.1),
        lambda x, w, b: F.linear_activation(x.reshape(6, 4), w.reshape(3, 4), b[:3], "sigmoid"),
    ],
    ids=["layer_norm", "group_norm", "batch_norm", "softmax", "log_softmax_gelu_leaky_relu", "linear_sigmoid"],
)
def test_the_fast_tiers_kernel_backward_passes_gradcheck_in_float64(monkeypatch, call):
    # the kernels in the Functions' backward, against finite differences (the batched check vmaps the backward,
    # where the kernels do not run: not asked)
    x = (logits((1, 2, 3, 4), torch.float64) + 1).requires_grad_()
    w, b = (logits(12, torch.float64, seed=s).requires_grad_() for s in (2, 3))
    _choose_kernels(monkeypatch)
    assert torch.autograd.gradcheck(call, (x, w, b), atol=1e-8, rtol=1e-6, check_batched_grad=False)


def _counted(function, calls):
    def call(*args, **kwargs):
        calls.append(args)
        return function(*args, **kwargs)

    return call


def test_without_triton_no_kernel_is_available_or_chosen(monkeypatch):
    # the package's import-time check, made again where ``import triton`` fails as where it is not installed
    monkeypatch.setitem(sys.modules, "triton", None)
    importlib.reload(kernels)
    try:
        assert not kernels.AVAILABLE and not kernels.chosen_for(types.SimpleNamespace(is_cuda=True))
        z = logits((5, 123), torch.float64)
        target = torch.tensor([0, 5, 122, 7, 9], device=DEVICE)
        loss, log_probs = fast.cross_entropy(z, target, None, -100, 0.1, "mean")
        expected, expected_log_probs = autograd.CrossEntropyLoss.apply(z, target, None, -100, 0.1, "mean")
        assert torch.equal(loss, expected) and torch.equal(log_probs, expected_log_probs)  # the reference's bits
    finally:
        monkeypatch.undo()
        importlib.reload(kernels)
    assert kernels.AVAILABLE


@pytest.mark.slow
def test_without_triton_the_fast_tier_takes_the_reference_path():
    # a fresh interpreter where triton cannot be imported: manualbp imports, chooses no kernel, and its cross-entropy
    # is the reference Function's, bit for bit
    script = """
import sys
sys.modules["triton"] = None  # import triton now raises ImportError, as where it is not installed
import torch
import manualbp
from manualbp import autograd, fast
assert not fast.kernels.AVAILABLE and not fast.kernels.chosen_for(torch.zeros(1))
z = torch.randn(5, 123, dtype=torch.float64, requires_grad=True)
target = torch.tensor([0, 5, 122, 7, 9])
loss, log_probs = fast.cross_entropy(z, target, None, -100, 0.1, "mean")
expected, expected_log_probs = autograd.CrossEntropyLoss.apply(z, target, None, -100, 0.1, "mean")
assert torch.equal(loss, expected) and torch.equal(log_probs, expected_log_probs)
assert torch.equal(torch.autograd.grad(loss, z)[0], torch.autograd.grad(expected, z)[0])
assert sys.modules["triton"] is None
print("ok")
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "ok", result.stderr
