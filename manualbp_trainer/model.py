"""One ``ModelSpec`` per kind of model the trainer trains (``MODELS``): its ``--help`` entry, its own defaults, the
flags it reads and refuses, what it supports, and how to build it. The command line, the loop and the logbook read
these rather than ask which kind a run trains. The networks themselves are in ``networks.py``; this module imports no
torch, so that ``train.py --help`` does not wait for it."""

from collections.abc import Callable
from dataclasses import dataclass, field

# the Config fields that shape a model; each kind reads some of them (ModelSpec.uses)
MODEL_FIELDS = ("hidden", "activation", "output_activation", "init")


@dataclass(frozen=True)
class ModelSpec:
    """One kind of model, all that the trainer asks of it:

    - ``name``: ``--model``'s value; ``summary``: its ``--help`` entry;
    - ``build(config, dtype)``: the network, on the CPU, its initial weights drawn from ``config.seed``;
    - ``defaults``: the Config values it needs where the MLP's do not fit (explicit flags override them);
    - ``uses``: the fields of ``MODEL_FIELDS`` it reads; the others are refused when given, and a run of this kind
      records only these;
    - ``unsupported``: ``"pictures"``, ``"cuda_graphs"`` or ``"torchrun"``, each with why not;
    - ``shrink``: the flags that make it smaller (None: only --batch-size does), said when memory runs out.
    """

    name: str
    summary: str
    build: Callable
    defaults: dict = field(default_factory=dict)
    uses: tuple = ()
    unsupported: dict = field(default_factory=dict)
    shrink: str | None = None

    def supports(self, feature):
        return feature not in self.unsupported

    def parameter_count(self, config):
        """Weights and biases (LayerNorm's and BatchNorm's included), counted on the meta device, where nothing is
        allocated."""
        import torch

        with torch.device("meta"):
            return sum(parameter.numel() for parameter in self.build(config, torch.float32).parameters())


# each builder imports the networks (and with them torch and manualbp) when a run builds one, not before


def _mlp(config, dtype):
    from manualbp_trainer.networks import build_mlp

    sizes = [28 * 28, *config.hidden, 10]
    return build_mlp(sizes, config.activation, config.output_activation, config.layers, config.init, config.seed, dtype)


def _cnn(config, dtype):
    from manualbp_trainer.networks import build_cnn

    return build_cnn(config.layers, config.seed, dtype)


def _vit(config, dtype):
    from manualbp_trainer.networks import ViT

    return ViT(config.layers, config.seed, dtype)


_NEURONS = "--pictures draws an MLP's neurons, and --model {name} has none to draw: drop --pictures"
MODELS = {
    "mlp": ModelSpec(
        "mlp",
        "784-hidden-10, shaped by --hidden, --activation, --output-activation and --init",
        _mlp,
        uses=MODEL_FIELDS,
        shrink="smaller --hidden sizes",
    ),
    "cnn": ModelSpec(
        "cnn",
        "[Conv2d 3×3 → BatchNorm2d → ReLU → MaxPool2d 2] with 32, 64, then 128 channels → Dropout 0.25 → "
        "Linear 1152→128 → ReLU → Dropout 0.5 → Linear 128→10; training images mirrored at random",
        _cnn,
        # 20 epochs: 10 under-trained a small training set (issue #23), 15 of this recipe reached 92.9% on
        # Fashion-MNIST; the random mirrors and dropout keep the extra epochs from memorising the training set
        defaults={"epochs": 20, "pictures": False},
        unsupported={
            "pictures": _NEURONS.format(name="cnn"),
            "cuda_graphs": "replaying BatchNorm's running statistics and Dropout's random masks from a captured graph "
            "is untested",
            "torchrun": "under torchrun each process's BatchNorm layers would normalise with its own share of the "
            "batch, not the batch's statistics",
        },
    ),
    "vit": ModelSpec(
        "vit",
        "Conv2d 7×7 stride 7 (16 patch tokens of 64) + positions → 2 × TransformerEncoderLayer (4 heads, "
        "LayerNorm first, GELU MLP 128) → LayerNorm → mean → Linear 64→10",
        _vit,
        defaults={"epochs": 10, "pictures": False},
        unsupported={"pictures": _NEURONS.format(name="vit")},
    ),
}
