"""Every private PyTorch API that manualbp reads, and why, in one place.

PyTorch has no public way to ask these questions, and each answer saves a per-call cost or keeps a drop-in module
identical to torch.nn's. Nothing else in the library touches a name that starts with an underscore in torch
(``tests/library/test_layout.py`` scans every file); if a PyTorch release renames one of these, this file is the one
to change.
"""

import torch
from torch.autograd import forward_ad
from torch.nn import _reduction
from torch.nn.modules import module as _module

# The three tests below run on every layer's every call, so each is PyTorch's own function under a name of ours
# rather than a function of ours that calls it: one Python call fewer, about as long as the test itself.

# ``functorch_transforms_active()``: whether a torch.func transform (vmap, grad, jacrev, …) is running: there is no
# public test
functorch_transforms_active = torch._C._are_functorch_transforms_active

# ``is_functorch_wrapped(tensor)``: whether ``tensor`` is a torch.func transform's wrapper (its values cannot be read)
is_functorch_wrapped = torch._C._functorch.is_functorch_wrapped_tensor

# ``any_autocast_enabled()``: whether autocast is on for any device: 0.07 µs, where the public per-device test costs
# 0.4 µs
any_autocast_enabled = torch._C._is_any_autocast_enabled


# ``mse_loss(a, y, reduction)``: ATen's mean squared error through the Python binding that
# ``torch.nn.functional.mse_loss`` calls once it has broadcast and checked its operands (``reduction`` in ATen's
# numbering: 0 none, 1 mean, 2 sum); Dynamo traces it as it traces that function
mse_loss = torch._C._nn.mse_loss

# ``nll_loss(log_probs, target, weight, reduction, ignore_index)``: ATen's negative log-likelihood through the Python
# binding that ``torch.nn.functional.nll_loss`` calls once it has turned ``reduction`` into ATen's number
nll_loss = torch._C._nn.nll_loss_nd


def forward_ad_level_open():
    """Whether a forward-mode AD dual level is open, so that a ``jvp`` could run: no public read exists."""
    return forward_ad._current_level >= 0


def legacy_reduction(size_average, reduce):
    """The ``reduction`` string meant by PyTorch's deprecated ``size_average``/``reduce`` pair, by PyTorch's own
    rule (and with its deprecation warning), as ``torch.nn.functional``'s losses read them."""
    return _reduction.legacy_get_string(size_average, reduce)


def check_batch_norm_input(module, input):
    """``torch.nn.BatchNorm1d``/``2d``'s own check of the input's dimensions, with its message."""
    module._check_input_dim(input)


# the module-global hook dicts that torch.nn's register_module_*_hook functions fill
_GLOBAL_HOOKS = tuple(
    getattr(_module, name, {})
    for name in (
        "_global_forward_hooks",
        "_global_forward_pre_hooks",
        "_global_backward_hooks",
        "_global_backward_pre_hooks",
        "_global_forward_hooks_always_called",
    )
)


def global_module_hooks():
    """Whether any module-global hook is registered (it fires for every module)."""
    return any(_GLOBAL_HOOKS)


def parameter(module, name):
    """``getattr(module, name)`` for a parameter (or None registered in its place), read from the module's parameter
    dict: ``Module.__getattr__``, which finds it there too, costs 0.6 µs where the read costs 0.06 µs (AMD EPYC),
    twice a layer on every call. Any other attribute by ``getattr``."""
    parameters = module._parameters
    return parameters[name] if name in parameters else getattr(module, name)


def hooked(module):
    """Whether calling this module could run a hook of its own. PyTorch has no public "does calling this module
    run a hook?"; fusing two modules into one node is sound only when neither would."""
    return bool(
        module._forward_hooks or module._forward_pre_hooks or module._backward_hooks or module._backward_pre_hooks
    )
