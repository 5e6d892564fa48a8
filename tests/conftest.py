import os

# pytest-xdist runs the tests in one worker process per core (pyproject.toml's addopts). Each worker keeps torch to one
# thread: two workers of two OpenMP threads each on two cores spin against each other and ran the suite 1.8 × slower
# than one process. Set before torch is imported, so that the trainer runs tests start in children inherit it too
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest
import torch

# Without a GPU, the fast tier's Triton kernels are proven on CPU tensors through Triton's interpreter
# (tests/library/test_kernels.py). triton.jit reads this when a kernel is defined, so it is set before anything imports
# manualbp (and through it triton); torch itself does not import triton
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
from hypothesis import HealthCheck, settings

settings.register_profile("default", max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile(
    "ci", max_examples=25, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("ci" if os.environ.get("CI") else "default")

# cuDNN's convolutions default to TF32 on Ampere and later GPUs (torch.backends.cudnn.allow_tf32): inputs rounded to
# 10 mantissa bits, so that manualbp's convolution gradients and torch's, made by different cuDNN calls, would agree to
# ~1e-2 relative (seen for Conv1d on an H200). The tests compare float32 arithmetic, as PyTorch's own do
torch.backends.cudnn.allow_tf32 = False

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
DEVICES = ["cpu", pytest.param("cuda", marks=CUDA)]


@pytest.fixture(params=DEVICES)
def device(request):
    return request.param


def noncontiguous(t):
    """The same values as ``t`` in memory with a stride of 2 in the last dimension."""
    if t.dim() == 0:
        return t.clone()
    wide = torch.zeros(*t.shape, 2, dtype=t.dtype, device=t.device)
    wide[..., 0] = t
    out = wide[..., 0]
    assert not out.is_contiguous() or t.numel() <= 1
    return out


# gradcheck at the tolerance PyTorch's own ops pass (its default, atol 1e-5 with rtol 1e-3, lets a 0.1% error
# through), with forward AD and batched (vmap) checks; and the second derivatives both ways
TIGHT = {"eps": 1e-6, "atol": 1e-8, "rtol": 1e-6}
FIRST = {"check_forward_ad": True, "check_batched_grad": True, "check_batched_forward_grad": True}
SECOND = {"check_fwd_over_rev": True, "check_rev_over_rev": True, "check_batched_grad": True}


def assert_grad_and_gradgrad(fn, inputs, eps=1e-6):
    """gradcheck and gradgradcheck of ``fn`` at ``inputs`` (float64) at the tight tolerance, every check on."""
    tight = TIGHT | {"eps": eps}
    assert torch.autograd.gradcheck(fn, inputs, **tight, **FIRST)
    assert torch.autograd.gradgradcheck(fn, inputs, **tight, **SECOND)


def is_manualbp_node(grad_fn, function_name):
    """Whether ``grad_fn`` is the backward node of manualbp's Function ``function_name`` (a custom Function's node
    is named after it; PyTorch's built-in nodes are ``AddmmBackward0`` and the like)."""
    return isinstance(grad_fn, torch.autograd.function.BackwardCFunction) and (
        type(grad_fn).__name__ == f"{function_name}Backward"
    )


@pytest.fixture(autouse=True)
def _seed_torch():
    """Every test starts from the same torch random state, so a failure can be replayed."""
    torch.manual_seed(0)


class StopAt:
    """A stop event that is set from step boundary ``at`` of the run on (counted across the whole run): Ctrl-C
    pressed then, made exact. Pass it as ``cli.main(argv, stop=StopAt(at))``."""

    def __init__(self, at):
        self.at = at
        self.checks = 0

    def is_set(self):
        self.checks += 1
        return self.checks > self.at


def on_every_training_loss(monkeypatch, change):
    """Pass every loss the trainer computes through ``change(loss) -> loss``, in the order they are computed: the
    evaluation's (``loop._loss``) and the training steps', which manualbp's MLP computes as one node with its
    network (``MLP.loss``). For tests that make a loss fail, turn NaN or signal at a chosen step."""
    from manualbp import nn as mnn
    from manualbp_trainer import loop

    real_loss, real_mlp_loss = loop._loss, mnn.MLP.loss

    def loss(*arguments, **options):
        return change(real_loss(*arguments, **options))

    def mlp_loss(*arguments, **options):
        value, output = real_mlp_loss(*arguments, **options)
        return change(value), output

    monkeypatch.setattr(loop, "_loss", loss)
    monkeypatch.setattr(mnn.MLP, "loss", mlp_loss)
