"""ReLU's, sigmoid's and tanh's t · f′ as one element-wise kernel each, where the reference writes two or three.

The reference tier (``manualbp/autograd/activation.py``) writes each product as tensor arithmetic from its formula:
sigmoid's t · (1 − a) · a is three passes over the tensor (a subtraction and two products), tanh's t · (1 − a·a)
two, ReLU's t · sign(a) three (NaN made 1, the sign, the product). PyTorch's CPU and CUDA builds have one
element-wise kernel for each of these very products: ``sigmoid_backward``, ``tanh_backward`` and
``threshold_backward`` (``torch.ops.aten``, the operators of PyTorch's core ATen opset). One pass instead of three is
what the fast tier takes: at 4,096 × 128 floats, ReLU's product takes 0.32 ms where the reference's three passes
take 0.75 ms (one thread, a 2-core AMD EPYC).

How they compare with the reference (``tests/library/test_fast_activation.py``):

- sigmoid and tanh: the same arithmetic in the same order, so the same bits (sigmoid_backward multiplies
  t · (1 − a) · a left to right; tanh_backward computes 1 − a·a as one fused multiply-add, as the reference's
  ``addcmul`` does);
- ReLU: equal as numbers wherever the upstream gradient t is finite; the kernel writes +0 where a = 0, where the
  reference's t · 0 is −0 for a negative t (−0 = +0: no later sum, product or comparison can tell them apart). Where
  t is ±inf or NaN and a = 0, the reference gives t · 0 = NaN and the kernel gives 0, as torch.nn's ReLU does (its
  rule: nothing flows back where a ≤ 0).

``times_derivative(name, t, kept, *options)`` is the named activation's reference ``times_derivative`` with these
three swapped in; ``ReLU``, ``Sigmoid`` and ``Tanh`` are the reference Functions with their backward and jvp calling it.

GELU's and leaky ReLU's products have no such ATen kernel of the reference's formula (ATen's ``gelu_backward`` is
PyTorch's own derivation). On a GPU, in a backward pass, they take the Triton kernel of the same formula
(``kernels.activation``, tested against the reference in ``tests/library/test_kernels.py``): ``GELU`` and
``LeakyReLU`` here, and ``times_derivative`` for the one-node network; everywhere else the reference's products.
"""

import torch

from manualbp import autograd
from manualbp.fast import kernels

_aten = torch.ops.aten

# an activation's name (as ``manualbp.autograd.mlp.ACTIVATIONS`` names it) → its t · f′ as one kernel, called as the
# reference's times_derivative(t, kept) is (by name, not by Function: torch.compile cannot look a Function up)
KERNELS = {
    "relu": lambda t, a: _aten.threshold_backward(t, a, 0),  # t where a > 0 (or NaN), 0 where a ≤ 0
    "sigmoid": _aten.sigmoid_backward,  # t · (1 − a) · a
    "tanh": _aten.tanh_backward,  # t · (1 − a·a)
}


# an activation's name → its Triton kernel's kind (``kernels.activation.KINDS``) and slope, from its options
TRITON_KINDS = {
    "gelu": lambda approximate: ("gelu" if approximate == "none" else "gelu_tanh", 0.0),
    "leaky-relu": lambda negative_slope: ("leaky_relu", negative_slope),
}


def times_derivative(name, t, kept, *options):
    """t · f′ for the activation called ``name`` (``"relu"``, ``"gelu"``, …): one kernel for ReLU, sigmoid and
    tanh; for GELU and leaky ReLU the Triton kernel where ``kernels.chosen_for_backward`` says so, the reference's
    own ``times_derivative`` elsewhere."""
    kernel = KERNELS.get(name)
    if kernel is not None:
        return kernel(t, kept)
    if name in TRITON_KINDS and kernels.chosen_for_backward(t):
        return kernels.activation.times_derivative(t, kept, *TRITON_KINDS[name](*options))
    function, _ = autograd.mlp.ACTIVATIONS[name]
    return function.times_derivative(t, kept, *options)


def _one_kernel(function, name):
    """``function`` (ReLU, Sigmoid or Tanh of the reference) with its backward and jvp computing t · f′ by its
    kernel; forward, setup_context and keep are the reference's own."""
    kernel = KERNELS[name]

    def backward(ctx, grad_output):
        return kernel(grad_output, *ctx.saved_tensors)

    def jvp(ctx, z_tangent):
        return kernel(z_tangent, *ctx.saved_tensors)

    return type(
        function.__name__,
        (function,),
        {
            "__doc__": f"{function.__name__} of the reference, t · f′ by one kernel (see manualbp.fast.activation).",
            "__module__": __name__,
            "backward": staticmethod(backward),
            "jvp": staticmethod(jvp),
        },
    )


ReLU = _one_kernel(autograd.ReLU, "relu")
Sigmoid = _one_kernel(autograd.Sigmoid, "sigmoid")
Tanh = _one_kernel(autograd.Tanh, "tanh")


class GELU(autograd.GELU):
    """The reference ``GELU``; its backward by ``times_derivative`` (the Triton kernel on a GPU)."""

    @staticmethod
    def backward(ctx, grad_output):
        return times_derivative("gelu", grad_output, *ctx.saved_tensors, ctx.approximate), None


class LeakyReLU(autograd.LeakyReLU):
    """The reference ``LeakyReLU``; its backward by ``times_derivative`` (the Triton kernel on a GPU)."""

    @staticmethod
    def backward(ctx, grad_output):
        return times_derivative("leaky-relu", grad_output, *ctx.saved_tensors, ctx.negative_slope), None
