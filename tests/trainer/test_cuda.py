"""train.py on a GPU: the same run as on the CPU, CUDA graphs (the default) against eager (--no-cuda-graphs),
resuming bit-identical, and a GPU checkpoint continued on the CPU. Every test here skips on a machine without CUDA."""

import os
import re

import pytest
import torch
from conftest import StopAt
from idx import write_idx_dir
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from manualbp_trainer import cli

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")

# 400 training examples in batches of 60: six full batches and a short one of 40, so that both batch lengths are
# captured (each after cuda_graphs.WARMUP eager steps: the short one in epoch 4)
FLAGS = ["--hidden", "32", "--batch-size", "60", "--log-every", "3", "--no-progress", "--no-pictures"]
FLAGS += ["--momentum", "0.9", "--lr-schedule", "cosine"]  # the learning rate changes at every step
STEPS_PER_EPOCH = 7


@pytest.fixture(scope="module")
def idx_dir(tmp_path_factory):
    return write_idx_dir(str(tmp_path_factory.mktemp("idx")))


def run(tmp_path, idx_dir, name, *flags, epochs=5, stop=None):
    argv = ["--data-dir", idx_dir, "--logdir", str(tmp_path / "runs"), "--run-name", name, *FLAGS, *flags]
    code = cli.main([*argv, "--epochs", str(epochs)], stop=stop)
    return code, str(tmp_path / "runs" / name)


def saved(run_dir):
    return torch.load(os.path.join(run_dir, "checkpoint.pt"), weights_only=True)


def scalars(run_dir, tag):
    accumulator = EventAccumulator(run_dir, size_guidance={"scalars": 0})
    accumulator.Reload()
    return [(event.step, event.value) for event in accumulator.Scalars(tag)]


@pytest.mark.parametrize("mode", [[], ["--no-cuda-graphs"]], ids=["cuda-graphs", "eager"])
def test_a_cuda_run_logs_what_the_cpu_run_logs_to_float_rounding(tmp_path, idx_dir, mode):
    _, on_cpu = run(tmp_path, idx_dir, "cpu", "--device", "cpu", epochs=2)
    code, on_gpu = run(tmp_path, idx_dir, "gpu", "--device", "cuda", *mode, epochs=2)
    assert code == 0 and saved(on_gpu)["config"]["device"] == "cuda"
    for tag in ("loss/train", "accuracy/train", "loss/test", "accuracy/test", "norms/linear0.weight.grad"):
        cpu, gpu = scalars(on_cpu, tag), scalars(on_gpu, tag)
        assert [step for step, _ in gpu] == [step for step, _ in cpu], tag  # logs deferred to the epoch's end
        torch.testing.assert_close([v for _, v in gpu], [v for _, v in cpu], rtol=1e-4, atol=1e-5, msg=tag)


def test_cuda_graphs_train_to_the_eager_runs_weights(tmp_path, idx_dir):
    _, eager = run(tmp_path, idx_dir, "eager", "--device", "cuda", "--no-cuda-graphs")
    code, graphed = run(tmp_path, idx_dir, "graphed", "--device", "cuda", "--cuda-graphs")
    assert code == 0
    expected, got = saved(eager), saved(graphed)
    assert got["global_step"] == 5 * STEPS_PER_EPOCH
    for key, value in expected["model"].items():
        # the same kernels; the learning rate is read from a float32 tensor rather than passed as a number
        torch.testing.assert_close(got["model"][key], value, rtol=1e-6, atol=1e-7, msg=key)
    for tag in ("loss/train", "accuracy/test", "norms/linear1.weight.grad", "lr"):
        assert len(scalars(graphed, tag)) == len(scalars(eager, tag)), tag
        torch.testing.assert_close(scalars(graphed, tag), scalars(eager, tag), rtol=1e-5, atol=1e-6, msg=tag)


@pytest.mark.parametrize("mode", [["--no-cuda-graphs"], [], ["--cuda-graphs"]], ids=["eager", "default", "cuda-graphs"])
@pytest.mark.parametrize("stop_at", [10, 2 * STEPS_PER_EPOCH], ids=["mid-epoch", "at-epoch-boundary"])
def test_a_resumed_cuda_run_ends_bit_identical_to_an_uninterrupted_one(tmp_path, idx_dir, mode, stop_at):
    assert run(tmp_path, idx_dir, "whole", "--device", "cuda", *mode)[0] == 0
    code, interrupted = run(tmp_path, idx_dir, "cut", "--device", "cuda", *mode, stop=StopAt(stop_at))
    assert code == 130
    assert cli.main(["--resume", interrupted, "--no-progress", *mode]) == 0
    whole, resumed = saved(os.path.join(tmp_path, "runs", "whole")), saved(interrupted)
    assert resumed["global_step"] == whole["global_step"] == 5 * STEPS_PER_EPOCH
    for key in whole["model"]:
        assert torch.equal(whole["model"][key], resumed["model"][key]), key
    for key, state in whole["optimizer"]["state"].items():
        assert torch.equal(state["momentum_buffer"], resumed["optimizer"]["state"][key]["momentum_buffer"])


def test_cuda_graphs_are_the_default_on_a_gpu_and_the_same_steps_as_cuda_graphs(tmp_path, idx_dir, capsys):
    code, default = run(tmp_path, idx_dir, "default", "--device", "cuda")
    assert code == 0
    assert f"training on cuda with CUDA graphs into {default}" in capsys.readouterr().err.splitlines()
    _, graphed = run(tmp_path, idx_dir, "graphed", "--device", "cuda", "--cuda-graphs")
    assert saved(default)["config"]["cuda_graphs"] is None  # the choice, decided again where it is resumed
    for key, value in saved(graphed)["model"].items():
        assert torch.equal(saved(default)["model"][key], value), key


@pytest.mark.parametrize(
    "flags, why",
    [
        (["--compile"], "--compile replaces the step's launches itself"),
        (
            ["--lr-schedule", "onecycle"],
            "--lr-schedule onecycle changes the momentum at every step, and a captured step keeps the momentum it "
            "was captured with",
        ),
    ],
)
def test_a_gpu_run_that_cannot_have_cuda_graphs_says_why_once_and_trains_eagerly(tmp_path, idx_dir, capsys, flags, why):
    code, run_dir = run(tmp_path, idx_dir, "eager", "--device", "cuda", *flags, epochs=1)
    assert code == 0
    lines = capsys.readouterr().err.splitlines()
    note = f"note: no CUDA graphs, each step runs eagerly: {why} (--no-cuda-graphs: eager without this note)"
    assert f"training on cuda into {run_dir}" in lines and lines.count(note) == 1
    assert sum("CUDA graphs" in line for line in lines) == 1  # the note alone


def test_a_gpu_run_ends_with_its_gpu_utilisation(tmp_path, idx_dir, capsys):
    code, _ = run(tmp_path, idx_dir, "busy", "--device", "cuda", epochs=2)
    assert code == 0
    last = capsys.readouterr().out.splitlines()[-1]
    name = re.escape(torch.cuda.get_device_name())
    measured = rf"GPU utilisation: \d+ % mean over \d+\.\d s of training \({name}\)"
    missing = rf"GPU utilisation: not measured over \d+\.\d s of training \({name}\): .+"
    assert re.fullmatch(measured, last) or re.fullmatch(missing, last), last


def test_a_gpu_run_continues_on_the_cpu(tmp_path, idx_dir):
    code, run_dir = run(tmp_path, idx_dir, "moves", "--device", "cuda", stop=StopAt(10))
    assert code == 130
    assert cli.main(["--resume", run_dir, "--device", "cpu", "--no-progress"]) == 0
    state = saved(run_dir)
    assert state["config"]["device"] == "cpu" and state["global_step"] == 5 * STEPS_PER_EPOCH
    assert all(value.device.type == "cpu" for value in state["model"].values())


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--compile"], "--cuda-graphs and --compile each replace the step's launches: pass one of them"),
        (
            ["--lr-schedule", "onecycle"],
            "--cuda-graphs with --lr-schedule onecycle: OneCycleLR changes the momentum at every step, and a "
            "captured step keeps the momentum it was captured with: use --lr-schedule cosine or constant",
        ),
    ],
)
def test_cuda_graphs_with_what_it_cannot_replay_is_a_one_line_error(tmp_path, idx_dir, capsys, flags, message):
    with pytest.raises(SystemExit) as exit_:
        run(tmp_path, idx_dir, "both", "--device", "cuda", "--cuda-graphs", *flags)
    assert exit_.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [f"train.py: error: {message}"]
    assert not os.path.exists(tmp_path / "runs" / "both")
