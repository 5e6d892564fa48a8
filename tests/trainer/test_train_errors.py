"""Bad input to train.py: a one-line error saying what was wrong and what to do, a non-zero exit, no traceback,
and nothing already written lost."""

import gzip
import os
import signal
import subprocess
import sys

import pytest
import torch
from conftest import on_every_training_loss
from idx import IMAGES_MAGIC, idx_bytes, synthetic_split, write_idx_dir

from manualbp_trainer import cli, data

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def fail(capsys, argv):
    """Run the CLI in-process; return (exit status, the stderr lines)."""
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    return exit_info.value.code, capsys.readouterr().err.strip().splitlines()


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--lr", "0"], "argument --lr: expected a positive float, got '0'"),
        (["--lr", "-1"], "argument --lr: expected a positive float, got '-1'"),
        (["--lr", "fast"], "argument --lr: expected a positive float, got 'fast'"),
        (["--lr", "nan"], "argument --lr: expected a positive float, got 'nan'"),
        (["--batch-size", "0"], "argument --batch-size: expected a positive int, got '0'"),
        (["--batch-size", "1.5"], "argument --batch-size: expected a positive int, got '1.5'"),
        (["--epochs", "-3"], "argument --epochs: expected a positive int, got '-3'"),
        (["--hidden", "128", "0"], "argument --hidden: expected a positive int, got '0'"),
        (["--hidden", "wide"], "argument --hidden: expected a positive int, got 'wide'"),
        (["--activation", "swish"], "argument --activation: invalid choice: 'swish'"),
        (["--loss", "hinge"], "argument --loss: invalid choice: 'hinge'"),
        (["--dataset", "cifar10"], "argument --dataset: invalid choice: 'cifar10'"),
        (["--device", "tpu"], "argument --device: invalid choice: 'tpu'"),
        (["--momentum", "0", "--nesterov"], "--nesterov needs a --momentum above 0"),
        (
            ["--seed", str(2**64)],
            f"argument --seed: expected an integer from -2**63 to 2**64 - 1 (torch.manual_seed's range), got '{2**64}'",
        ),
        (["--seed", "1e3"], "argument --seed: expected an integer"),
    ],
)
def test_bad_flag_is_a_one_line_error_with_exit_2(capsys, tmp_path, flags, message):
    code, lines = fail(capsys, [*flags, "--logdir", str(tmp_path)])
    assert code == 2
    assert len(lines) == 1 and message in lines[0] and lines[0].startswith("train.py: error:")
    assert os.listdir(tmp_path) == []  # no run directory was made


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_device_cuda_without_cuda_is_a_one_line_error(capsys, tmp_path):
    code, lines = fail(capsys, ["--device", "cuda", "--logdir", str(tmp_path)])
    assert code == 2 and lines == [
        "train.py: error: --device cuda: no CUDA device is available here; use --device cpu or auto"
    ]


def test_cuda_graphs_on_the_cpu_is_a_one_line_error_and_makes_no_run(capsys, tmp_path):
    code, lines = fail(capsys, ["--device", "cpu", "--cuda-graphs", "--logdir", str(tmp_path)])
    assert code == 2 and lines == [
        "train.py: error: --cuda-graphs needs a GPU, and this run is on cpu: pass --device cuda"
    ]
    assert os.listdir(tmp_path) == []


def test_no_internet_and_no_data_is_a_one_line_error_that_names_data_dir(capsys, tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nTried https://..., got:\n<urlopen error>")

    monkeypatch.setitem(data.DATASETS, "mnist", offline)
    code, lines = fail(capsys, ["--data-root", str(tmp_path / "data"), "--logdir", str(tmp_path / "runs")])
    assert code == 2
    assert lines[-1].startswith("train.py: error: could not get mnist into")
    assert "connect to the internet, or pass --data-dir DIR" in lines[-1]
    assert os.listdir(tmp_path / "runs") == []  # the empty run directory was removed again


def _corrupt(folder, name, payload):
    path = os.path.join(folder, name)
    with open(path, "wb") as f:
        f.write(payload)


def _images_bytes(n):
    return idx_bytes(synthetic_split(n, 3)[0])


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda d: os.remove(os.path.join(d, "t10k-labels-idx1-ubyte")), "has no t10k-labels-idx1-ubyte"),
        (lambda d: _corrupt(d, "train-images-idx3-ubyte", b""), "train-images-idx3-ubyte is not a valid IDX file"),
        (
            lambda d: _corrupt(d, "train-images-idx3-ubyte", _images_bytes(400)[:-100]),
            "train-images-idx3-ubyte is not a valid IDX file",
        ),
        (
            lambda d: _corrupt(d, "train-images-idx3-ubyte", b"\x00\x00\x0c\x07" + _images_bytes(400)[4:]),
            "train-images-idx3-ubyte is not a valid IDX file",
        ),
        (
            lambda d: _corrupt(d, "train-images-idx3-ubyte", _images_bytes(400) + b"extra"),
            "train-images-idx3-ubyte is not a valid IDX file",
        ),
        (
            lambda d: _corrupt(d, "train-labels-idx1-ubyte", _images_bytes(400)),
            "train-labels-idx1-ubyte is not a valid IDX file of labels",
        ),
        (
            lambda d: _corrupt(d, "train-images-idx3-ubyte", _images_bytes(300)),
            "train-images-idx3-ubyte holds 300 images but train-labels-idx1-ubyte holds 400 labels",
        ),
        (
            lambda d: _corrupt(d, "t10k-images-idx3-ubyte", idx_bytes(torch.zeros(200, 32, 32))),
            "t10k-images-idx3-ubyte holds 32×32 images, but the networks here take MNIST's 28×28",
        ),
    ],
    ids=["missing", "empty", "truncated", "wrong-magic", "wrong-size", "labels-are-images", "count-mismatch", "32x32"],
)
def test_bad_idx_files_are_one_line_errors(capsys, tmp_path, damage, message):
    folder = write_idx_dir(str(tmp_path / "idx"))
    damage(folder)
    code, lines = fail(
        capsys, ["--data-dir", folder, "--logdir", str(tmp_path / "runs"), "--no-progress", "--no-pictures"]
    )
    assert code == 2 and message in lines[-1] and lines[-1].startswith("train.py: error:")
    assert all("Traceback" not in line for line in lines)
    assert not os.path.exists(tmp_path / "runs") or os.listdir(tmp_path / "runs") == []  # no run was left behind


def test_corrupt_gzipped_idx_file_is_a_one_line_error(capsys, tmp_path):
    folder = write_idx_dir(str(tmp_path / "idx"), gz=True)
    with gzip.open(os.path.join(folder, "t10k-images-idx3-ubyte.gz"), "wb") as f:
        f.write(IMAGES_MAGIC.to_bytes(4, "big") + b"\x00\x00")
    code, lines = fail(
        capsys, ["--data-dir", folder, "--logdir", str(tmp_path / "runs"), "--no-progress", "--no-pictures"]
    )
    assert code == 2 and "t10k-images-idx3-ubyte.gz is not a valid IDX file" in lines[-1]


def test_gzipped_idx_files_train(tmp_path):
    folder = write_idx_dir(str(tmp_path / "idx"), gz=True)
    argv = [
        "--data-dir",
        folder,
        "--logdir",
        str(tmp_path / "runs"),
        "--hidden",
        "16",
        "--epochs",
        "1",
        "--no-progress",
        "--no-pictures",
    ]
    assert cli.main(argv) == 0


@pytest.mark.parametrize(
    "setup, message",
    [
        (lambda run: None, "no such run directory"),
        (lambda run: os.makedirs(run), "it holds no checkpoint.pt"),
        (
            lambda run: (os.makedirs(run), _corrupt(run, "checkpoint.pt", b"not a checkpoint")),
            "checkpoint.pt is corrupt or not a checkpoint",
        ),
    ],
    ids=["missing", "no-checkpoint", "corrupt"],
)
def test_resume_of_a_missing_or_unreadable_run_is_a_one_line_error(capsys, tmp_path, setup, message):
    run = str(tmp_path / "runs" / "old")
    setup(run)
    code, lines = fail(capsys, ["--resume", run])
    assert code == 2 and lines == [f"train.py: error: --resume {run}: {message}" + lines[0].split(message)[1]]


def test_resume_of_the_checkpoint_file_names_its_run_directory(capsys, tmp_path):
    run = tmp_path / "runs" / "old"
    os.makedirs(run)
    torch.save({"config": {}}, run / "checkpoint.pt")
    path = run / "checkpoint.pt"
    code, lines = fail(capsys, ["--resume", str(path)])
    assert code == 2 and lines == [
        f"train.py: error: --resume {path} is a file: give the run's directory, {run}, not a file in it"
    ]


def test_resume_refuses_to_change_what_the_run_computes(capsys, tmp_path):
    run = tmp_path / "runs" / "old"
    os.makedirs(run)
    torch.save({"config": {}}, run / "checkpoint.pt")
    code, lines = fail(capsys, ["--resume", str(run), "--lr", "0.5"])
    assert code == 2 and "--lr cannot change when resuming" in lines[0]


def test_an_existing_run_is_never_overwritten(capsys, tmp_path):
    run = tmp_path / "runs" / "taken"
    os.makedirs(run)
    (run / "notes.txt").write_text("precious")
    code, lines = fail(capsys, ["--logdir", str(tmp_path / "runs"), "--run-name", "taken"])
    assert code == 2 and "already exists: choose another --run-name, or continue it with --resume" in lines[0]
    assert os.listdir(run) == ["notes.txt"] and (run / "notes.txt").read_text() == "precious"


def test_two_runs_with_the_same_config_in_the_same_second_get_two_directories(tmp_path):
    folder = write_idx_dir(str(tmp_path / "idx"), n_train=100, n_test=50)
    argv = [
        "--data-dir",
        folder,
        "--logdir",
        str(tmp_path / "runs"),
        "--hidden",
        "8",
        "--epochs",
        "1",
        "--no-progress",
        "--no-pictures",
    ]
    assert cli.main(argv) == 0 and cli.main(argv) == 0
    assert len(os.listdir(tmp_path / "runs")) == 2


def test_a_loss_that_turns_nan_stops_the_run_and_keeps_the_last_good_checkpoint(capsys, tmp_path, monkeypatch):
    folder = write_idx_dir(str(tmp_path / "idx"))
    calls = {"n": 0}

    def breaks_in_epoch_2(loss):
        calls["n"] += 1
        return loss * float("nan") if calls["n"] > 9 else loss  # 8 steps an epoch, then 1 evaluation

    on_every_training_loss(monkeypatch, breaks_in_epoch_2)
    run = tmp_path / "runs" / "diverges"
    code, lines = fail(
        capsys,
        [
            "--data-dir",
            folder,
            "--logdir",
            str(tmp_path / "runs"),
            "--run-name",
            "diverges",
            "--batch-size",
            "50",
            "--epochs",
            "3",
            "--log-every",
            "4",
            "--no-progress",
            "--no-pictures",
        ],
    )
    assert code == 1
    assert lines[-1].startswith("train.py: error: the training loss became nan at step 12 (epoch 2): lower --lr")
    assert lines[-1].endswith(f"; the last good checkpoint (epoch 1) is kept in {run}")
    saved = torch.load(run / "checkpoint.pt", weights_only=True)
    assert saved["epoch"] == 1 and all(torch.isfinite(t).all() for t in saved["model"].values())


@pytest.mark.slow
def test_ctrl_c_saves_the_position_and_exits_cleanly_with_status_130(tmp_path):
    folder = write_idx_dir(str(tmp_path / "idx"), n_train=2000, n_test=100)
    run = tmp_path / "runs" / "stopped"
    argv = [
        sys.executable,
        "train.py",
        "--data-dir",
        folder,
        "--logdir",
        str(tmp_path / "runs"),
        "--run-name",
        "stopped",
        "--hidden",
        "64",
        "--batch-size",
        "10",
        "--epochs",
        "50",
        "--no-progress",
        "--no-pictures",
    ]
    environment = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment
    )
    for line in process.stdout:  # the first epoch's line: the run is well under way
        if line.startswith("epoch 1/50"):
            break
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1] == f"interrupted: saved the run in {run}; continue it with --resume {run}"
    saved = torch.load(run / "checkpoint.pt", weights_only=True)
    assert 1 <= saved["epoch"] < 50 and saved["global_step"] == saved["epoch"] * 200 + saved["step"]


def test_an_interrupt_that_cannot_wait_for_the_step_boundary_exits_130_and_keeps_the_checkpoint(
    capsys, tmp_path, monkeypatch
):
    folder = write_idx_dir(str(tmp_path / "idx"))
    calls = {"n": 0}

    def interrupted_in_epoch_2(loss):
        calls["n"] += 1
        if calls["n"] > 11:  # 8 steps an epoch, then 1 evaluation: step 3 of epoch 2
            raise KeyboardInterrupt  # what a second Ctrl-C (or a first one under torchrun) raises
        return loss

    on_every_training_loss(monkeypatch, interrupted_in_epoch_2)
    run = tmp_path / "runs" / "cut"
    argv = ["--data-dir", folder, "--logdir", str(tmp_path / "runs"), "--run-name", "cut", "--batch-size", "50"]
    code, lines = fail(capsys, [*argv, "--epochs", "3", "--no-progress", "--no-pictures"])
    assert code == 130
    assert lines[-1] == (
        f"train.py: stopped: {run} keeps the checkpoint of the last finished epoch, if any; "
        f"continue with --resume {run}"
    )
    assert torch.load(run / "checkpoint.pt", weights_only=True)["epoch"] == 1
