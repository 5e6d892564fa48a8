"""train.py --model cnn end to end, on small IDX files the tests write themselves."""

import os

import pytest
import torch
from conftest import StopAt
from idx import write_idx_dir
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData
from test_train import events, scalar_values

from manualbp_trainer import cli, explain, launch
from manualbp_trainer.model import MODELS
from manualbp_trainer.networks import AugmentedImages, build_cnn, cnn_parameter_count

CNN = ["--model", "cnn", "--epochs", "2", "--batch-size", "50", "--log-every", "2", "--no-progress", "--device", "cpu"]


@pytest.fixture(scope="module")
def idx_dir(tmp_path_factory):
    # less noise than test_train's files: pooled 3×3 features need cleaner templates than a Linear layer does; and
    # templates of 4×4 squares, which the CNN's random shifts of up to 2 pixels leave recognisable (pixel-sized
    # noise templates shifted by 2 pixels are other patterns: the loss did not fall in 16 steps)
    return write_idx_dir(str(tmp_path_factory.mktemp("idx")), noise=60, block=4)


def run(tmp_path, idx_dir, *flags, name="run", stop=None):
    argv = ["--data-dir", idx_dir, "--logdir", str(tmp_path / "runs"), "--run-name", name, *CNN, *flags]
    return cli.main(argv, stop=stop), str(tmp_path / "runs" / name)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, idx_dir):
    code, run_dir = run(tmp_path_factory.mktemp("trained"), idx_dir)
    assert code == 0
    return run_dir


def test_cnn_run_trains_and_its_loss_falls(trained):
    accumulator = events(trained)
    train_loss, test_loss = scalar_values(accumulator, "loss/train"), scalar_values(accumulator, "loss/test")
    assert [event.step for event in accumulator.Scalars("loss/train")][-1] == 16  # 400 examples / 50, 2 epochs
    assert train_loss[-1] < 0.8 * train_loss[0]  # epoch 2's running mean against the first two steps'
    assert len(test_loss) == 2 and test_loss[1] < test_loss[0] < 2.35  # ln 10 ≈ 2.303: chance
    assert scalar_values(accumulator, "accuracy/test")[-1] >= 0.2  # chance is 0.1


def test_event_file_holds_the_first_conv_filters_and_conv_norms_but_no_mlp_pictures(trained):
    accumulator = events(trained)
    tags = accumulator.Tags()
    for kind in ("weight", "weight.grad"):
        for layer in ("conv0", "conv1", "linear0", "linear1"):
            assert f"norms/{layer}.{kind}" in tags["scalars"], (kind, layer)
    for tag in (
        "weights/conv0.weight",
        "weights/conv1.weight.grad",
        "weights/linear0.bias",
        "weights/linear1.weight.grad",
    ):
        assert tag in tags["histograms"], tag
    assert "weights/conv0.bias" not in tags["histograms"]  # the convolutions have none: BatchNorm's β is the bias
    filters = accumulator.Images("weights/first_conv_filters")
    assert [image.step for image in filters] == [8, 16]
    # 32 filters of 3×3 drawn 16 times larger (48×48), 8 to a row with 2-pixel padding: 8 · 50 + 2 by 4 · 50 + 2
    # pixels, about a TensorBoard card's width
    assert (filters[-1].width, filters[-1].height) == (402, 202)
    assert "misclassified/test" in tags["images"]
    assert not [tag for tag in tags["images"] if tag.startswith("requests/") or tag == "weights/first_layer"]
    assert max(scalar_values(accumulator, "manualbp_vs_autograd/max_rel_diff")) < 1e-10  # in float64


def test_config_and_hparams_record_the_cnn_and_its_defaults(trained):
    accumulator = events(trained)
    text = accumulator.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert '"model": "cnn"' in text and '"pictures": false' in text
    assert '"hidden"' not in text and '"activation"' not in text and '"init"' not in text  # the MLP's, not its
    start = HParamsPluginData.FromString(
        accumulator.summary_metadata["_hparams_/session_start_info"].plugin_data.content
    )
    values = {name: v.string_value for name, v in start.session_start_info.hparams.items()}
    assert values["model"] == "cnn" and {"hidden", "activation", "output_activation", "init"}.isdisjoint(values)
    assert (values["lr"], values["epochs"], values["weight_decay"]) == ("0.05", "2", "0.0005")  # as given


def test_cnn_defaults_are_its_own_and_flags_override_them():
    config, _ = cli.config_from_args(cli.build_parser().parse_args(["--model", "cnn"]))
    assert (config.model, config.epochs, config.lr, config.pictures) == ("cnn", 20, 0.05, False)
    config, _ = cli.config_from_args(cli.build_parser().parse_args(["--model", "cnn", "--epochs", "3"]))
    assert config.epochs == 3


def test_manual_and_torch_layers_give_the_same_cnn_losses(tmp_path, idx_dir, trained):
    _, torch_dir = run(tmp_path, idx_dir, "--layers", "torch", name="torch")
    manual, builtin = events(trained), events(torch_dir)  # on the CPU both draw the same dropout masks
    # float32 rounding, grown through 16 steps of SGD: the convolutions' products sum in an order that depends on
    # the thread count, and the two runs' losses differed by 3e-7 relative at 2 threads, 6.6e-5 at 1 or 4 (an AMD
    # EPYC) and 2.4e-4 on a CI machine; the compiled run is held to the same tolerance
    for tag in ("loss/train", "loss/test", "accuracy/test"):
        torch.testing.assert_close(scalar_values(manual, tag), scalar_values(builtin, tag), rtol=1e-3, atol=1e-4)


@pytest.mark.slow
def test_compiled_cnn_run_trains_like_the_eager_one(tmp_path, idx_dir, trained):
    code, compiled_dir = run(tmp_path, idx_dir, "--compile", name="compiled")
    assert code == 0
    eager, compiled = events(trained), events(compiled_dir)
    for tag in ("loss/train", "loss/test", "accuracy/test"):
        torch.testing.assert_close(scalar_values(compiled, tag), scalar_values(eager, tag), rtol=1e-3, atol=1e-4)


def test_cnn_checkpoint_loads_into_a_plain_torch_nn_sequential(trained, idx_dir):
    state = torch.load(os.path.join(trained, "checkpoint.pt"), weights_only=True)
    nn = torch.nn
    model = nn.Sequential(
        nn.Unflatten(1, (1, 28, 28)),
        nn.Conv2d(1, 32, 3, padding=1, bias=False),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1, bias=False),
        nn.BatchNorm2d(64),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(64, 128, 3, padding=1, bias=False),
        nn.BatchNorm2d(128),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Dropout(0.25),
        nn.Linear(128 * 3 * 3, 128),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Linear(128, 10),
    )
    model.load_state_dict(state["model"])  # strict: the same keys and shapes, BatchNorm's running statistics too
    assert int(state["model"]["2.num_batches_tracked"]) == 16
    manual = build_cnn()
    manual.load_state_dict(state["model"])
    x = torch.randn(5, 784, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(model.eval()(x), manual.eval()(x), rtol=1e-5, atol=1e-5)


def test_cnn_parameter_count_is_counted_without_building_the_model():
    # 3·3·32 + 2·32 (BatchNorm's γ, β) + 3·3·32·64 + 2·64 + 3·3·64·128 + 2·128 + 1152·128 + 128 + 128·10 + 10
    assert cnn_parameter_count() == 241_770 == sum(p.numel() for p in build_cnn().parameters())
    assert (
        MODELS["cnn"].parameter_count(cli.config_from_args(cli.build_parser().parse_args(["--model", "cnn"]))[0])
        == 241_770
    )


@pytest.mark.slow  # two CNN runs and a resumed one per case: seconds each
@pytest.mark.parametrize("stop_at", [5, 8], ids=["mid-epoch", "at-epoch-boundary"])
def test_interrupted_then_resumed_cnn_run_ends_bit_identical_to_an_uninterrupted_one(tmp_path, idx_dir, stop_at):
    """BatchNorm's running statistics are in the model's state_dict; Dropout's masks come from torch's global
    generator, whose state the checkpoint keeps (without it, the resumed steps would draw other masks)."""
    assert run(tmp_path, idx_dir, name="whole")[0] == 0
    code, interrupted = run(tmp_path, idx_dir, name="interrupted", stop=StopAt(stop_at))
    assert code == 130
    saved = torch.load(os.path.join(interrupted, "checkpoint.pt"), weights_only=True)
    assert (saved["epoch"], saved["step"]) == divmod(stop_at, 8)
    torch.manual_seed(12345)  # whatever the caller's generator holds, the resumed run draws the saved masks
    assert cli.main(["--resume", interrupted, "--no-progress"]) == 0
    whole = torch.load(os.path.join(tmp_path / "runs" / "whole", "checkpoint.pt"), weights_only=True)
    resumed = torch.load(os.path.join(interrupted, "checkpoint.pt"), weights_only=True)
    assert whole["model"].keys() == resumed["model"].keys()
    for key in whole["model"]:  # weights, and BatchNorm's running mean, variance and count
        assert torch.equal(whole["model"][key], resumed["model"][key]), key
    assert torch.equal(whole["torch_rng"]["cpu"], resumed["torch_rng"]["cpu"])
    assert resumed["global_step"] == whole["global_step"] == 16


def test_a_run_leaves_the_callers_random_stream_as_it_was(tmp_path, idx_dir):
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    assert run(tmp_path, idx_dir, "--epochs", "1")[0] == 0
    assert torch.equal(torch.rand(3), expected)


def fail(capsys, argv):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    return exit_info.value.code, capsys.readouterr().err.strip().splitlines()


MLP_FLAGS = "and --model cnn has layers of its own (see --help): drop"


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--hidden", "32"], f"--hidden describes the MLP, {MLP_FLAGS} it, or train --model mlp"),
        (["--activation", "tanh"], f"--activation describes the MLP, {MLP_FLAGS} it, or train --model mlp"),
        (
            ["--output-activation", "sigmoid"],
            f"--output-activation describes the MLP, {MLP_FLAGS} it, or train --model mlp",
        ),
        (["--init", "normal"], f"--init describes the MLP, {MLP_FLAGS} it, or train --model mlp"),
        (["--preset", "nielsen"], f"--preset nielsen describes the MLP, {MLP_FLAGS} it, or train --model mlp"),
        (
            ["--hidden", "32", "--init", "normal"],
            f"--hidden, --init describe the MLP, {MLP_FLAGS} them, or train --model mlp",
        ),
        (["--pictures"], "--pictures draws an MLP's neurons, and --model cnn has none to draw: drop --pictures"),
        (
            ["--cuda-graphs"],
            "--cuda-graphs is not supported with --model cnn: replaying BatchNorm's running statistics and "
            "Dropout's random masks from a captured graph is untested: train it without --cuda-graphs",
        ),
    ],
)
def test_flags_the_cnn_cannot_use_are_one_line_errors_with_exit_2_and_no_run(capsys, tmp_path, flags, message):
    code, lines = fail(capsys, ["--model", "cnn", "--device", "cpu", *flags, "--logdir", str(tmp_path)])
    assert code == 2 and lines == [f"train.py: error: {message}"]
    assert os.listdir(tmp_path) == []


def test_cnn_under_torchrun_is_a_one_line_error(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")  # what torchrun sets; refused before any process group is joined
    code, lines = fail(capsys, ["--model", "cnn", "--device", "cpu", "--logdir", str(tmp_path)])
    assert code == 2 and len(lines) == 1
    assert lines[0].startswith("train.py: error: --model cnn runs on one process: under torchrun each process's")
    assert os.listdir(tmp_path) == []


def test_the_memory_check_counts_the_cnns_parameters(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(launch, "_free_host_memory", lambda: 1_000_000)
    code, lines = fail(capsys, ["--model", "cnn", "--device", "cpu", "--logdir", str(tmp_path)])
    # 241,770 float32 weights, their gradients and momentum: 3 · 4 · 241,770 = 2,901,240 bytes
    assert code == 2 and lines == [
        "train.py: error: --model cnn: the model's weights, gradients and momentum need 2.9 MB but cpu has 1.0 MB "
        "free: train on another device"
    ]
    assert os.listdir(tmp_path) == []


def test_resuming_a_cnn_run_with_pictures_is_a_one_line_error(capsys, tmp_path, idx_dir):
    code, stopped = run(tmp_path, idx_dir, name="stopped", stop=StopAt(3))
    assert code == 130
    capsys.readouterr()
    code, lines = fail(capsys, ["--resume", stopped, "--pictures"])
    assert code == 2 and lines == [
        "train.py: error: --pictures draws an MLP's neurons, and --model cnn has none to draw: drop --pictures"
    ]


def test_explain_refuses_a_cnn_run_in_one_line(capsys, trained):
    assert explain.main([trained]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"python -m manualbp_trainer.explain: error: {trained} is a --model cnn run: explain draws an MLP's neurons "
        "and follows the chain rule through its Linear layers; choose a run of --model mlp"
    ]


def test_shifted_images_are_each_a_crop_of_the_edge_padded_image_within_shift_pixels():
    images = torch.randn(200, 784, generator=torch.Generator().manual_seed(0))
    shifter = AugmentedImages(side=28, shift=2, flip=False)
    torch.manual_seed(0)
    shifted = shifter(images)
    assert shifted.shape == (200, 1, 28, 28)
    padded = torch.nn.functional.pad(images.reshape(200, 1, 28, 28), (2, 2, 2, 2), mode="replicate")
    offsets = set()
    for n in range(200):  # the one crop of the padded image that each shifted image is, bit for bit
        (found,) = [
            (dy, dx)
            for dy in range(-2, 3)
            for dx in range(-2, 3)
            if torch.equal(shifted[n, 0], padded[n, 0, 2 + dy : 30 + dy, 2 + dx : 30 + dx])
        ]
        offsets.add(found)
    assert len(offsets) == 25  # every shift from -2 to 2 along both axes is drawn, (0, 0) among them
    torch.manual_seed(0)
    assert torch.equal(shifter(images), shifted)  # drawn from torch's generator: the seed repeats them
    assert torch.equal(shifter.eval()(images), images.reshape(200, 1, 28, 28))  # evaluation: no shift


def test_mirrored_images_are_each_the_image_or_its_mirror_and_both_are_drawn():
    images = torch.randn(200, 784, generator=torch.Generator().manual_seed(0))
    mirror = AugmentedImages(side=28)  # the CNN's default: mirrors, no shifts
    torch.manual_seed(0)
    augmented = mirror(images)
    square = images.reshape(200, 1, 28, 28)
    same = [torch.equal(augmented[n], square[n]) for n in range(200)]
    flipped = [torch.equal(augmented[n], square[n].flip(-1)) for n in range(200)]
    assert all(a != b for a, b in zip(same, flipped, strict=True))  # each image exactly one of the two
    assert 70 < sum(flipped) < 130  # about half mirrored (binomial, 200 draws of ½: 100 ± 7)
    torch.manual_seed(0)
    assert torch.equal(mirror(images), augmented)  # drawn from torch's generator: the seed repeats them
    assert torch.equal(mirror.eval()(images), square)  # evaluation: as they are
