"""Swap the ``torch.nn`` layers of any model for manualbp's, in place, and back."""

import torch
from torch.nn.modules.lazy import LazyModuleMixin

from manualbp import functional, nn

_TORCH_TO_MANUAL = {
    torch.nn.Linear: nn.Linear,
    torch.nn.ReLU: nn.ReLU,
    torch.nn.LeakyReLU: nn.LeakyReLU,
    torch.nn.Sigmoid: nn.Sigmoid,
    torch.nn.Tanh: nn.Tanh,
    torch.nn.GELU: nn.GELU,
    torch.nn.MSELoss: nn.MSELoss,
    torch.nn.CrossEntropyLoss: nn.CrossEntropyLoss,
    torch.nn.Conv1d: nn.Conv1d,
    torch.nn.Conv2d: nn.Conv2d,
    torch.nn.MaxPool2d: nn.MaxPool2d,
    torch.nn.AvgPool2d: nn.AvgPool2d,
    torch.nn.AdaptiveAvgPool2d: nn.AdaptiveAvgPool2d,
    torch.nn.BatchNorm1d: nn.BatchNorm1d,
    torch.nn.BatchNorm2d: nn.BatchNorm2d,
    torch.nn.Dropout: nn.Dropout,
    torch.nn.Sequential: nn.Sequential,  # runs each Linear and its ReLU/Sigmoid/Tanh as one node
    torch.nn.Softmax: nn.Softmax,
    torch.nn.LogSoftmax: nn.LogSoftmax,
    torch.nn.LayerNorm: nn.LayerNorm,
    torch.nn.GroupNorm: nn.GroupNorm,
    torch.nn.Embedding: nn.Embedding,
    torch.nn.MultiheadAttention: nn.MultiheadAttention,
    torch.nn.TransformerEncoderLayer: nn.TransformerEncoderLayer,  # the plain path, never the fused fast path
    torch.nn.TransformerEncoder: nn.TransformerEncoder,
}
_MANUAL_TO_TORCH = {manual: torch_class for torch_class, manual in _TORCH_TO_MANUAL.items()}
_MANUAL_TO_TORCH[nn.MLP] = torch.nn.Sequential  # its modules are a Sequential's; only its forward is manualbp's
# an encoder layer's activation may be a function rather than a module: these are swapped too
_TORCH_TO_MANUAL_ACTIVATION = {
    torch.nn.functional.relu: functional.relu,
    torch.nn.functional.gelu: functional.gelu,
}
_MANUAL_TO_TORCH_ACTIVATION = {manual: torch_fn for torch_fn, manual in _TORCH_TO_MANUAL_ACTIVATION.items()}


def convert(model, to="manualbp"):
    """Make every Linear, convolution, pooling, normalization, dropout, activation, attention and loss layer of
    ``model`` compute its gradients with manualbp, or undo that.

    Every module (``model`` itself included, at any depth) whose type is exactly one of ``torch.nn``'s
    ``Linear``, ``Conv1d``, ``Conv2d``, ``MaxPool2d``, ``AvgPool2d``, ``AdaptiveAvgPool2d``, ``BatchNorm1d``,
    ``BatchNorm2d``, ``Dropout``, ``ReLU``, ``LeakyReLU``, ``Sigmoid``, ``Tanh``, ``GELU``, ``Softmax``,
    ``LogSoftmax``, ``LayerNorm``, ``GroupNorm``, ``Embedding``, ``MultiheadAttention``, ``TransformerEncoderLayer``,
    ``TransformerEncoder``, ``MSELoss``, ``CrossEntropyLoss`` or ``Sequential`` becomes its ``manualbp.nn`` twin.
    The module objects stay the same: only their class changes, which is sound because each manualbp class is a
    subclass that adds no state. So parameters, buffers, hooks, devices and any optimiser already holding the
    parameters are untouched.

    A ``torch.nn.Sequential`` becomes ``manualbp.nn.Sequential``, which runs each Linear and the ReLU, Sigmoid or
    Tanh after it as one autograd node (the same numbers to the bit; a pair with hooks runs module by module), so a
    converted model runs the same way as one built from ``manualbp.nn``.

    A ``TransformerEncoderLayer`` (or ``TransformerEncoder``) then always runs its plain path, never PyTorch's fused
    inference kernels, and an ``activation`` given as the function ``torch.nn.functional.relu`` or ``gelu`` becomes
    ``manualbp.functional``'s (another function is left as it is).

    Subclasses of those types (``torch.nn.modules.linear.NonDynamicallyQuantizableLinear`` inside
    ``MultiheadAttention``, say) are left alone: their owners may not call their ``forward``, and a
    subclass's own behaviour is not ours to replace. Layers used through ``torch.nn.functional`` calls
    inside a model's ``forward`` are out of reach of any conversion.

    Lazy layers (``LazyLinear``, ``LazyConv2d``, …) must have run once: until then they have no shape, and become
    their plain class only at their first forward (a ValueError says so).

    Args:
        model: any ``torch.nn.Module``.
        to: ``"manualbp"`` (default) or ``"torch"`` to convert back.

    Returns:
        ``model``, converted in place.
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"convert: expected a torch.nn.Module, got {type(model).__name__}")
    if to not in ("manualbp", "torch"):
        raise ValueError(f"convert: to must be 'manualbp' or 'torch', got {to!r}")
    mapping = _TORCH_TO_MANUAL if to == "manualbp" else _MANUAL_TO_TORCH
    activations = _TORCH_TO_MANUAL_ACTIVATION if to == "manualbp" else _MANUAL_TO_TORCH_ACTIVATION
    for name, module in model.named_modules():
        # a lazy layer becomes its plain torch.nn class at its first forward, after the conversion: it would stay
        # torch's, silently, so it is refused while it has no shape
        if to == "manualbp" and isinstance(module, LazyModuleMixin) and module.has_uninitialized_params():
            where = f"{type(module).__name__} {name!r}" if name else f"the model, a {type(module).__name__},"
            raise ValueError(
                f"convert: {where} is not initialised yet, so it could not be converted; run one forward pass "
                "first (or use the non-lazy layer), then convert"
            )
    for module in model.modules():
        target_class = mapping.get(type(module))
        if target_class is not None:
            module.__class__ = target_class
            if target_class in (nn.TransformerEncoderLayer, torch.nn.TransformerEncoderLayer):
                activation = getattr(module, "activation", None)
                if activation is not None and not isinstance(activation, torch.nn.Module) and activation in activations:
                    module.activation = activations[activation]
    return model
