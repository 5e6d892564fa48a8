"""What one example asks of the network (manualbp_trainer.pictures, .explain): numbers from the hand-derived
backward equal autograd's, the per-example gradients average to the mini-batch gradient, and the explain command
draws and prints what it claims or fails in one line."""

import copy
import os

import pytest
import torch
from idx import write_idx_dir

from manualbp_trainer import cli, explain, pictures
from manualbp_trainer.model import build_mlp


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("explain")
    idx = write_idx_dir(str(root / "idx"))
    flags = ["--data-dir", idx, "--logdir", str(root / "runs"), "--run-name", "r", "--hidden", "24", "12"]
    assert cli.main([*flags, "--epochs", "1", "--batch-size", "50", "--no-progress"]) == 0
    return str(root / "runs" / "r")


def _autograd_nudges(model, x, target, loss_name):
    """−∂C/∂a of every layer's output, by PyTorch's autograd on torch.nn layers."""
    layers = list(pictures.manualbp.convert(copy.deepcopy(model), to="torch"))
    a, outputs = x.reshape(1, -1), []
    for module in layers:
        a = module(a)
        a.retain_grad()
        outputs.append(a)
    loss = pictures._loss(loss_name, a, target.reshape(1, *target.shape), torch_layers=True)
    loss.backward()
    kept = [i for i, m in enumerate(layers) if i + 1 == len(layers) or isinstance(layers[i + 1], torch.nn.Linear)]
    return [-outputs[i].grad[0] for i in kept]


@pytest.mark.parametrize(
    "loss_name, activation, output_activation", [("cross-entropy", "relu", None), ("mse", "sigmoid", "sigmoid")]
)
def test_each_layers_nudges_are_minus_autograds_gradient(loss_name, activation, output_activation):
    torch.manual_seed(0)
    model = build_mlp([784, 20, 12, 10], activation, output_activation, "manual")
    x = torch.randn(784)
    target = (
        torch.tensor(4) if loss_name == "cross-entropy" else torch.nn.functional.one_hot(torch.tensor(4), 10).float()
    )
    asked = pictures.requests(model, x, target, loss_name)
    expected = _autograd_nudges(model, x, target, loss_name)
    assert [n.shape for n in asked.nudges] == [(20,), (12,), (10,)]
    for got, want in zip(asked.nudges, expected, strict=True):
        torch.testing.assert_close(got, want)
    assert asked.first_weights.shape == (20, 784)
    # the output nudge of cross-entropy is onehot − softmax: up at the target, down everywhere else
    if loss_name == "cross-entropy":
        assert asked.nudges[-1][4] > 0 and (asked.nudges[-1][torch.arange(10) != 4] < 0).all()


def test_per_example_gradients_average_to_the_mini_batch_gradient():
    torch.manual_seed(0)
    model = build_mlp([784, 16, 10], "tanh", None, "manual")
    x, labels = torch.randn(12, 784), torch.randint(0, 10, (12,))
    cosines, max_diff = pictures.per_example_agreement(model, x, labels, "cross-entropy")
    assert cosines.shape == (12,)
    assert ((cosines > -1.0001) & (cosines < 1.0001)).all()
    assert max_diff < 1e-6


def test_the_chain_rule_product_is_manualbps_and_autograds_gradient():
    torch.manual_seed(0)
    model = build_mlp([784, 30, 10], "sigmoid", "sigmoid", "torch")
    target = torch.nn.functional.one_hot(torch.tensor(7), 10).float()
    factors = pictures.chain_rule(model, torch.randn(784), target, "mse")
    assert factors["row"] == 7 and factors["layer"] == 2
    assert factors["product"] == pytest.approx(factors["manualbp"], rel=1e-5)
    assert factors["manualbp"] == pytest.approx(factors["autograd"], rel=1e-5)
    printed = pictures.format_chain_rule(factors)
    assert "∂C/∂w = the product" in printed and "autograd (torch.nn)" in printed


def test_figure_has_the_image_the_outputs_each_hidden_layer_and_the_weights_asked_of():
    torch.manual_seed(0)
    model = build_mlp([784, 20, 12, 10], "relu", None, "manual")
    asked = pictures.requests(model, torch.randn(784), torch.tensor(2), "cross-entropy")
    figure = pictures.figure(torch.randn(784), 2, asked, hardest=4)
    assert len(figure.axes) == 1 + 2 + 2 + 4  # image, outputs and their nudges, two hidden layers, four weights
    assert figure.axes[1].get_title().startswith("what the example asks of each output (target 2")


def test_explain_prints_the_chain_rule_and_draws_the_figure(run_dir, tmp_path, capsys):
    out = str(tmp_path / "explained.png")
    assert explain.main([run_dir, "--label", "3", "--out", out]) == 0
    printed = capsys.readouterr().out
    assert "class 3" in printed and "∂C/∂w = the product" in printed
    with open(out, "rb") as picture:
        assert picture.read(8) == b"\x89PNG\r\n\x1a\n"
    lines = {
        line.rsplit("=", 1)[0].strip(): float(line.rsplit("=", 1)[1].split()[0])
        for line in printed.splitlines()
        if line.startswith("  ")
    }
    assert lines["manualbp's backward"] == pytest.approx(lines["autograd (torch.nn)"], rel=1e-5)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["{missing}"], "no such run directory"),
        (["{empty}"], "it holds no checkpoint.pt; was it made by train.py?"),
        (["{run}", "--index", "100000"], "--index 100000 is out of range: the test set has 200 images"),
        (["{other}"], "holds a checkpoint of another model"),
        (["{corrupt}"], "is corrupt or not a checkpoint"),
        (["{run}", "--out", "{existing}"], "already exists: choose a new file name"),
        (["{run}", "--out", "{missing}/figure.png"], "there is no writable folder"),
        (["{run}", "--row", "10"], "--row 10 is out of range"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(run_dir, tmp_path, capsys, argv, message):
    (tmp_path / "empty").mkdir()
    (tmp_path / "other").mkdir()
    torch.save({"model": {"conv.weight": torch.zeros(2, 3, 3, 3)}, "config": {}}, tmp_path / "other" / "checkpoint.pt")
    (tmp_path / "corrupt").mkdir()
    (tmp_path / "corrupt" / "checkpoint.pt").write_bytes(b"not a checkpoint")
    (tmp_path / "existing.png").write_bytes(b"keep me")
    places = {
        "missing": str(tmp_path / "missing"),
        "empty": str(tmp_path / "empty"),
        "run": run_dir,
        "other": str(tmp_path / "other"),
        "corrupt": str(tmp_path / "corrupt"),
        "existing": str(tmp_path / "existing.png"),
    }
    assert explain.main([arg.format(**places) for arg in argv]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and message in error[0] and "Traceback" not in error[0]
    assert "continued" not in error[0]  # explain reads a run; it does not continue one
    assert (tmp_path / "existing.png").read_bytes() == b"keep me"
    assert os.listdir(run_dir)  # the run is untouched
