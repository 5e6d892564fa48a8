"""What a run shows as it trains: TensorBoard's events, the progress bar, the device's clock, and the values taken
on the device at logged steps and read back later, kept together in one ``Logbook``.

TensorBoard sorts its groups of charts by the first part of their tags: ``accuracy/`` and ``loss/`` (train and
test side by side) come first, then ``lr``, ``manualbp_vs_autograd/``, ``misclassified/``, ``norms/``,
``per_example/``, ``requests/`` (the backprop pictures), ``speed/`` and ``weights/``. The CUSTOM SCALARS tab draws
train and test in one chart each.
"""

import dataclasses
import json
import math
import os
import time
import warnings
from dataclasses import dataclass

import torch
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams
from tqdm import tqdm

from manualbp_trainer import distributed, summaries
from manualbp_trainer.model import MODEL_FIELDS, MODELS
from manualbp_trainer.picture_writer import PictureWriter

AGREEMENT_WARNING = 1e-10  # relative difference of float64 gradients that is not rounding
# what tells runs apart in TensorBoard's HPARAMS table, in its column order; the rest of Config does not change
# what a run computes (device, compile, where the data lies, how often it logs)
HPARAMS = (
    "model", "layers", "hidden", "activation", "output_activation", "loss", "lr", "batch_size", "epochs", "lr_schedule",
    "momentum", "nesterov", "weight_decay", "init", "normalize", "dtype", "seed", "dataset",
)  # fmt: skip
METRICS = ("accuracy/test", "accuracy/train", "loss/test", "loss/train")  # the HPARAMS table shows their last value
# the CUSTOM SCALARS tab: train and test in one chart
LAYOUT = {"curves": {name: ["Multiline", [f"{name}/train", f"{name}/test"]] for name in ("loss", "accuracy")}}


class TrainingError(Exception):
    """The run cannot go on (a loss that is no longer finite); the message says what to do."""


class Logbook:
    """A run's TensorBoard writer (rank 0's; None on the other ranks and in a run that writes none), its progress
    bar, its clock, and the logs taken on the device but not yet written. On a GPU (``defer``) the logs wait for
    the end of the epoch, so that nothing inside a GPU epoch waits for the GPU; on a CPU they are written at once.

    The backprop figures (``--pictures``) are drawn by a worker process (``pictures``, a ``PictureWriter``) while
    the next epoch trains, and written as they come back: each epoch's are on disk before the next epoch's
    checkpoint, and all of them when the run ends, stopped or not.
    """

    def __init__(self, config, writer, bar, device, defer=None):
        self.config, self.writer, self.bar = config, writer, bar
        self.clock = _Clock(device)
        self.defer = device.type == "cuda" if defer is None else defer
        self.logs = []
        self.window = None  # when the current logging window began, on the device's timeline, and its examples
        draws = writer is not None and config.pictures and MODELS[config.model].supports("pictures")
        self.pictures = PictureWriter(writer) if draws else None

    @classmethod
    def open(cls, config, run_dir, state, total_steps, resumed, progress):
        """The logbook of a run in ``run_dir``: rank 0 writes TensorBoard's events there and shows the bar."""
        rank = distributed.rank_and_world_size()[0]
        writer = _writer(config, run_dir, state, resumed) if rank == 0 else None
        shown = progress and rank == 0
        bar = tqdm(total=total_steps, initial=state.global_step, disable=not shown, unit="step", dynamic_ncols=True)
        return cls(config, writer, bar, next(state.model.parameters()).device)

    def start_epoch(self):
        self.window = self.clock.mark(), 0

    def stepped(self, state, step, seen, examples, log):
        """After a step of ``examples`` (``seen`` so far this epoch, on this rank): move the bar, and with ``log``
        take the running values on the device (written now, or at the epoch's end on a GPU)."""
        self.bar.update()
        self.window = self.window[0], self.window[1] + examples
        if log:
            self.logs.append(_Log.take(state, step, seen, self.window, self.clock))
            self.window = self.logs[-1].end, 0
            if not self.defer:
                self.write()

    def write(self):
        """Read the logs back from the device in one go (summed over the ranks under torchrun), write them to
        TensorBoard (rank 0) and empty the list. A loss that is no longer finite ends the run at the first log
        that shows it, as if it had been read at once."""
        if not self.logs:
            return
        logs, self.logs = self.logs, []
        means = mean_over_ranks(torch.stack([log.sums for log in logs]), [log.seen for log in logs])
        norms = torch.stack([log.norms for log in logs]).tolist() if self.writer is not None else None
        for i, (log, (train_loss, train_accuracy)) in enumerate(zip(logs, means, strict=True)):
            if not math.isfinite(train_loss):
                raise TrainingError(
                    f"the training loss became {train_loss} at step {log.step} (epoch {log.epoch}): lower --lr (now "
                    f"{self.config.lr})"
                )
            throughput = log.examples / max(self.clock.seconds(log.start, log.end), 1e-9)
            if self.writer is not None:
                self._scalars(log.step, {"loss/train": train_loss, "accuracy/train": train_accuracy, "lr": log.lr})
                self._scalars(
                    log.step,
                    {"speed/examples_per_second": throughput, **dict(zip(log.norm_tags, norms[i], strict=True))},
                )
            self.bar.set_postfix(loss=f"{train_loss:.4f}", acc=f"{train_accuracy:.4f}", ex_per_s=f"{throughput:,.0f}")
        if self.pictures is not None:
            self.pictures.write_finished()  # the last epoch's figures that the worker has drawn since

    def epoch(self, state, probe, test_set, predictions, test_loss, test_accuracy):
        """The end of an epoch: the test loss and accuracy, histograms, pictures and the gradient check."""
        model, step, config = state.model, state.global_step, self.config
        self._scalars(step, {"loss/test": test_loss, "accuracy/test": test_accuracy})
        summaries.log_histograms(self.writer, model, step)
        names = summaries.pictures.class_names(config.dataset)
        for tag, image in (
            ("weights/first_layer", summaries.first_layer_tiles(model)),
            ("weights/first_conv_filters", summaries.first_conv_filters(model)),
            ("misclassified/test", summaries.misclassified_grid(test_set.images, test_set.labels, predictions, names)),
        ):
            if image is not None:
                self.writer.add_image(tag, image, step)
        if self.pictures is not None:
            summaries.log_pictures(self.writer, self.pictures, model, config.loss, test_set, probe, step, names)
        max_abs, max_rel = summaries.gradient_agreement(model, config.loss, *probe)
        agreement = {"manualbp_vs_autograd/max_abs_diff": max_abs, "manualbp_vs_autograd/max_rel_diff": max_rel}
        self._scalars(step, agreement)
        if max_rel > AGREEMENT_WARNING:
            message = (
                f"WARNING: manualbp's gradients differ from autograd's by up to {max_rel:.2e} (relative) on the "
                "probe batch: more than rounding explains. Run `python -m manualbp.check` on this machine."
            )
            tqdm.write(message)
            warnings.warn(message, RuntimeWarning, stacklevel=2)

    def say(self, line):
        """A line under the progress bar, from rank 0."""
        if self.writer is not None:
            self.bar.write(line)

    def flush(self, step):
        """Every event of a step before ``step``, and every other event so far, on disk (before the checkpoint of
        ``step`` that follows them); the figures of ``step`` itself, an epoch's end, may still be being drawn."""
        if self.pictures is not None:
            self.pictures.flush(step)
        if self.writer is not None:
            self.writer.flush()

    def close(self, figures=True):
        """Write what is left, the figures still being drawn too unless ``figures`` is False (a run stopped at once,
        by a second Ctrl-C, gives them up), and close the writer and the bar. Closing again does nothing more."""
        pictures, self.pictures = self.pictures, None
        try:
            if pictures is not None and figures:
                pictures.close()
            elif pictures is not None:
                pictures.abandon()
        finally:
            self.bar.close()
            if self.writer is not None:
                self.writer.close()

    def _scalars(self, step, values):
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, step)


def mean_over_ranks(sums, counts):
    """Mean loss and accuracy, ``[(loss, accuracy), …]``, from this rank's sums ``(k, 2)`` (or ``(2,)``) of loss
    and correct predictions over ``counts`` examples, summed over every rank first under torchrun. This reads the
    values back: on a GPU it waits for the work queued before it."""
    sums = sums.reshape(-1, 2)
    counts = torch.tensor(counts, dtype=torch.float64).reshape(-1, 1).to(sums.device)
    totals = distributed.all_reduce_sum(torch.cat([sums, counts], dim=1)).tolist()
    return [(loss_sum / max(count, 1), correct / max(count, 1)) for loss_sum, correct, count in totals]


def _writer(config, run_dir, state, resumed):
    """TensorBoard's writer. A resumed run first drops what was logged after its checkpoint: the steps it is about
    to log again. A new run starts with its configuration, the CUSTOM SCALARS layout and its HPARAMS row."""
    if resumed:  # events at the checkpoint's own step were written before it (flushed), so they stay
        _wait_for_a_later_second(run_dir)
        return SummaryWriter(run_dir, purge_step=state.global_step + 1)
    writer = SummaryWriter(run_dir)
    applies = _applies(config)
    writer.add_text("config", "```\n" + json.dumps(applies, indent=2) + "\n```")
    writer.add_custom_scalars(LAYOUT)
    # the row alone, no experiment summary: TensorBoard then makes the table from every run's row, with the
    # columns whose values differ between the runs first (an experiment summary per run would list the columns
    # in name order, and TensorBoard shows the first five); the metrics are the last values of logged scalars
    _, session_start, session_end = hparams(_hparams(config), dict.fromkeys(METRICS, float("nan")))
    for summary in (session_start, session_end):
        writer.file_writer.add_summary(summary)
    return writer


def _applies(config):
    """``config`` as a dictionary without the fields that shape another kind of model."""
    unused = set(MODEL_FIELDS) - set(MODELS[config.model].uses)
    return {name: value for name, value in dataclasses.asdict(config).items() if name not in unused}


def _hparams(config):
    """The HPARAMS table's row, each value as the command line takes it (TensorBoard would show 100 as 100.00)."""
    applies = _applies(config)
    return {name: _hparam(applies[name]) for name in HPARAMS if name in applies}


def _hparam(value):
    if isinstance(value, tuple):  # hidden sizes
        return " ".join(map(str, value))
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return f"{value:g}"
    return "none" if value is None else str(value)


def _wait_for_a_later_second(run_dir):
    """TensorBoard reads a run's event files in the order of their names, which begin with the second each file
    was made: a resumed run's file must begin in a later second than those before it, or TensorBoard would read
    its purge first and the old file's events after it (a resume within a second of the start is then slowed by
    less than a second)."""
    made = [int(name.split(".")[3]) for name in os.listdir(run_dir) if name.startswith("events.out.tfevents.")]
    while made and time.time() < max(made) + 1:
        time.sleep(max(made) + 1 - time.time())


@dataclass
class _Log:
    """One logged step's values, copied on the device when the step was queued, read back later."""

    step: int
    epoch: int  # counted from 1, as the run reports epochs
    lr: float
    examples: int  # in the window since the last log, over every rank
    start: object  # the window's start and end marks on the device's timeline (_Clock)
    end: object
    seen: int  # this epoch's examples on this rank so far
    sums: torch.Tensor  # (loss sum, correct predictions): this rank's, this epoch's, so far
    norm_tags: list
    norms: torch.Tensor

    @classmethod
    def take(cls, state, step, seen, window, clock):
        tags, norms = summaries.norms(state.model)
        return cls(
            step=state.global_step,
            epoch=state.epoch + 1,
            lr=state.optimizer.param_groups[0]["lr"],
            examples=window[1],
            start=window[0],
            end=clock.mark(),
            seen=seen,
            sums=step.sums(),
            norm_tags=tags,
            norms=norms,
        )


class _Clock:
    """Marks on the device's timeline: CUDA events on a GPU (recorded in the stream, so taking one does not wait
    for the GPU), the host's clock on a CPU (where work is done when its call returns)."""

    def __init__(self, device):
        self.cuda = device.type == "cuda"

    def mark(self):
        if not self.cuda:
            return time.perf_counter()
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def seconds(self, start, end):
        """Seconds between two marks; on a GPU, once the work before ``end`` is done."""
        return start.elapsed_time(end) / 1000 if self.cuda else end - start
