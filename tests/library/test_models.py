"""Whole models converted: a small CNN, torchvision's ResNet-18, ``torch.nn.TransformerEncoder`` and torchvision's
ViT give torch's outputs and gradients, and their backward graphs hold manualbp's nodes where PyTorch's built-in
layers were (each layer family's own tests: test_conv.py, test_attention.py, ...)."""

import copy

import pytest
import torch
from conftest import is_manualbp_node
from helpers import BUILT_IN_LAYER_NODES, DOUBLE, graph_nodes, module_pair, module_pair_of, node_names

import manualbp
import manualbp.functional as F
import manualbp.nn as mnn

# ---- the CNNs ----


def _small_cnn():
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1),
        torch.nn.BatchNorm2d(4),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Dropout(0.25),
        torch.nn.Flatten(),
        torch.nn.Linear(4 * 4 * 4, 10),
    )


@pytest.mark.parametrize("training", [True, False])
def test_a_converted_cnn_gives_torchs_outputs_and_gradients_through_manualbp_nodes(training):
    torch.manual_seed(0)
    model = _small_cnn().train(training)
    converted = manualbp.convert(copy.deepcopy(model))
    x = torch.randn(3, 1, 8, 8)
    torch.manual_seed(5)
    expected = model(x)
    torch.manual_seed(5)
    output = converted(x)
    torch.testing.assert_close(output, expected)
    g = torch.randn_like(output)
    expected.backward(g), output.backward(g)
    for (name, parameter), (_, converted_parameter) in zip(
        model.named_parameters(), converted.named_parameters(), strict=True
    ):
        torch.testing.assert_close(converted_parameter.grad, parameter.grad, msg=name)
    for buffer, converted_buffer in zip(model.buffers(), converted.buffers(), strict=True):
        assert torch.equal(buffer, converted_buffer)
    nodes = graph_nodes(output)
    for function in ["Conv2d", "BatchNorm", "MaxPool2d", "ReLU", "Linear"] + (["Dropout"] if training else []):
        assert any(is_manualbp_node(node, function) for node in nodes), function
    builtin = {"ConvolutionBackward0", "NativeBatchNormBackward0", "MaxPool2DWithIndicesBackward0", "MulBackward0"}
    assert not builtin & {type(node).__name__ for node in nodes}
    manualbp.convert(converted, to="torch")
    assert [type(m) for m in converted.modules()] == [type(m) for m in model.modules()]


# PyTorch's own backward nodes for a ResNet's layers (convolution, batch norm, pooling, ReLU, Linear; an adaptive
# average-pool to 1×1 runs as a mean): none may remain in a converted ResNet's graph
RESNET_BUILT_IN_NODES = {
    "ConvolutionBackward0",
    "NativeBatchNormBackward0",
    "CudnnBatchNormBackward0",
    "MaxPool2DWithIndicesBackward0",
    "AdaptiveAvgPool2DBackward0",
    "AvgPool2DBackward0",
    "MeanBackward1",
    "ReluBackward0",
    "ThresholdBackward0",
    "AddmmBackward0",
    "MmBackward0",
    "TBackward0",
}
# what may remain: the residual adds, the flatten before the classifier, the copy that writes an in-place ReLU's
# output into its input, and the parameters
RESNET_ALLOWED_NODES = {"AccumulateGrad", "AddBackward0", "ViewBackward0", "CopyBackwards"}
RESNET_MANUALBP_NODES = {
    "Conv2dBackward",
    "BatchNormBackward",
    "ReLUBackward",
    "MaxPool2dBackward",
    "AdaptiveAvgPool2dBackward",
    "LinearBackward",
}


@pytest.mark.parametrize(
    "dtype, training, tolerance",
    [(torch.float32, True, 1e-5), (DOUBLE, True, 1e-10), (torch.float32, False, 1e-5)],
    ids=["float32-train", "float64-train", "float32-eval"],
)
def test_converted_torchvision_resnet18_matches_torch_and_its_graph_holds_no_built_in_layer(dtype, training, tolerance):
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=10).to(dtype).train(training)
    with torch.no_grad():  # batch norm starts at γ = 1, β = 0, μ_r = 0, v_r = 1, which could hide a wrong term
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.add_(0.3 * torch.randn_like(module.weight))
                module.bias.add_(0.3 * torch.randn_like(module.bias))
                module.running_mean.add_(0.1 * torch.randn_like(module.running_mean))
                module.running_var.add_(torch.rand_like(module.running_var) - 0.5)
    converted = manualbp.convert(copy.deepcopy(model))
    assert {type(m) for m in converted.modules()} >= {manualbp.nn.Conv2d, manualbp.nn.BatchNorm2d, manualbp.nn.Linear}
    x = torch.randn(2, 3, 32, 32, dtype=dtype)
    upstream = torch.randn(2, 10, dtype=dtype)
    results = []
    for each in (model, converted):
        x_leaf = x.clone().requires_grad_()
        output = each(x_leaf)
        results.append((output, torch.autograd.grad(output, [x_leaf, *each.parameters()], upstream)))
    (expected, expected_grads), (output, grads) = results
    relative = lambda ours, theirs: ((ours - theirs).abs().max() / theirs.abs().max()).item()  # noqa: E731
    assert relative(output, expected) <= tolerance
    names = ["input", *(name for name, _ in model.named_parameters())]
    assert len(grads) == len(expected_grads) == 1 + 62  # the input and every parameter
    for name, grad, expected_grad in zip(names, grads, expected_grads, strict=True):
        assert relative(grad, expected_grad) <= tolerance, name
    for buffer, converted_buffer in zip(model.buffers(), converted.buffers(), strict=True):
        assert torch.equal(buffer, converted_buffer)  # the running statistics moved as torch moves them
    nodes = node_names(output)
    assert not nodes & RESNET_BUILT_IN_NODES, sorted(nodes & RESNET_BUILT_IN_NODES)
    assert nodes - RESNET_MANUALBP_NODES <= RESNET_ALLOWED_NODES, sorted(nodes - RESNET_MANUALBP_NODES)
    assert nodes >= RESNET_MANUALBP_NODES, sorted(RESNET_MANUALBP_NODES - nodes)
    # the walk can fail: the unconverted model's graph has them
    assert node_names(expected) & RESNET_BUILT_IN_NODES


# ---- the transformer encoder and the ViT ----

# what may remain: views, reshapes, transposes, adds, concatenations, the mask arithmetic and the parameters
ALLOWED_NODES = {
    "AccumulateGrad",
    "AddBackward0",
    "ViewBackward0",
    "UnsafeViewBackward0",
    "ReshapeAliasBackward0",
    "TransposeBackward0",
    "PermuteBackward0",
    "ExpandBackward0",
    "SplitBackward0",
    "SliceBackward0",
    "CloneBackward0",
    "CatBackward0",
    "UnsqueezeBackward0",
    "SqueezeBackward0",
    "SqueezeBackward1",
}
MANUALBP_NODES = {
    "Conv2dBackward",  # the ViT's patch embedding, converted by manualbp's CNN layers
    "DropoutBackward",
    "LinearBackward",
    "ReLUBackward",
    "GELUBackward",
    "LayerNormBackward",
    "ScaledDotProductAttentionBackward",
}


def _encoder(activation, dtype, norm_first=False):
    torch.manual_seed(0)
    layer = torch.nn.TransformerEncoderLayer(
        d_model=8,
        nhead=2,
        dim_feedforward=16,
        dropout=0.0,
        activation=activation,
        batch_first=True,
        norm_first=norm_first,
    )
    encoder = torch.nn.TransformerEncoder(layer, num_layers=2, norm=torch.nn.LayerNorm(8), enable_nested_tensor=False)
    return module_pair_of(encoder.to(dtype))


def _relative_error(manual, builtin):
    return ((manual - builtin).abs().max() / builtin.abs().max()).item()


@pytest.mark.parametrize("dtype, tolerance", [(torch.float32, 1e-5), (DOUBLE, 1e-10)], ids=["float32", "float64"])
@pytest.mark.parametrize("activation", ["relu", "gelu", "gelu-module"])
@pytest.mark.parametrize("masks", ["none", "padding-and-causal"])
def test_converted_transformer_encoder_matches_torch_and_its_graph_holds_no_built_in_layer(
    dtype, tolerance, activation, masks
):
    function = {"relu": torch.nn.functional.relu, "gelu": torch.nn.functional.gelu, "gelu-module": torch.nn.GELU()}
    builtin, manual = _encoder(function[activation], dtype, norm_first=activation == "gelu")
    assert type(manual) is mnn.TransformerEncoder
    for layer in manual.layers:
        assert type(layer) is mnn.TransformerEncoderLayer and type(layer.self_attn) is mnn.MultiheadAttention
        assert type(layer.norm1) is mnn.LayerNorm and type(layer.linear1) is mnn.Linear
        assert layer.activation in (F.relu, F.gelu) or type(layer.activation) is mnn.GELU
    x = torch.randn(3, 5, 8, dtype=dtype)
    kwargs = {}
    if masks != "none":
        padding = torch.zeros(3, 5, dtype=torch.bool)
        padding[1, 3:] = True
        kwargs = {
            "mask": torch.ones(5, 5, dtype=torch.bool).triu(1),  # True: may not look ahead
            "src_key_padding_mask": padding,
        }
    upstream = torch.randn(3, 5, 8, dtype=dtype)
    results = []
    for model in (builtin, manual):
        x_leaf = x.clone().requires_grad_()
        out = model(x_leaf, **kwargs)
        results.append((out, torch.autograd.grad(out, [x_leaf, *model.parameters()], upstream)))
    (out_torch, grads_torch), (out_manual, grads_manual) = results
    assert _relative_error(out_manual, out_torch) <= tolerance
    for g_manual, g_torch in zip(grads_manual, grads_torch, strict=True):
        assert _relative_error(g_manual, g_torch) <= tolerance
    names = node_names(out_manual)
    assert not names & BUILT_IN_LAYER_NODES, sorted(names & BUILT_IN_LAYER_NODES)
    assert names - MANUALBP_NODES <= ALLOWED_NODES, sorted(names - MANUALBP_NODES - ALLOWED_NODES)
    expected = {"LinearBackward", "LayerNormBackward", "ScaledDotProductAttentionBackward"}
    expected.add("ReLUBackward" if activation == "relu" else "GELUBackward")
    assert expected <= names
    assert node_names(out_torch) & BUILT_IN_LAYER_NODES  # the walk can fail: the unconverted graph has them


def test_converted_encoder_layer_never_takes_the_fused_inference_path(monkeypatch):
    builtin, manual = module_pair(torch.nn.TransformerEncoderLayer, 8, 2, 16, dtype=torch.float32, batch_first=True)
    builtin.eval(), manual.eval()
    x = torch.randn(2, 4, 8)
    calls = []
    fused = torch._transformer_encoder_layer_fwd

    def record(*args, **kwargs):
        calls.append(1)
        return fused(*args, **kwargs)

    monkeypatch.setattr(torch, "_transformer_encoder_layer_fwd", record)
    with torch.no_grad():
        expected = builtin(x)
        assert calls, "the unconverted layer should take the fast path here, or this test proves nothing"
        calls.clear()
        torch.testing.assert_close(manual(x), expected)
    assert not calls


def test_convert_swaps_a_function_valued_activation_and_back():
    layer = torch.nn.TransformerEncoderLayer(8, 2, 16, activation=torch.nn.functional.gelu)
    manualbp.convert(layer)
    assert layer.activation is F.gelu and type(layer.self_attn) is mnn.MultiheadAttention
    manualbp.convert(layer, to="torch")
    assert layer.activation is torch.nn.functional.gelu
    assert type(layer) is torch.nn.TransformerEncoderLayer and type(layer.norm1) is torch.nn.LayerNorm


def test_converted_torchvision_vit_matches_torch_and_its_graph_holds_no_built_in_transformer_layer():
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    vit = torchvision.models.VisionTransformer(
        image_size=16, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32, num_classes=5
    ).double()
    builtin, manual = module_pair_of(vit)
    x = torch.randn(2, 3, 16, 16, dtype=DOUBLE)
    upstream = torch.randn(2, 5, dtype=DOUBLE)
    results = []
    for model in (builtin, manual):
        x_leaf = x.clone().requires_grad_()
        out = model(x_leaf)
        results.append((out, torch.autograd.grad(out, [x_leaf, *model.parameters()], upstream)))
    (out_torch, grads_torch), (out_manual, grads_manual) = results
    assert _relative_error(out_manual, out_torch) <= 1e-10
    for g_manual, g_torch in zip(grads_manual, grads_torch, strict=True):
        assert _relative_error(g_manual, g_torch) <= 1e-10
    # the class token is concatenated, its row selected for the head, the position embedding added
    names = node_names(out_manual) - {"SelectBackward0"}
    assert not names & BUILT_IN_LAYER_NODES, sorted(names & BUILT_IN_LAYER_NODES)
    assert names - MANUALBP_NODES <= ALLOWED_NODES, sorted(names - MANUALBP_NODES - ALLOWED_NODES)


def test_print_of_a_converted_model_names_each_of_manualbps_layers_and_converting_back_restores_torchs():
    torchvision = pytest.importorskip("torchvision")
    model = torchvision.models.resnet18(weights=None, num_classes=10)
    printed = repr(model)
    converted = manualbp.convert(copy.deepcopy(model))
    layers = [m for m in converted.modules() if isinstance(m, mnn.HandDerived)]
    # 20 convolutions, 20 batch norms, 9 ReLUs (a block's is one module applied twice), 2 poolings, the Linear head
    # and the 7 Sequential containers (layer1 to layer4, three downsamples)
    assert len(layers) == sum(isinstance(m, CONVERTED_RESNET_LAYERS) for m in model.modules()) == 59
    assert repr(converted).count("manualbp.") == len(layers)
    assert repr(converted).replace("manualbp.", "") == printed
    assert repr(manualbp.convert(converted, to="torch")) == printed


CONVERTED_RESNET_LAYERS = (
    torch.nn.Conv2d,
    torch.nn.BatchNorm2d,
    torch.nn.ReLU,
    torch.nn.MaxPool2d,
    torch.nn.AdaptiveAvgPool2d,
    torch.nn.Linear,
    torch.nn.Sequential,
)
