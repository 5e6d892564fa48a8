"""The cheapest route into a Function: the very same forward, setup_context, backward and jvp, minus per-call costs.

Every reference Function is written in the form that torch.func and torch.compile need: ``forward(*args)``, a
separate ``setup_context(ctx, inputs, output)`` and ``backward(ctx, *grads)`` (and ``jvp``). For that form,
PyTorch's ``Function.apply`` binds the arguments with ``inspect.signature`` on every call (``_bind_default_args``
in ``torch/autograd/function.py``), about 7 µs of Python each time: as long as a small layer's whole forward pass.
The classic form, ``forward(ctx, *args)``, is called without that binding. So a ``Route`` runs the Function's own
methods through a classic-form twin in eager mode; under torch.func transforms, which need the separate form, it
calls the Function itself; and under torch.compile, whose Dynamo cannot trace a Function that defines ``jvp``
("Unsupported custom jvp"), a twin without ``jvp`` (a compiled graph has no forward-mode AD anyway).

The eager twin also skips ``ctx.save_for_forward`` when no forward-mode AD level is open: with no dual tensor in
existence no ``jvp`` can run on the node, and handing tensors to ``save_for_forward`` costs each call a few
microseconds of checks in PyTorch (about 1% of a small network's training step).
"""

import functools

import torch

from manualbp.fast.torch_internals import forward_ad_level_open, functorch_transforms_active, is_functorch_wrapped


class Route:
    """``route(*args)`` = ``function.apply(*args)``, by the cheapest way PyTorch allows where it is called.

    The twins are made once, here, when the Route is made: Dynamo cannot trace the making of a class, nor look one
    up by a Function class, but it can read a Route's attributes.
    """

    def __init__(self, function, eager=None):
        self.function = function
        # ``eager``: a classic-form Function of its own for eager mode, its node named as ``function``'s
        self.classic = classic(function) if eager is None else named_as(function, eager)
        self.compiled = without_jvp(function)

    def __call__(self, *args):
        if torch.compiler.is_compiling():
            return self.compiled.apply(*args)
        if functorch_transforms_active():
            return self.function.apply(*args)
        return self.classic.apply(*args)

    def __repr__(self):
        return f"Route({self.function.__module__}.{self.function.__name__})"


def classic(function):
    """The classic-form twin of ``function``: ``forward(ctx, *args)`` = its forward, then its setup_context; its
    ``backward`` and ``jvp`` are ``function``'s own. The twin's node is named ``<function>Backward`` as the
    original's."""

    def forward(ctx, *args):
        output = function.forward(*args)
        if not forward_ad_level_open():
            ctx.save_for_forward = _no_jvp_can_run
        function.setup_context(ctx, args, output)
        return output

    return type(
        function.__name__,
        (torch.autograd.Function,),
        {
            "__doc__": f"{function.__name__}, called in the classic form (see manualbp.fast.call).",
            "__module__": __name__,
            "forward": staticmethod(forward),
            "backward": staticmethod(function.backward),
            "jvp": staticmethod(function.jvp),
        },
    )


def named_as(function, twin):
    """``twin`` under ``function``'s name, so that its node is ``<function>Backward`` as every other twin's."""
    return type(function.__name__, (twin,), {"__doc__": twin.__doc__, "__module__": twin.__module__})


def _no_jvp_can_run(*tensors):
    """``ctx.save_for_forward`` outside forward-mode AD: nothing to keep for a ``jvp`` that cannot be called."""


def without_jvp(function):
    """``function`` with PyTorch's default ``jvp`` (none): what Dynamo compiles, forward and backward as they are."""
    return type(function.__name__, (function,), {"__module__": __name__, "jvp": torch.autograd.Function.jvp})


def plain_eager():
    """Whether PyTorch runs plain eager mode here: not under torch.compile, torch.func transforms or forward-mode AD.
    Only there can ``MLPLoss`` run (a classic-form Function that computes its gradients in the forward pass, which
    none of those can take), and a functional call its node without reading its operands first."""
    return not (torch.compiler.is_compiling() or functorch_transforms_active() or forward_ad_level_open())


def is_one(grad_loss):
    """Whether the upstream gradient is known to be exactly 1 without cost: read on the CPU only (reading a CUDA
    number would stall the stream), and never a transform's wrapper (gradcheck's batched checks vmap the backward)."""
    return grad_loss.is_cpu and not is_functorch_wrapped(grad_loss) and grad_loss.item() == 1.0


@functools.lru_cache(maxsize=8)
def upstream_one(dtype, device):
    """The upstream gradient of ``loss.backward()``, 1, as a 0-dim tensor: made once per dtype and device, not per
    call (it is only read), for the nodes that compute their gradients at g = 1 in the forward pass."""
    return torch.ones((), dtype=dtype, device=device)
