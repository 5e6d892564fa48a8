"""What the layer-family test files share (test_linear.py, test_activation.py, test_loss.py, test_softmax.py,
test_normalization.py, test_embedding.py, test_attention.py, test_conv.py, test_pooling.py, test_dropout.py,
test_mlp.py, test_models.py): one copy of each way of checking a layer.

- parity with PyTorch: ``output_and_grads_at``, ``assert_matches_torch`` (outputs to the bit, gradients to the bit
  or within ``assert_close``), ``assert_same_outputs_and_grads`` (both within ``assert_close``), and for the rows of
  ``manualbp.check.CASES``: ``cases(family)``, ``assert_case_bitwise_on_cpu``, ``assert_row_within_ulps`` (the stated
  bound: ``ULPS`` ulps of the largest entry) and ``assert_case_within_tolerance``;
- gradcheck and gradgradcheck at the tight tolerance: ``assert_grad_and_gradgrad`` (from tests/conftest.py);
- errors: ``BadCall`` rows, ``assert_raises_with_message`` and ``assert_torch_raises_the_same_type``;
- modules: ``assert_module_matches_torch_in_train_and_eval``, ``module_pair`` and ``assert_module_outputs_and_grads``;
- graphs: ``graph_nodes`` and ``node_names``;
- inputs: ``leaves``, ``leaf``, ``as_leaf`` and ``noncontiguous`` (from tests/conftest.py).
"""

import copy
from typing import NamedTuple

import pytest
import torch
from conftest import assert_grad_and_gradgrad, noncontiguous  # noqa: F401 (shared from here too)

import manualbp
from manualbp.check import CASES, compare

TF = torch.nn.functional
DOUBLE = torch.float64


# ---- inputs ----


def leaves(*tensors):
    """Each tensor as a leaf that requires grad (None stays None)."""
    return tuple(None if t is None else t.detach().requires_grad_() for t in tensors)


def leaf(*shape, requires_grad=True, dtype=DOUBLE):
    """A standard-normal leaf of ``shape`` (float64 unless said)."""
    return torch.randn(*shape, dtype=dtype).requires_grad_(requires_grad)


def as_leaf(t, requires_grad, make_noncontiguous=False):
    """``t`` as a leaf, requiring grad or not, and laid out with a stride of 2 where ``make_noncontiguous``."""
    t = noncontiguous(t) if make_noncontiguous else t
    return t.detach().requires_grad_(requires_grad)


# ---- parity with PyTorch ----


def output_and_grads_at(fn, inputs, upstream):
    """fn's output at copies of ``inputs`` and the gradients of ``upstream`` for every one of them."""
    leaves = [t.detach().clone().requires_grad_() for t in inputs]
    output = fn(*leaves)
    return output, torch.autograd.grad(output, leaves, upstream)


def outputs_and_grads(fn, inputs):
    """fn's output and the gradients of a random upstream gradient (not ``.sum()``) for every input needing one."""
    output = fn(*inputs)
    g = torch.randn_like(output)
    wanted = [t for t in inputs if t is not None and t.requires_grad]
    return output, torch.autograd.grad(output, wanted, g)


def assert_matches_torch(ours, theirs, inputs, bitwise):
    """The outputs bit for bit (both are PyTorch's kernels), the gradients of one random upstream gradient bit for
    bit where ``bitwise`` (the arithmetic is the same) and within ``assert_close``'s tolerance elsewhere."""
    torch.manual_seed(1)
    output, grads = outputs_and_grads(ours, inputs)
    torch.manual_seed(1)
    expected_output, expected_grads = outputs_and_grads(theirs, inputs)
    torch.testing.assert_close(output, expected_output, rtol=0, atol=0, equal_nan=True)  # torch's kernel
    for grad, expected in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(grad, expected, **({"rtol": 0, "atol": 0} if bitwise else {}))


def assert_same_outputs_and_grads(manual_fn, torch_fn, inputs):
    """Run both on the same inputs and a random upstream gradient; compare the outputs and every input's gradient."""
    manual_out, torch_out = manual_fn(*inputs), torch_fn(*inputs)
    torch.testing.assert_close(manual_out, torch_out)
    differentiable = [t for t in inputs if isinstance(t, torch.Tensor) and t.requires_grad]
    upstream = torch.randn_like(torch_out)
    manual_grads = torch.autograd.grad(manual_out, differentiable, upstream)
    torch_grads = torch.autograd.grad(torch_out, differentiable, upstream)
    for manual_grad, torch_grad in zip(manual_grads, torch_grads, strict=True):
        torch.testing.assert_close(manual_grad, torch_grad)


def assert_empty_batch_like_torch(function, shape):
    """``function(library, x)`` on an empty batch: torch's output (nan for a mean over nothing, in both) and an empty
    gradient of x's shape, for ``library`` manualbp.functional and torch.nn.functional."""
    x = torch.randn(*shape, dtype=DOUBLE, requires_grad=True)
    results = []
    for library in (manualbp.functional, TF):
        output = function(library, x)
        (grad,) = torch.autograd.grad(output, x, torch.ones_like(output))
        results.append((output, grad))
    (output, grad), (expected_output, expected_grad) = results
    torch.testing.assert_close(output, expected_output, equal_nan=True)  # a mean over nothing is nan in both
    assert grad.shape == expected_grad.shape == x.shape


# ---- the rows of manualbp.check.CASES, by family ----

# every case of manualbp.check.CASES in exactly one family (test_helpers.py checks that none is left out)
FAMILIES = {
    "linear": ("Linear", "Linear+ReLU", "Linear+Sigmoid", "Linear+Tanh"),
    "activation": ("ReLU", "LeakyReLU", "Sigmoid", "Tanh", "GELU", "GELU(tanh)"),
    "mlp": ("MLP(tanh,relu)",),
    "loss": ("MSELoss", "MSELoss(sum)", "CrossEntropyLoss", "CrossEntropyLoss(weighted,smoothed)"),
    "softmax": ("Softmax", "LogSoftmax"),
    "normalization": ("LayerNorm", "GroupNorm", "BatchNorm2d(training)"),
    "embedding": ("Embedding",),
    "attention": ("Attention",),
    "conv": ("Conv2d(stride=2,padding=1)",),
    "pooling": ("MaxPool2d(3,stride=2)", "AvgPool2d(2)", "AdaptiveAvgPool2d(5)"),
}

# where the arithmetic differs from PyTorch's, the float32 rows are held to ULPS ulps of the largest entry
ULPS = 4


def cases(family):
    """The cases of manualbp.check.CASES in ``family``, as pytest parameters named after the case."""
    return [pytest.param(case, id=case.name) for case in CASES if case.name in FAMILIES[family]]


def assert_case_bitwise_on_cpu(case, not_bitwise):
    """Every float32 row of ``case`` on the CPU is bitwise, except the (case, quantity) rows in ``not_bitwise``,
    which must be approximate."""
    for row in compare(case, "cpu", torch.float32):
        if (case.name, row.quantity) in not_bitwise:
            assert row.approximate, row
        else:
            assert row.exact, f"{row} should be bitwise: the arithmetic is the same as PyTorch's"


def assert_row_within_ulps(key, reason, ulps=ULPS):
    """The float32 row ``key`` = (case name, quantity), for three seeds, within ``ulps`` ulps of its largest entry;
    ``reason`` says why it cannot be bitwise."""
    case = next(c for c in CASES if c.name == key[0])
    for seed in range(3):
        row = next(r for r in compare(case, "cpu", torch.float32, seed) if r.quantity == key[1])
        bound = ulps * torch.finfo(torch.float32).eps * row.reference_max
        assert row.maxdiff <= bound, f"{row}: beyond {ulps} ulps of the largest entry ({reason})"


def assert_case_within_tolerance(case, device, dtype):
    """Every row of ``case`` within ``assert_close``'s tolerance for ``dtype`` on ``device``."""
    for row in compare(case, device, dtype):
        assert row.approximate, row


# ---- errors ----


class BadCall(NamedTuple):
    """manualbp.functional.``function``(*args, **kwargs) must raise ``error`` with a message matching ``message``."""

    name: str
    function: str
    args: tuple
    kwargs: dict
    error: type
    message: str


def bad_call(name, function, args, error, message, **kwargs):
    return BadCall(name, function, args, kwargs, error, message)


def assert_raises_with_message(call):
    with pytest.raises(call.error, match=call.message):
        getattr(manualbp.functional, call.function)(*call.args, **call.kwargs)


def assert_torch_raises_the_same_type(call, stricter_than_torch):
    """torch.nn.functional raises ``call.error`` for the same input, unless ``call.name`` is a row where manualbp is
    stricter on purpose (``stricter_than_torch`` maps it to why)."""
    if call.name in stricter_than_torch:
        pytest.skip(stricter_than_torch[call.name])
    with pytest.raises(call.error):
        getattr(TF, call.function)(*call.args, **call.kwargs)


# ---- modules ----


def assert_module_matches_torch_in_train_and_eval(torch_class, manual_class, args, kwargs, shape):
    """manualbp's module has torch's initialisation, repr and state, and matches it (outputs, gradients, running
    statistics) twice in training, then in eval."""
    torch.manual_seed(0)
    theirs = torch_class(*args, **kwargs)
    torch.manual_seed(0)
    ours = manual_class(*args, **kwargs)
    assert isinstance(ours, torch_class) and repr(ours) == "manualbp." + repr(theirs)  # printed as manualbp's
    for (name, value), (their_name, their_value) in zip(
        ours.state_dict().items(), theirs.state_dict().items(), strict=True
    ):
        assert name == their_name and torch.equal(value, their_value)
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(*shape)
    for train in (True, True, False):  # twice in training: the running statistics move, then are used
        ours.train(train), theirs.train(train)
        inputs = leaves(x)
        torch.manual_seed(2)
        output, grads = outputs_and_grads(ours, inputs)
        torch.manual_seed(2)
        expected_output, expected_grads = outputs_and_grads(theirs, inputs)
        torch.testing.assert_close(output, expected_output)
        torch.testing.assert_close(grads, expected_grads)
        for value, their_value in zip(ours.state_dict().values(), theirs.state_dict().values(), strict=True):
            assert torch.equal(value, their_value)


def module_pair_of(builtin):
    """``builtin`` with its parameters moved off their initial values (no zero biases or unit scales, which could
    hide a wrong formula), and a converted copy of it."""
    with torch.no_grad():
        for p in builtin.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    return builtin, manualbp.convert(copy.deepcopy(builtin))


def module_pair(torch_class, *args, dtype=DOUBLE, **kwargs):
    return module_pair_of(torch_class(*args, **kwargs).to(dtype))


def assert_module_outputs_and_grads(builtin, manual, inputs, forward=lambda m, *t: m(*t)):
    """Compare outputs and the gradients of the parameters and the floating-point inputs."""
    inputs = [t.detach().requires_grad_() if t.is_floating_point() else t for t in inputs]
    outs = [forward(m, *inputs) for m in (builtin, manual)]
    outs = [[o for o in (out if isinstance(out, tuple) else (out,)) if o is not None] for out in outs]
    for o_manual, o_torch in zip(outs[1], outs[0], strict=True):
        torch.testing.assert_close(o_manual, o_torch)
    upstream = [torch.randn_like(o) for o in outs[0]]
    wrt = [t for t in inputs if t.is_floating_point()]
    grads = [
        torch.autograd.grad(out, [*wrt, *m.parameters()], upstream)
        for out, m in zip(outs, (builtin, manual), strict=True)
    ]
    for g_manual, g_torch in zip(grads[1], grads[0], strict=True):
        torch.testing.assert_close(g_manual, g_torch)


# ---- graphs ----


def graph_nodes(output):
    """Every node of ``output``'s backward graph, found by walking ``next_functions``."""
    nodes, stack, seen = [], [output.grad_fn], set()
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        nodes.append(node)
        stack.extend(next_node for next_node, _ in node.next_functions)
    return nodes


def node_names(output):
    """The type names of every node of ``output``'s backward graph."""
    return {type(node).__name__ for node in graph_nodes(output)}


# PyTorch's own backward nodes for the transformer layers manualbp derives: none may remain in a converted model's
# graph (test_models.py, test_attention.py)
BUILT_IN_LAYER_NODES = {
    "AddmmBackward0",
    "MmBackward0",
    "BmmBackward0",
    "MatmulBackward0",
    "LinearBackward0",
    "SoftmaxBackward0",
    "LogSoftmaxBackward0",
    "NativeLayerNormBackward0",
    "LayerNormBackward0",
    "EmbeddingBackward0",
    "ScaledDotProductAttentionBackward0",
    "ScaledDotProductFlashAttentionForCpuBackward0",
    "ScaledDotProductEfficientAttentionBackward0",
    "ScaledDotProductFlashAttentionBackward0",
    "ScaledDotProductCudnnAttentionBackward0",
    "ReluBackward0",
    "GeluBackward0",
    "NativeDropoutBackward0",
}
