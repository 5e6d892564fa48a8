"""The cheapest route into a Function: the very same forward, setup_context and backward, minus a per-call cost.

Every reference Function is written in the form that torch.func and torch.compile need: ``forward(*args)``, a
separate ``setup_context(ctx, inputs, output)`` and ``backward(ctx, *grads)``. For that form, PyTorch's
``Function.apply`` binds the arguments with ``inspect.signature`` on every call (``_bind_default_args`` in
``torch/autograd/function.py``), about 7 µs of Python each time: as long as a small layer's whole forward pass.
The classic form, ``forward(ctx, *args)``, is called without that binding. So in eager mode ``apply`` runs the
reference Function's own ``forward``, ``setup_context`` and ``backward`` through a classic-form twin, and under
torch.func transforms or torch.compile, which need the separate form, it calls the Function itself.
"""

import functools

import torch


def apply(function, *args):
    """``function.apply(*args)``: through its classic-form twin in eager mode, through itself under transforms,
    and as its bare ``forward`` where no graph is recorded (under ``torch.no_grad()``, as in evaluation)."""
    # private, and so only here: there is no public test for "inside a torch.func transform"
    if torch.compiler.is_compiling() or torch._C._are_functorch_transforms_active():
        return function.apply(*args)
    if not torch.is_grad_enabled():
        return function.forward(*args)
    return classic(function).apply(*args)


@functools.cache
def classic(function):
    """The classic-form twin of ``function``: ``forward(ctx, *args)`` = its forward, then its setup_context; its
    backward is ``function.backward`` itself. The twin's node is named ``<function>Backward`` as the original's."""

    def forward(ctx, *args):
        output = function.forward(*args)
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
        },
    )
