"""The fast tier: how manualbp's public API runs the reference tier's math, at less cost per call.

Nothing here derives a gradient. Every backward pass and jvp that runs is a reference Function's
(``manualbp.autograd``), or the same product computed by one kernel, and every fast path is tested bit for bit
against the reference tier (``tests/library/test_fast.py``), in float32 and float64 (the convolution's ∂C/∂W, a sum
taken in another order, to its rounding bound: ``tests/library/test_fast_conv.py``; batch norm's regrouped
backward, to a few ulps: ``tests/library/test_fast_batch_norm.py``; ReLU's one-kernel product, as numbers:
``tests/library/test_fast_activation.py``), besides the tests against PyTorch's autograd. What lives here
is plumbing:

- ``call.py``: ``Route``, a Function called by the cheapest route PyTorch allows (no per-call argument binding in
  eager mode; the forms torch.func and torch.compile need under them). One Route per Function, below.
- ``activation.py``: ReLU's, sigmoid's and tanh's t · f′ as one element-wise kernel each (ATen's
  ``threshold_backward``, ``sigmoid_backward`` and ``tanh_backward``, the reference's products in one pass), and
  those three Functions with their backward and jvp calling it; GELU and LeakyReLU, whose backward on a GPU is the
  activation kernel of ``kernels/``.
- ``fused.py``: ``LinearActivation``, a Linear layer and its ReLU/Sigmoid/Tanh as one autograd node, calling the
  two reference backward passes (and jvps); ``LinearChain``, a run of such layers as one node, each layer's
  backward the pair's, last layer first, written out for the network at hand.
- ``mlp_loss.py``: ``MLPLoss``, a whole network and its loss as one node, its gradients computed in the forward pass
  by the reference's derivations (the loss's derivative at g = 1, then ``MLP.gradients``'s loop over each layer's
  ``Linear.gradients`` and one-kernel t · f′, written out for the network at hand).
- ``program.py``: the lines that write those two nodes' loops over their layers out once per network, as
  straight-line Python (``inspect.getsource`` prints a program), so that a call pays no loop bookkeeping.
- ``mse.py``: ``MSELoss``, the mean squared error's unweighted mean and its ∂C/∂a by PyTorch's one kernel each
  (the reference's arithmetic in the same order: its bits).
- ``sequential.py``: running a ``Sequential`` with each such pair fused, and a run of them as one ``LinearChain``
  (``manualbp.nn.Sequential``).
- ``conv.py``: ``Conv2d``, the reference convolution with its ∂C/∂W summed over all examples at once, by one
  product over their windows or by the convolution library's backward-weights kernel (the same terms in another
  order: held to a rounding bound, not to the bit).
- ``pooling.py``: ``MaxPool2d``, the reference max pooling with its scatter-add written into its zeros in place.
- ``normalization.py``: ``BatchNorm``, the reference batch norm with its training backward regrouped into a few
  passes over the activations (a g + b (x − μ) + c per channel; the same formula rounded otherwise: held to a few
  ulps of the reference); its backward on a GPU, and ``LayerNorm``'s and ``GroupNorm``'s, is their kernel in
  ``kernels/``.
- ``softmax.py``: ``Softmax`` and ``LogSoftmax``, whose backward on a GPU is the softmax kernel of ``kernels/``.
- ``cross_entropy.py``: ``target_range``, the cheapest read of the class-index targets, which decides whether
  cross-entropy's plain case (``autograd.OneHotCrossEntropyLoss``) applies or the general ``CrossEntropyLoss`` runs;
  that plain case's ∂C/∂z at an upstream gradient of 1 in two passes (``one_hot_gradient_at_one``, the reference's
  operations), computed in the forward pass by ``OneHotCrossEntropyLossGradientFirst`` so that the backward hands
  it over.
- ``kernels/``: the derivations as Triton kernels, for CUDA tensors. ``cross_entropy`` below, ``MLPLoss``,
  ``BatchNorm`` (in training), ``LayerNorm``, ``GroupNorm``, ``Softmax``, ``LogSoftmax``, ``GELU`` and ``LeakyReLU``
  run theirs where ``kernels.chosen_for`` (in a backward, ``chosen_for_backward``) says so, and the reference's own
  code everywhere else (see ``kernels/__init__.py``).

``manualbp.functional`` (and through it ``manualbp.nn`` and ``convert``) calls these with its arguments checked: on a
training step's common case (``mlp_loss``, ``mlp``, ``linear``, ``linear_activation``, cross-entropy's plain case)
only for what the node's own operations would take silently, the rest checked only where one of them refused.
"""

from manualbp import autograd
from manualbp.fast import activation, kernels, sequential
from manualbp.fast.call import Route, classic, plain_eager
from manualbp.fast.conv import Conv2d
from manualbp.fast.cross_entropy import OneHotCrossEntropyLossGradientFirst, target_range
from manualbp.fast.fused import ACTIVATIONS, LinearActivation, LinearChain
from manualbp.fast.mlp_loss import MLPLoss
from manualbp.fast.mse import MSELoss
from manualbp.fast.normalization import BatchNorm, BatchNormKeepingStatistics, GroupNorm, LayerNorm
from manualbp.fast.pooling import MaxPool2d
from manualbp.fast.softmax import LogSoftmax, Softmax

linear = Route(autograd.Linear)
relu = Route(activation.ReLU)
leaky_relu = Route(activation.LeakyReLU)
sigmoid = Route(activation.Sigmoid)
tanh = Route(activation.Tanh)
gelu = Route(activation.GELU)
mse_loss = Route(MSELoss)
cross_entropy_reference = Route(autograd.CrossEntropyLoss)
one_hot_cross_entropy = Route(autograd.OneHotCrossEntropyLoss, eager=OneHotCrossEntropyLossGradientFirst)
linear_activation = Route(LinearActivation)
mlp = Route(autograd.MLP)
mlp_loss = MLPLoss.apply  # a classic-form Function already: no argument binding to save
conv2d = Route(Conv2d)
max_pool2d = Route(MaxPool2d)
avg_pool2d = Route(autograd.AvgPool2d)
adaptive_avg_pool2d = Route(autograd.AdaptiveAvgPool2d)
batch_norm = Route(BatchNorm, eager=BatchNormKeepingStatistics)
dropout = Route(autograd.Dropout)
softmax = Route(Softmax)
log_softmax = Route(LogSoftmax)
layer_norm = Route(LayerNorm)
group_norm = Route(GroupNorm)
embedding = Route(autograd.Embedding)
scaled_dot_product_attention = Route(autograd.ScaledDotProductAttention)


def cross_entropy(z, target, weight, ignore_index, label_smoothing, reduction):
    """``(C, ℓ)`` as ``autograd.CrossEntropyLoss`` gives them; on a CUDA tensor with class-index targets, C and
    ∂C/∂z come from one Triton kernel (``kernels.cross_entropy.CrossEntropy``) and ℓ, which it never writes, is
    None. The caller (``manualbp.functional.cross_entropy``) reads only C."""
    if kernels.chosen_for(z) and not target.is_floating_point():
        loss = kernels.cross_entropy.CrossEntropy.apply(z, target, weight, ignore_index, label_smoothing, reduction)
        return loss, None
    return cross_entropy_reference(z, target, weight, ignore_index, label_smoothing, reduction)


__all__ = [
    "ACTIVATIONS",
    "BatchNorm",
    "BatchNormKeepingStatistics",
    "Conv2d",
    "GroupNorm",
    "LayerNorm",
    "LinearActivation",
    "LinearChain",
    "LogSoftmax",
    "MLPLoss",
    "MSELoss",
    "MaxPool2d",
    "OneHotCrossEntropyLossGradientFirst",
    "Route",
    "Softmax",
    "adaptive_avg_pool2d",
    "avg_pool2d",
    "batch_norm",
    "classic",
    "conv2d",
    "cross_entropy",
    "cross_entropy_reference",
    "kernels",
    "dropout",
    "embedding",
    "gelu",
    "group_norm",
    "layer_norm",
    "leaky_relu",
    "linear",
    "linear_activation",
    "max_pool2d",
    "log_softmax",
    "mlp",
    "mlp_loss",
    "mse_loss",
    "one_hot_cross_entropy",
    "plain_eager",
    "relu",
    "scaled_dot_product_attention",
    "sequential",
    "sigmoid",
    "softmax",
    "tanh",
    "target_range",
]
