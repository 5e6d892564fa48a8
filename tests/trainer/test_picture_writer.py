"""The backprop figures drawn off the training loop (manualbp_trainer.picture_writer, .drawing): the events are the
ones ``SummaryWriter.add_figure`` writes (tags, steps and PNG bytes), whether the worker drew a figure or the run
did; a figure that cannot be drawn, and a dead worker, raise in the run; at most ``limit`` figures wait; a run
stopped mid-epoch has the figures of the epochs before; Ctrl-C and SIGTERM do not reach the worker."""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import StopAt
from idx import write_idx_dir
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.utils.tensorboard import SummaryWriter

from manualbp_trainer import cli, drawing, picture_writer, pictures
from manualbp_trainer.networks import build_mlp

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def figure_of(label, names=None, hidden=(24, 12)):
    """``(pictures.figure's arguments, its FigureData)`` for a test image of class ``label``."""
    torch.manual_seed(label)
    model = build_mlp([784, *hidden, 10], "relu", None, "manual")
    x = torch.rand(784)
    asked = pictures.requests(model, x, torch.tensor(label), "cross-entropy")
    return (x, label, asked, names), pictures.figure_data(x, label, asked, names)


def images(run_dir):
    accumulator = EventAccumulator(str(run_dir), size_guidance={"images": 0})
    accumulator.Reload()
    return {
        tag: [(event.step, event.width, event.height, event.encoded_image_string) for event in accumulator.Images(tag)]
        for tag in accumulator.Tags()["images"]
    }


def wait_until_drawn(writer, seconds=120):
    """Until the worker has drawn every figure handed to it (it runs at nice 19: on a busy machine, later)."""
    deadline = time.monotonic() + seconds
    while not all(future.done() for _, _, future in writer.pending):
        assert time.monotonic() < deadline, "the worker drew nothing"
        time.sleep(0.05)


@pytest.fixture
def drawn_by(request, monkeypatch):
    """With "worker" the worker draws every figure; with "run" it is handed none, and the run draws them where it writes
    them, as it does the figures the worker has not begun when it must have them."""
    if request.param == "run":

        def handed_nothing(worker):
            with worker.changed:
                while worker.ended is None:
                    worker.changed.wait()

        monkeypatch.setattr(picture_writer._Worker, "_next", handed_nothing)
    return request.param


ASKED = [("requests/3", 8, 3, None), ("requests/0_T-shirt_top", 8, 0, pictures.class_names("fashion-mnist"))]
ASKED += [("requests/3", 16, 3, None)]


@pytest.mark.parametrize(("drawn_by", "workers"), [("worker", 1), ("worker", 2), ("run", 1)], indirect=["drawn_by"])
def test_the_figures_are_the_events_add_figure_writes_byte_for_byte(tmp_path, drawn_by, workers):
    # two workers draw the figures in turn: still written in the order asked, the same bytes
    expected = SummaryWriter(str(tmp_path / "add_figure"))
    for tag, step, label, names in ASKED:
        expected.add_figure(tag, pictures.figure(*figure_of(label, names)[0]), step)
    expected.close()
    writer = SummaryWriter(str(tmp_path / "picture_writer"))
    figures = picture_writer.PictureWriter(writer, workers=workers)
    for tag, step, label, names in ASKED:
        figures.submit(tag, step, figure_of(label, names)[1])
    if drawn_by == "worker":
        wait_until_drawn(figures)
    figures.close()  # a figure the worker has not begun is drawn here
    writer.close()
    got, want = images(tmp_path / "picture_writer"), images(tmp_path / "add_figure")
    assert sorted(got) == ["requests/0_T-shirt_top", "requests/3"]
    assert [step for step, *_ in got["requests/3"]] == [8, 16]
    assert got == want  # the same width, height and PNG bytes at each tag and step
    assert figures.workers == []  # ended by close


@pytest.mark.parametrize("drawn_by", ["worker", "run"], indirect=True)
def test_a_figure_that_cannot_be_drawn_raises_naming_it_after_the_figures_before_it_are_written(tmp_path, drawn_by):
    writer = SummaryWriter(str(tmp_path))
    figures = picture_writer.PictureWriter(writer)
    figures.submit("requests/3", 8, figure_of(3)[1])
    broken = figure_of(4)[1]
    broken.label = 10  # there are 10 classes: no name to give it
    figures.submit("requests/4", 8, broken)
    if drawn_by == "worker":
        wait_until_drawn(figures)
    with pytest.raises(picture_writer.PictureError) as raised:
        figures.close()
    assert str(raised.value) == ("drawing the figure requests/4 of step 8 failed (IndexError: list index out of range)")
    cause = raised.value.__cause__.__cause__
    if drawn_by == "worker":  # the worker's traceback, told across the process boundary
        assert isinstance(cause, picture_writer._WorkerTraceback)
        assert "in the worker process" in str(cause) and "IndexError: list index out of range" in str(cause)
    else:
        assert isinstance(cause, IndexError)
    writer.close()
    assert [step for step, *_ in images(tmp_path)["requests/3"]] == [8]
    assert "requests/4" not in images(tmp_path)


def test_a_worker_that_died_is_an_error_in_the_run(tmp_path):
    writer = SummaryWriter(str(tmp_path))
    figures = picture_writer.PictureWriter(writer)
    figures.submit("requests/3", 8, figure_of(3)[1])
    wait_until_drawn(figures)
    figures.workers[0].process.kill()
    figures.workers[0].process.wait()
    figures.submit("requests/5", 8, figure_of(5)[1])
    wait_until_drawn(figures)  # the worker's end fails the figure handed to it
    with pytest.raises(picture_writer.PictureError) as raised:
        figures.close()
    assert str(raised.value) == (
        "drawing the figure requests/5 of step 8 failed (the worker drawing the figures ended (exit status -9))"
    )
    writer.close()
    assert list(images(tmp_path)) == ["requests/3"]


def test_flush_writes_every_figure_of_the_steps_before_and_at_most_limit_wait(tmp_path):
    writer = SummaryWriter(str(tmp_path))
    figures = picture_writer.PictureWriter(writer, limit=3)
    for label in range(5):
        figures.submit(f"requests/{label}", 8, figure_of(label, hidden=(6,))[1])
        assert len(figures.pending) <= 3
    figures.submit("requests/0", 16, figure_of(0, hidden=(6,))[1])
    figures.flush(16)
    assert [step for _, step, _ in figures.pending] in ([16], [])  # at step 16, unless the worker had drawn it
    writer.flush()
    assert sorted(images(tmp_path)) == [f"requests/{label}" for label in range(5)]
    figures.close()
    writer.close()
    assert [step for step, *_ in images(tmp_path)["requests/0"]] == [8, 16]


def test_ctrl_c_and_sigterm_do_not_reach_the_worker(tmp_path):
    writer = SummaryWriter(str(tmp_path))
    figures = picture_writer.PictureWriter(writer)
    figures.submit("requests/3", 8, figure_of(3)[1])
    wait_until_drawn(figures)  # the worker has started and drawn
    for signum in (signal.SIGINT, signal.SIGTERM):
        os.kill(figures.workers[0].process.pid, signum)
    time.sleep(0.2)
    assert figures.workers[0].process.poll() is None
    figures.submit("requests/5", 16, figure_of(5)[1])
    wait_until_drawn(figures)
    figures.close()
    writer.close()
    assert sorted(images(tmp_path)) == ["requests/3", "requests/5"]


def test_the_drawing_worker_imports_neither_torch_nor_pyplot():
    code = "import sys, manualbp_trainer.drawing\nprint(sorted({'torch', 'matplotlib.pyplot'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
    assert drawing.FIGURE_WIDTH_INCHES * drawing.FIGURE_DPI == 400  # TensorBoard's card width, and more


def test_a_run_stopped_mid_epoch_keeps_the_figures_of_the_epochs_before_and_a_resume_adds_the_rest(tmp_path):
    idx = write_idx_dir(str(tmp_path / "idx"))
    flags = ["--hidden", "24", "--batch-size", "50", "--epochs", "3", "--no-progress", "--device", "cpu"]
    run_dir = str(tmp_path / "runs" / "r")
    argv = ["--data-dir", idx, "--logdir", str(tmp_path / "runs"), "--run-name", "r", "--pictures", *flags]
    assert cli.main(argv, stop=StopAt(12)) == 130  # 8 steps an epoch: stopped in the second
    assert [step for step, *_ in images(run_dir)["requests/3"]] == [8]
    assert cli.main(["--resume", run_dir, "--no-progress"]) == 0
    drawn = images(run_dir)
    assert {f"requests/{label}" for label in range(10)} <= set(drawn)
    assert [step for step, *_ in drawn["requests/3"]] == [8, 16, 24]
