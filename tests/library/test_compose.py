"""manualbp's Functions compose with torch.compile, torch.func and autocast like built-in layers."""

import copy

import pytest
import torch
from torch.func import functional_call, grad, vmap

import manualbp
import manualbp.nn as mnn


def _mlp(activation=mnn.GELU):
    torch.manual_seed(0)
    return torch.nn.Sequential(mnn.Linear(10, 16), activation(), mnn.Linear(16, 16), mnn.Tanh(), mnn.Linear(16, 3))


@pytest.mark.parametrize("loss_fn", [mnn.CrossEntropyLoss(), mnn.MSELoss()], ids=["cross_entropy", "mse"])
def test_torch_compile_fullgraph_matches_eager_forward_and_gradients(loss_fn):
    model = _mlp()
    x, target = torch.randn(8, 10), torch.randint(0, 3, (8,))
    if isinstance(loss_fn, mnn.MSELoss):
        target = torch.nn.functional.one_hot(target, 3).float()

    def step(model, x, target):
        loss = loss_fn(model(x), target)
        return loss, torch.autograd.grad(loss, list(model.parameters()))

    eager_loss, eager_grads = step(model, x, target)
    compiled = torch.compile(lambda x, target: loss_fn(model(x), target), fullgraph=True)
    loss = compiled(x, target)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    torch.testing.assert_close(loss, eager_loss)
    for g, e in zip(grads, eager_grads, strict=True):
        torch.testing.assert_close(g, e)


def test_vmap_of_grad_gives_the_builtin_models_per_sample_gradients():
    manual = _mlp(activation=mnn.ReLU)
    builtin = manualbp.convert(copy.deepcopy(manual), to="torch")
    x, target = torch.randn(6, 10), torch.randint(0, 3, (6,))

    def per_sample_grads(model, loss_fn):
        params = {name: p.detach() for name, p in model.named_parameters()}

        def loss_of_one(params, x, target):
            logits = functional_call(model, params, (x.unsqueeze(0),))
            return loss_fn(logits, target.unsqueeze(0))

        return vmap(grad(loss_of_one), in_dims=(None, 0, 0))(params, x, target)

    manual_grads = per_sample_grads(manual, manualbp.functional.cross_entropy)
    builtin_grads = per_sample_grads(builtin, torch.nn.functional.cross_entropy)
    for name in manual_grads:
        assert manual_grads[name].shape == (6, *dict(manual.named_parameters())[name].shape)
        torch.testing.assert_close(manual_grads[name], builtin_grads[name])
    # and per-sample gradients average to the batch gradient
    loss = manualbp.functional.cross_entropy(manual(x), target)
    batch_grads = torch.autograd.grad(loss, list(manual.parameters()))
    for (name, _), batch_grad in zip(manual.named_parameters(), batch_grads, strict=True):
        torch.testing.assert_close(manual_grads[name].mean(0), batch_grad)


def test_autocast_bfloat16_on_cpu_runs_and_gradients_keep_the_parameters_dtypes():
    manual = _mlp()
    builtin = manualbp.convert(copy.deepcopy(manual), to="torch")
    x, target = torch.randn(8, 10), torch.randint(0, 3, (8,))
    results = []
    for model, loss_fn in ((manual, mnn.CrossEntropyLoss()), (builtin, torch.nn.CrossEntropyLoss())):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model(x)
            loss = loss_fn(logits, target)
        assert logits.dtype == torch.bfloat16 and loss.dtype == torch.float32
        loss.backward()
        assert all(p.grad.dtype == p.dtype == torch.float32 for p in model.parameters())
        results.append((loss.detach(), [p.grad for p in model.parameters()]))
    (loss_m, grads_m), (loss_b, grads_b) = results
    torch.testing.assert_close(loss_m, loss_b, rtol=1e-2, atol=1e-2)
    for g_m, g_b in zip(grads_m, grads_b, strict=True):
        torch.testing.assert_close(g_m, g_b, rtol=2e-2, atol=2e-3)


def _cnn():
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1, bias=False),
        torch.nn.BatchNorm2d(8),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(8, 8, 3, padding=1),
        torch.nn.GroupNorm(2, 8),
        torch.nn.GELU(),
        torch.nn.AvgPool2d(2),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(8, 16),
        torch.nn.LayerNorm(16),
        torch.nn.Tanh(),
        torch.nn.Linear(16, 5),
        torch.nn.LogSoftmax(-1),
    )


def _transformer():
    return torch.nn.TransformerEncoderLayer(16, 4, 32, dropout=0.0, batch_first=True)


@pytest.mark.parametrize(
    ("make", "shape"), [(_cnn, (4, 3, 8, 8)), (_transformer, (2, 5, 16))], ids=["cnn", "transformer"]
)
def test_converted_cnn_and_transformer_under_cpu_autocast_give_every_layer_torchs_dtype_and_close_gradients(
    make, shape
):
    # the CPU's autocast runs convolutions and linear maps in bfloat16 and leaves normalisation and softmax in
    # their input's dtype (CUDA's runs those two in float32): every layer's output must have torch's dtype
    torch.manual_seed(0)
    builtin = make()
    manual = manualbp.convert(copy.deepcopy(builtin))
    x = torch.randn(*shape)
    results = []
    for model in (builtin, manual):
        dtypes = []
        for name, module in model.named_modules():
            if name and not list(module.children()):
                module.register_forward_hook(
                    lambda m, i, output, name=name, dtypes=dtypes: dtypes.append((name, output.dtype))
                )
        with torch.autocast("cpu", dtype=torch.bfloat16):
            output = model(x)
        output.float().square().sum().backward()
        assert all(p.grad.dtype == p.dtype == torch.float32 for p in model.parameters())
        results.append((dtypes, output, [p.grad for p in model.parameters()]))
    (dtypes_b, output_b, grads_b), (dtypes_m, output_m, grads_m) = results
    assert dtypes_m == dtypes_b and output_m.dtype == output_b.dtype
    assert ("linear2" if make is _transformer else "14", torch.bfloat16) in dtypes_b  # autocast was on
    torch.testing.assert_close(output_m.float(), output_b.float(), rtol=3e-2, atol=3e-2)
    for g_m, g_b in zip(grads_m, grads_b, strict=True):
        torch.testing.assert_close(g_m, g_b, rtol=5e-2, atol=5e-2 * g_b.abs().max().item())
