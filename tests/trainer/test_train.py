"""train.py end to end on small IDX files the tests write themselves."""

import math
import os
import re
import subprocess
import sys

import pytest
import torch
from conftest import StopAt
from idx import write_idx_dir
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData
from tqdm import tqdm

import manualbp.nn
from manualbp_trainer import cli, config, data, launch, logbook, loop

SMALL = ["--hidden", "32", "--epochs", "2", "--batch-size", "50", "--log-every", "2", "--no-progress", "--no-pictures"]
SMALL += ["--device", "cpu"]  # "auto" would take a GPU where there is one: tests/trainer/test_cuda.py trains there


@pytest.fixture(scope="module")
def idx_dir(tmp_path_factory):
    return write_idx_dir(str(tmp_path_factory.mktemp("idx")))


def run(tmp_path, idx_dir, *flags, name="run", stop=None):
    argv = ["--data-dir", idx_dir, "--logdir", str(tmp_path / "runs"), "--run-name", name, *SMALL, *flags]
    code = cli.main(argv, stop=stop)
    return code, str(tmp_path / "runs" / name)


def events(run_dir):
    accumulator = EventAccumulator(run_dir, size_guidance={"scalars": 0, "histograms": 0, "images": 0, "tensors": 0})
    accumulator.Reload()
    return accumulator


def scalar_values(accumulator, tag):
    return [event.value for event in accumulator.Scalars(tag)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, idx_dir):
    tmp_path = tmp_path_factory.mktemp("trained")
    code, run_dir = run(tmp_path, idx_dir, "--pictures")
    assert code == 0
    return run_dir


def test_run_trains_and_reaches_high_test_accuracy(trained):
    accuracy = scalar_values(events(trained), "accuracy/test")
    assert len(accuracy) == 2  # evaluated every epoch
    assert accuracy[-1] >= 0.85


def test_event_file_holds_every_scalar_histogram_image_and_text(trained):
    accumulator = events(trained)
    tags = accumulator.Tags()
    for tag in [
        "loss/train",
        "accuracy/train",
        "loss/test",
        "accuracy/test",
        "lr",
        "speed/examples_per_second",
        "norms/linear0.weight",
        "norms/linear1.weight",
        "norms/linear0.weight.grad",
        "norms/linear1.weight.grad",
        "manualbp_vs_autograd/max_abs_diff",
        "manualbp_vs_autograd/max_rel_diff",
    ]:
        assert tag in tags["scalars"], tag
    for tag in [
        "weights/linear0.weight",
        "weights/linear1.bias",
        "weights/linear0.weight.grad",
        "weights/linear1.bias.grad",
    ]:
        assert tag in tags["histograms"], tag
    assert {"weights/first_layer", "misclassified/test"} <= set(tags["images"])
    tiles = accumulator.Images("weights/first_layer")[-1]
    assert tiles.width > 28 * 5 and tiles.height > 28 * 5  # 32 hidden neurons as 28×28 tiles, 6 to a row
    assert "config/text_summary" in tags["tensors"]
    # what one test image per class asks of the network, each epoch; how single examples agree with their batch
    assert {f"requests/{label}" for label in range(10)} <= set(tags["images"])
    assert [image.step for image in accumulator.Images("requests/3")] == [8, 16]
    assert "per_example/cosine_with_batch" in tags["histograms"]
    assert max(scalar_values(accumulator, "per_example/mean_minus_batch_max_diff")) < 1e-6
    for accuracy in ("accuracy/train", "accuracy/test"):
        assert all(0.0 <= v <= 1.0 for v in scalar_values(accumulator, accuracy))
    assert max(scalar_values(accumulator, "manualbp_vs_autograd/max_rel_diff")) < 1e-10  # in float64
    for event in accumulator.Scalars("lr"):  # the cosine schedule over 16 steps, as set after each step
        assert event.value == pytest.approx(
            0.025 * (1 + math.cos(math.pi * event.step / 16)), rel=1e-6
        )  # float32 in the file
    steps = [e.step for e in accumulator.Scalars("loss/train")]
    assert steps == sorted(steps) and steps[-1] == 2 * 8  # 400 examples / 50 per batch, 2 epochs


def test_hparams_table_lists_what_tells_runs_apart_beside_the_runs_own_metrics(trained):
    accumulator = events(trained)
    assert not [tag for tag in accumulator.Tags()["scalars"] if tag.startswith("hparam/")]  # no one-point charts
    # no experiment summary: TensorBoard makes the table from the runs' rows, the columns that differ first
    assert "_hparams_/experiment" not in accumulator.summary_metadata
    assert set(logbook.METRICS) <= set(accumulator.Tags()["scalars"])  # the table shows their last values
    assert sorted(accumulator.Tags()["scalars"])[:4] == list(logbook.METRICS)  # and shows the first five metrics
    start = HParamsPluginData.FromString(
        accumulator.summary_metadata["_hparams_/session_start_info"].plugin_data.content
    )
    values = {name: value.string_value for name, value in start.session_start_info.hparams.items()}
    assert set(values) == set(logbook.HPARAMS)
    assert {"compile", "data_dir", "data_root", "device"}.isdisjoint(values)
    assert (values["layers"], values["hidden"], values["batch_size"], values["dataset"]) == (
        "manual",
        "32",
        "50",
        "idx",
    )
    assert (values["lr"], values["nesterov"], values["output_activation"]) == ("0.05", "on", "none")


def test_config_records_the_device_used_and_the_data_set_read(trained):
    text = events(trained).Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert '"device": "cpu"' in text and '"dataset": "idx"' in text  # synthetic IDX files: neither MNIST


def test_help_states_each_default_once_and_as_configured():
    help_text = cli.build_parser().format_help()
    options, current = [], None
    for line in help_text.splitlines():  # an option's entry: its line, and the indented lines that continue it
        if line.startswith("  -"):
            current = [line.strip()]
            options.append(current)
        elif line.startswith("      ") and current is not None:
            current.append(line.strip())
        else:
            current = None
    entries = {entry[0].split()[0].rstrip(","): " ".join(entry) for entry in options}
    assert len(entries) > 25
    for entry in entries.values():
        assert entry.count("(default:") <= 1 and entry.count("default: ") == entry.count("(default:"), entry
        assert "(default: None)" not in entry, entry
    config = loop.Config()
    for option, expected in [
        ("--lr", config.lr),
        ("--epochs", config.epochs),
        ("--batch-size", config.batch_size),
        ("--hidden", "512 256"),
        ("--nesterov", "on"),
        ("--logdir", "runs"),
    ]:
        assert f"(default: {expected})" in entries[option], entries[option]


def test_every_flag_is_described():
    for action in cli.build_parser()._actions:
        described = re.sub(r"\(default: [^)]*\)", "", action.help or "").strip()
        assert len(described) >= 10, (action.option_strings, action.help)


@pytest.mark.slow  # a child Python: a second or two
def test_help_imports_none_of_torch_torchvision_tensorboard_or_matplotlib():
    code = (
        "import runpy, sys\nsys.argv = ['train.py', '--help']\ntry:\n    runpy.run_path('train.py', "
        "run_name='__main__')\nexcept SystemExit:\n    pass\n"
        "heavy = {'torch', 'manualbp', 'torchvision', 'tensorboard', 'matplotlib'}\n"
        "print(sorted({name.split('.')[0] for name in sys.modules} & heavy))"
    )
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "usage: train.py" in result.stdout and result.stdout.splitlines()[-1] == "[]"


def test_the_flags_name_the_data_sets_there_are():
    assert tuple(data.DATASETS) == config.DATASETS


def test_the_flags_name_the_activations_there_are():
    assert tuple(manualbp.nn.ACTIVATIONS) == config.ACTIVATIONS


def test_a_new_run_is_named_by_what_tells_it_apart_first(tmp_path):
    for flags, expected in [
        (["--hidden", "32", "16"], r"mlp-32-16-relu_manual_mnist_cross-entropy_lr0\.05_bs100_\d{8}-\d{6}"),
        (["--model", "vit", "--layers", "torch"], r"vit_torch_mnist_cross-entropy_lr0\.05_bs100_\d{8}-\d{6}"),
    ]:
        args = cli.build_parser().parse_args(["--logdir", str(tmp_path), *flags])
        name = os.path.basename(launch._new_run_dir(args, cli.config_from_args(args)[0]))
        assert re.fullmatch(expected, name), name


def test_manual_and_torch_layers_give_the_same_losses(tmp_path, idx_dir):
    _, manual_dir = run(tmp_path, idx_dir, "--layers", "manual", name="manual")
    _, torch_dir = run(tmp_path, idx_dir, "--layers", "torch", name="torch")
    manual, builtin = events(manual_dir), events(torch_dir)
    for tag in ("loss/train", "loss/test", "accuracy/test"):
        torch.testing.assert_close(scalar_values(manual, tag), scalar_values(builtin, tag), rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_compiled_run_trains_like_the_eager_one(tmp_path, idx_dir):
    _, eager_dir = run(tmp_path, idx_dir, name="eager")
    code, compiled_dir = run(tmp_path, idx_dir, "--compile", name="compiled")
    assert code == 0
    eager, compiled = events(eager_dir), events(compiled_dir)
    for tag in ("loss/train", "loss/test", "accuracy/test"):
        torch.testing.assert_close(scalar_values(compiled, tag), scalar_values(eager, tag), rtol=1e-3, atol=1e-4)


def test_checkpoint_loads_into_a_plain_torch_nn_sequential(trained):
    state = torch.load(os.path.join(trained, "checkpoint.pt"), weights_only=True)
    model = torch.nn.Sequential(torch.nn.Linear(784, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
    model.load_state_dict(state["model"])
    assert state["epoch"] == 2 and state["step"] == 0
    assert model(torch.zeros(1, 784)).shape == (1, 10)


@pytest.mark.parametrize("stop_at", [5, 8], ids=["mid-epoch", "at-epoch-boundary"])
def test_interrupted_then_resumed_run_ends_bit_identical_to_an_uninterrupted_one(tmp_path, idx_dir, stop_at):
    flags = ("--momentum", "0.9", "--lr-schedule", "onecycle")
    assert run(tmp_path, idx_dir, *flags, name="whole")[0] == 0
    code, interrupted = run(tmp_path, idx_dir, *flags, name="interrupted", stop=StopAt(stop_at))
    assert code == 130
    saved = torch.load(os.path.join(interrupted, "checkpoint.pt"), weights_only=True)
    assert (saved["epoch"], saved["step"]) == divmod(stop_at, 8)
    assert cli.main(["--resume", interrupted, "--no-progress", "--no-pictures"]) == 0
    whole = torch.load(os.path.join(tmp_path / "runs" / "whole", "checkpoint.pt"), weights_only=True)
    resumed = torch.load(os.path.join(interrupted, "checkpoint.pt"), weights_only=True)
    for key in whole["model"]:
        assert torch.equal(whole["model"][key], resumed["model"][key]), key
    assert resumed["global_step"] == whole["global_step"] == 16


def test_preset_nielsen_sets_the_books_network_and_flags_override_it():
    args = cli.build_parser().parse_args(["--preset", "nielsen", "--epochs", "3"])
    config, _ = cli.config_from_args(args)
    assert config.hidden == (30,) and config.activation == config.output_activation == "sigmoid"
    assert (config.loss, config.init, config.batch_size, config.lr, config.normalize) == (
        "mse",
        "normal",
        10,
        15.0,
        False,
    )
    assert config.epochs == 3


def test_mse_loss_with_sigmoid_output_trains(tmp_path, idx_dir):
    code, run_dir = run(
        tmp_path,
        idx_dir,
        "--loss",
        "mse",
        "--output-activation",
        "sigmoid",
        "--activation",
        "sigmoid",
        "--lr",
        "15",
        "--momentum",
        "0",
        "--no-nesterov",
        "--lr-schedule",
        "constant",
        "--epochs",
        "3",
    )
    assert code == 0
    assert scalar_values(events(run_dir), "accuracy/test")[-1] >= 0.8


class RecordingWriter:
    """What ``SummaryWriter.add_scalar`` was given, in order."""

    def __init__(self):
        self.scalars = []

    def add_scalar(self, tag, value, step):
        self.scalars.append((tag, step, value))


@pytest.mark.parametrize("stop_at", [None, 5], ids=["whole-epoch", "stopped-at-step-5"])
def test_logs_kept_on_the_device_until_the_epochs_end_are_the_logs_written_at_once(idx_dir, stop_at):
    """A GPU epoch defers its logs (one read-back at the end); the same logs, values and order, as the CPU's."""
    config = loop.Config(hidden=(16,), batch_size=50, log_every=3, epochs=1)
    train_set, _ = data.load(data_dir=idx_dir)
    writers, results = [], []
    for defer in (False, True):
        state = loop.create_state(config, train_set.images.shape[1], len(train_set), torch.device("cpu"), torch.float32)
        step = loop.build_step(state, config, train_set)
        writer = RecordingWriter()
        stop = StopAt(stop_at) if stop_at is not None else StopAt(10**9)
        book = logbook.Logbook(config, writer, tqdm(disable=True), torch.device("cpu"), defer=defer)
        results.append(loop.train_epoch(state, config, train_set, step, book, stop))
        writers.append(writer)
    immediate, deferred = (
        [(tag, step, value) for tag, step, value in w.scalars if "per_second" not in tag] for w in writers
    )
    assert deferred == immediate
    assert [step for tag, step, _ in immediate if tag == "loss/train"] == ([3, 6, 8] if stop_at is None else [3])
    assert results[0] == results[1]
