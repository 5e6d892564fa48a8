"""The CNN layers (convolution, pooling, dropout) against PyTorch and finite differences; the norms are in
test_normalization.py.

Each forward pass runs PyTorch's own kernel, so outputs are compared bit for bit; the backward passes are ours, and
are compared bit for bit where the arithmetic is the same (max-pool's scatter, dropout's product) and with
``assert_close`` elsewhere. gradcheck and gradgradcheck run in float64 at atol 1e-8 / rtol 1e-6, with forward AD,
batched gradients and batched forward gradients. A converted torchvision ResNet-18 gives torch's gradients through
manualbp's nodes alone.
"""

import copy

import pytest
import torch
from conftest import assert_grad_and_gradgrad, is_manualbp_node

import manualbp
import manualbp.functional as F
from manualbp import fast

TF = torch.nn.functional
DOUBLE = torch.float64


def _leaves(*tensors):
    return tuple(None if t is None else t.detach().requires_grad_() for t in tensors)


def _outputs_and_grads(fn, inputs):
    """fn's output and the gradients of a random upstream gradient (not ``.sum()``) for every input needing one."""
    output = fn(*inputs)
    g = torch.randn_like(output)
    wanted = [t for t in inputs if t is not None and t.requires_grad]
    return output, torch.autograd.grad(output, wanted, g)


def _compare(ours, theirs, inputs, bitwise):
    torch.manual_seed(1)
    output, grads = _outputs_and_grads(ours, inputs)
    torch.manual_seed(1)
    expected_output, expected_grads = _outputs_and_grads(theirs, inputs)
    torch.testing.assert_close(output, expected_output, rtol=0, atol=0, equal_nan=True)  # torch's kernel
    for grad, expected in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(grad, expected, **({"rtol": 0, "atol": 0} if bitwise else {}))


# (input shape, weight shape, bias, stride, padding, dilation, groups)
CONV2D = {
    "plain": ((2, 3, 6, 5), (4, 3, 3, 3), True, 1, 0, 1, 1),
    "strided_padded_dilated": ((2, 4, 7, 6), (6, 2, 3, 2), True, (2, 1), (1, 2), (1, 2), 2),
    "stride_past_the_kernel": ((1, 2, 8, 7), (3, 2, 2, 2), False, 3, 1, 1, 1),
    "same_odd_total": ((2, 2, 5, 6), (3, 2, 2, 3), True, 1, "same", 1, 1),
    "same_dilated": ((1, 2, 6, 6), (2, 2, 3, 3), False, 1, "same", 2, 1),
    "valid_depthwise": ((2, 3, 5, 5), (3, 1, 3, 3), True, 1, "valid", 1, 3),
    "unbatched": ((3, 5, 5), (2, 3, 2, 2), True, 1, 1, 1, 1),
}


def _conv2d_inputs(case, dtype):
    input_shape, weight_shape, bias, *_ = CONV2D[case]
    x = torch.randn(*input_shape, dtype=dtype)
    weight = torch.randn(*weight_shape, dtype=dtype)
    b = torch.randn(weight_shape[0], dtype=dtype) if bias else None
    return _leaves(x, weight, b)


@pytest.mark.parametrize("dtype", [torch.float32, DOUBLE])
@pytest.mark.parametrize("case", CONV2D)
def test_conv2d_output_is_torchs_and_grads_match_torchs(case, dtype):
    *_, stride, padding, dilation, groups = CONV2D[case]
    _compare(
        lambda x, w, b: F.conv2d(x, w, b, stride, padding, dilation, groups),
        lambda x, w, b: TF.conv2d(x, w, b, stride, padding, dilation, groups),
        _conv2d_inputs(case, dtype),
        bitwise=False,
    )


@pytest.mark.parametrize("dtype", [torch.float32, DOUBLE])
@pytest.mark.parametrize("case", CONV2D)
def test_conv2d_input_gradient_is_torchs_to_the_bit_on_cpu(case, dtype):
    # ∂C/∂x is the transposed convolution, which runs PyTorch's own kernel for it (∂C/∂W, summed from the
    # columns, rounds in another order and is compared to tolerance above)
    *_, stride, padding, dilation, groups = CONV2D[case]
    x, weight, bias = _conv2d_inputs(case, dtype)
    grads = []
    for conv2d in (F.conv2d, TF.conv2d):
        output = conv2d(x, weight.detach(), None if bias is None else bias.detach(), stride, padding, dilation, groups)
        torch.manual_seed(1)
        grads.append(torch.autograd.grad(output, x, torch.randn_like(output))[0])
    assert torch.equal(grads[0], grads[1])


def test_conv2d_gradients_of_an_empty_batch_are_torchs():
    x = torch.randn(0, 4, 7, 6, dtype=DOUBLE)
    weight = torch.randn(6, 2, 3, 2, dtype=DOUBLE)
    _compare(
        lambda x, w, b: F.conv2d(x, w, b, (2, 1), (1, 2), (1, 2), 2),
        lambda x, w, b: TF.conv2d(x, w, b, (2, 1), (1, 2), (1, 2), 2),
        _leaves(x, weight, torch.randn(6, dtype=DOUBLE)),
        bitwise=True,  # zeros: nothing to sum
    )


def test_conv2d_function_applied_directly_takes_ints_as_torch_does_and_refuses_a_padding_word():
    x, weight, bias = _conv2d_inputs("stride_past_the_kernel", DOUBLE)
    _compare(
        lambda x, w: manualbp.autograd.Conv2d.apply(x, w, None, 3, 1, 1, 1),
        lambda x, w: TF.conv2d(x, w, None, 3, 1, 1, 1),
        (x, weight),
        bitwise=False,
    )
    with pytest.raises(ValueError, match=r"^Conv2d.apply: padding='same' .* use manualbp.functional.conv2d"):
        manualbp.autograd.Conv2d.apply(x, weight, None, 1, "same", 1, 1)


@pytest.mark.parametrize("case", CONV2D)
def test_conv2d_gradcheck_and_gradgradcheck(case):
    *_, stride, padding, dilation, groups = CONV2D[case]
    assert_grad_and_gradgrad(
        lambda x, w, b: F.conv2d(x, w, b, stride, padding, dilation, groups), _conv2d_inputs(case, DOUBLE)
    )


@pytest.mark.parametrize("padding", [0, 2, "same", "valid"])
def test_conv1d_matches_torch_and_passes_gradcheck(padding):
    x, weight, bias = _leaves(torch.randn(2, 4, 9, dtype=DOUBLE), torch.randn(6, 2, 3, dtype=DOUBLE), torch.randn(6))
    bias = bias.to(DOUBLE).detach().requires_grad_()
    stride = 1 if isinstance(padding, str) else 2
    ours = lambda x, w, b: F.conv1d(x, w, b, stride, padding, 1, 2)  # noqa: E731
    _compare(ours, lambda x, w, b: TF.conv1d(x, w, b, stride, padding, 1, 2), (x, weight, bias), bitwise=False)
    assert_grad_and_gradgrad(ours, (x, weight, bias))


# (kernel_size, stride, padding, dilation, ceil_mode)
MAX_POOL = {
    "two_by_two": (2, None, 0, 1, False),
    "overlapping_padded_dilated_ceil": ((3, 2), (2, 1), 1, (1, 2), True),
    "ceil_with_overhang": (3, 2, 1, 1, True),
}


@pytest.mark.parametrize("dtype", [torch.float32, DOUBLE])
@pytest.mark.parametrize("case", MAX_POOL)
def test_max_pool2d_output_indices_and_grads_are_torchs_bitwise(case, dtype):
    x = _leaves(torch.randn(2, 3, 7, 8, dtype=dtype))
    _compare(lambda x: F.max_pool2d(x, *MAX_POOL[case]), lambda x: TF.max_pool2d(x, *MAX_POOL[case]), x, True)
    _, indices = F.max_pool2d(x[0], *MAX_POOL[case], return_indices=True)
    assert torch.equal(indices, TF.max_pool2d(x[0], *MAX_POOL[case], return_indices=True)[1])


@pytest.mark.parametrize("case", MAX_POOL)
def test_max_pool2d_gradcheck_and_gradgradcheck(case):
    assert_grad_and_gradgrad(lambda x: F.max_pool2d(x, *MAX_POOL[case]), _leaves(torch.randn(1, 2, 7, 8).double()))


# (kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)
AVG_POOL = {
    "two_by_two": (2, None, 0, False, True, None),
    "padded_ceil_counting_padding": ((3, 2), (2, 1), 1, True, True, None),
    "padded_ceil_not_counting_padding": (3, 2, 1, True, False, None),
    "divisor_override": (3, (3, 2), (1, 0), True, False, 5),
}


@pytest.mark.parametrize("dtype", [torch.float32, DOUBLE])
@pytest.mark.parametrize("case", AVG_POOL)
def test_avg_pool2d_output_is_torchs_and_grads_match_torchs(case, dtype):
    x = _leaves(torch.randn(2, 3, 7, 8, dtype=dtype))
    _compare(lambda x: F.avg_pool2d(x, *AVG_POOL[case]), lambda x: TF.avg_pool2d(x, *AVG_POOL[case]), x, False)


@pytest.mark.parametrize("case", AVG_POOL)
def test_avg_pool2d_function_applied_directly_takes_torchs_arguments(case):
    # ints for pairs and stride None, as torch.nn.functional.avg_pool2d takes them
    x = _leaves(torch.randn(2, 3, 7, 8, dtype=DOUBLE))
    _compare(
        lambda x: manualbp.autograd.AvgPool2d.apply(x, *AVG_POOL[case]),
        lambda x: TF.avg_pool2d(x, *AVG_POOL[case]),
        x,
        bitwise=False,
    )


@pytest.mark.parametrize("case", AVG_POOL)
def test_avg_pool2d_gradcheck_and_gradgradcheck(case):
    assert_grad_and_gradgrad(lambda x: F.avg_pool2d(x, *AVG_POOL[case]), _leaves(torch.randn(1, 2, 7, 8).double()))


@pytest.mark.parametrize("dtype", [torch.float32, DOUBLE])
@pytest.mark.parametrize("output_size", [1, (3, 3), (5, 3), (None, 2), (7, 8)])
def test_adaptive_avg_pool2d_output_is_torchs_grads_match_and_gradcheck_passes(output_size, dtype):
    x = _leaves(torch.randn(2, 3, 7, 8, dtype=dtype))
    ours = lambda x: F.adaptive_avg_pool2d(x, output_size)  # noqa: E731
    _compare(ours, lambda x: TF.adaptive_avg_pool2d(x, output_size), x, bitwise=False)
    if dtype is DOUBLE:
        assert_grad_and_gradgrad(ours, _leaves(x[0][:1, :2]))


@pytest.mark.parametrize("output_size", [1, (None, 2), (5, 3)])
def test_adaptive_avg_pool2d_function_applied_directly_takes_torchs_output_sizes(output_size):
    x = _leaves(torch.randn(2, 3, 7, 8, dtype=DOUBLE))
    ours = lambda x: manualbp.autograd.AdaptiveAvgPool2d.apply(x, output_size)  # noqa: E731
    _compare(ours, lambda x: TF.adaptive_avg_pool2d(x, output_size), x, bitwise=False)


EMPTY_BATCH = {
    "max_pool2d": (lambda f, x: f.max_pool2d(x, 2), (0, 3, 8, 8)),
    "avg_pool2d": (lambda f, x: f.avg_pool2d(x, 2, 1, 1), (0, 3, 8, 8)),
    "adaptive_avg_pool2d": (lambda f, x: f.adaptive_avg_pool2d(x, 3), (0, 3, 8, 8)),
    "mse_loss_mean": (lambda f, x: f.mse_loss(x, torch.zeros_like(x)), (0, 4)),
    "mse_loss_sum": (lambda f, x: f.mse_loss(x, torch.zeros_like(x), reduction="sum"), (0, 4)),
}


@pytest.mark.parametrize("case", EMPTY_BATCH)
def test_an_empty_batch_gives_torchs_output_and_empty_gradient(case):
    function, shape = EMPTY_BATCH[case]
    x = torch.randn(*shape, dtype=DOUBLE, requires_grad=True)
    results = []
    for library in (F, TF):
        output = function(library, x)
        (grad,) = torch.autograd.grad(output, x, torch.ones_like(output))
        results.append((output, grad))
    (output, grad), (expected_output, expected_grad) = results
    torch.testing.assert_close(output, expected_output, equal_nan=True)  # a mean over nothing is nan in both
    assert grad.shape == expected_grad.shape == x.shape


@pytest.mark.parametrize("dtype", [torch.float32, DOUBLE])
@pytest.mark.parametrize("p", [0.2, 0.5, 0.9])
def test_dropout_draws_torchs_mask_on_the_cpu_bitwise(p, dtype):
    x = _leaves(torch.randn(4, 5, 6, dtype=dtype))
    _compare(lambda x: F.dropout(x, p), lambda x: TF.dropout(x, p), x, bitwise=True)
    torch.manual_seed(3)
    F.dropout(x[0], p)
    after_ours = torch.rand(3)
    torch.manual_seed(3)
    TF.dropout(x[0], p)
    assert torch.equal(after_ours, torch.rand(3)), "the generator is left where torch's dropout leaves it"


@pytest.mark.parametrize("p", [0.0, 1.0])
def test_dropout_at_p_zero_and_one_matches_torch(p):
    x = _leaves(torch.tensor([1.0, -2.0, float("inf")]))
    _compare(lambda x: F.dropout(x, p), lambda x: TF.dropout(x, p), x, bitwise=True)


def test_dropout_is_the_identity_in_eval_and_rejects_a_probability_outside_zero_one():
    x = torch.randn(3)
    assert F.dropout(x, 0.5, training=False) is x
    with pytest.raises(ValueError, match="between 0 and 1"):
        F.dropout(x, 1.5)


def test_dropout_gradcheck_and_gradgradcheck_for_a_fixed_mask():
    x = _leaves(torch.randn(3, 4, dtype=DOUBLE))
    mask = torch.empty_like(x[0]).bernoulli_(0.6).div_(0.6)
    assert_grad_and_gradgrad(lambda x: fast.dropout(x, mask), x)


MODULES = [
    (torch.nn.Conv2d, manualbp.nn.Conv2d, (3, 4, 3), {"stride": 2, "padding": 1}, (2, 3, 8, 8)),
    (torch.nn.Conv2d, manualbp.nn.Conv2d, (2, 4, 3), {"padding": 1, "padding_mode": "reflect"}, (2, 2, 5, 5)),
    (torch.nn.Conv1d, manualbp.nn.Conv1d, (2, 4, 3), {"padding": "same"}, (2, 2, 9)),
    (torch.nn.MaxPool2d, manualbp.nn.MaxPool2d, (3,), {"stride": 2, "padding": 1, "ceil_mode": True}, (2, 3, 7, 7)),
    (torch.nn.AvgPool2d, manualbp.nn.AvgPool2d, (3,), {"stride": 2, "count_include_pad": False}, (2, 3, 7, 7)),
    (torch.nn.AdaptiveAvgPool2d, manualbp.nn.AdaptiveAvgPool2d, ((2, 3),), {}, (2, 3, 7, 7)),
    (torch.nn.BatchNorm1d, manualbp.nn.BatchNorm1d, (3,), {}, (5, 3)),
    (torch.nn.BatchNorm1d, manualbp.nn.BatchNorm1d, (3,), {"momentum": None}, (5, 3, 4)),
    (torch.nn.BatchNorm2d, manualbp.nn.BatchNorm2d, (3,), {"affine": False}, (4, 3, 2, 2)),
    (torch.nn.BatchNorm2d, manualbp.nn.BatchNorm2d, (3,), {"track_running_stats": False}, (4, 3, 2, 2)),
    (torch.nn.Dropout, manualbp.nn.Dropout, (0.3,), {}, (4, 5)),
    (torch.nn.GroupNorm, manualbp.nn.GroupNorm, (2, 6), {}, (3, 6, 4, 4)),
    (torch.nn.GroupNorm, manualbp.nn.GroupNorm, (3, 6), {"eps": 1e-3, "bias": False}, (3, 6, 5)),
    (torch.nn.GroupNorm, manualbp.nn.GroupNorm, (2, 6), {}, (3, 6)),
    (torch.nn.GroupNorm, manualbp.nn.GroupNorm, (6, 6), {"affine": False}, (3, 6, 4)),
]


@pytest.mark.parametrize(
    "torch_class, manual_class, args, kwargs, shape", MODULES, ids=lambda v: getattr(v, "__name__", None)
)
def test_module_has_torchs_init_and_state_and_matches_it_in_train_and_eval(
    torch_class, manual_class, args, kwargs, shape
):
    torch.manual_seed(0)
    theirs = torch_class(*args, **kwargs)
    torch.manual_seed(0)
    ours = manual_class(*args, **kwargs)
    assert isinstance(ours, torch_class) and repr(ours) == repr(theirs)
    for (name, value), (their_name, their_value) in zip(
        ours.state_dict().items(), theirs.state_dict().items(), strict=True
    ):
        assert name == their_name and torch.equal(value, their_value)
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(*shape)
    for train in (True, True, False):  # twice in training: the running statistics move, then are used
        ours.train(train), theirs.train(train)
        inputs = _leaves(x)
        torch.manual_seed(2)
        output, grads = _outputs_and_grads(ours, inputs)
        torch.manual_seed(2)
        expected_output, expected_grads = _outputs_and_grads(theirs, inputs)
        torch.testing.assert_close(output, expected_output)
        torch.testing.assert_close(grads, expected_grads)
        for value, their_value in zip(ours.state_dict().values(), theirs.state_dict().values(), strict=True):
            assert torch.equal(value, their_value)


def _small_cnn():
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1),
        torch.nn.BatchNorm2d(4),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Dropout(0.25),
        torch.nn.Flatten(),
        torch.nn.Linear(4 * 4 * 4, 10),
    )


def _graph_node_names(output):
    names, stack, seen = [], [output.grad_fn], set()
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        names.append(node)
        stack.extend(next_node for next_node, _ in node.next_functions)
    return names


@pytest.mark.parametrize("training", [True, False])
def test_a_converted_cnn_gives_torchs_outputs_and_gradients_through_manualbp_nodes(training):
    torch.manual_seed(0)
    model = _small_cnn().train(training)
    converted = manualbp.convert(copy.deepcopy(model))
    x = torch.randn(3, 1, 8, 8)
    torch.manual_seed(5)
    expected = model(x)
    torch.manual_seed(5)
    output = converted(x)
    torch.testing.assert_close(output, expected)
    g = torch.randn_like(output)
    expected.backward(g), output.backward(g)
    for (name, parameter), (_, converted_parameter) in zip(
        model.named_parameters(), converted.named_parameters(), strict=True
    ):
        torch.testing.assert_close(converted_parameter.grad, parameter.grad, msg=name)
    for buffer, converted_buffer in zip(model.buffers(), converted.buffers(), strict=True):
        assert torch.equal(buffer, converted_buffer)
    nodes = _graph_node_names(output)
    for function in ["Conv2d", "BatchNorm", "MaxPool2d", "ReLU", "Linear"] + (["Dropout"] if training else []):
        assert any(is_manualbp_node(node, function) for node in nodes), function
    builtin = {"ConvolutionBackward0", "NativeBatchNormBackward0", "MaxPool2DWithIndicesBackward0", "MulBackward0"}
    assert not builtin & {type(node).__name__ for node in nodes}
    manualbp.convert(converted, to="torch")
    assert [type(m) for m in converted.modules()] == [type(m) for m in model.modules()]


# PyTorch's own backward nodes for a ResNet's layers (convolution, batch norm, pooling, ReLU, Linear; an adaptive
# average-pool to 1×1 runs as a mean): none may remain in a converted ResNet's graph
RESNET_BUILT_IN_NODES = {
    "ConvolutionBackward0",
    "NativeBatchNormBackward0",
    "CudnnBatchNormBackward0",
    "MaxPool2DWithIndicesBackward0",
    "AdaptiveAvgPool2DBackward0",
    "AvgPool2DBackward0",
    "MeanBackward1",
    "ReluBackward0",
    "ThresholdBackward0",
    "AddmmBackward0",
    "MmBackward0",
    "TBackward0",
}
# what may remain: the residual adds, the flatten before the classifier, the copy that writes an in-place ReLU's
# output into its input, and the parameters
RESNET_ALLOWED_NODES = {"AccumulateGrad", "AddBackward0", "ViewBackward0", "CopyBackwards"}
RESNET_MANUALBP_NODES = {
    "Conv2dBackward",
    "BatchNormBackward",
    "ReLUBackward",
    "MaxPool2dBackward",
    "AdaptiveAvgPool2dBackward",
    "LinearBackward",
}


@pytest.mark.parametrize(
    "dtype, training, tolerance",
    [(torch.float32, True, 1e-5), (DOUBLE, True, 1e-10), (torch.float32, False, 1e-5)],
    ids=["float32-train", "float64-train", "float32-eval"],
)
def test_converted_torchvision_resnet18_matches_torch_and_its_graph_holds_no_built_in_layer(dtype, training, tolerance):
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=10).to(dtype).train(training)
    with torch.no_grad():  # batch norm starts at γ = 1, β = 0, μ_r = 0, v_r = 1, which could hide a wrong term
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.add_(0.3 * torch.randn_like(module.weight))
                module.bias.add_(0.3 * torch.randn_like(module.bias))
                module.running_mean.add_(0.1 * torch.randn_like(module.running_mean))
                module.running_var.add_(torch.rand_like(module.running_var) - 0.5)
    converted = manualbp.convert(copy.deepcopy(model))
    assert {type(m) for m in converted.modules()} >= {manualbp.nn.Conv2d, manualbp.nn.BatchNorm2d, manualbp.nn.Linear}
    x = torch.randn(2, 3, 32, 32, dtype=dtype)
    upstream = torch.randn(2, 10, dtype=dtype)
    results = []
    for each in (model, converted):
        x_leaf = x.clone().requires_grad_()
        output = each(x_leaf)
        results.append((output, torch.autograd.grad(output, [x_leaf, *each.parameters()], upstream)))
    (expected, expected_grads), (output, grads) = results
    relative = lambda ours, theirs: ((ours - theirs).abs().max() / theirs.abs().max()).item()  # noqa: E731
    assert relative(output, expected) <= tolerance
    names = ["input", *(name for name, _ in model.named_parameters())]
    assert len(grads) == len(expected_grads) == 1 + 62  # the input and every parameter
    for name, grad, expected_grad in zip(names, grads, expected_grads, strict=True):
        assert relative(grad, expected_grad) <= tolerance, name
    for buffer, converted_buffer in zip(model.buffers(), converted.buffers(), strict=True):
        assert torch.equal(buffer, converted_buffer)  # the running statistics moved as torch moves them
    nodes = {type(node).__name__ for node in _graph_node_names(output)}
    assert not nodes & RESNET_BUILT_IN_NODES, sorted(nodes & RESNET_BUILT_IN_NODES)
    assert nodes - RESNET_MANUALBP_NODES <= RESNET_ALLOWED_NODES, sorted(nodes - RESNET_MANUALBP_NODES)
    assert nodes >= RESNET_MANUALBP_NODES, sorted(RESNET_MANUALBP_NODES - nodes)
    # the walk can fail: the unconverted model's graph has them
    assert {type(node).__name__ for node in _graph_node_names(expected)} & RESNET_BUILT_IN_NODES


def test_functional_checks_raise_torchs_exception_types_with_clear_messages():
    x, weight = torch.randn(1, 3, 5, 5), torch.randn(4, 3, 3, 3)
    with pytest.raises(RuntimeError, match="channels"):
        F.conv2d(x, torch.randn(4, 2, 3, 3))
    with pytest.raises(ValueError, match="strided"):
        F.conv2d(x, weight, stride=2, padding="same")
    with pytest.raises(ValueError, match="padding must be"):
        F.conv2d(x, weight, padding="full")
    with pytest.raises(TypeError, match="must be a Tensor"):
        F.conv2d(x.tolist(), weight)
    with pytest.raises(RuntimeError, match="3-D .* or 4-D"):
        F.max_pool2d(torch.randn(5, 5), 2)
    with pytest.raises(RuntimeError, match="running_mean and running_var"):
        F.batch_norm(x, None, None, training=False)


def test_window_arguments_take_numpy_integers_as_torch_does_and_refuse_fractions_by_name():
    np = pytest.importorskip("numpy")
    x, weight = torch.randn(1, 2, 7, 7, dtype=DOUBLE), torch.randn(3, 2, 3, 3, dtype=DOUBLE)
    stride = (np.int64(2), np.int32(1))
    torch.testing.assert_close(F.conv2d(x, weight, stride=stride), TF.conv2d(x, weight, stride=stride))
    torch.testing.assert_close(F.max_pool2d(x, np.int64(2)), TF.max_pool2d(x, np.int64(2)))
    x1, weight1 = x[:, :, 0], weight[:, :, 0]
    torch.testing.assert_close(F.conv1d(x1, weight1, stride=np.int64(2)), TF.conv1d(x1, weight1, stride=np.int64(2)))
    with pytest.raises(RuntimeError, match=r"^conv2d: stride must be an int ≥ 1 or a pair of them, got 1.5$"):
        F.conv2d(x, weight, stride=1.5)
    with pytest.raises(RuntimeError, match=r"^conv2d: padding must be an int ≥ 0 or a pair of them, got \(1, 0.5\)$"):
        F.conv2d(x, weight, padding=(1, 0.5))
