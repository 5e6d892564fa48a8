"""train.py --model vit end to end, on small IDX files the tests write themselves: the vision transformer built
from manualbp's layers, read by the trainer through its ModelSpec alone."""

import os

import pytest
import torch
from conftest import StopAt
from idx import write_idx_dir
from test_train import events, scalar_values

from manualbp_trainer import cli
from manualbp_trainer.model import MODELS
from manualbp_trainer.networks import ViT

VIT = ["--model", "vit", "--epochs", "2", "--batch-size", "50", "--log-every", "2", "--no-progress", "--device", "cpu"]


@pytest.fixture(scope="module")
def idx_dir(tmp_path_factory):
    return write_idx_dir(str(tmp_path_factory.mktemp("idx")), noise=60)


def run(logdir, idx_dir, *flags, name="run", stop=None):
    argv = ["--data-dir", idx_dir, "--logdir", str(logdir), "--run-name", name, *VIT, *flags]
    try:
        code = cli.main(argv, stop=stop)
    except SystemExit as exit_:
        code = exit_.code
    return code, str(logdir / name)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, idx_dir):
    code, run_dir = run(tmp_path_factory.mktemp("trained"), idx_dir)
    assert code == 0
    return run_dir


@pytest.mark.slow
def test_vit_run_trains_its_loss_falls_and_its_gradients_are_autograds(trained):
    accumulator = events(trained)
    train_loss = scalar_values(accumulator, "loss/train")
    assert [event.step for event in accumulator.Scalars("loss/train")][-1] == 16  # 400 examples / 50, 2 epochs
    assert train_loss[-1] < 0.8 * train_loss[0]
    assert max(scalar_values(accumulator, "manualbp_vs_autograd/max_rel_diff")) < 1e-10  # in float64
    assert "weights/first_conv_filters" in accumulator.Tags()["images"]  # the patch embedding's 64 filters


@pytest.mark.slow
def test_manual_and_torch_layers_give_the_same_vit_losses(tmp_path, idx_dir, trained):
    _, torch_dir = run(tmp_path, idx_dir, "--layers", "torch", name="torch")
    manual, builtin = events(trained), events(torch_dir)
    for tag in ("loss/train", "loss/test", "accuracy/test"):
        torch.testing.assert_close(scalar_values(manual, tag), scalar_values(builtin, tag), rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_a_stopped_vit_run_resumes_bit_identical(tmp_path, idx_dir, trained):
    code, run_dir = run(tmp_path, idx_dir, stop=StopAt(11))
    assert code == 130
    assert cli.main(["--resume", run_dir, "--no-progress"], stop=StopAt(10**9)) == 0
    expected = torch.load(os.path.join(trained, "checkpoint.pt"), weights_only=True)["model"]
    actual = torch.load(os.path.join(run_dir, "checkpoint.pt"), weights_only=True)["model"]
    assert expected.keys() == actual.keys()
    assert all(torch.equal(expected[key], actual[key]) for key in expected)


def test_the_vit_is_manualbps_layers_and_its_spec_counts_it():
    model = ViT()
    builtin = {type(m) for m in model.modules() if m is not model and not type(m).__module__.startswith("manualbp.")}
    # a container, and MultiheadAttention's out_proj: a Linear subclass whose weights it uses through its own call
    assert builtin == {torch.nn.ModuleList, torch.nn.modules.linear.NonDynamicallyQuantizableLinear}
    twin = ViT(layers="torch")
    assert all(type(m).__module__.startswith("torch.nn.") for m in twin.modules() if m is not twin)
    config, _ = cli.config_from_args(cli.build_parser().parse_args(["--model", "vit"]))
    assert MODELS["vit"].parameter_count(config) == sum(p.numel() for p in model.parameters()) == 71_946
    assert (config.epochs, config.pictures) == (10, False)


@pytest.mark.parametrize(
    "flags, message",
    [
        (
            ["--hidden", "32"],
            "--hidden describes the MLP, and --model vit has layers of its own (see --help): drop it, or train "
            "--model mlp",
        ),
        (["--pictures"], "--pictures draws an MLP's neurons, and --model vit has none to draw: drop --pictures"),
    ],
)
def test_flags_that_do_not_apply_to_the_vit_are_refused_in_one_line(capsys, tmp_path, idx_dir, flags, message):
    code, run_dir = run(tmp_path, idx_dir, *flags)
    assert code == 2
    assert capsys.readouterr().err.strip().splitlines() == [f"train.py: error: {message}"]
    assert not os.path.exists(run_dir)
