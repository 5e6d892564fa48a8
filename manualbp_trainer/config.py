"""What defines a run: ``Config``, the presets, and what may change when a run is resumed (no torch import)."""

from dataclasses import dataclass

# the data sets --dataset names: data.DATASETS's keys (tests/trainer/test_train.py checks), written out so that --help
# needs no torchvision
DATASETS = ("mnist", "fashion-mnist")
# the activations --activation names: manualbp.nn.ACTIVATIONS's keys (tests/trainer/test_train.py checks), written out
# so that --help needs no torch
ACTIVATIONS = ("relu", "leaky-relu", "sigmoid", "tanh", "gelu")


@dataclass
class Config:
    """Everything that defines a run. The defaults reach ≥ 98% on MNIST and ≥ 89% on Fashion-MNIST.

    ``model`` is a key of ``model.MODELS``: ``"mlp"`` (784-``hidden``-10, shaped by ``activation``,
    ``output_activation`` and ``init``), ``"cnn"`` or ``"vit"`` (which have no use for those four fields).

    ``cuda_graphs`` is the run's choice: True (--cuda-graphs), False (--no-cuda-graphs) or None, the default: CUDA
    graphs wherever the run allows them (``cuda_graphs.used``). A checkpoint keeps the choice, not its outcome, so
    that a run resumed on another device (or with --compile) decides again as a new run would.
    """

    model: str = "mlp"
    dataset: str = "mnist"
    data_root: str = "data"
    data_dir: str | None = None
    normalize: bool = True
    hidden: tuple = (512, 256)
    activation: str = "relu"
    output_activation: str | None = None
    loss: str = "cross-entropy"
    layers: str = "manual"
    init: str = "default"
    lr: float = 0.05
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    lr_schedule: str = "cosine"
    batch_size: int = 100
    epochs: int = 15
    seed: int = 0
    dtype: str = "float32"
    device: str = "auto"
    compile: bool = False
    cuda_graphs: bool | None = None  # None: where the run allows them
    log_every: int = 100
    pictures: bool = True


# "Neural Networks and Deep Learning", chapter 1: 784-30-10, sigmoid everywhere, quadratic cost, mini-batch 10,
# 30 epochs, weights and biases from N(0, 1), pixels in [0, 1]. The book's cost for one example is
# C_x = ½‖a − y‖², and its update is w ← w − (η/m) Σ_x ∇C_x over a mini-batch of m, with η = 3.0. Our
# MSELoss(reduction="mean") averages (a − y)² over the m examples and the 10 outputs, so its gradient is
# (2/10)·(1/m) Σ_x (a − y)·…, which is 1/5 of the book's: the same update needs lr = 5η = 15.
NIELSEN = {
    "hidden": (30,),
    "activation": "sigmoid",
    "output_activation": "sigmoid",
    "loss": "mse",
    "init": "normal",
    "normalize": False,
    "lr": 15.0,
    "momentum": 0.0,
    "nesterov": False,
    "weight_decay": 0.0,
    "lr_schedule": "constant",
    "batch_size": 10,
    "epochs": 30,
}
PRESETS = {"nielsen": NIELSEN}
# what may differ when a run is resumed: where it runs and where its data lies, not what it computes
RESUMABLE = {"device", "compile", "cuda_graphs", "data_root", "data_dir", "log_every", "pictures"}


def flag(name):
    """A Config field's flag: ``"lr_schedule"`` as "--lr-schedule"."""
    return "--" + name.replace("_", "-")
