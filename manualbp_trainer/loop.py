"""The training loop: mini-batch SGD over whole-tensor data sets, as plain verbs over a small state object.

``train`` reads top to bottom: build the state (or load it from a checkpoint), then for each epoch
``train_epoch``, ``evaluate``, log the epoch and ``save_checkpoint``. A stop request (Ctrl-C, handled by the CLI)
is checked at every step boundary; the run then saves its exact position, so that ``--resume`` ends bit-identical
to a run that was never stopped.
"""

import dataclasses
import math
import sys
import threading
import time
from dataclasses import dataclass

import torch

from manualbp import functional as manual_functional
from manualbp import nn as mnn
from manualbp_trainer import checkpoint, cuda_graphs, data, distributed, utilisation
from manualbp_trainer.config import Config  # noqa: F401 (loop.Config, as the tests and scripts know it)
from manualbp_trainer.logbook import Logbook, TrainingError, mean_over_ranks  # noqa: F401 (loop.TrainingError)
from manualbp_trainer.model import MODELS

PROBE_SIZE = 256  # examples in the fixed batch on which manualbp's gradients are compared with autograd's


@dataclass
class Result:
    final_accuracy: float
    best_accuracy: float
    best_epoch: int
    final_loss: float
    seconds: float
    run_dir: str
    interrupted: bool = False
    gpu_utilisation: str | None = None  # the line that says how busy the GPU was (rank 0's, on a GPU)


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


def build_model(config, in_features, dtype):
    """The network ``config`` describes, its initial weights drawn from ``config.seed``, on the CPU."""
    if in_features != data.IMAGE_PIXELS:
        raise data.DataError(f"the images have {in_features} pixels, and the models take 28×28 = {data.IMAGE_PIXELS}")
    return MODELS[config.model].build(config, dtype)


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
        # the last step's gradients go before the forward: manualbp's MLP computes the new ones in its forward pass,
        # which would otherwise hold two sets at once (and touch twice the memory: 2-4 % of a 784-512-256-10 step)
        self.optimizer.zero_grad(set_to_none=True)
        output, loss, batch_loss_sum = _rank_loss(self.forward, x, target, len(index), self.config.loss)
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
    ``config.compile``, and replayed from CUDA graphs where ``cuda_graphs.used`` says so."""
    world_size = distributed.rank_and_world_size()[1]
    network = state.model if world_size == 1 else torch.nn.parallel.DistributedDataParallel(state.model)
    functional = layer_functional(config)
    step = TrainStep(state, config, train_set, _forward(network, functional, config.loss, world_size, config.compile))
    if cuda_graphs.used(config, world_size > 1):  # the CLI has checked an explicit --cuda-graphs
        step = cuda_graphs.GraphedStep(step, state.model, state.optimizer)
    return step


def train_epoch(state, config, train_set, step, logbook, stop):
    """Train the rest of epoch ``state.epoch``, from step ``state.step`` on, with ``step`` (a ``TrainStep``, or a
    ``cuda_graphs.GraphedStep``), taking the running loss, accuracy and norms into ``logbook`` every
    ``config.log_every`` steps and at the epoch's end.

    Returns the epoch's ``(train loss, train accuracy)``, or None if ``stop`` was set at a step boundary (the
    state then holds the position to save).
    """
    rank, world_size = distributed.rank_and_world_size()
    if state.step == 0:
        state.epoch_rng = state.shuffler.get_state()
    else:  # resuming mid-epoch: draw the order this epoch began with
        state.shuffler.set_state(state.epoch_rng)
    order = torch.randperm(len(train_set), generator=state.shuffler).to(train_set.images.device)
    step.reset()
    logbook.start_epoch()
    seen, last_step = 0, steps_per_epoch(config, len(train_set)) - 1
    state.model.train()
    for position in range(state.step, last_step + 1):
        if stop.is_set():
            logbook.write()
            return None
        index = order[position * config.batch_size : (position + 1) * config.batch_size]
        step(index)
        if state.scheduler is not None:
            state.scheduler.step()
        state.step, state.global_step = position + 1, state.global_step + 1
        seen += len(range(rank, len(index), world_size))  # this rank's share, as TrainStep slices it
        log = state.global_step % config.log_every == 0 or position == last_step
        logbook.stepped(state, step, seen, len(index), log)
    logbook.write()
    return mean_over_ranks(step.sums(), seen)[0]


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
    loss, accuracy = mean_over_ranks(sums, len(split))[0]
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
    state, step, train_set, test_shard, probe = _start(config, run_dir, resume)
    total_steps = config.epochs * steps_per_epoch(config, len(train_set))
    logbook = Logbook.open(config, run_dir, state, total_steps, resume is not None, progress)
    gpu = utilisation.Sampler.of(next(state.model.parameters()).device)  # on a CPU it samples nothing
    started, test_loss, test_accuracy = time.perf_counter(), float("nan"), float("nan")
    try:
        with gpu:
            while state.epoch < config.epochs:
                train_metrics = train_epoch(state, config, train_set, step, logbook, stop)
                if train_metrics is None:
                    logbook.flush(state.global_step)  # every event up to this step is on disk before the checkpoint
                    save_checkpoint(state, config, run_dir)
                    break
                test_loss, test_accuracy = _finish_epoch(
                    state, config, run_dir, logbook, test_shard, probe, train_metrics
                )
    except KeyboardInterrupt:  # stop at once: the figures still being drawn are given up
        logbook.close(figures=False)
        raise
    finally:
        logbook.close()  # the last figures drawn and written first
    return Result(
        final_accuracy=test_accuracy,
        best_accuracy=state.best_accuracy,
        best_epoch=state.best_epoch,
        final_loss=test_loss,
        seconds=time.perf_counter() - started,
        run_dir=run_dir,
        interrupted=state.epoch < config.epochs,
        gpu_utilisation=gpu.line() if distributed.rank_and_world_size()[0] == 0 else None,
    )


def _start(config, run_dir, resume):
    """The run's state (from ``resume``, a loaded checkpoint, if given), its training step, the data it trains on,
    this rank's share of the test set and the probe batch; rank 0 says where it trains."""
    rank, world_size = distributed.rank_and_world_size()
    device, dtype = resolve_device(config.device), getattr(torch, config.dtype)
    train_set, test_set = data.load(config.dataset, config.data_root, config.data_dir, device, dtype, config.normalize)
    state = create_state(config, train_set.images.shape[1], len(train_set), device, dtype)
    if resume is not None:
        load_checkpoint(state, resume)
    if rank == 0:
        for line in start_lines(config, device, world_size, run_dir):
            print(line, file=sys.stderr)
    step = build_step(state, config, train_set)
    test_shard = data.Split(test_set.images[rank::world_size], test_set.labels[rank::world_size])
    probe = train_set.images[:PROBE_SIZE], _targets(train_set.labels[:PROBE_SIZE], config.loss, dtype)
    return state, step, train_set, test_shard, probe


def start_lines(config, device, world_size, run_dir):
    """What a run says as it starts: where it trains, and whether its steps are replayed from CUDA graphs (or, on a
    GPU where it left them to the default and cannot have them, why not)."""
    processes = f" ({world_size} processes)" if world_size > 1 else ""
    graphs = " with CUDA graphs" if cuda_graphs.used(config, world_size > 1) else ""
    note = cuda_graphs.note(config, world_size > 1)
    return [f"training on {device}{processes}{graphs} into {run_dir}", *([note] if note else [])]


def _finish_epoch(state, config, run_dir, logbook, test_shard, probe, train_metrics):
    """Evaluate the epoch just trained, log it, save the checkpoint, say so; return the test loss and accuracy."""
    test_loss, test_accuracy, predictions = evaluate(state.model, layer_functional(config), config.loss, test_shard)
    state.epoch, state.step = state.epoch + 1, 0
    state.epoch_rng = state.shuffler.get_state()
    if test_accuracy > state.best_accuracy or state.best_epoch == 0:  # the first epoch is the best so far
        state.best_accuracy, state.best_epoch = test_accuracy, state.epoch
    if logbook.writer is not None:
        # rank 0's share of the test set stands for the whole in the misclassified-images grid
        logbook.epoch(state, probe, test_shard, predictions, test_loss, test_accuracy)
        logbook.flush(state.global_step)  # the epoch's events and the last epoch's figures, before the checkpoint
    save_checkpoint(state, config, run_dir)
    logbook.say(  # once the epoch is saved
        f"epoch {state.epoch}/{config.epochs}: train loss {train_metrics[0]:.4f} acc {train_metrics[1]:.4f} | test "
        f"loss {test_loss:.4f} acc {test_accuracy:.4f}"
    )
    return test_loss, test_accuracy


def _forward(network, functional, loss_name, world_size, compile):
    """``forward(x, target) -> (output, loss)``: the batch mean on one process, the sum under torchrun. On one
    process manualbp's MLP takes the network and its loss as one node (``MLP.loss``: every gradient computed in the
    forward pass, the per-layer path's to the bit)."""
    reduction = "mean" if world_size == 1 else "sum"

    def forward(x, target):
        if isinstance(network, mnn.MLP) and world_size == 1:
            loss, output = network.loss(x, target, loss_name, return_output=True)
            return output, loss
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


def _torch_rng(device):
    """The global generators' states: the CPU's, and ``device``'s when it is a GPU."""
    return {"cpu": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}


def _set_torch_rng(saved, device):
    torch.set_rng_state(saved["cpu"])
    if device.type == "cuda" and saved["cuda"] is not None:  # a CPU run resumed on a GPU draws anew there
        torch.cuda.set_rng_state(saved["cuda"], device)


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
