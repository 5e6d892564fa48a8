"""Faults made real where the OS allows: a full disk (a file-size limit), a read-only run, a finished run,
kill -9 and Ctrl-C at points chosen by seeds, a model too large, a corrupt checkpoint, a loss that turns NaN.

Each asserts the exit status, the one line that says what happened and what to do (no traceback), the files
left on disk and, after a resume, the weights of a run never interrupted and one event per epoch per tag.
Subprocesses synchronise on what the run prints (its epoch lines), never on sleeps.
"""

import ctypes
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import StopAt, on_every_training_loss
from idx import idx_bytes, synthetic_split, write_idx_dir
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from manualbp_trainer import cli, data, launch, loop

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STEPS = 8  # 400 training examples in batches of 50
EPOCHS = 3
FLAGS = [
    "--hidden",
    "32",
    "--batch-size",
    "50",
    "--log-every",
    "2",
    "--no-progress",
    "--no-pictures",
    "--device",
    "cpu",
]
EPOCH_TAGS = ("accuracy/test", "loss/test", "manualbp_vs_autograd/max_abs_diff", "manualbp_vs_autograd/max_rel_diff")


@pytest.fixture(scope="module")
def idx_dir(tmp_path_factory):
    return write_idx_dir(str(tmp_path_factory.mktemp("idx")))


def argv(idx_dir, logdir, name, *flags, epochs=EPOCHS):
    return ["--data-dir", idx_dir, "--logdir", str(logdir), "--run-name", name, *FLAGS, "--epochs", str(epochs), *flags]


def main(capsys, arguments, stop=None):
    """Run the CLI in-process; return (exit status, stderr lines). What was printed before, by the reference runs
    a test asked for first, is dropped, so the lines are this run's alone."""
    capsys.readouterr()
    try:
        code = cli.main(arguments, stop=stop)
    except SystemExit as exit_:
        code = exit_.code
    return code, capsys.readouterr().err.strip().splitlines()


@pytest.fixture(scope="module")
def reference(tmp_path_factory, idx_dir):
    """Uninterrupted runs, by number of epochs: their directories."""
    logdir, runs = tmp_path_factory.mktemp("reference"), {}

    def run(epochs=EPOCHS, *flags):
        key = (epochs, *flags)
        if key not in runs:
            name = "-".join(map(str, key)).replace("--", "")
            assert cli.main(argv(idx_dir, logdir, name, *flags, epochs=epochs), stop=StopAt(10**9)) == 0
            runs[key] = str(logdir / name)
        return runs[key]

    return run


def weights(run_dir):
    return torch.load(os.path.join(run_dir, "checkpoint.pt"), weights_only=True)["model"]


def assert_bit_identical(expected_dir, actual_dir):
    expected, actual = weights(expected_dir), weights(actual_dir)
    assert expected.keys() == actual.keys()
    for key in expected:
        assert torch.equal(expected[key], actual[key]), key


def assert_each_epoch_logged_once(run_dir, reference_dir, epochs=EPOCHS):
    """Every per-epoch tag holds one event at the end of each epoch, and the per-step tags the steps of the run
    that was never interrupted: nothing purged, nothing twice."""
    logged, expected = EventAccumulator(run_dir, size_guidance={"scalars": 0, "histograms": 0, "images": 0}), None
    logged.Reload()
    epoch_ends = [STEPS * epoch for epoch in range(1, epochs + 1)]
    for tag in EPOCH_TAGS:
        assert [event.step for event in logged.Scalars(tag)] == epoch_ends, tag
    assert [event.step for event in logged.Histograms("weights/linear0.weight")] == epoch_ends
    assert [event.step for event in logged.Images("weights/first_layer")] == epoch_ends
    expected = EventAccumulator(reference_dir, size_guidance={"scalars": 0})
    expected.Reload()
    for tag in ("loss/train", "lr", "norms/linear0.weight"):
        assert [e.step for e in logged.Scalars(tag)] == [e.step for e in expected.Scalars(tag)], tag


def leftovers(run_dir):
    return sorted(name for name in os.listdir(run_dir) if name.endswith(".tmp"))


def snapshot(run_dir):
    """Every file of the run and its bytes."""
    return {name: Path(run_dir, name).read_bytes() for name in sorted(os.listdir(run_dir))}


def train_py(arguments, preexec_fn=None):
    environment = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "train.py", *arguments],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment,
        preexec_fn=preexec_fn,
    )


def wait_for_epoch(process, epoch, epochs):
    """Read the run's stdout until it says epoch ``epoch`` is saved; True if it did (False: it ended first)."""
    return any(line.startswith(f"epoch {epoch}/{epochs}:") for line in process.stdout)


def one_line(stderr):
    """The last stderr line, after checking that nothing on stderr is a traceback."""
    assert "Traceback" not in stderr and "Exception ignored" not in stderr, stderr
    return stderr.strip().splitlines()[-1]


# ---- fast, in-process: the default run -----------------------------------------------------------------------


# the end of the first epoch, whose events a resume must keep, and steps drawn by three seeds
STOPS = [STEPS, *(random.Random(seed).randrange(1, EPOCHS * STEPS) for seed in range(3))]


@pytest.mark.parametrize("at", STOPS)
def test_ctrl_c_at_a_seeded_step_resumes_bit_identical_with_each_epoch_logged_once(
    capsys, tmp_path, idx_dir, reference, at
):
    code, lines = main(capsys, argv(idx_dir, tmp_path, "run"), stop=StopAt(at))
    run = str(tmp_path / "run")
    assert code == 130 and lines[-1] == f"interrupted: saved the run in {run}; continue it with --resume {run}"
    saved = torch.load(os.path.join(run, "checkpoint.pt"), weights_only=True)
    assert (saved["epoch"], saved["step"]) == divmod(at, STEPS)
    assert main(capsys, ["--resume", run, "--no-progress", "--no-pictures"], stop=StopAt(10**9))[0] == 0
    assert_bit_identical(reference(), run)
    assert_each_epoch_logged_once(run, reference())
    assert leftovers(run) == []


def test_sigterm_at_a_step_saves_the_exact_position_exits_143_and_resumes_bit_identical(
    capsys, tmp_path, idx_dir, reference, monkeypatch
):
    """SIGTERM (docker stop, systemd, Kubernetes, Slurm) is handled as Ctrl-C: the real signal, sent to this
    process from inside the 11th loss computation (the second step of epoch 2), with train.py's own handlers."""
    calls = []

    def then_sigterm(loss):
        calls.append(None)
        if len(calls) == STEPS + 3:  # epoch 1's 8 steps and its test set (one chunk), then epoch 2's second step
            os.kill(os.getpid(), signal.SIGTERM)
        return loss

    on_every_training_loss(monkeypatch, then_sigterm)
    code, lines = main(capsys, argv(idx_dir, tmp_path, "run"))
    monkeypatch.undo()
    run = str(tmp_path / "run")
    assert code == 143  # 128 + SIGTERM, as the shell reports a process that the signal ended
    assert lines[-1] == f"interrupted by SIGTERM: saved the run in {run}; continue it with --resume {run}"
    saved = torch.load(os.path.join(run, "checkpoint.pt"), weights_only=True)
    assert (saved["epoch"], saved["step"]) == (1, 2)  # the step in progress finished, and nothing after it
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # the handler is gone with the run
    assert main(capsys, ["--resume", run, "--no-progress", "--no-pictures"], stop=StopAt(10**9))[0] == 0
    assert_bit_identical(reference(), run)
    assert_each_epoch_logged_once(run, reference())
    assert leftovers(run) == []


def hold_lock(run_dir):
    """A child process that holds ``run_dir``'s lock as a training train.py does, once it has said so."""
    code = (
        "import fcntl, os, sys\n"
        f"descriptor = os.open({run_dir!r}, os.O_RDONLY)\n"
        "fcntl.flock(descriptor, fcntl.LOCK_EX)\n"
        "print('locked', flush=True)\n"
        "sys.stdin.read()\n"
    )
    process = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline() == "locked\n"
    return process


def test_a_run_in_use_refuses_a_second_process_in_one_line_and_a_killed_holder_leaves_it_free(
    capsys, tmp_path, idx_dir, reference
):
    assert main(capsys, argv(idx_dir, tmp_path, "run"), stop=StopAt(5))[0] == 130
    run = str(tmp_path / "run")
    before = snapshot(run)
    holder = hold_lock(run)
    try:
        code, lines = main(capsys, ["--resume", run, "--no-progress", "--no-pictures"], stop=StopAt(10**9))
    finally:
        holder.kill()  # kill -9: no chance to unlock
        holder.wait()
    assert code == 2
    assert lines == [
        f"train.py: error: {run} is in use: another train.py is training it; let that one finish, or stop it "
        f"(Ctrl-C) and continue with --resume {run}"
    ]
    assert snapshot(run) == before
    assert main(capsys, ["--resume", run, "--no-progress", "--no-pictures"], stop=StopAt(10**9))[0] == 0
    assert_bit_identical(reference(), run)


@pytest.mark.parametrize("seed", [-(2**63), 2**64 - 1])
def test_the_extreme_seeds_that_torch_takes_train(capsys, tmp_path, idx_dir, seed):
    # the run seeds its weights from --seed and torch's generator from --seed + 1, which must stay in torch's range
    code, _ = main(capsys, argv(idx_dir, tmp_path, "run", "--seed", str(seed), epochs=1))
    assert code == 0
    assert torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["config"]["seed"] == seed


def test_resuming_with_other_data_or_another_run_directory_exits_2_and_changes_nothing(capsys, tmp_path, idx_dir):
    assert main(capsys, argv(idx_dir, tmp_path, "run"), stop=StopAt(STEPS + 3))[0] == 130
    run = str(tmp_path / "run")
    path = os.path.join(run, "checkpoint.pt")
    saved = torch.load(path, weights_only=True)
    saved["config"]["dataset"] = "fashion-mnist"  # as if it had trained on Fashion-MNIST's files
    torch.save(saved, path)
    before = snapshot(run)
    code, lines = main(capsys, ["--resume", run, "--data-dir", idx_dir])
    assert code == 2 and lines == [
        f"train.py: error: --resume {run}: the run trained on fashion-mnist, but the files in --data-dir {idx_dir} "
        "are neither MNIST's nor Fashion-MNIST's: pass the folder of the data it trained on"
    ]
    for flag, value in (("--run-name", "elsewhere"), ("--logdir", str(tmp_path / "other"))):
        code, lines = main(capsys, ["--resume", run, flag, value])
        assert code == 2 and lines[-1].startswith(f"train.py: error: --resume {run} continues the run in that ")
        assert f"leave out {flag}" in lines[-1]
    assert snapshot(run) == before and not os.path.exists(tmp_path / "other")


def test_resuming_a_finished_run_exits_2_and_changes_nothing(capsys, tmp_path, reference):
    run = shutil.copytree(reference(), tmp_path / "finished")
    capsys.readouterr()  # what the reference run printed, if this test made it
    before = snapshot(run)
    code, lines = main(capsys, ["--resume", str(run)])
    assert code == 2 and lines == [
        f"train.py: error: --resume {run}: the run is finished ({EPOCHS} of {EPOCHS} epochs): there is nothing "
        "to continue; start a new run to train longer"
    ]
    assert snapshot(run) == before


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_resuming_a_cuda_run_without_cuda_says_how_to_continue_on_the_cpu(capsys, tmp_path, reference):
    run = shutil.copytree(reference(), tmp_path / "from-a-gpu")
    saved = torch.load(run / "checkpoint.pt", weights_only=True)
    saved["config"]["device"], saved["epoch"] = "cuda", 1
    torch.save(saved, run / "checkpoint.pt")
    code, lines = main(capsys, ["--resume", str(run)])
    assert code == 2 and lines == [
        f"train.py: error: --resume {run}: the run trained on cuda and no CUDA device is available here: pass "
        "--device cpu to continue it on the CPU"
    ]


def _truncate(path):
    payload = Path(path).read_bytes()
    Path(path).write_bytes(payload[: len(payload) // 2])


def _flip_pickle(path):
    payload = Path(path).read_bytes()
    start = payload.index(b"data.pkl") + 200
    Path(path).write_bytes(
        payload[:start] + bytes(b ^ 0xFF for b in payload[start : start + 40]) + payload[start + 40 :]
    )


def _drop_key(path):
    saved = torch.load(path, weights_only=True)
    del saved["optimizer"]
    torch.save(saved, path)


def _wrong_shapes(path):
    saved = torch.load(path, weights_only=True)
    saved["model"]["0.weight"] = saved["model"]["0.weight"][:, :100]
    saved["epoch"] = 1
    torch.save(saved, path)


@pytest.mark.parametrize(
    "damage, message",
    [
        (_truncate, "checkpoint.pt is corrupt or not a checkpoint (torch.load raised "),
        (_flip_pickle, "checkpoint.pt is corrupt or not a checkpoint (torch.load raised "),
        (lambda path: Path(path).write_bytes(b"not a checkpoint"), "checkpoint.pt is corrupt or not a checkpoint"),
        (_drop_key, "checkpoint.pt lacks optimizer: it was not written by this train.py"),
        (_wrong_shapes, "its checkpoint does not fit the run's configuration (RuntimeError: "),
    ],
    ids=["truncated", "flipped-bytes", "not-a-checkpoint", "missing-key", "wrong-shapes"],
)
def test_a_corrupt_checkpoint_is_one_line_with_exit_2_and_is_left_as_it_was(
    capsys, tmp_path, reference, damage, message
):
    run = shutil.copytree(reference(), tmp_path / "damaged")
    damage(os.path.join(run, "checkpoint.pt"))
    before = snapshot(run)
    code, lines = main(capsys, ["--resume", str(run), "--no-progress", "--no-pictures"])
    assert code == 2 and len(lines) == 1 and lines[0].startswith(f"train.py: error: --resume {run}: ")
    assert message in lines[0] and "weights_only" not in lines[0], lines[0]
    assert snapshot(run) == before


def test_a_nan_loss_in_the_first_epoch_says_that_no_checkpoint_was_saved(capsys, tmp_path, idx_dir):
    code, lines = main(capsys, argv(idx_dir, tmp_path, "diverges", "--lr", "1e30", "--log-every", "1"))
    run = tmp_path / "diverges"
    assert code == 1 and len(lines) == 2  # "training on cpu into …", then the error
    assert lines[-1].startswith("train.py: error: the training loss became ") and "(epoch 1): lower --lr" in lines[-1]
    assert lines[-1].endswith(f"; no checkpoint was saved: {run} holds only the TensorBoard events so far")
    assert "checkpoint" not in " ".join(os.listdir(run))


def test_a_model_too_large_for_memory_is_refused_before_the_run_directory_exists(capsys, tmp_path, idx_dir):
    code, lines = main(capsys, argv(idx_dir, tmp_path / "runs", "huge", "--hidden", "100000000000"))
    assert code == 2 and len(lines) == 1
    assert lines[0].startswith("train.py: error: --hidden 100000000000: the model's weights, gradients and momentum ")
    assert lines[0].endswith("free: choose smaller --hidden sizes")
    assert not os.path.exists(tmp_path / "runs")


def test_memory_that_runs_out_while_building_is_one_line_and_leaves_no_run_directory(
    capsys, tmp_path, idx_dir, monkeypatch
):
    def out_of_memory(*args, **kwargs):  # what the CUDA allocator raises; a CPU's allocator may never say so
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 372.53 GiB")

    monkeypatch.setattr(loop, "build_model", out_of_memory)
    code, lines = main(capsys, argv(idx_dir, tmp_path / "runs", "oom"))
    assert code == 1 and lines[-1] == (
        "train.py: error: out of memory on cpu (OutOfMemoryError: CUDA out of memory. Tried to allocate 372.53 GiB): "
        "choose smaller --hidden sizes or --batch-size"
    )
    assert os.listdir(tmp_path / "runs") == []


def _fashion_like(folder):
    """IDX files whose 10,000 test labels begin as Fashion-MNIST's do."""
    write_idx_dir(folder, n_train=200, n_test=10)
    images, labels = synthetic_split(10_000, 2)
    labels[:10] = torch.tensor(data.FIRST_TEST_LABELS["fashion-mnist"])
    for name, tensor in (("t10k-images-idx3-ubyte", images), ("t10k-labels-idx1-ubyte", labels)):
        with open(os.path.join(folder, name), "wb") as f:
            f.write(idx_bytes(tensor))
    return folder


def test_a_data_dir_is_named_after_the_data_set_its_files_hold(capsys, tmp_path, idx_dir):
    fashion = _fashion_like(str(tmp_path / "fashion"))
    assert (data.identify(fashion), data.identify(idx_dir)) == ("fashion-mnist", "idx")
    arguments = ["--data-dir", fashion, "--logdir", str(tmp_path / "runs"), "--hidden", "8", "--epochs", "1"]
    assert main(capsys, [*arguments, "--device", "cpu", "--no-progress", "--no-pictures"])[0] == 0
    (run,) = os.listdir(tmp_path / "runs")
    assert "_fashion-mnist_" in run
    config = torch.load(tmp_path / "runs" / run / "checkpoint.pt", weights_only=True)["config"]
    assert (config["dataset"], config["device"]) == ("fashion-mnist", "cpu")
    code, lines = main(capsys, [*arguments, "--dataset", "mnist"])
    assert code == 2 and lines == [
        f"train.py: error: --dataset mnist, but the files in --data-dir {fashion} are fashion-mnist's"
    ]


# ---- slow: real faults in a child process --------------------------------------------------------------------


def _limit_file_size(limit):
    def preexec():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return preexec


@pytest.mark.slow
def test_a_full_disk_while_saving_keeps_the_last_checkpoint_and_leaves_no_temporary_file(
    capsys, tmp_path, idx_dir, reference
):
    big = ("--hidden", "256", "--dtype", "float64")  # checkpoint ≈ 3.3 MB, an epoch's events ≈ 0.6 MB
    assert main(capsys, argv(idx_dir, tmp_path, "full", *big), stop=StopAt(STEPS))[0] == 130  # epoch 1 saved
    run = str(tmp_path / "full")
    before = Path(run, "checkpoint.pt").read_bytes()
    process = train_py(["--resume", run, "--no-progress", "--no-pictures"], preexec_fn=_limit_file_size(2_000_000))
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 1
    line = one_line(stderr)
    assert line.startswith(f"train.py: error: could not write {run}/checkpoint.pt (the write was cut short; ")
    assert line.endswith(
        "free on its disk): free disk space, or raise the file-size limit (ulimit -f); the last good checkpoint "
        f"(epoch 1) is kept in {run}: continue with --resume {run}"
    )
    assert leftovers(run) == [] and Path(run, "checkpoint.pt").read_bytes() == before
    assert main(capsys, ["--resume", run, "--no-progress", "--no-pictures"], stop=StopAt(10**9))[0] == 0
    assert_bit_identical(reference(EPOCHS, *big), run)
    assert_each_epoch_logged_once(run, reference(EPOCHS, *big))


@pytest.mark.slow
def test_a_full_disk_while_logging_says_so_in_one_line_and_the_run_resumes(capsys, tmp_path, idx_dir, reference):
    flags = ("--hidden", "256", "--log-every", "1")  # an epoch's events ≈ 0.6 MB, the checkpoint ≈ 1.6 MB
    assert main(capsys, argv(idx_dir, tmp_path, "full", *flags), stop=StopAt(STEPS))[0] == 130  # epoch 1 saved
    run = str(tmp_path / "full")
    before = Path(run, "checkpoint.pt").read_bytes()
    process = train_py(["--resume", run, "--no-progress", "--no-pictures"], preexec_fn=_limit_file_size(300_000))
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 1
    assert one_line(stderr) == (  # and no traceback from TensorBoard's writer thread
        f"train.py: error: could not write TensorBoard's events into {run} (File too large): free disk space, or "
        f"raise the file-size limit (ulimit -f); the last good checkpoint (epoch 1) is kept in {run}: continue "
        f"with --resume {run}"
    )
    assert leftovers(run) == [] and Path(run, "checkpoint.pt").read_bytes() == before
    assert main(capsys, ["--resume", run, "--no-progress", "--no-pictures"], stop=StopAt(10**9))[0] == 0
    assert_bit_identical(reference(EPOCHS, *flags), run)
    assert_each_epoch_logged_once(run, reference(EPOCHS, *flags))  # the cut-short events file included


def _drop_root_override():
    """Make this root child subject to file permissions: without CAP_DAC_OVERRIDE (and CAP_DAC_READ_SEARCH) in
    its bounding set, the root it runs as after exec has them no more."""
    libc = ctypes.CDLL(None, use_errno=True)
    pr_capbset_drop, cap_dac_override, cap_dac_read_search = 24, 1, 2
    for capability in (cap_dac_override, cap_dac_read_search):
        if libc.prctl(pr_capbset_drop, capability, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def _can_drop_root_override():
    probe = subprocess.run([sys.executable, "-c", "pass"], preexec_fn=_drop_root_override, capture_output=True)
    return probe.returncode == 0


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="drops Linux capabilities to make root obey chmod")
def test_resuming_into_a_read_only_run_is_refused_before_training(capsys, tmp_path, idx_dir):
    if os.geteuid() == 0 and not _can_drop_root_override():
        pytest.skip("running as root without CAP_SETPCAP: chmod cannot make a folder read-only to this process")
    assert main(capsys, argv(idx_dir, tmp_path, "locked"), stop=StopAt(5))[0] == 130
    run = str(tmp_path / "locked")
    before = snapshot(run)
    os.chmod(run, 0o555)
    try:
        process = train_py(["--resume", run], preexec_fn=_drop_root_override if os.geteuid() == 0 else None)
        _, stderr = process.communicate(timeout=300)
    finally:
        os.chmod(run, 0o755)
    assert process.returncode == 2
    assert one_line(stderr) == (
        f"train.py: error: --resume {run}: cannot write into it (Permission denied): make it writable (chmod u+w) "
        "or copy the run somewhere writable and resume the copy"
    )
    assert snapshot(run) == before


LONG = 12  # epochs: the run goes on long after the epoch a signal follows


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGINT, signal.SIGTERM], ids=["kill-9", "ctrl-c", "sigterm"])
def test_a_signal_after_a_seeded_epoch_then_resume_ends_bit_identical_with_each_epoch_logged_once(
    capsys, tmp_path, idx_dir, reference, seed, how
):
    epoch = random.Random(seed).randrange(1, 4)
    process = train_py(argv(idx_dir, tmp_path, "run", epochs=LONG))
    assert wait_for_epoch(process, epoch, LONG)
    process.send_signal(how)
    _, stderr = process.communicate(timeout=300)
    run = str(tmp_path / "run")
    if process.returncode == 0:  # only if this test went unscheduled for the run's remaining epochs
        assert_bit_identical(reference(LONG), run)
        pytest.skip(f"the run finished its {LONG} epochs before the signal arrived: nothing was interrupted")
    if how == signal.SIGKILL:
        assert process.returncode == -signal.SIGKILL
    else:
        by = " by SIGTERM" if how == signal.SIGTERM else ""
        assert process.returncode == 128 + how
        assert one_line(stderr) == f"interrupted{by}: saved the run in {run}; continue it with --resume {run}"
        assert leftovers(run) == []
    saved = torch.load(os.path.join(run, "checkpoint.pt"), weights_only=True)
    assert epoch <= saved["epoch"] < LONG and saved["global_step"] == saved["epoch"] * STEPS + saved["step"]
    assert main(capsys, ["--resume", run, "--no-progress", "--no-pictures"], stop=StopAt(10**9))[0] == 0
    assert_bit_identical(reference(LONG), run)
    assert_each_epoch_logged_once(run, reference(LONG), epochs=LONG)
    assert leftovers(run) == []  # a temporary file that kill -9 cut short was replaced


@pytest.mark.parametrize("first", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_and_sigterm_are_ignored_from_the_moment_training_returns_and_restored_when_the_run_ends(first):
    before = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    with launch.StopSignals() as signals:
        assert all(signal.getsignal(signum) == signals._handle for signum in before)
        with signals.training():
            signals._handle(first, None)  # the first asks the run to stop
            assert signals.stop.is_set() and signals.stop.signal == first
            with pytest.raises(KeyboardInterrupt):  # a second, of either kind, stops it at once
                signals._handle(signal.SIGINT if first == signal.SIGTERM else signal.SIGTERM, None)
            assert signals.stop.signal == first  # the run reports the signal that stopped it
        # the run is saved; a signal flood must not meet a Python handler while it says so and shuts down
        assert all(signal.getsignal(signum) == signal.SIG_IGN for signum in before)
    assert {signum: signal.getsignal(signum) for signum in before} == before


@pytest.mark.slow
def test_more_ctrl_c_while_the_stopped_run_shuts_down_print_no_traceback(tmp_path, idx_dir):
    process = train_py(argv(idx_dir, tmp_path, "run", epochs=LONG))
    assert wait_for_epoch(process, 1, LONG)
    process.send_signal(signal.SIGINT)
    for line in process.stderr:  # the run has stopped and saved; Python is about to shut down
        if line.startswith("interrupted:"):
            break
    while process.poll() is None:  # keep pressing Ctrl-C until it has exited, Python's shutdown included
        process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 130
    assert "Traceback" not in stderr and "Exception ignored" not in stderr, stderr


@pytest.mark.slow
def test_a_training_run_refuses_a_resume_of_itself_from_a_second_process(capsys, tmp_path, idx_dir):
    process = train_py(argv(idx_dir, tmp_path, "run", epochs=LONG))  # a new run: locked from its start
    assert wait_for_epoch(process, 1, LONG)
    run = str(tmp_path / "run")
    try:
        code, lines = main(capsys, ["--resume", run, "--no-progress", "--no-pictures"], stop=StopAt(10**9))
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=300)
    assert code == 2
    assert lines == [
        f"train.py: error: {run} is in use: another train.py is training it; let that one finish, or stop it "
        f"(Ctrl-C) and continue with --resume {run}"
    ]
    assert process.returncode in (0, 128 + signal.SIGTERM)  # 0 only if it finished before the signal came
