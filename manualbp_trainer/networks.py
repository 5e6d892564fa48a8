"""The networks the trainer builds, from manualbp's layers or torch.nn's: an MLP (``build_mlp``), a small CNN
(``build_cnn``) and a small vision transformer (``ViT``). What the trainer knows of each kind (its flags, defaults
and what it supports) is its ``ModelSpec`` in ``model.py``, which builds it from here."""

import torch

import manualbp
from manualbp import nn as mnn


def build_mlp(
    sizes, activation="relu", output_activation=None, layers="manual", init="default", seed=0, dtype=torch.float32
):
    """``Sequential(Linear, f, Linear, f, …, Linear[, output f])`` over ``sizes`` (e.g. ``[784, 256, 10]``).

    Args:
        activation: a name in ``manualbp.nn.ACTIVATIONS``, after every hidden layer.
        output_activation: None, or a name in ``manualbp.nn.ACTIVATIONS`` after the last layer (the sigmoid output of
            "Neural Networks and Deep Learning").
        layers: ``"manual"`` for manualbp's layers, ``"torch"`` for ``torch.nn``'s. Both draw the same initial
            weights, so the two train side by side from the same start.
        init: ``"default"`` for ``torch.nn.Linear``'s initialisation, ``"normal"`` for weights and biases drawn
            from N(0, 1), as in the book.
        seed: seeds the initial weights (and nothing else).

    The state_dict keys are those of ``torch.nn.Sequential``: ``"0.weight"``, ``"0.bias"``, ``"2.weight"``, …
    (manualbp's model is a ``manualbp.nn.MLP``, whose ``loss()`` is the network and its loss as one autograd node;
    torch.nn's is a plain ``torch.nn.Sequential``.)
    """
    with torch.random.fork_rng(devices=[]):  # seed the weights, and leave the caller's random stream as it was
        torch.manual_seed(seed)
        # Linear, f, Linear, f, …: the modules of a Sequential, whose forward is one node and whose loss() is the
        # network and its loss as one node (manualbp.nn.MLP)
        model = mnn.MLP(sizes, activation, output_activation, dtype=dtype)
        if init == "normal":
            with torch.no_grad():
                for parameter in model.parameters():
                    parameter.normal_(0.0, 1.0)
    return model if layers == "manual" else manualbp.convert(model, to="torch")


class AugmentedImages(torch.nn.Module):
    """Rows of ``side²`` pixels as images ``(N, 1, side, side)``; in training mode each image is mirrored left to
    right with probability ½ (``flip``) and shifted by a random whole number of pixels from ``-shift`` to ``shift``
    along each axis, the edge pixels repeated into the gap. In evaluation mode (and with neither), a plain reshape,
    like ``torch.nn.Unflatten``.

    Light data augmentation done on the device: a gather and a select for the whole batch, no per-image Python. A
    mirrored shirt, shoe or bag is still a shirt, shoe or bag (the CNN's default: mirrors, no shifts); a mirrored
    digit is not a digit, so on MNIST ``flip=False`` and a shift of a pixel or two is the usual choice. The draws
    come from torch's global generator, as Dropout's masks do, so a checkpoint that keeps the generator's state
    resumes with the same draws. No parameters: nothing here is learned or derived.
    """

    def __init__(self, side=28, shift=0, flip=True):
        super().__init__()
        self.side, self.shift, self.flip = side, shift, flip

    def forward(self, x):
        images = x.reshape(-1, 1, self.side, self.side)
        if not self.training or (self.shift == 0 and not self.flip):
            return images
        if torch.compiler.is_compiling():
            # drawn in eager mode under torch.compile too: Inductor's own generator would draw other values than an
            # eager run, and a compiled run must train as the eager one does. (Decorating forward instead would
            # import torch._dynamo, seconds, whenever the trainer is imported.)
            return torch.compiler.disable(self._augmented)(images)
        return self._augmented(images)

    def _augmented(self, images):
        n, device = images.shape[0], images.device
        if self.shift:
            offsets = torch.randint(-self.shift, self.shift + 1, (2, n, 1), device=device)
            pixels = torch.arange(self.side, device=device)
            rows = (pixels + offsets[0]).clamp(0, self.side - 1)  # (N, side): clamping repeats the edge pixels
            columns = (pixels + offsets[1]).clamp(0, self.side - 1)
            batch = torch.arange(n, device=device)[:, None, None]
            images = images[batch, 0, rows[:, :, None], columns[:, None, :]].unsqueeze(1)
        if self.flip:
            mirrored = torch.rand(n, 1, 1, 1, device=device) < 0.5
            images = torch.where(mirrored, images.flip(-1), images)
        return images

    def extra_repr(self):
        return f"side={self.side}, shift={self.shift}, flip={self.flip}"


def build_cnn(
    layers="manual",
    seed=0,
    dtype=torch.float32,
    channels=(32, 64, 128),
    hidden=128,
    side=28,
    classes=10,
    shift=0,
    flip=True,
):
    """A small CNN for 28×28 images given as rows of ``side²`` pixels (the trainer keeps images flat):

        AugmentedImages (N, 784) → (N, 1, 28, 28), each mirrored or not at random while training
        → Conv2d(1, 32, 3, padding 1, no bias) → BatchNorm2d → ReLU → MaxPool2d(2)      (N, 32, 14, 14)
        → Conv2d(32, 64, 3, padding 1, no bias) → BatchNorm2d → ReLU → MaxPool2d(2)     (N, 64, 7, 7)
        → Conv2d(64, 128, 3, padding 1, no bias) → BatchNorm2d → ReLU → MaxPool2d(2)    (N, 128, 3, 3)
        → Flatten → Dropout(0.25) → Linear(128·3·3, 128) → ReLU → Dropout(0.5) → Linear(128, 10)

    The convolutions have no bias: the batch norm after each subtracts the channel's mean, bias and all, so a
    bias would get a zero gradient (rounding, in practice) and BatchNorm's β already is the channel's offset.
    One convolution per block, not two: on a CPU, manualbp's convolution backward is most of the step, and a second
    3×3 convolution at 28 × 28 would cost more than the three blocks together. The third block (issue #23) costs
    about what the second does (49 positions of 576 inputs, against 196 of 288) and shrinks the first Linear layer
    from 3,136 inputs to 1,152: 241,770 parameters, where two blocks had 421,738. Batch norm lets the MLP's
    learning rate work from the first step; dropout keeps the Linear layers from memorising the training set.

    Args:
        layers: ``"manual"`` for manualbp's layers, ``"torch"`` for ``torch.nn``'s (``manualbp.convert(model,
            to="torch")`` of the very same model, so both start from the same weights).
        seed: seeds the initial weights (torch.nn's default initialisation of each layer), and nothing else.
        channels: the convolutions' output channels, one block each; hidden: the first Linear layer's width.
        shift, flip: the training images' augmentation (``AugmentedImages``): the largest random shift in pixels,
            and whether each image is mirrored left to right with probability ½.

    The state_dict keys are those of ``torch.nn.Sequential`` (``"1.weight"`` is the first convolution's); the
    reshapes, ``AugmentedImages`` (``torch.nn.Unflatten`` at evaluation) and ``torch.nn.Flatten``, hold no math to
    derive.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        modules = [AugmentedImages(side, shift, flip)]
        in_channels = 1
        for out_channels in channels:
            modules += [
                mnn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False, dtype=dtype),
                mnn.BatchNorm2d(out_channels, dtype=dtype),
                mnn.ReLU(),
                mnn.MaxPool2d(2),
            ]
            in_channels = out_channels
        pooled = side // 2 ** len(channels)
        modules += [
            torch.nn.Flatten(),
            mnn.Dropout(0.25),
            mnn.Linear(in_channels * pooled * pooled, hidden, dtype=dtype),
            mnn.ReLU(),
            mnn.Dropout(0.5),
            mnn.Linear(hidden, classes, dtype=dtype),
        ]
        model = mnn.Sequential(*modules)  # the Linear + ReLU pair runs as one Function
    return model if layers == "manual" else manualbp.convert(model, to="torch")


def cnn_parameter_count(**sizes):
    """Weights and biases (batch norm's γ and β included) of ``build_cnn(**sizes)``, counted on the meta device,
    where nothing is allocated."""
    with torch.device("meta"):
        return sum(parameter.numel() for parameter in build_cnn(**sizes).parameters())


def weight_layers(model):
    """``(tag, module)`` for every convolution and Linear layer, in order, tagged ``conv0``, ``conv1``, …,
    ``linear0``, ``linear1``, … (each kind counted on its own, so an MLP's tags are ``linear0``, ``linear1``, …)."""
    kinds = {torch.nn.Conv2d: "conv", torch.nn.Linear: "linear"}
    counts, tagged = dict.fromkeys(kinds.values(), 0), []
    for m in model.modules():
        kind = next((name for cls, name in kinds.items() if isinstance(m, cls)), None)
        if kind is not None:
            tagged.append((f"{kind}{counts[kind]}", m))
            counts[kind] += 1
    return tagged


class ViT(torch.nn.Module):
    """A small vision transformer for 28×28 images given as rows of ``side²`` pixels, from manualbp's layers:

        (N, 784) → (N, 1, 28, 28) → Conv2d(1, dim, patch, stride patch): one token per 7×7 patch   (N, dim, 4, 4)
        → the 16 tokens, each plus its learned position                                         (N, 16, dim)
        → depth × TransformerEncoderLayer(dim, heads, mlp, GELU, LayerNorm first, no dropout)    (N, 16, dim)
        → LayerNorm → the tokens' mean → Linear(dim, 10)                                        (N, 10)

    Each encoder layer is x + MultiheadAttention(LayerNorm(x)), then x + Linear(GELU(Linear(LayerNorm(x)))): every
    one of those layers, and the patch embedding, is manualbp's (``manualbp.nn``); the position add and the mean
    are plain tensor arithmetic, left to autograd. Mean pooling rather than a class token: one token fewer, and
    nothing to concatenate. No dropout: at this size, on MNIST's 60 000 images, it underfits before it overfits.

    Args:
        layers: ``"manual"`` for manualbp's layers, ``"torch"`` for ``torch.nn``'s (``manualbp.convert`` of the
            very same model, so both start from the same weights).
        seed: seeds the initial weights, and nothing else.
    """

    def __init__(self, layers="manual", seed=0, dtype=torch.float32, dim=64, heads=4, mlp=128, depth=2, patch=7):
        super().__init__()
        self.side = 28
        tokens = (self.side // patch) ** 2
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.embed = mnn.Conv2d(1, dim, patch, stride=patch, dtype=dtype)
            self.position = torch.nn.Parameter(torch.randn(tokens, dim, dtype=dtype) * 0.02)
            layer = mnn.TransformerEncoderLayer(
                dim, heads, mlp, dropout=0.0, activation="gelu", batch_first=True, norm_first=True, dtype=dtype
            )
            self.encoder = mnn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
            self.norm = mnn.LayerNorm(dim, dtype=dtype)
            self.head = mnn.Linear(dim, 10, dtype=dtype)
        # every layer inside, at any depth (the encoder layer's attention, norms and Linear layers), as ``layers``
        manualbp.convert(self, to="manualbp" if layers == "manual" else "torch")

    def forward(self, x):
        patches = self.embed(x.reshape(-1, 1, self.side, self.side))  # (N, dim, 4, 4)
        tokens = patches.flatten(2).transpose(1, 2) + self.position  # (N, 16, dim)
        return self.head(self.norm(self.encoder(tokens)).mean(dim=1))
