"""``manualbp.verify``: the project's own Functions pass it, and each mistake people make in a hand-written
backward is caught by a named row (the deliberately wrong Functions below), where gradcheck at its default
tolerance lets at least the first through."""

import pytest
import torch
from conftest import CUDA

import manualbp
from manualbp import autograd as A
from manualbp.testing import assert_verified

tnf = torch.nn.functional


def _away_from_zero(*shape, scale=1.0):
    # the activations have a kink at 0, where finite differences straddle two slopes
    z = torch.randn(*shape) * scale
    return z + 0.1 * torch.sign(z)


def _failed(report):
    return {row.name for row in report.failed}


# the project's Functions, each with its plain PyTorch reference and a small sample (the gradcheck rows build the
# whole Jacobian by finite differences)
PROJECT = {
    "Linear": lambda: (
        A.Linear,
        lambda x, weight, bias: tnf.linear(x, weight, bias),
        (torch.randn(5, 4), torch.randn(3, 4), torch.randn(3)),
    ),
    "ReLU": lambda: (A.ReLU, torch.relu, _away_from_zero(3, 4)),
    "LeakyReLU": lambda: (A.LeakyReLU, tnf.leaky_relu, (_away_from_zero(3, 4), 0.1)),
    "Sigmoid": lambda: (A.Sigmoid, torch.sigmoid, torch.randn(3, 4)),
    "Tanh": lambda: (A.Tanh, torch.tanh, torch.randn(3, 4)),
    "GELU": lambda: (A.GELU, lambda z, approximate: tnf.gelu(z, approximate=approximate), (torch.randn(3, 4), "tanh")),
    "Softmax": lambda: (A.Softmax, torch.softmax, (torch.randn(3, 4), -1)),
    "LogSoftmax": lambda: (A.LogSoftmax, torch.log_softmax, (torch.randn(3, 4), -1)),
    "LayerNorm": lambda: (
        A.LayerNorm,
        lambda x, normalized_shape, weight, bias, eps: tnf.layer_norm(x, normalized_shape, weight, bias, eps),
        (torch.randn(2, 4) * 2 + 1, (4,), torch.randn(4), torch.randn(4), 1e-5),
    ),
    "MSELoss": lambda: (
        A.MSELoss,
        lambda a, y, weight, reduction: tnf.mse_loss(a, y, reduction=reduction),
        (torch.randn(3, 3), torch.randn(3, 3), None, "mean"),
    ),
    "CrossEntropyLoss": lambda: (
        lambda z, target: A.CrossEntropyLoss.apply(z, target, None, -100, 0.1, "mean")[0],
        lambda z, target: tnf.cross_entropy(z, target, label_smoothing=0.1),
        (torch.randn(3, 3) * 3, torch.tensor([0, 2, 1])),
    ),
}


# a few seconds each on two cores (gradcheck and gradgradcheck of softmax-like Jacobians): in the slow set
SLOW = {"LogSoftmax", "LayerNorm", "CrossEntropyLoss"}


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in PROJECT])
def test_the_projects_functions_pass_verify(name):
    function, reference, inputs = PROJECT[name]()
    report = assert_verified(function, reference, inputs)
    assert sum(row.result == "pass" for row in report.rows) >= 15  # the checks ran: at most three rows do not apply
    assert report.row("gradcheck").result == "pass" and report.row("gradgradcheck").result == "pass"


@pytest.mark.parametrize(
    "backend",
    ["aot_eager", pytest.param(True, marks=pytest.mark.slow)],  # Inductor's code generation: tens of seconds
)
def test_verify_runs_torch_compile_when_asked(backend):
    report = assert_verified(A.Sigmoid, torch.sigmoid, torch.randn(3, 4), compile=backend)
    row = report.row("torch.compile")
    assert row.result == "pass" and row.approximate and "compiled without its jvp" in row.why


@CUDA
def test_the_projects_linear_passes_verify_on_cuda():
    function, reference, inputs = PROJECT["Linear"]()
    report = assert_verified(function, reference, tuple(t.cuda() for t in inputs))
    assert "on cuda" in report.title


def test_the_table_prints_every_row_with_its_result_and_the_verdict():
    report = manualbp.verify(A.Sigmoid.apply, torch.sigmoid, torch.randn(4, 5))
    text = str(report)
    assert text.splitlines()[0].startswith("manualbp.verify of Sigmoid against autograd through the reference")
    header = next(line for line in text.splitlines() if line.startswith("sample"))
    assert header.split() == ["sample", "row", "result", "exact", "approximate", "maxdiff", "why"]
    for row in report.rows:
        assert row.name in text
    assert report.ok and text.rstrip().endswith(": OK")
    assert report.row("grad z float32").exact  # named after the reference's parameter


def test_several_samples_are_each_verified_and_skipped_rows_do_not_apply():
    samples = [torch.randn(3, 4), torch.randn(2, 6)]
    report = manualbp.verify(A.Tanh, torch.tanh, samples, skip=("vmap", "jvp"), names=["a"])
    assert {row.sample for row in report.rows} == {0, 1} and report.ok
    assert report.row("grad a float64", sample=1).result == "pass"
    for name in ("vmap", "jvp float32", "jvp float64"):
        assert report.row(name, sample=1).result == "n/a" and report.row(name).why == "skipped (skip=...)"


def test_without_a_reference_finite_differences_alone_say_so():
    report = manualbp.verify(A.Sigmoid, None, torch.randn(4, 5))
    assert report.ok
    assert report.row("grad z float32").result == "n/a"
    assert "finite differences" in report.row("grad z float32").why
    assert "finite differences alone" in report.title
    assert report.row("gradcheck").result == "pass"


# --- the mistakes -------------------------------------------------------------------------------------------------


class SquareOffByATenthOfAPercent(torch.autograd.Function):
    """z², with 2z scaled by 1.001."""

    @staticmethod
    def forward(z):
        return z * z

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0])

    @staticmethod
    def backward(ctx, grad_output):
        (z,) = ctx.saved_tensors
        return grad_output * 2 * z * 1.001


def test_a_gradient_wrong_by_a_tenth_of_a_percent_is_caught_by_the_gradient_rows_and_tight_gradcheck():
    z = torch.randn(4, 3)
    # gradcheck at its default tolerance (atol 1e-5, rtol 1e-3) lets it through
    assert torch.autograd.gradcheck(SquareOffByATenthOfAPercent.apply, (z.double().requires_grad_(),))
    report = manualbp.verify(SquareOffByATenthOfAPercent, lambda z: z * z, z)
    assert _failed(report) == {"grad z float32", "grad z float64", "gradcheck", "gradcheck batched grad"}
    assert report.row("grad z float64").maxdiff > 1e-4


class ScaleWithoutSum(torch.autograd.Function):
    """x · w, w of shape (features,) broadcast over the rows of x; the weight's gradient is not summed over them."""

    @staticmethod
    def forward(x, weight):
        return x * weight

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(*inputs)

    @staticmethod
    def backward(ctx, grad_output):
        x, weight = ctx.saved_tensors
        grad_x = grad_output * weight if ctx.needs_input_grad[0] else None
        return grad_x, grad_output * x if ctx.needs_input_grad[1] else None  # should be (grad_output * x).sum(0)


def test_a_missing_sum_over_a_broadcast_dimension_is_caught_by_the_shape_the_backward_returns():
    report = manualbp.verify(ScaleWithoutSum, lambda x, weight: x * weight, (torch.randn(5, 3), torch.randn(3)))
    assert _failed(report) == {"grad weight float32", "grad weight float64"}
    row = report.row("grad weight float32")
    assert "shape [5, 3] for weight of shape [3]" in row.why
    assert row.approximate  # autograd summed it: the values alone hide the mistake, and so does gradcheck
    assert report.row("gradcheck").result == "pass"


class LinearWithTransposedWeightGradient(torch.autograd.Function):
    """x Wᵀ, with ∂C/∂W = xᵀ g instead of gᵀ x (the same shape when W is square)."""

    @staticmethod
    def forward(x, weight):
        return x @ weight.t()

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(*inputs)

    @staticmethod
    def backward(ctx, grad_output):
        x, weight = ctx.saved_tensors
        return grad_output @ weight, x.t() @ grad_output


def test_a_transposed_weight_gradient_is_caught_by_the_weight_gradient_rows():
    report = manualbp.verify(
        LinearWithTransposedWeightGradient, lambda x, weight: x @ weight.t(), (torch.randn(5, 4), torch.randn(4, 4))
    )
    assert {"grad weight float32", "grad weight float64", "gradcheck"} <= _failed(report)
    assert report.row("grad x float32").exact


class LinearReturningEveryGradient(torch.autograd.Function):
    """x Wᵀ, its backward computing and returning both gradients whoever asked."""

    @staticmethod
    def forward(x, weight):
        return x @ weight.t()

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(*inputs)

    @staticmethod
    def backward(ctx, grad_output):
        x, weight = ctx.saved_tensors
        return grad_output @ weight, grad_output.t() @ x


class LinearComputingEveryGradient(LinearReturningEveryGradient):
    """The same, returning None where not asked, but computing both gradients all the same."""

    @staticmethod
    def backward(ctx, grad_output):
        x, weight = ctx.saved_tensors
        grad_x, grad_weight = grad_output @ weight, grad_output.t() @ x
        return grad_x if ctx.needs_input_grad[0] else None, grad_weight if ctx.needs_input_grad[1] else None


@pytest.mark.parametrize(
    "function, why",
    [
        (LinearReturningEveryGradient, "returns a gradient for"),
        (LinearComputingEveryGradient, "makes the same 3 torch calls whichever input asks"),
    ],
)
def test_a_forgotten_needs_input_grad_is_caught_by_the_needs_input_grad_row(function, why):
    report = manualbp.verify(function, lambda x, weight: x @ weight.t(), (torch.randn(5, 4), torch.randn(3, 4)))
    assert _failed(report) == {"needs_input_grad"}
    assert why in report.row("needs_input_grad").why
    # the same Function reading ctx.needs_input_grad passes (the project's Linear)
    right = manualbp.verify(A.Linear, tnf.linear, (torch.randn(5, 4), torch.randn(3, 4), torch.randn(3)))
    assert right.row("needs_input_grad").result == "pass"


class SigmoidScalingGradOutputInPlace(torch.autograd.Function):
    @staticmethod
    def forward(z):
        return torch.sigmoid(z)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(output)

    @staticmethod
    def backward(ctx, grad_output):
        (a,) = ctx.saved_tensors
        return grad_output.mul_(a * (1 - a))  # right values, written into the gradient autograd handed over


def test_an_in_place_change_of_grad_output_is_caught_by_the_grad_output_row():
    report = manualbp.verify(SigmoidScalingGradOutputInPlace, torch.sigmoid, torch.randn(4, 5))
    assert "grad_output unchanged" in _failed(report)
    assert report.row("grad z float64").result == "pass"  # the gradient itself is right


class SigmoidOverflowingInFloat32(torch.autograd.Function):
    """σ′ = eᶻ / (1 + eᶻ)², which is inf / inf = NaN once eᶻ overflows (z > 88 in float32, z > 709 in float64)."""

    @staticmethod
    def forward(z):
        return torch.sigmoid(z)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0])

    @staticmethod
    def backward(ctx, grad_output):
        (z,) = ctx.saved_tensors
        return grad_output * z.exp() / (1 + z.exp()) ** 2


def test_a_backward_right_in_float64_and_wrong_in_float32_is_caught_by_the_float32_row():
    z = torch.tensor([[-3.0, 0.5, 2.0], [95.0, -1.0, 120.0]])
    report = manualbp.verify(SigmoidOverflowingInFloat32, torch.sigmoid, z)
    assert _failed(report) >= {"grad z float32"}
    assert "nan against" in report.row("grad z float32").why
    assert report.row("grad z float64").result == "pass"
    assert report.row("gradcheck").result == "pass" and report.row("gradgradcheck").result == "pass"


class SigmoidWithWrongJvp(torch.autograd.Function):
    """A right backward and a forward mode that drops the (1 − a) of σ′ = a(1 − a)."""

    @staticmethod
    def forward(z):
        return torch.sigmoid(z)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(output)
        ctx.save_for_forward(output)

    @staticmethod
    def backward(ctx, grad_output):
        (a,) = ctx.saved_tensors
        return grad_output * a * (1 - a)

    @staticmethod
    def jvp(ctx, z_tangent):
        (a,) = ctx.saved_tensors
        return z_tangent * a


def test_a_jvp_that_disagrees_with_backward_is_caught_by_the_jvp_rows_and_forward_ad():
    report = manualbp.verify(SigmoidWithWrongJvp, torch.sigmoid, torch.randn(4, 5))
    assert {"jvp float32", "jvp float64", "gradcheck forward AD"} <= _failed(report)
    assert report.row("grad z float64").result == "pass"


def test_assert_verified_names_the_failing_rows():
    with pytest.raises(AssertionError, match=r"grad z float32 \(sample 0\): not within float32 tolerance"):
        assert_verified(SquareOffByATenthOfAPercent, lambda z: z * z, torch.randn(3))


# --- bad input ----------------------------------------------------------------------------------------------------


def test_a_reference_with_another_forward_fails_the_forward_row_and_compares_no_gradient():
    with pytest.raises(AssertionError, match="forward float32 \\(sample 0\\): the reference's forward differs"):
        assert_verified(A.Sigmoid, torch.tanh, torch.randn(4, 5))
    report = manualbp.verify(A.Sigmoid, lambda z: z.sum(), torch.randn(4, 5))
    assert "output 0 has shape [4, 5] from the function, [] from the reference" in report.row("forward float32").why
    assert report.row("grad z float32").result == "n/a"


@pytest.mark.parametrize(
    "inputs, message",
    [([1.0, 2.0], r"holds no tensor \(got float\)"), ((torch.arange(3),), "no floating-point tensor")],
)
def test_inputs_that_are_not_tensors_are_a_one_line_error(inputs, message):
    with pytest.raises(TypeError, match=message):
        manualbp.verify(A.Sigmoid, torch.sigmoid, inputs)


class RaisingInForward(torch.autograd.Function):
    @staticmethod
    def forward(z):
        raise ValueError("unsupported shape")

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def backward(ctx, grad_output):
        return grad_output


class RaisingInBackward(SigmoidScalingGradOutputInPlace):
    @staticmethod
    def backward(ctx, grad_output):
        raise ValueError("not written yet")


def test_a_function_that_raises_fails_the_row_that_ran_it_naming_the_error():
    report = manualbp.verify(RaisingInForward, torch.sigmoid, torch.randn(3))
    assert report.row("forward float32").why == "the function raised ValueError: unsupported shape"
    assert report.row("grad z float32").result == "n/a"
    report = manualbp.verify(RaisingInBackward, torch.sigmoid, torch.randn(3))
    assert report.row("forward float32").result == "pass"
    assert report.row("grad z float32").why == "the function's backward raised ValueError: not written yet"
