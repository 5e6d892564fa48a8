"""manualbp.nn is a drop-in for torch.nn: same init, same state_dict, same results inside real models."""

import copy

import pytest
import torch
import torchvision
from conftest import is_manualbp_node

import manualbp
import manualbp.nn as mnn

LAYER_PAIRS = [
    (mnn.Linear, torch.nn.Linear, (7, 5), {}),
    (mnn.Linear, torch.nn.Linear, (7, 5), {"bias": False}),
    (mnn.Linear, torch.nn.Linear, (7, 5), {"dtype": torch.float64}),
    (mnn.ReLU, torch.nn.ReLU, (), {}),
    (mnn.LeakyReLU, torch.nn.LeakyReLU, (0.2,), {}),
    (mnn.Sigmoid, torch.nn.Sigmoid, (), {}),
    (mnn.Tanh, torch.nn.Tanh, (), {}),
    (mnn.GELU, torch.nn.GELU, (), {"approximate": "tanh"}),
    (mnn.MSELoss, torch.nn.MSELoss, (), {"reduction": "sum"}),
    (mnn.CrossEntropyLoss, torch.nn.CrossEntropyLoss, (), {"weight": torch.rand(5), "label_smoothing": 0.1}),
    (mnn.Softmax, torch.nn.Softmax, (), {"dim": 1}),
    (mnn.LogSoftmax, torch.nn.LogSoftmax, (), {"dim": -1}),
    (mnn.LayerNorm, torch.nn.LayerNorm, ((3, 4),), {}),
    (mnn.LayerNorm, torch.nn.LayerNorm, (4,), {"bias": False}),
    (mnn.LayerNorm, torch.nn.LayerNorm, (4,), {"elementwise_affine": False}),
    (mnn.GroupNorm, torch.nn.GroupNorm, (2, 6), {}),
    (mnn.GroupNorm, torch.nn.GroupNorm, (3, 6), {"bias": False, "dtype": torch.float64}),
    (mnn.GroupNorm, torch.nn.GroupNorm, (3, 6), {"affine": False}),
    (mnn.Embedding, torch.nn.Embedding, (7, 4), {"padding_idx": 0}),
    (mnn.MultiheadAttention, torch.nn.MultiheadAttention, (8, 2), {"batch_first": True}),
    (mnn.MultiheadAttention, torch.nn.MultiheadAttention, (8, 2), {"kdim": 5, "vdim": 3, "bias": False}),
    (mnn.MultiheadAttention, torch.nn.MultiheadAttention, (8, 2), {"add_bias_kv": True, "add_zero_attn": True}),
    (mnn.TransformerEncoderLayer, torch.nn.TransformerEncoderLayer, (8, 2, 16), {"norm_first": True}),
]
IDS = [f"{pair[0].__name__}-{i}" for i, pair in enumerate(LAYER_PAIRS)]


@pytest.mark.parametrize("manual_class, torch_class, args, kwargs", LAYER_PAIRS, ids=IDS)
def test_same_seed_gives_the_same_parameters_repr_and_state_dict_keys(manual_class, torch_class, args, kwargs):
    torch.manual_seed(0)
    manual = manual_class(*args, **kwargs)
    torch.manual_seed(0)
    builtin = torch_class(*args, **kwargs)
    # torch's printout, each of manualbp's layers (inside a container too) named as manualbp's
    assert repr(manual).startswith("manualbp.") and repr(manual).replace("manualbp.", "") == repr(builtin)
    assert list(manual.state_dict()) == list(builtin.state_dict())
    for (name, p), (_, q) in zip(manual.state_dict().items(), builtin.state_dict().items(), strict=True):
        assert torch.equal(p, q), name
        assert p.dtype == q.dtype


@pytest.mark.parametrize("manual_class, torch_class, args, kwargs", LAYER_PAIRS, ids=IDS)
def test_state_dict_round_trips_both_ways(manual_class, torch_class, args, kwargs):
    manual, builtin = manual_class(*args, **kwargs), torch_class(*args, **kwargs)
    with torch.no_grad():
        for p in builtin.parameters():
            p.uniform_(-3, 3)
    manual.load_state_dict(builtin.state_dict())
    back = torch_class(*args, **kwargs)
    back.load_state_dict(manual.state_dict())
    for a, b, c in zip(
        builtin.state_dict().values(), manual.state_dict().values(), back.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b) and torch.equal(b, c)


def test_linear_module_runs_through_manualbp_and_matches_torch(device):
    torch.manual_seed(1)
    manual = mnn.Linear(6, 4, device=device)
    builtin = torch.nn.Linear(6, 4, device=device)
    builtin.load_state_dict(manual.state_dict())
    x = torch.randn(3, 2, 6, device=device)
    upstream = torch.randn(3, 2, 4, device=device)
    out = manual(x)
    assert is_manualbp_node(out.grad_fn.next_functions[0][0], "Linear")  # under the unfolding of the rows
    out.backward(upstream)
    builtin(x).backward(upstream)
    for p, q in zip(manual.parameters(), builtin.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad)


def _converted_pair(model):
    """The model and a deep copy converted to manualbp, with a count of the converted modules."""
    converted = manualbp.convert(copy.deepcopy(model))
    count = sum(type(m).__module__.startswith("manualbp.nn.") for m in converted.modules())
    return model, converted, count


def _outputs_and_grads(model, x, upstream):
    x = x.clone().requires_grad_()
    out = model(x)
    grads = torch.autograd.grad(out, [x, *model.parameters()], upstream)
    return out, grads


def _assert_same_outputs_and_grads(original, converted, x):
    torch.manual_seed(0)
    upstream = torch.randn_like(original(x))
    out_o, grads_o = _outputs_and_grads(original, x, upstream)
    out_c, grads_c = _outputs_and_grads(converted, x, upstream)
    torch.testing.assert_close(out_c, out_o)
    assert len(grads_c) == len(grads_o)
    for g_c, g_o in zip(grads_c, grads_o, strict=True):
        torch.testing.assert_close(g_c, g_o)


def test_convert_transformer_encoder_layer_gives_the_same_outputs_and_gradients():
    torch.manual_seed(0)
    layer = torch.nn.TransformerEncoderLayer(
        d_model=16, nhead=2, dim_feedforward=32, dropout=0.0, activation=torch.nn.GELU(), batch_first=True
    )
    original, converted, count = _converted_pair(layer)
    # the layer, its attention, two layer norms, linear1, linear2, the GELU and the three Dropouts; attention's
    # out_proj is a subclass, left alone (manualbp's MultiheadAttention reads its parameters)
    assert count == 10
    assert type(converted.linear1) is mnn.Linear and type(converted.activation) is mnn.GELU
    assert type(converted.self_attn) is mnn.MultiheadAttention and type(converted.norm1) is mnn.LayerNorm
    _assert_same_outputs_and_grads(original, converted, torch.randn(4, 5, 16))


def test_convert_torchvision_vit_gives_the_same_outputs_and_gradients():
    torch.manual_seed(0)
    vit = torchvision.models.VisionTransformer(
        image_size=16, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32, num_classes=5
    )
    original, converted, count = _converted_pair(vit)
    # the patch embedding's Conv2d and the encoder's Dropout; each block's two layer norms, attention, its MLP
    # (Linear, GELU, Linear, two Dropouts) and its Dropout; the encoder's final layer norm; the head; the encoder's
    # and the head's Sequential
    assert count == 2 + 2 * 9 + 1 + 1 + 2
    _assert_same_outputs_and_grads(original, converted, torch.randn(2, 3, 16, 16))


@pytest.mark.parametrize("activation", [torch.nn.ReLU, torch.nn.LeakyReLU])
def test_convert_torchvision_mlp_with_inplace_activations_gives_the_same_outputs_and_gradients(activation):
    torch.manual_seed(0)
    mlp = torchvision.ops.MLP(8, [16, 16, 4], activation_layer=activation, inplace=True, dropout=0.0)
    original, converted, count = _converted_pair(mlp)
    assert count == 5 + 3  # and a Dropout after each layer
    _assert_same_outputs_and_grads(original, converted, torch.randn(6, 8))


def test_convert_refuses_an_uninitialised_lazy_layer_and_converts_it_once_it_has_run():
    model = torch.nn.Sequential(torch.nn.LazyLinear(4), torch.nn.ReLU())
    message = r"^convert: LazyLinear '0' is not initialised yet, so it could not be converted; run one forward pass"
    with pytest.raises(ValueError, match=message):
        manualbp.convert(model)
    assert [type(m) for m in model] == [torch.nn.LazyLinear, torch.nn.ReLU]  # refused before anything changed
    model(torch.randn(2, 3))  # now a torch.nn.Linear(3, 4)
    assert [type(m) for m in manualbp.convert(model)] == [mnn.Linear, mnn.ReLU]


def test_convert_keeps_the_very_same_parameters_and_converts_back():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Sequential(torch.nn.Linear(4, 2)))
    parameters = list(model.parameters())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    assert manualbp.convert(model) is model
    assert [type(m) for m in model.modules()] == [mnn.Sequential, mnn.Linear, mnn.Tanh, mnn.Sequential, mnn.Linear]
    assert all(p is q for p, q in zip(model.parameters(), parameters, strict=True))
    model(torch.randn(5, 3)).square().sum().backward()
    optimizer.step()  # the optimiser built before the conversion still drives the same parameters
    manualbp.convert(model, to="torch")
    assert [type(m) for m in model.modules()] == [
        torch.nn.Sequential,
        torch.nn.Linear,
        torch.nn.Tanh,
        torch.nn.Sequential,
        torch.nn.Linear,
    ]
    assert all(p is q for p, q in zip(model.parameters(), parameters, strict=True))


def test_convert_converts_a_bare_layer_and_rejects_bad_arguments():
    layer = torch.nn.Linear(2, 2)
    assert type(manualbp.convert(layer)) is mnn.Linear
    with pytest.raises(ValueError, match="to must be 'manualbp' or 'torch'"):
        manualbp.convert(layer, to="jax")
    with pytest.raises(TypeError, match="expected a torch.nn.Module"):
        manualbp.convert("not a model")
