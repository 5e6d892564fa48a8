"""What one example asks of the network (manualbp_trainer.pictures, .explain): numbers from the hand-derived
backward equal autograd's, the per-example gradients average to the mini-batch gradient, and the explain command
draws and prints what it claims or fails in one line."""

import copy
import os

import matplotlib.text
import pytest
import torch
from idx import write_idx_dir

from manualbp_trainer import cli, explain, pictures, summaries
from manualbp_trainer.networks import build_mlp


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
    assert figure.axes[1].get_title().startswith("outputs (grey), nudges; C = ")
    assert (figure.axes[1].get_ylabel(), figure.axes[2].get_ylabel()) == ("output aᴸ", "nudge −∂C/∂aᴸ")


@pytest.mark.parametrize("names", [None, pictures.class_names("fashion-mnist")], ids=["digits", "garments"])
def test_asks_figure_is_a_cards_width_with_9_point_type_or_larger_and_nothing_outside_it(names):
    torch.manual_seed(0)
    model = build_mlp([784, 512, 256, 10], "relu", None, "manual")
    asked = pictures.requests(model, torch.randn(784), torch.tensor(6), "cross-entropy")
    figure = pictures.figure(torch.randn(784), 6, asked, names)
    figure.canvas.draw()
    width, height = figure.canvas.get_width_height()
    assert width == 400 and 400 <= height <= 500  # TensorBoard's cards are 335 px wide or more
    texts = [t for t in figure.findobj(matplotlib.text.Text) if t.get_text() and t.get_visible()]
    assert min(t.get_fontsize() for t in texts) >= 9  # 10 px at 80 dpi, 8 px or more on a 335 px card
    assert figure.axes[0].get_title() == (names or "0123456789")[6]  # "Shirt" (or "6"), as the data set names it
    # everything drawn (every title, tick label and axis label, the right axis's too) lies inside the picture
    drawn = figure.get_tightbbox(figure.canvas.get_renderer())
    assert drawn.x0 >= 0 and drawn.y0 >= 0 and drawn.x1 <= 5.0 and drawn.y1 <= height / 80  # inches, at 80 dpi


def test_the_chain_rule_printout_puts_every_equals_sign_in_one_column():
    factors = {"layer": 3, "row": 4, "column": 123, "dC/da": -0.5, "f'(z)": 1.0, "a_previous": 2.0}
    factors.update(product=-1.0, manualbp=-1.0, autograd=-1.0, activation="none (logits)")
    lines = pictures.format_chain_rule(factors).splitlines()[1:]
    assert [line.split(" = ")[0].strip() for line in lines][:3] == ["∂C/∂a³_4", "f′(z³_4)", "a²_123"]
    assert {line.rindex(" = ") for line in lines} == {len("  ∂C/∂w = the product")}  # the longest name's end


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
    assert len({line.rindex(" = ") for line in printed.splitlines() if line.startswith("  ")}) == 1  # one column


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


def test_misclassified_captions_name_the_classes_and_fit_their_tiles():
    garments = pictures.class_names("fashion-mnist")
    assert summaries.misclassified_caption(6, 0, garments) == ("Shirt", "as T-shirt/top")
    assert summaries.misclassified_caption(4, 9, [str(c) for c in range(10)]) == ("4", "as 9")
    font = summaries.ImageFont.load_default(size=summaries.CAPTION_SIZE)
    widest = max(
        font.getlength(line)
        for t in range(10)
        for p in range(10)
        for line in summaries.misclassified_caption(t, p, garments)
    )
    assert widest <= summaries.TILE_WIDTH - 2  # "as T-shirt/top", the widest, 85 px of the tile's 100
    images, labels = torch.randn(40, 784), torch.arange(40) % 10
    grid = summaries.misclassified_grid(images, labels, (labels + 1) % 10, garments)
    assert grid.shape == (3, 4 * (84 + 2 * 17 + 2 + 2) + 2, 4 * (100 + 2) + 2)  # 16 tiles, four to a row: 410 px
    assert summaries.misclassified_grid(images, labels, labels, garments) is None  # none wrong, no picture
