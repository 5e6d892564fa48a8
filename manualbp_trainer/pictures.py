"""Backprop as it is taught, drawn: what one example asks of every output neuron, hidden neuron and weight.

For one training example (say a "2") the cost C wants the output layer's "2" neuron up and the others down, in
proportion to the error: the nudges −∂C/∂aᴸ. Each output neuron's wish becomes suggestions for the previous layer's
activations, weighted by the weights, and each hidden neuron sums the suggestions it receives: −∂C/∂aˡ. What the
example asks of the first layer's weights into hidden neuron j is −∂C/∂W¹_j, one value per pixel: a 28×28 picture.
The average of every example's wishes over a mini-batch is the negative gradient that SGD follows.

Everything here is computed by manualbp's hand-derived backward passes (the model's own layers, or its twin made of
manualbp's layers), read off with ``retain_grad`` on each layer's activations.
"""

import copy
from dataclasses import dataclass

import torch
import torchvision
from torch.func import functional_call, grad, vmap

import manualbp
from manualbp import functional as F
from manualbp_trainer import drawing


@dataclass
class Requests:
    """What one example asks of a multilayer perceptron.

    ``activations[l]`` and ``nudges[l]`` are aˡ⁺¹ and −∂C/∂aˡ⁺¹ of layer l + 1 (the last is the output layer), each
    ``(n_l,)``; ``first_weights`` is −∂C/∂W¹, ``(n_1, n_0)``; ``loss`` is C for this example.
    """

    activations: list
    nudges: list
    first_weights: torch.Tensor
    loss: float


def requests(model, x, target, loss_name):
    """``Requests`` of one example ``x`` ``(n_0,)`` with ``target`` (a class index, or a one-hot vector for MSE)."""
    layers = list(_manual_twin(model))
    a = x.detach().reshape(1, -1)
    outputs = []
    for module in layers:
        a = module(a)
        a.retain_grad()  # keep ∂C/∂a of this layer's output: the nudges it receives
        outputs.append(a)
    cost = _loss(loss_name, a, target.reshape(1, *target.shape))
    first = next(m for m in layers if isinstance(m, torch.nn.Linear))
    cost.backward()  # one backward pass: the retained activations' .grad and the (fresh copy's) weights' .grad
    # a Linear layer's output z is followed by its activation's a: keep only the activations (and the last output)
    kept = [i for i, m in enumerate(layers) if i + 1 == len(layers) or isinstance(layers[i + 1], torch.nn.Linear)]
    return Requests(
        activations=[outputs[i].detach()[0] for i in kept],
        nudges=[-outputs[i].grad[0] for i in kept],
        first_weights=-first.weight.grad.detach(),
        loss=cost.item(),
    )


def figure(image, label, result, class_names=None, hardest=4, side=28):
    """A matplotlib figure of ``Requests``, 400 px wide: the image; the output layer's activations against the
    target with the nudges as signed bars; each hidden layer's nudges; and for the ``hardest`` neurons of the first
    hidden layer (those whose weights it asks most of), what the example asks of their incoming weights, as
    side×side images (``drawing.figure``, from ``figure_data``)."""
    return drawing.figure(figure_data(image, label, result, class_names, hardest, side))


def figure_data(image, label, result, class_names=None, hardest=4, side=28):
    """What ``figure`` draws, copied to the host as numpy arrays (``drawing.FigureData``): what a worker process
    needs to draw the figure while the run trains on."""
    hidden = result.nudges[:-1]
    # pushed hardest: the neurons whose incoming weights the example asks most of (a neuron whose f′ is 0
    # here, such as a ReLU below its kink, passes no nudge on to its weights however large it is)
    pushed = result.first_weights.float().norm(dim=1)
    top = pushed.argsort(descending=True)[:hardest].tolist() if hidden else []
    rows = result.first_weights[top].float().cpu()
    asked = [row.reshape(side, side).numpy() if row.numel() == side * side else None for row in rows]
    return drawing.FigureData(
        image=image.reshape(side, side).float().cpu().numpy(),
        label=label,
        class_names=class_names,
        outputs=result.activations[-1].float().cpu().numpy(),
        nudges=[nudge.float().cpu().numpy() for nudge in result.nudges],
        loss=result.loss,
        hardest=list(zip(top, asked, result.nudges[0].float().cpu()[top].tolist(), strict=True)),
        columns=max(hardest, 2),
    )


def per_example_agreement(model, x, target, loss_name):
    """How well single examples agree with their mini-batch: the cosine of each example's gradient with the
    mini-batch gradient, ``(N,)``, and the largest difference between the mean of the per-example gradients and the
    mini-batch gradient (it *is* their mean: the difference is rounding).

    Per-example gradients come from ``torch.func.vmap(grad(...))`` through the hand-derived backward passes.
    """
    twin = _manual_twin(model)
    parameters = {name: p.detach() for name, p in twin.named_parameters()}

    def cost(parameters, example, example_target):
        output = functional_call(twin, parameters, (example.unsqueeze(0),))
        return _loss(loss_name, output, example_target.unsqueeze(0))

    per_example = vmap(grad(cost), in_dims=(None, 0, 0))(parameters, x, target)
    batch = torch.autograd.grad(_loss(loss_name, twin(x), target), list(twin.parameters()))
    flat_examples = torch.cat([per_example[name].flatten(1) for name in parameters], dim=1)
    flat_batch = torch.cat([g.flatten() for g in batch])
    cosines = torch.nn.functional.cosine_similarity(flat_examples, flat_batch.unsqueeze(0), dim=1)
    max_diff = (flat_examples.mean(0) - flat_batch).abs().max().item()
    return cosines, max_diff


def chain_rule(model, x, target, loss_name, row=None, column=None):
    """The chain rule for one weight of the last Linear layer, w = Wᴸ_jk, in the docstrings' notation:
    ∂C/∂w = ∂C/∂aᴸ_j · f′(zᴸ_j) · aᴸ⁻¹_k, each factor by manualbp, beside autograd's ∂C/∂w from torch.nn's layers.

    The default weight: j the target's output neuron, k the hidden neuron whose activation feeds it most.
    Returns a dict of the factors and both gradients.
    """
    twin = _manual_twin(model)
    linears = [m for m in twin if isinstance(m, torch.nn.Linear)]
    last = linears[-1]
    index = list(twin).index(last)
    before = torch.nn.Sequential(*list(twin)[:index])
    activation = list(twin)[index + 1] if index + 1 < len(twin) else None
    a_previous = before(x.reshape(1, -1)).detach()
    z = F.linear(a_previous, last.weight, last.bias)
    z.retain_grad()
    a = z if activation is None else activation(z)
    a.retain_grad()
    cost = _loss(loss_name, a, target.reshape(1, *target.shape))
    cost.backward()
    label = int(target.argmax()) if target.dim() else int(target)
    j = label if row is None else row
    k = int((a_previous[0] * last.weight[j]).abs().argmax()) if column is None else column
    dcost_da = a.grad[0, j].item()
    slope = 1.0 if activation is None else (z.grad[0, j] / a.grad[0, j]).item() if a.grad[0, j] != 0 else float("nan")
    builtin = manualbp.convert(copy.deepcopy(twin), to="torch")
    builtin_last = [m for m in builtin if isinstance(m, torch.nn.Linear)][-1]
    builtin_cost = _loss(loss_name, builtin(x.reshape(1, -1)), target.reshape(1, *target.shape), torch_layers=True)
    (autograd_grad,) = torch.autograd.grad(builtin_cost, [builtin_last.weight])
    return {
        "layer": len(linears),
        "row": j,
        "column": k,
        "dC/da": dcost_da,
        "f'(z)": slope,
        "a_previous": a_previous[0, k].item(),
        "product": dcost_da * slope * a_previous[0, k].item(),
        "manualbp": last.weight.grad[j, k].item(),
        "autograd": autograd_grad[j, k].item(),
        "activation": "none (logits)" if activation is None else type(activation).__name__,
    }


def format_chain_rule(factors):
    """The chain-rule printout of ``chain_rule``'s factors: one line for the weight, then one per factor and
    gradient, their ``=`` in one column."""
    layer, j, k = factors["layer"], factors["row"], factors["column"]
    rows = [
        (f"∂C/∂a{_sup(layer)}_{j}", factors["dC/da"], "   (what the cost asks of the neuron's output)"),
        (f"f′(z{_sup(layer)}_{j})", factors["f'(z)"], "   (how far its output moves with z)"),
        (f"a{_sup(layer - 1)}_{k}", factors["a_previous"], "   (the activation the weight carries)"),
        ("∂C/∂w = the product", factors["product"], ""),
        ("manualbp's backward", factors["manualbp"], ""),
        ("autograd (torch.nn)", factors["autograd"], ""),
    ]
    width = max(len(name) for name, _, _ in rows)
    return "\n".join(
        [
            f"the weight w = W{_sup(layer)}[{j}, {k}]: from hidden neuron {k} of layer {layer - 1} to neuron {j} of "
            f"layer {layer}, activation {factors['activation']}",
            *(f"  {name:<{width}} = {value: .6e}{why}" for name, value, why in rows),
        ]
    )


def _sup(n):
    return str(n).translate(str.maketrans("0123456789-", "⁰¹²³⁴⁵⁶⁷⁸⁹⁻"))


def _manual_twin(model):
    """A copy of ``model`` made of manualbp's layers, run layer by layer (no fused nodes), whatever its layers were."""
    twin = manualbp.convert(copy.deepcopy(model), to="manualbp")
    return torch.nn.Sequential(*twin)  # plain Sequential: one node per layer, so every activation is reachable


def _loss(loss_name, output, target, torch_layers=False):
    functional = torch.nn.functional if torch_layers else F
    if loss_name == "mse":
        return functional.mse_loss(output, target)
    return functional.cross_entropy(output, target)


def class_names(dataset):
    """The classes' names for the figures: Fashion-MNIST's garments, else None (the digits name themselves)."""
    return list(torchvision.datasets.FashionMNIST.classes) if dataset == "fashion-mnist" else None


def examples_per_class(labels, classes=10):
    """The index of the first example of each class in ``labels`` (classes absent from it are left out)."""
    indices = []
    for c in range(classes):
        found = (labels == c).nonzero()
        if len(found):
            indices.append(int(found[0]))
    return indices
