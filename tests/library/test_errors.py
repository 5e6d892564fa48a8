"""Bad input raises the exception type torch.nn.functional raises, with a message naming expected and got."""

import pytest
import torch

import manualbp.functional as F


def _args(*args, **kwargs):
    return args, kwargs


BAD_CALLS = [
    (
        "linear in_features",
        "linear",
        _args(torch.randn(3, 5), torch.randn(4, 6)),
        RuntimeError,
        r"input of shape \(3, 5\) must end in in_features=6",
    ),
    (
        "linear weight dims",
        "linear",
        _args(torch.randn(3, 5), torch.randn(2, 4, 5)),
        RuntimeError,
        r"weight must be 2-D .* got shape \(2, 4, 5\)",
    ),
    (
        "linear 1-D weight with a bias on a batch",
        "linear",
        _args(torch.randn(3, 5), torch.randn(5), torch.tensor(1.0)),
        RuntimeError,
        r"with a 1-D weight, a bias must be 0-D and the input 1-D",
    ),
    (
        "linear bias shape",
        "linear",
        _args(torch.randn(3, 5), torch.randn(4, 5), torch.randn(3)),
        RuntimeError,
        r"bias must have shape \(4,\) .* got \(3,\)",
    ),
    (
        "linear dtype",
        "linear",
        _args(torch.randn(3, 5), torch.randn(4, 5, dtype=torch.float64)),
        RuntimeError,
        r"same dtype, got input torch.float32, weight torch.float64",
    ),
    (
        "linear device",
        "linear",
        _args(torch.randn(3, 5), torch.randn(4, 5, device="meta")),
        RuntimeError,
        r"same device, got input cpu, weight meta",
    ),
    (
        "gelu approximate",
        "gelu",
        _args(torch.randn(3), approximate="erf"),
        RuntimeError,
        r"approximate must be 'none' or 'tanh', got 'erf'",
    ),
    (
        "leaky_relu slope",
        "leaky_relu",
        _args(torch.randn(3), "0.1"),
        TypeError,
        r"negative_slope must be a number, got str",
    ),
    (
        "mse reduction",
        "mse_loss",
        _args(torch.randn(3), torch.randn(3), reduction="avg"),
        ValueError,
        r"avg is not a valid value for reduction",
    ),
    ("mse shapes", "mse_loss", _args(torch.randn(3, 5), torch.randn(3, 4)), RuntimeError, r"size of tensor"),
    (
        "mse weight shape",
        "mse_loss",
        _args(torch.randn(3), torch.randn(3), weight=torch.ones(2)),
        ValueError,
        r"weight must have the input's shape \(3,\), got \(2,\)",
    ),
    (
        "ce batch",
        "cross_entropy",
        _args(torch.randn(3, 5), torch.tensor([1, 2])),
        ValueError,
        r"expected input batch_size \(3\) to match target batch_size \(2\)",
    ),
    (
        "ce target too big",
        "cross_entropy",
        _args(torch.randn(3, 5), torch.tensor([1, 2, 7])),
        IndexError,
        r"target 7 is out of bounds: class indices must lie in \[0, 5\)",
    ),
    (
        "ce target negative",
        "cross_entropy",
        _args(torch.randn(3, 5), torch.tensor([1, -2, 3])),
        IndexError,
        r"target -2 is out of bounds",
    ),
    (
        "ce target dims",
        "cross_entropy",
        _args(torch.randn(3, 5), torch.tensor([[1, 2, 3]])),
        ValueError,
        r"expected input batch_size \(3\) to match target batch_size \(1\)",
    ),
    (
        "ce target trailing dims",
        "cross_entropy",
        _args(torch.randn(3, 5), torch.tensor([[1], [2], [3]])),
        RuntimeError,
        r"target must have shape \(3,\) \(class indices\) or \(3, 5\) \(class probabilities\), got \(3, 1\)",
    ),
    (
        "ce spatial",
        "cross_entropy",
        _args(torch.randn(3, 5, 2), torch.zeros(3, 3, dtype=torch.long)),
        RuntimeError,
        r"target must have shape \(3, 2\) \(class indices\) or \(3, 5, 2\) \(class probabilities\), got \(3, 3\)",
    ),
    (
        "ce float target of another shape",
        "cross_entropy",
        _args(torch.randn(3, 5), torch.rand(3, 4)),
        RuntimeError,
        r"class-index targets must be int64, got torch.float32; a target of class probabilities must have the "
        r"input's shape \(3, 5\), got \(3, 4\)",
    ),
    (
        "ce integer target shaped like the input",
        "cross_entropy",
        _args(torch.randn(3, 5), torch.zeros(3, 5, dtype=torch.long)),
        RuntimeError,
        r"holds class probabilities and must be floating point, got torch.int64",
    ),
    (
        "ce ignore_index with probabilities",
        "cross_entropy",
        _args(torch.randn(3, 5), torch.rand(3, 5), ignore_index=2),
        RuntimeError,
        r"ignore_index=2 applies to class indices only",
    ),
    (
        "ce int32 target",
        "cross_entropy",
        _args(torch.randn(3, 5), torch.tensor([1, 2, 3], dtype=torch.int32)),
        RuntimeError,
        r"class-index targets must be int64, got torch.int32",
    ),
    (
        "ce weight",
        "cross_entropy",
        _args(torch.randn(3, 5), torch.tensor([1, 2, 3]), torch.ones(4)),
        RuntimeError,
        r"weight must have shape \(5,\), one per class, got \(4,\)",
    ),
    (
        "ce smoothing",
        "cross_entropy",
        _args(torch.randn(3, 5), torch.tensor([1, 2, 3]), label_smoothing=1.5),
        RuntimeError,
        r"label_smoothing must be between 0.0 and 1.0, got 1.5",
    ),
    (
        "ce integer logits",
        "cross_entropy",
        _args(torch.ones(3, 5, dtype=torch.long), torch.tensor([1, 2, 3])),
        RuntimeError,
        r"floating-point logits, got dtype torch.int64",
    ),
    # None where a tensor is required: torch's exception type, with a message that names the argument
    (
        "linear input None",
        "linear",
        _args(None, torch.randn(4, 5)),
        TypeError,
        r"^linear: input must be a Tensor, got NoneType$",
    ),
    (
        "linear weight None",
        "linear",
        _args(torch.randn(3, 5), None),
        TypeError,
        r"^linear: weight must be a Tensor, got NoneType$",
    ),
    (
        "conv2d weight None",
        "conv2d",
        _args(torch.randn(1, 1, 3, 3), None),
        TypeError,
        r"^conv2d: weight must be a Tensor",
    ),
    ("mse target None", "mse_loss", _args(torch.randn(3), None), AttributeError, r"^mse_loss: target must be a Tensor"),
    ("ce target None", "cross_entropy", _args(torch.randn(3, 5), None), TypeError, r"^cross_entropy: target must be a"),
    ("embedding weight None", "embedding", _args(torch.tensor([0]), None), TypeError, r"^embedding: weight must be a"),
]

# inputs torch.nn.functional accepts or rejects otherwise, where manualbp is stricter on purpose
STRICTER_THAN_TORCH = {
    "linear device": "torch fails later, inside the kernel, with no names",
}


@pytest.mark.filterwarnings("ignore:.*target size:UserWarning")  # "mse shapes" warns before it fails
@pytest.mark.parametrize("name, function, arguments, error, message", BAD_CALLS, ids=[c[0] for c in BAD_CALLS])
def test_bad_input_raises_torchs_exception_type_with_a_message(name, function, arguments, error, message):
    args, kwargs = arguments
    with pytest.raises(error, match=message):
        getattr(F, function)(*args, **kwargs)


@pytest.mark.filterwarnings("ignore:.*target size:UserWarning")  # "mse shapes" warns before it fails
@pytest.mark.parametrize("name, function, arguments, error, message", BAD_CALLS, ids=[c[0] for c in BAD_CALLS])
def test_torch_raises_the_same_exception_type_for_the_same_input(name, function, arguments, error, message):
    if name in STRICTER_THAN_TORCH:
        pytest.skip(STRICTER_THAN_TORCH[name])
    args, kwargs = arguments
    with pytest.raises(error):
        getattr(torch.nn.functional, function)(*args, **kwargs)


def test_mse_loss_warns_and_broadcasts_like_torch_when_shapes_differ():
    a, y = torch.randn(3, 1), torch.randn(3)
    with pytest.warns(UserWarning, match=r"target size \(3,\) differs from input size \(3, 1\)"):
        loss = F.mse_loss(a, y)
    with pytest.warns(UserWarning):
        expected = torch.nn.functional.mse_loss(a, y)
    torch.testing.assert_close(loss, expected)


def test_ignore_index_targets_are_allowed_out_of_range():
    z = torch.randn(3, 5, requires_grad=True)
    target = torch.tensor([1, -100, 4])
    loss = F.cross_entropy(z, target)
    torch.testing.assert_close(loss, torch.nn.functional.cross_entropy(z, target))


def test_mse_loss_promotes_mixed_dtypes_like_torch():
    a = torch.randn(4, requires_grad=True)
    y = torch.randn(4, dtype=torch.float64)
    loss = F.mse_loss(a, y)
    expected = torch.nn.functional.mse_loss(a, y)
    assert loss.dtype == expected.dtype == torch.float64
    torch.testing.assert_close(loss, expected)
    (grad,) = torch.autograd.grad(loss, a)
    assert grad.dtype == torch.float32


def test_mlp_refuses_an_input_that_is_not_a_tensor_by_name():
    with pytest.raises(TypeError, match=r"^mlp: input must be a Tensor, got NoneType$"):
        F.mlp(None, [torch.randn(3, 4)], [None], [None])
