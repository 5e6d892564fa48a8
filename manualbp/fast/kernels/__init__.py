"""Triton kernels for the GPU: the reference tier's derivations written once more, each as one kernel.

Each kernel's docstring names the reference Function and method it computes and writes the same formula; each is
tested against that method (``tests/library/test_kernels.py``): on a machine without a GPU, on CPU tensors through
Triton's interpreter (``TRITON_INTERPRET=1``, set before triton is imported).

- ``cross_entropy.py``: the loss and ∂C/∂z in one pass over each row of logits (``CrossEntropyLoss.gradients``),
  class indices with ``ignore_index``, label smoothing and class weights;
- ``activation.py``: t · f′ for ReLU, LeakyReLU, sigmoid, tanh and GELU (``times_derivative``), alone or with
  its column sums in the same pass (a Linear layer's δ and ∂C/∂b = Σ_rows δ);
- ``softmax.py``: the softmax and log-softmax backward (``Softmax.times_jacobian``, ``LogSoftmax.gradients``);
- ``norm.py``: the layer-norm, group-norm and batch-norm (training) backward, the statistics, the two sums and the
  combination in one kernel each (``LayerNorm.gradients``, ``GroupNorm.gradients``, ``BatchNorm.gradients``).

Where they run: cross-entropy's through ``manualbp.fast.cross_entropy`` and in the one-node network's forward
(``manualbp.fast.mlp_loss``); the three norms' backward in ``manualbp.fast.normalization``; GELU's and leaky ReLU's
in ``manualbp.fast.activation``; δ with ∂C/∂b in ``manualbp.fast.fused``'s ``LinearActivation``; the softmax and
log-softmax backward in ``manualbp.fast.softmax``.

How the fast tier chooses: a kernel runs where ``chosen_for(tensor)`` holds: Triton imports, the tensor is on a CUDA
device, and no torch.func transform or forward-mode AD level needs a ``jvp`` (the kernel Functions have none, and
their backward is differentiable once). Everywhere else (CPU tensors, macOS and CPU-only wheels without Triton) the
fast tier takes its torch-op path, the reference tier's own methods. The kernels are for the GPU: only the tests run
them on CPU tensors, through the interpreter.
"""

import importlib.util

import torch

from manualbp.fast.torch_internals import forward_ad_level_open, functorch_transforms_active

AVAILABLE = importlib.util.find_spec("triton") is not None


def chosen_for(tensor):
    """Whether the fast tier runs ``tensor``'s derivation as a Triton kernel (see the module's docstring)."""
    return AVAILABLE and tensor.is_cuda and not functorch_transforms_active() and not forward_ad_level_open()


def chosen_for_backward(tensor):
    """``chosen_for``, asked in a backward pass: and that backward is not itself being differentiated (a double
    backward, ``create_graph=True``, differentiates the reference's operations, which a kernel is not)."""
    return chosen_for(tensor) and not torch.is_grad_enabled()


# the kernel modules import triton (over a second): only where a CUDA device can run them (the tests import them
# themselves), and never without triton
if AVAILABLE and torch.cuda.is_available():
    from manualbp.fast.kernels import activation, cross_entropy, norm, softmax  # noqa: F401
