"""The training loop: mini-batch SGD over whole-tensor data sets, as plain verbs over a small state object.

``train`` reads top to bottom: build the state (or load it from a checkpoint), then for each epoch
``train_epoch``, ``evaluate``, log the epoch and ``save_checkpoint``. A stop request (Ctrl-C, handled by the CLI)
is checked at every step boundary; the run then saves its exact position, so that ``--resume`` ends bit-identical
to a run that was never stopped.
"""

import dataclasses
import json
import math
import os
import sys
import threading
import time
import warnings
from dataclasses import dataclass

import torch
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams
from tqdm import tqdm

from manualbp import functional as manual_functional
from manualbp_trainer import checkpoint, cuda_graphs, data, distributed, summaries
from manualbp_trainer.model import MLP_ONLY, build_cnn, build_mlp

PROBE_SIZE = 256  # examples in the fixed batch on which manualbp's gradients are compared with autograd's
AGREEMENT_WARNING = 1e-10  # relative difference of float64 gradients that is not rounding
# what tells runs apart in TensorBoard's HPARAMS table, in its column order; the rest of Config does not change
# what a run computes (device, compile, where the data lies, how often it logs)
HPARAMS = (
    "model", "layers", "hidden", "activation", "output_activation", "loss", "lr", "batch_size", "epochs", "lr_schedule",
    "momentum", "nesterov", "weight_decay", "init", "normalize", "dtype", "seed", "dataset",
)  # fmt: skip
METRICS = ("test/accuracy", "test/loss", "train/accuracy", "train/loss")  # the HPARAMS table shows their last value


@dataclass
class Config:
    """Everything that defines a run. The defaults reach ≥ 98% on MNIST and ≥ 89% on Fashion-MNIST.

    ``model`` is ``"mlp"`` (784-``hidden``-10, shaped by ``activation``, ``output_activation`` and ``init``) or
    ``"cnn"`` (``model.build_cnn``, which has no use for those four fields).
    """

    model: str = "mlp"
    dataset: str = "mnist"
    data_root: str = "data"
    data_dir: str | None = None
    normalize: bool = True
    hidden: tuple = (512, 256)
    activation: str = "relu"
    output_activation: str | None = None
    loss: str = "cross-entropy"
    layers: str = "manual"
    init: str = "default"
    lr: float = 0.05
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    lr_schedule: str = "cosine"
    batch_size: int = 100
    epochs: int = 15
    seed: int = 0
    dtype: str = "float32"
    device: str = "auto"
    compile: bool = False
    cuda_graphs: bool = False
    log_every: int = 100
    pictures: bool = True


@dataclass
class Result:
    final_accuracy: float
    best_accuracy: float
    best_epoch: int
    final_loss: float
    seconds: float
    run_dir: str
    interrupted: bool = False


class TrainingError(Exception):
    """The run cannot go on (a loss that is no longer finite); the message says what to do."""


@dataclass
class TrainState:
    """What changes as a run trains, and all that a checkpoint must hold to continue it exactly."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler | None
    shuffler: torch.Generator  # draws each epoch's order; on the CPU, so the order is the same on every device
    epoch_rng: torch.Tensor  # the shuffler's state when this epoch began: a resumed run draws its order again
    epoch: int = 0  # epochs finished
    step: int = 0  # steps finished in the current epoch
    global_step: int = 0  # steps finished in the whole run
    best_accuracy: float = 0.0
    best_epoch: int = 0


def resolve_device(name):
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def parameter_count(sizes):
    """Weights and biases of the MLP over ``sizes``, counted before anything is allocated."""
    return sum(fan_in * fan_out + fan_out for fan_in, fan_out in zip(sizes[:-1], sizes[1:], strict=True))


def build_model(config, in_features, dtype):
    """The network ``config`` describes, its initial weights drawn from ``config.seed``, on the CPU."""
    if config.model == "cnn":
        return build_cnn(config.layers, config.seed, dtype)
    sizes = [in_features, *config.hidden, data.NUM_CLASSES]
    return build_mlp(sizes, config.activation, config.output_activation, config.layers, config.init, config.seed, dtype)


def create_state(config, in_features, train_examples, device, dtype):
    """A fresh run's state: the model from ``config.seed``, SGD, the learning-rate schedule, the shuffler."""
    model = build_model(config, in_features, dtype).to(device)
    optimizer = torch.optim.SGD(
        model.parameters(),
        lr=config.lr,
        momentum=config.momentum,
        nesterov=config.nesterov,
        weight_decay=config.weight_decay,
        fused=True,  # one kernel for the whole update rather than several per parameter
    )
    scheduler = make_scheduler(
        optimizer, config.lr_schedule, config.lr, config.epochs * steps_per_epoch(config, train_examples)
    )
    shuffler = torch.Generator().manual_seed(config.seed)
    return TrainState(model, optimizer, scheduler, shuffler, epoch_rng=shuffler.get_state())


def steps_per_epoch(config, train_examples):
    return math.ceil(train_examples / config.batch_size)


def load_checkpoint(state, saved):
    """Put a checkpoint (``checkpoint.load``'s dictionary) into ``state``."""
    try:
        state.model.load_state_dict(saved["model"])
        state.optimizer.load_state_dict(saved["optimizer"])
        if state.scheduler is not None:
            state.scheduler.load_state_dict(saved["scheduler"])
        state.shuffler.set_state(saved["epoch_rng"])
    except (KeyError, RuntimeError, ValueError, TypeError) as error:
        raise checkpoint.CheckpointError(
            f"its checkpoint does not fit the run's configuration ({checkpoint.cause(error)}): it cannot be resumed"
        ) from error
    state.epoch_rng = saved["epoch_rng"]
    if saved.get("torch_rng") is not None:  # checkpoints of MLP runs from before it was saved lack it
        _set_torch_rng(saved["torch_rng"], next(state.model.parameters()).device)
    state.epoch, state.step, state.global_step = saved["epoch"], saved["step"], saved["global_step"]
    state.best_accuracy, state.best_epoch = saved["best_accuracy"], saved["best_epoch"]


def save_checkpoint(state, config, run_dir):
    """Write the run's exact position to ``run_dir/checkpoint.pt`` (rank 0 alone, under torchrun)."""
    if distributed.rank_and_world_size()[0] != 0:
        return
    checkpoint.save(
        {
            "model": state.model.state_dict(),
            "optimizer": state.optimizer.state_dict(),
            "scheduler": state.scheduler.state_dict() if state.scheduler is not None else None,
            "epoch": state.epoch,
            "step": state.step,
            "global_step": state.global_step,
            "epoch_rng": state.epoch_rng,
            "torch_rng": _torch_rng(next(state.model.parameters()).device),
            "best_accuracy": state.best_accuracy,
            "best_epoch": state.best_epoch,
            "config": dataclasses.asdict(config),
        },
        run_dir,
    )


class TrainStep:
    """One SGD step on the training examples at ``index``: forward, loss, the hand-derived backward, the optimiser's
    update, and the epoch's running sums of loss and correct predictions, all queued on the device and nothing
    read back (reading a value would make the host wait for a GPU at every step).

    Under torchrun each rank trains on its share of the batch (``index[rank::world_size]``).
    """

    def __init__(self, state, config, train_set, forward):
        self.optimizer, self.config, self.train_set, self.forward = state.optimizer, config, train_set, forward
        device, dtype = train_set.images.device, train_set.images.dtype
        self.loss_sum = torch.zeros((), device=device, dtype=dtype)
        self.correct = torch.zeros((), device=device, dtype=torch.long)

    def reset(self):
        """Start the epoch's sums again (in place: a captured step keeps adding into these tensors)."""
        self.loss_sum.zero_()
        self.correct.zero_()

    def sums(self):
        """``(loss sum, correct predictions)`` so far this epoch, as one float64 tensor on the device (a copy)."""
        return torch.stack([self.loss_sum.double(), self.correct.double()])

    def __call__(self, index):
        rank, world_size = distributed.rank_and_world_size()
        shard = index[rank::world_size]  # the whole batch on a single process
        x, labels = self.train_set.images[shard], self.train_set.labels[shard]
        target = _targets(labels, self.config.loss, x.dtype)
        output, loss, batch_loss_sum = _rank_loss(self.forward, x, target, len(index), self.config.loss)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.loss_sum += batch_loss_sum
        self.correct += (output.argmax(1) == labels).sum()


def layer_functional(config):
    """``manualbp.functional`` for ``--layers manual``, ``torch.nn.functional`` for ``--layers torch``: the losses."""
    return manual_functional if config.layers == "manual" else torch.nn.functional


def build_step(state, config, train_set):
    """The training step ``train`` takes: a ``TrainStep`` over the model (wrapped in DistributedDataParallel under
    torchrun, which averages the gradients over the ranks during the backward pass), its forward pass compiled with
    ``config.compile``, and replayed from CUDA graphs with ``config.cuda_graphs``."""
    world_size = distributed.rank_and_world_size()[1]
    network = state.model if world_size == 1 else torch.nn.parallel.DistributedDataParallel(state.model)
    functional = layer_functional(config)
    step = TrainStep(state, config, train_set, _forward(network, functional, config.loss, world_size, config.compile))
    if config.cuda_graphs:  # the CLI has checked: one process on a GPU, no torch.compile
        step = cuda_graphs.GraphedStep(step, state.model, state.optimizer)
    return step


def train_epoch(state, config, train_set, step, writer, bar, stop, defer_logs=None):
    """Train the rest of epoch ``state.epoch``, from step ``state.step`` on, with ``step`` (a ``TrainStep``, or a
    ``cuda_graphs.GraphedStep``).

    Every ``config.log_every`` steps the running loss, accuracy and norms are copied on the device; they are read
    back and written to TensorBoard at once on a CPU, and at the end of the epoch on a GPU (``defer_logs``), so
    that nothing inside a GPU epoch waits for the GPU.

    Returns the epoch's ``(train loss, train accuracy)``, or None if ``stop`` was set at a step boundary (the
    state then holds the position to save).
    """
    rank, world_size = distributed.rank_and_world_size()
    device = train_set.images.device
    defer_logs = device.type == "cuda" if defer_logs is None else defer_logs
    if state.step == 0:
        state.epoch_rng = state.shuffler.get_state()
    else:  # resuming mid-epoch: draw the order this epoch began with
        state.shuffler.set_state(state.epoch_rng)
    order = torch.randperm(len(train_set), generator=state.shuffler).to(device)
    step.reset()
    clock = _Clock(device)
    logs, seen, window = [], 0, (clock.mark(), 0)  # window: when the current logging window began, examples in it
    last_step = steps_per_epoch(config, len(train_set)) - 1
    state.model.train()
    for position in range(state.step, last_step + 1):
        if stop.is_set():
            _write_logs(writer, bar, logs, config, clock)
            return None
        index = order[position * config.batch_size : (position + 1) * config.batch_size]
        step(index)
        if state.scheduler is not None:
            state.scheduler.step()
        state.step, state.global_step = position + 1, state.global_step + 1
        seen += len(range(rank, len(index), world_size))  # this rank's share, as TrainStep slices it
        window = window[0], window[1] + len(index)
        bar.update()
        if state.global_step % config.log_every == 0 or position == last_step:
            logs.append(_Log.take(state, step, seen, window, clock))
            window = logs[-1].end, 0
            if not defer_logs:
                _write_logs(writer, bar, logs, config, clock)
    _write_logs(writer, bar, logs, config, clock)
    return _mean_over_ranks(step.sums(), seen)[0]


@torch.no_grad()
def evaluate(model, functional, loss_name, split, chunk=2000):
    """Mean loss and accuracy over ``split`` (over every rank's split under torchrun), and this split's
    predicted classes."""
    model.eval()
    loss_sum = torch.zeros((), dtype=split.images.dtype, device=split.images.device)
    predictions = []
    for start in range(0, len(split), chunk):
        x, labels = split.images[start : start + chunk], split.labels[start : start + chunk]
        output = model(x)
        loss_sum += _loss(functional, loss_name, output, _targets(labels, loss_name, x.dtype)) * len(labels)
        predictions.append(output.argmax(1))
    predictions = torch.cat(predictions) if predictions else split.labels.new_empty(0)
    model.train()
    sums = torch.stack([loss_sum.double(), (predictions == split.labels).sum().double()])
    loss, accuracy = _mean_over_ranks(sums, len(split))[0]
    return loss, accuracy, predictions


def train(config, run_dir, resume=None, progress=True, stop=None):
    """Train ``config`` into ``run_dir`` (which must exist); ``resume`` is a loaded checkpoint to continue.

    ``stop`` is an event (``threading.Event``) checked at every step boundary: once it is set, the run saves its
    position and returns a Result with ``interrupted=True``. Under torchrun (``manualbp_trainer.distributed``),
    every rank calls this: each trains on its share of every global batch of ``config.batch_size`` examples, and
    rank 0 alone writes TensorBoard events and checkpoints.

    Dropout (the CNN's) draws its masks from torch's global generator, as ``torch.nn.Dropout`` does: the run seeds
    it from ``config.seed`` and a checkpoint saves its state, so a resumed run draws the masks it would have drawn;
    the caller's own random stream is left as it was.
    """
    device = resolve_device(config.device)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        # + 1: not the very numbers the initial weights were drawn from (and 0 after torch's largest seed)
        torch.manual_seed(config.seed + 1 if config.seed + 1 < 2**64 else 0)
        return _train(config, run_dir, resume, progress, stop)


def _train(config, run_dir, resume, progress, stop):
    stop = stop if stop is not None else threading.Event()  # never set: the run ends with its epochs
    rank, world_size = distributed.rank_and_world_size()
    device, dtype = resolve_device(config.device), getattr(torch, config.dtype)
    train_set, test_set = data.load(config.dataset, config.data_root, config.data_dir, device, dtype, config.normalize)
    state = create_state(config, train_set.images.shape[1], len(train_set), device, dtype)
    if resume is not None:
        load_checkpoint(state, resume)
    if rank == 0:
        processes = f" ({world_size} processes)" if world_size > 1 else ""
        print(f"training on {device}{processes} into {run_dir}", file=sys.stderr)
    step = build_step(state, config, train_set)
    functional = layer_functional(config)
    test_shard = data.Split(test_set.images[rank::world_size], test_set.labels[rank::world_size])
    probe = train_set.images[:PROBE_SIZE], _targets(train_set.labels[:PROBE_SIZE], config.loss, dtype)

    writer = _writer(config, run_dir, state, resume is not None) if rank == 0 else None
    total_steps = config.epochs * steps_per_epoch(config, len(train_set))
    bar = tqdm(
        total=total_steps, initial=state.global_step, disable=not progress or rank != 0, unit="step", dynamic_ncols=True
    )
    started = time.perf_counter()
    test_loss = test_accuracy = float("nan")
    try:
        while state.epoch < config.epochs:
            train_metrics = train_epoch(state, config, train_set, step, writer, bar, stop)
            if train_metrics is None:
                if writer is not None:
                    writer.flush()  # every event up to this step is on disk before the checkpoint says so
                save_checkpoint(state, config, run_dir)
                break
            test_loss, test_accuracy, predictions = evaluate(state.model, functional, config.loss, test_shard)
            state.epoch, state.step = state.epoch + 1, 0
            state.epoch_rng = state.shuffler.get_state()
            if test_accuracy > state.best_accuracy or state.best_epoch == 0:  # the first epoch is the best so far
                state.best_accuracy, state.best_epoch = test_accuracy, state.epoch
            if writer is not None:
                # rank 0's share of the test set stands for the whole in the misclassified-images grid
                _log_epoch(writer, state, config, probe, test_shard, predictions, test_loss, test_accuracy)
                writer.flush()  # the epoch's events are on disk before the checkpoint that follows them
            save_checkpoint(state, config, run_dir)
            if writer is not None:  # said once the epoch is saved
                bar.write(
                    f"epoch {state.epoch}/{config.epochs}: train loss {train_metrics[0]:.4f} acc "
                    f"{train_metrics[1]:.4f} | test loss {test_loss:.4f} acc {test_accuracy:.4f}"
                )
    finally:
        bar.close()
        if writer is not None:
            writer.close()
    return Result(
        final_accuracy=test_accuracy,
        best_accuracy=state.best_accuracy,
        best_epoch=state.best_epoch,
        final_loss=test_loss,
        seconds=time.perf_counter() - started,
        run_dir=run_dir,
        interrupted=state.epoch < config.epochs,
    )


def _forward(network, functional, loss_name, world_size, compile):
    """``forward(x, target) -> (output, loss)``: the batch mean on one process, the sum under torchrun."""
    reduction = "mean" if world_size == 1 else "sum"

    def forward(x, target):
        output = network(x)
        return output, _loss(functional, loss_name, output, target, reduction)

    # forward and loss as one graph; AOTAutograd compiles the backward to match
    return torch.compile(forward) if compile else forward


def _rank_loss(forward, x, target, batch_size, loss_name):
    """``(output, the loss to differentiate, this rank's summed loss over its examples)`` for one step.

    On one process the loss is the batch mean. Under torchrun each rank sums over its share of the global batch
    and scales by world_size / batch_size, so that DDP's average of the ranks' gradients is the gradient of the
    mean over the global batch, however unevenly its examples divide among the ranks.
    """
    world_size = distributed.rank_and_world_size()[1]
    output, loss = forward(x, target)
    if world_size == 1:
        return output, loss, loss.detach() * batch_size
    if loss_name == "mse":  # its "mean" also averages over the outputs of each example
        loss = loss / output.shape[1]
    return output, loss * (world_size / batch_size), loss.detach()


def _writer(config, run_dir, state, resumed):
    """TensorBoard's writer for rank 0. A resumed run first drops what was logged after its checkpoint: the
    steps it is about to log again. A new run starts with its configuration and the HPARAMS table's entry."""
    if resumed:  # events at the checkpoint's own step were written before it (flushed), so they stay
        _wait_for_a_later_second(run_dir)
        return SummaryWriter(run_dir, purge_step=state.global_step + 1)
    writer = SummaryWriter(run_dir)
    writer.add_text("config", "```\n" + json.dumps(dataclasses.asdict(config), indent=2) + "\n```")
    # the table's metrics are the last values of scalars the run logs anyway: no separate single-point charts
    for summary in hparams(_hparams(config), dict.fromkeys(METRICS, float("nan"))):
        writer.file_writer.add_summary(summary)
    return writer


def _wait_for_a_later_second(run_dir):
    """TensorBoard reads a run's event files in the order of their names, which begin with the second each file
    was made: a resumed run's file must begin in a later second than those before it, or TensorBoard would read
    its purge first and the old file's events after it (a resume within a second of the start is then slowed by
    less than a second)."""
    made = [int(name.split(".")[3]) for name in os.listdir(run_dir) if name.startswith("events.out.tfevents.")]
    while made and time.time() < max(made) + 1:
        time.sleep(max(made) + 1 - time.time())


def _torch_rng(device):
    """The global generators' states: the CPU's, and ``device``'s when it is a GPU."""
    return {"cpu": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}


def _set_torch_rng(saved, device):
    torch.set_rng_state(saved["cpu"])
    if device.type == "cuda" and saved["cuda"] is not None:  # a CPU run resumed on a GPU draws anew there
        torch.cuda.set_rng_state(saved["cuda"], device)


def _hparams(config):
    """The HPARAMS table's row: a CNN run shows "–" for the fields that describe the MLP."""
    values = {name: _hparam(getattr(config, name)) for name in HPARAMS}
    if config.model == "cnn":
        values.update(dict.fromkeys(MLP_ONLY, "–"))
    return values


def _hparam(value):
    if isinstance(value, tuple):  # hidden sizes, as the command line takes them
        return " ".join(map(str, value))
    return "none" if value is None else value


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


def _write_logs(writer, bar, logs, config, clock):
    """Read the ``logs`` back from the device in one go (summed over the ranks under torchrun), write them to
    TensorBoard (rank 0) and empty the list. A loss that is no longer finite ends the run at the first log that
    shows it, as if it had been read at once."""
    if not logs:
        return
    means = _mean_over_ranks(torch.stack([log.sums for log in logs]), [log.seen for log in logs])
    norms = torch.stack([log.norms for log in logs]).tolist() if writer is not None else None
    for i, (log, (train_loss, train_accuracy)) in enumerate(zip(logs, means, strict=True)):
        if not math.isfinite(train_loss):
            logs.clear()
            raise TrainingError(
                f"the training loss became {train_loss} at step {log.step} (epoch {log.epoch}): lower --lr (now "
                f"{config.lr})"
            )
        throughput = log.examples / max(clock.seconds(log.start, log.end), 1e-9)
        if writer is not None:
            writer.add_scalar("train/loss", train_loss, log.step)
            writer.add_scalar("train/accuracy", train_accuracy, log.step)
            writer.add_scalar("lr", log.lr, log.step)
            writer.add_scalar("train/examples_per_second", throughput, log.step)
            for tag, value in zip(log.norm_tags, norms[i], strict=True):
                writer.add_scalar(tag, value, log.step)
        bar.set_postfix(loss=f"{train_loss:.4f}", acc=f"{train_accuracy:.4f}", ex_per_s=f"{throughput:,.0f}")
    logs.clear()


def _log_epoch(writer, state, config, probe, test_set, predictions, test_loss, test_accuracy):
    model, step = state.model, state.global_step
    writer.add_scalar("test/loss", test_loss, step)
    writer.add_scalar("test/accuracy", test_accuracy, step)
    summaries.log_histograms(writer, model, step)
    tiles = summaries.first_layer_tiles(model)
    if tiles is not None:
        writer.add_image("first_layer_weights", tiles, step)
    filters = summaries.first_conv_filters(model)
    if filters is not None:
        writer.add_image("first_conv_filters", filters, step)
    names = summaries.pictures.class_names(config.dataset)
    wrong = summaries.misclassified_grid(test_set.images, test_set.labels, predictions, names)
    if wrong is not None:
        writer.add_image("misclassified", wrong, step)
    if config.pictures and config.model == "mlp":  # the pictures draw an MLP's neurons
        summaries.log_pictures(writer, model, config.loss, test_set, probe, step, names)
    max_abs, max_rel = summaries.gradient_agreement(model, config.loss, *probe)
    writer.add_scalar("gradient_agreement/max_abs_diff", max_abs, step)
    writer.add_scalar("gradient_agreement/max_rel_diff", max_rel, step)
    if max_rel > AGREEMENT_WARNING:
        message = (
            f"WARNING: manualbp's gradients differ from autograd's by up to {max_rel:.2e} (relative) on the "
            "probe batch: more than rounding explains. Run `python -m manualbp.check` on this machine."
        )
        tqdm.write(message)
        warnings.warn(message, RuntimeWarning, stacklevel=2)


def _mean_over_ranks(sums, counts):
    """Mean loss and accuracy, ``[(loss, accuracy), …]``, from this rank's sums ``(k, 2)`` (or ``(2,)``) of loss
    and correct predictions over ``counts`` examples, summed over every rank first under torchrun. This reads the
    values back: on a GPU it waits for the work queued before it."""
    sums = sums.reshape(-1, 2)
    counts = torch.tensor(counts, dtype=torch.float64).reshape(-1, 1).to(sums.device)
    totals = distributed.all_reduce_sum(torch.cat([sums, counts], dim=1)).tolist()
    return [(loss_sum / max(count, 1), correct / max(count, 1)) for loss_sum, correct, count in totals]


def _targets(labels, loss_name, dtype):
    if loss_name == "mse":  # the quadratic cost compares the output with the one-hot vector of the label
        return torch.nn.functional.one_hot(labels, data.NUM_CLASSES).to(dtype)
    return labels


def _loss(functional, loss_name, output, target, reduction="mean"):
    if loss_name == "mse":
        return functional.mse_loss(output, target, reduction=reduction)
    return functional.cross_entropy(output, target, reduction=reduction)


def make_scheduler(optimizer, schedule, lr, total_steps):
    if schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
    if schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=total_steps)
    return None
