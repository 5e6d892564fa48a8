"""The architecture holds: the reference tier reads like a textbook, and the library stands apart from the trainer."""

import ast
import os

import pytest
import torch

import manualbp.autograd

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
REFERENCE = os.path.join(ROOT, "manualbp", "autograd")
REFERENCE_FILES = sorted(name for name in os.listdir(REFERENCE) if name.endswith(".py"))
LIBRARY = os.path.join(ROOT, "manualbp")
# the one file that may read PyTorch's private API, each read named and explained there
SHIM = os.path.join("fast", "torch_internals.py")
LIBRARY_FILES = sorted(
    os.path.relpath(os.path.join(folder, name), LIBRARY)
    for folder, _, files in os.walk(LIBRARY)
    for name in files
    if name.endswith(".py")
)


def _tree(path):
    with open(path, encoding="utf-8") as source:
        return ast.parse(source.read(), path)


def _dotted(node):
    """``torch.nn.functional.nll_loss`` for an attribute chain, or None if it does not start at a name."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    return ".".join([node.id, *reversed(parts)]) if isinstance(node, ast.Name) else None


def _private(name):
    """Whether a dotted name has a private part (``_C``; not a dunder such as ``__version__``)."""
    return any(part.startswith("_") and not part.endswith("__") for part in name.split("."))


def _private_reads(tree):
    """``(line, name)`` for every private torch name the module reads or imports."""
    for node in ast.walk(tree):
        name = _dotted(node) if isinstance(node, ast.Attribute) else None
        if (name or "").startswith("torch.") and _private(name):
            yield node.lineno, name
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("torch"):
            names = [node.module, *(alias.name for alias in node.names)]
            if any(_private(name) for name in names):
                yield node.lineno, node.module
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("torch") and _private(alias.name):
                    yield node.lineno, alias.name


@pytest.mark.parametrize("name", [name for name in LIBRARY_FILES if name != SHIM])
def test_the_library_reads_private_torch_api_only_through_the_fast_tiers_shim(name):
    assert list(_private_reads(_tree(os.path.join(LIBRARY, name)))) == []


def test_the_shim_is_where_the_private_reads_are():
    # the scan above must be able to fail: it finds the shim's own reads
    names = {name for _, name in _private_reads(_tree(os.path.join(LIBRARY, SHIM)))}
    assert {"torch._C._are_functorch_transforms_active", "torch.nn"} <= names


@pytest.mark.parametrize("name", REFERENCE_FILES)
def test_the_reference_tier_uses_no_private_torch_api(name):
    tree = _tree(os.path.join(REFERENCE, name))
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and (_dotted(node) or "").startswith("torch."):
            private = [part for part in _dotted(node).split(".") if part.startswith("_")]
            assert not private, f"{name}:{node.lineno} reads {_dotted(node)}"
        if isinstance(node, ast.ImportFrom):
            assert not any(part.startswith("_") for part in (node.module or "").split(".")), f"{name}:{node.lineno}"
            assert not (node.module or "").startswith("manualbp.fast"), f"{name}: the reference imports the fast tier"
        if isinstance(node, ast.Import):
            for alias in node.names:
                assert not any(part.startswith("_") for part in alias.name.split(".")), f"{name}:{node.lineno}"


def test_the_checker_finds_a_private_attribute():
    # the test above must be able to fail: a private read is caught by the same walk
    node = ast.parse("torch._C._are_functorch_transforms_active()").body[0].value.func
    assert [part for part in _dotted(node).split(".") if part.startswith("_")] == [
        "_C",
        "_are_functorch_transforms_active",
    ]


FUNCTIONS = [
    value
    for value in vars(manualbp.autograd).values()
    if isinstance(value, type) and issubclass(value, torch.autograd.Function)
]


def test_every_reference_function_is_checked():
    names = {"Linear", "ReLU", "LeakyReLU", "Sigmoid", "Tanh", "GELU", "MSELoss", "MLP"}
    names |= {"OneHotCrossEntropyLoss", "CrossEntropyLoss"}
    names |= {"Conv2d", "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d", "BatchNorm", "Dropout"}
    names |= {"Softmax", "LogSoftmax", "LayerNorm", "GroupNorm", "Embedding", "ScaledDotProductAttention"}
    assert {function.__name__ for function in FUNCTIONS} == names


@pytest.mark.parametrize("function", FUNCTIONS, ids=lambda f: f.__name__)
def test_each_reference_function_has_forward_setup_context_backward_and_jvp_in_its_class(function):
    for method in ("forward", "setup_context", "backward", "jvp"):
        assert method in vars(function), f"{function.__name__}.{method} is not defined in its class"
    # the shape of PyTorch's "Extending torch.autograd" note: forward takes no ctx
    assert "ctx" not in function.forward.__code__.co_varnames[: function.forward.__code__.co_argcount]
    assert function.__doc__ and "Shapes" in function.__doc__


def test_the_library_does_not_import_the_trainer():
    for folder, _, files in os.walk(os.path.join(ROOT, "manualbp")):
        for name in files:
            if name.endswith(".py"):
                for node in ast.walk(_tree(os.path.join(folder, name))):
                    if isinstance(node, ast.ImportFrom):
                        assert not (node.module or "").startswith("manualbp_trainer"), os.path.join(folder, name)
                    if isinstance(node, ast.Import):
                        modules = [alias.name for alias in node.names]
                        assert not any(m.startswith("manualbp_trainer") for m in modules), os.path.join(folder, name)
