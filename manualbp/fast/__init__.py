"""The fast tier: how manualbp's public API runs the reference tier's math, at less cost per call.

Nothing here derives a gradient. Every backward pass that runs is a reference Function's (``manualbp.autograd``),
and every fast path is tested bit for bit against the reference tier (``tests/test_fast.py``), in float32 and
float64, besides the tests against PyTorch's autograd. What lives here is plumbing:

- ``call.py``: ``apply(Function, *args)``, the reference Function through its classic-form twin (no per-call
  argument binding).
- ``fused.py``: ``LinearActivation``, a Linear layer and its ReLU/Sigmoid/Tanh as one autograd node, calling the
  two reference backward passes.
- ``sequential.py``: running a ``Sequential`` with each such pair fused (``manualbp.nn.Sequential``).
- ``cross_entropy.py``: ``OneHotCrossEntropyLoss``, cross-entropy's common case in fewer kernels, and
  ``target_range``, the cheapest read of the targets that chooses it.

``manualbp.functional`` (and through it ``manualbp.nn`` and ``convert``) calls these after checking its arguments.
"""

from manualbp.fast import sequential
from manualbp.fast.call import apply, classic
from manualbp.fast.cross_entropy import OneHotCrossEntropyLoss, target_range
from manualbp.fast.fused import LinearActivation

__all__ = ["LinearActivation", "OneHotCrossEntropyLoss", "apply", "classic", "sequential", "target_range"]
