"""The GPU utilisation line a CUDA run ends with (manualbp_trainer.utilisation): its wording from a fake sampler's
reads and clock, a read that fails (no nvidia-ml-py, NVML not supported) said instead of a number without
stopping the run, a run shorter than one sample, and a CPU run that samples nothing and says nothing."""

import threading

import pytest
import torch
from idx import write_idx_dir

from manualbp_trainer import cli, utilisation


def fake_clock(*times):
    readings = iter(times)
    return lambda: next(readings)


def test_the_line_gives_the_mean_percentage_the_training_time_and_the_gpu():
    line = utilisation.utilisation_line([80.0, 90.0, 91.0], 14.2, "NVIDIA H200")
    assert line == "GPU utilisation: 87 % mean over 14.2 s of training (NVIDIA H200)"
    assert utilisation.utilisation_line([99.5, 100.0], 0.25, "NVIDIA H100 80GB HBM3") == (
        "GPU utilisation: 100 % mean over 0.2 s of training (NVIDIA H100 80GB HBM3)"  # 0.25 s, to one place
    )


def test_the_sampler_reads_every_interval_while_entered_and_says_the_mean_of_its_reads():
    values, fourth = [80.0, 90.0, 91.0], threading.Event()

    def read():
        if values:
            return values.pop(0)
        fourth.set()
        sampler.stopped.wait()  # a read the run's end overtakes: not a sample of its training
        return 0.0

    sampler = utilisation.Sampler(read, "NVIDIA H200", interval=0.001, clock=fake_clock(100.0, 114.2))
    with sampler:
        assert fourth.wait(timeout=60)
    assert sampler.samples == [80.0, 90.0, 91.0]
    assert sampler.seconds == pytest.approx(14.2)
    assert sampler.line() == "GPU utilisation: 87 % mean over 14.2 s of training (NVIDIA H200)"
    assert not sampler.thread.is_alive()


@pytest.mark.parametrize(
    "error, why",
    [
        (
            ModuleNotFoundError("nvidia-ml-py does not seem to be installed or it can't be imported."),
            "torch.cuda.utilization needs the nvidia-ml-py package (pip install nvidia-ml-py)",
        ),
        (RuntimeError("NVML: Not Supported"), "torch.cuda.utilization raised RuntimeError: NVML: Not Supported"),
    ],
    ids=["no-nvidia-ml-py", "not-supported"],
)
def test_a_read_that_fails_is_said_instead_of_a_number_and_does_not_reach_the_run(error, why):
    failed = threading.Event()

    def read():
        failed.set()
        raise error

    sampler = utilisation.Sampler(read, "NVIDIA H200", interval=0.001, clock=fake_clock(0.0, 3.0))
    with sampler:  # no exception comes out
        assert failed.wait(timeout=60)
        sampler.thread.join(timeout=60)
        assert not sampler.thread.is_alive()  # it stopped sampling at the first failure
    assert sampler.samples == []
    assert sampler.line() == f"GPU utilisation: not measured over 3.0 s of training (NVIDIA H200): {why}"


def test_a_run_shorter_than_one_sample_says_so():
    sampler = utilisation.Sampler(lambda: 50.0, "NVIDIA H200", interval=60, clock=fake_clock(0.0, 0.05))
    with sampler:
        pass
    assert sampler.line() == (
        "GPU utilisation: not measured over 0.1 s of training (NVIDIA H200): the run was shorter than one sample (60 s)"
    )


def test_on_the_cpu_nothing_is_sampled_and_nothing_is_said(capsys, tmp_path):
    sampler = utilisation.Sampler.of(torch.device("cpu"))
    with sampler:
        pass
    assert sampler.thread is None and sampler.line() is None
    idx = write_idx_dir(str(tmp_path / "idx"))
    flags = ["--hidden", "16", "--epochs", "1", "--no-progress", "--no-pictures", "--device", "cpu"]
    assert cli.main(["--data-dir", idx, "--logdir", str(tmp_path / "runs"), *flags]) == 0
    printed = capsys.readouterr()
    assert len(printed.out.splitlines()) == 2  # the epoch's line and the final line
    assert printed.out.splitlines()[-1].startswith("final test accuracy")
    assert "GPU" not in printed.out + printed.err
