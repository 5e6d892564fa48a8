"""What the trainer shows in TensorBoard beyond plain scalars: norms, histograms, pictures, gradient agreement."""

import copy
import math

import torch
import torchvision
from PIL import Image, ImageDraw, ImageFont

import manualbp
from manualbp_trainer import pictures
from manualbp_trainer.networks import AugmentedImages, weight_layers


def norms(model):
    """``(tags, values)``: each convolution's and Linear layer's weight norm and gradient norm as
    ``norms/conv0.weight``, ``norms/conv0.weight.grad``, …, ``norms/linear0.weight``, …, the values one tensor on
    the model's device (computed there, not read back)."""
    tags, values = [], []
    for tag, layer in weight_layers(model):
        tags.append(f"norms/{tag}.weight")
        values.append(layer.weight.detach().norm())
        if layer.weight.grad is not None:
            tags.append(f"norms/{tag}.weight.grad")
            values.append(layer.weight.grad.detach().norm())
    return tags, torch.stack(values).double()


def log_histograms(writer, model, step):
    """Each convolution's and Linear layer's weights and biases, and their gradients: ``weights/conv0.weight``,
    ``weights/linear1.bias.grad``, …"""
    for tag, layer in weight_layers(model):
        for name, parameter in layer.named_parameters():
            writer.add_histogram(f"weights/{tag}.{name}", parameter.detach().cpu(), step)
            if parameter.grad is not None:
                writer.add_histogram(f"weights/{tag}.{name}.grad", parameter.grad.cpu(), step)


def first_layer_tiles(model, side=28):
    """The first layer's weights, one side×side tile per hidden neuron: what each neuron responds to; None when
    the first layer is not a Linear layer over the image's pixels (the CNN's is a convolution)."""
    tag, layer = weight_layers(model)[0]
    if not tag.startswith("linear") or layer.weight.shape[1] != side * side:
        return None
    return _grid(layer.weight.detach().float().cpu().reshape(-1, 1, side, side))


def first_conv_filters(model, scale=16, columns=8):
    """The first convolution's filters, one tile per output channel (its input channels side by side), ``columns``
    to a row, each scaled to its own range and enlarged ``scale`` times, so that a 3×3 kernel is seen as 3×3
    squares of 16 px: 32 filters make a 402 × 202 px image, about the width of a TensorBoard card. None for a
    model without convolutions."""
    convolutions = [layer for tag, layer in weight_layers(model) if tag.startswith("conv")]
    if not convolutions:
        return None
    weight = convolutions[0].weight.detach().float().cpu()  # (C_out, C_in, kh, kw)
    tiles = weight.transpose(1, 2).reshape(weight.shape[0], 1, weight.shape[2], -1)  # channels side by side
    return _grid(torch.nn.functional.interpolate(tiles, scale_factor=scale, mode="nearest"), columns)


def _grid(tiles, columns=None):
    """``tiles`` ``(n, 1, h, w)`` in a grid of ``columns`` (default: square), each scaled to its own range, on
    white."""
    columns = columns or math.ceil(math.sqrt(len(tiles)))
    return torchvision.utils.make_grid(tiles, nrow=columns, normalize=True, scale_each=True, pad_value=1.0)


# a misclassified tile: the image enlarged 3 times over two lines of 14 px type, four tiles to a row (402 px, about
# a TensorBoard card's width, so the captions read at card size)
TILE_WIDTH, TILE_SCALE, CAPTION_SIZE, CAPTION_LINE = 100, 3, 14, 17


def misclassified_grid(images, labels, predictions, names=None, limit=16, side=28):
    """Up to ``limit`` misclassified test images, four to a row, each captioned with its class's name and, below,
    "as" the class it was taken for ("Shirt", "as T-shirt/top"); ``names`` are the classes' names (default: their
    numbers, which name MNIST's digits)."""
    wrong = (predictions != labels).nonzero().flatten()[:limit].cpu()
    if len(wrong) == 0:
        return None
    names = names or [str(c) for c in range(int(max(labels.max(), predictions.max())) + 1)]
    pictures = images[wrong].float().cpu().reshape(-1, side, side)
    low, high = pictures.amin(dim=(1, 2), keepdim=True), pictures.amax(dim=(1, 2), keepdim=True)
    pictures = ((pictures - low) / (high - low).clamp_min(1e-12) * 255).to(torch.uint8)
    font = ImageFont.load_default(size=CAPTION_SIZE)
    size = TILE_SCALE * side
    tiles = []
    for picture, predicted, true in zip(pictures, predictions[wrong].tolist(), labels[wrong].tolist(), strict=True):
        tile = Image.new("L", (TILE_WIDTH, size + 2 * CAPTION_LINE + 2), color=0)
        tile.paste(Image.fromarray(picture.numpy()).resize((size, size)), ((TILE_WIDTH - size) // 2, 0))
        draw = ImageDraw.Draw(tile)
        for line, text in enumerate(misclassified_caption(true, predicted, names)):
            draw.text((2, size + line * CAPTION_LINE), text, fill=255, font=font)
        tiles.append(torch.frombuffer(bytearray(tile.tobytes()), dtype=torch.uint8).reshape(1, tile.height, tile.width))
    return torchvision.utils.make_grid(torch.stack(tiles).float() / 255, nrow=4, pad_value=0.5)


def misclassified_caption(true, predicted, names):
    """The two lines under a misclassified image: its class's name, and "as" the class it was taken for."""
    return names[true], f"as {names[predicted]}"


def gradient_agreement(model, loss_name, x, target):
    """Largest absolute and relative difference between manualbp's gradients and autograd's, same weights.

    Two copies of ``model`` are made in float64, one converted to manualbp's layers and one to torch.nn's, so the
    comparison holds whichever layers the model trains with. The relative difference is taken per parameter
    against the largest autograd gradient entry of that parameter. Float64, because in float32 two correct
    gradients summed in different orders can differ by far more than one rounding: on Fashion-MNIST, the CNN's
    first convolution sums its weight gradient over 256 · 784 positions, and torch.nn's (oneDNN's) float32 result
    was 5.9e-4 (relative) from the float64 one where manualbp's im2col product was 2.5e-6. In float64 the two agree
    to ~1e-13, and a wrong derivative stands out.

    Batch norm runs as in training (batch statistics; the copies' running statistics move, the model's do not).
    Dropout and the CNN's random mirrors are switched off in the copies: each copy would draw its own masks and
    mirrors (and on a GPU PyTorch's fused dropout kernel draws its own), and a mask's derivative is the mask itself.
    """
    grads = []
    for to, functional in (("manualbp", manualbp.functional), ("torch", torch.nn.functional)):
        twin = manualbp.convert(copy.deepcopy(model).double(), to=to)
        for module in twin.modules():
            if isinstance(module, (torch.nn.Dropout, AugmentedImages)):
                module.eval()
        output = twin(x.double())
        loss = (
            functional.cross_entropy(output, target)
            if loss_name == "cross-entropy"
            else functional.mse_loss(output, target.double())
        )
        grads.append(torch.autograd.grad(loss, list(twin.parameters())))
    max_abs = max_rel = 0.0
    for manual, builtin in zip(*grads, strict=True):
        difference = (manual - builtin).abs().max().item()
        max_abs = max(max_abs, difference)
        max_rel = max(max_rel, difference / max(builtin.abs().max().item(), torch.finfo(builtin.dtype).tiny))
    return max_abs, max_rel


def log_pictures(writer, figures, model, loss_name, test_set, probe, step, names=None, examples=16):
    """What one example asks of the network, for the first test image of each class (``requests/<label>``, and
    the class's name where it has one, ``requests/0_T-shirt_top``: the figure of ``pictures.figure``, handed to
    ``figures``, a ``picture_writer.PictureWriter``, to be drawn while the run goes on), and how
    single examples agree with their mini-batch: the cosine of each of
    ``examples`` probe examples' gradients with the batch gradient (``per_example/cosine_with_batch``), and the
    largest difference between their mean and the batch gradient (``per_example/mean_minus_batch_max_diff``:
    rounding, since the batch gradient *is* their mean)."""
    for index in pictures.examples_per_class(test_set.labels):
        x, label = test_set.images[index], int(test_set.labels[index])
        target = test_set.labels[index]
        if loss_name == "mse":
            target = torch.nn.functional.one_hot(target, 10).to(x.dtype)
        drawn = pictures.figure_data(x, label, pictures.requests(model, x, target, loss_name), names)
        figures.submit(f"requests/{label}" + (f"_{_tag_word(names[label])}" if names else ""), step, drawn)
    x, target = probe[0][:examples], probe[1][:examples]
    cosines, max_diff = pictures.per_example_agreement(model, x, target, loss_name)
    writer.add_histogram("per_example/cosine_with_batch", cosines.cpu(), step)
    writer.add_scalar("per_example/mean_minus_batch_max_diff", max_diff, step)


def _tag_word(name):
    """A class's name as one word of a TensorBoard tag: "T-shirt/top" as "T-shirt_top"."""
    return name.replace("/", "_").replace(" ", "_")
