"""train.py under torchrun: two CPU processes (gloo) train like one process with the same global batch."""

import os
import subprocess
import sys

import pytest
import torch
from conftest import StopAt
from idx import write_idx_dir
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from manualbp_trainer import cli

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TRAIN = os.path.join(ROOT, "train.py")
# 405 examples in batches of 25: the last batch holds 5, which two ranks share 3 and 2
FLAGS = [
    "--hidden",
    "16",
    "--epochs",
    "2",
    "--batch-size",
    "25",
    "--log-every",
    "4",
    "--no-progress",
    "--no-pictures",
    "--device",
    "cpu",
]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not built in"),
]


@pytest.fixture(scope="module")
def idx_dir(tmp_path_factory):
    return write_idx_dir(str(tmp_path_factory.mktemp("idx")), n_train=405, n_test=101)


def torchrun(*args, script=TRAIN, processes=2, timeout=240):
    """Run ``script`` under torchrun on this machine; return the finished process."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ROOT}
    return subprocess.run(
        [*command, script, *args], capture_output=True, text=True, timeout=timeout, env=environment, cwd=ROOT
    )


def weights(run_dir):
    return torch.load(os.path.join(run_dir, "checkpoint.pt"), weights_only=True)["model"]


def assert_same_weights(expected, actual):
    assert expected.keys() == actual.keys()
    for key in expected:
        torch.testing.assert_close(actual[key], expected[key], rtol=1e-5, atol=1e-6, msg=key)


@pytest.mark.parametrize("loss", ["cross-entropy", "mse"])
def test_two_gloo_processes_end_with_the_weights_of_one_process(tmp_path, idx_dir, loss):
    logdir = str(tmp_path / "runs")
    common = ["--data-dir", idx_dir, "--logdir", logdir, "--loss", loss, *FLAGS]
    assert cli.main([*common, "--run-name", "single"]) == 0
    finished = torchrun(*common, "--run-name", "ddp")
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert_same_weights(weights(os.path.join(logdir, "single")), weights(os.path.join(logdir, "ddp")))
    assert sorted(os.listdir(logdir)) == ["ddp", "single"]  # one run, not one per rank


def test_only_rank_0_logs_and_its_logged_losses_match_one_process(tmp_path, idx_dir):
    logdir = str(tmp_path / "runs")
    common = ["--data-dir", idx_dir, "--logdir", logdir, *FLAGS]
    assert cli.main([*common, "--run-name", "single"]) == 0
    finished = torchrun(*common, "--run-name", "ddp")
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert finished.stdout.count("final test accuracy") == 1
    files = {name: sorted(os.listdir(os.path.join(logdir, name))) for name in ("single", "ddp")}
    event_files = {name: [f for f in found if f.startswith("events.out.tfevents")] for name, found in files.items()}
    assert len(event_files["ddp"]) == len(event_files["single"])  # one file per process that wrote (or resumed) the run
    assert len({name.split(".")[4] for name in event_files["ddp"]}) == 1  # written by one process
    assert "checkpoint.pt" in files["ddp"]
    logged = {}
    for name in ("single", "ddp"):
        accumulator = EventAccumulator(os.path.join(logdir, name))
        accumulator.Reload()
        logged[name] = {
            tag: [event.value for event in accumulator.Scalars(tag)]
            for tag in ("loss/train", "accuracy/train", "loss/test", "accuracy/test")
        }
    for tag, values in logged["single"].items():
        assert len(values) == len(logged["ddp"][tag]) > 0, tag
        torch.testing.assert_close(torch.tensor(logged["ddp"][tag]), torch.tensor(values), rtol=1e-4, atol=1e-5)


def test_a_run_resumed_under_torchrun_ends_with_the_weights_of_an_uninterrupted_one(tmp_path, idx_dir):
    logdir = str(tmp_path / "runs")
    common = ["--data-dir", idx_dir, "--logdir", logdir, *FLAGS]
    assert cli.main([*common, "--run-name", "whole"]) == 0
    # 17 steps an epoch: stop 4 steps into the second
    assert cli.main([*common, "--run-name", "interrupted"], stop=StopAt(21)) == 130
    finished = torchrun("--resume", os.path.join(logdir, "interrupted"), "--no-progress", "--no-pictures")
    assert finished.returncode == 0, finished.stderr[-3000:]
    state = torch.load(os.path.join(logdir, "interrupted", "checkpoint.pt"), weights_only=True)
    assert state["global_step"] == 2 * 17
    assert_same_weights(weights(os.path.join(logdir, "whole")), state["model"])


FAILING_RANK = """
import os, runpy, sys
from manualbp_trainer import loop
calls = 0
real_loss = loop._loss
def failing_loss(*args):
    global calls
    calls += 1
    if calls == 3:
        raise loop.TrainingError("injected failure on this rank")
    return real_loss(*args)
if os.environ["RANK"] == "1":
    loop._loss = failing_loss
sys.argv = ["train.py", *sys.argv[1:]]
runpy.run_path({train!r}, run_name="__main__")
"""


def test_a_rank_that_fails_ends_the_whole_job_with_its_message(tmp_path, idx_dir):
    script = tmp_path / "failing_train.py"
    script.write_text(FAILING_RANK.format(train=TRAIN))
    finished = torchrun("--data-dir", idx_dir, "--logdir", str(tmp_path / "runs"), *FLAGS, script=str(script))
    assert finished.returncode != 0
    assert "train.py: error: rank 1: injected failure on this rank" in finished.stderr
