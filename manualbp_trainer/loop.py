"""Mini-batch SGD over whole-tensor data sets, with TensorBoard logging and resumable checkpoints."""

import dataclasses
import json
import math
import signal
import sys
import time
import warnings
from dataclasses import dataclass

import torch
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from manualbp import functional as manual_functional
from manualbp_trainer import checkpoint, data, distributed, summaries
from manualbp_trainer.model import build_mlp

PROBE_SIZE = 256  # examples in the fixed batch on which manualbp's gradients are compared with autograd's
AGREEMENT_WARNING = {torch.float32: 1e-4, torch.float64: 1e-10}  # relative difference that is not rounding


@dataclass
class Config:
    """Everything that defines a run. The defaults reach ≥ 98% on MNIST and ≥ 89% on Fashion-MNIST."""

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
    log_every: int = 100


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


class _StopRequest:
    """Turns the first Ctrl-C into a request to stop at the next step boundary; a second one stops at once."""

    def __init__(self):
        self.requested = False

    def __enter__(self):
        self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        self.requested = True
        signal.signal(signal.SIGINT, self._previous)

    def __exit__(self, *exc):
        signal.signal(signal.SIGINT, self._previous)


class _NoStopRequest:
    """Under torchrun every rank must stop at the same step, so Ctrl-C is left to torchrun, which ends the whole
    job; ``--resume`` then continues from the last epoch's checkpoint."""

    requested = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass


def resolve_device(name):
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def train(config, run_dir, resume=None, progress=True):
    """Train ``config`` into ``run_dir`` (which must exist); ``resume`` is a loaded checkpoint to continue.

    Under torchrun (``manualbp_trainer.distributed``), every rank calls this: each trains on its share of every global
    batch of ``config.batch_size`` examples, and rank 0 alone writes TensorBoard events and checkpoints.
    """
    rank, world_size = distributed.rank_and_world_size()
    device, dtype = resolve_device(config.device), getattr(torch, config.dtype)
    train_set, test_set = data.load(config.dataset, config.data_root, config.data_dir, device, dtype, config.normalize)
    if rank == 0:
        processes = f" ({world_size} processes)" if world_size > 1 else ""
        print(f"training on {device}{processes} into {run_dir}", file=sys.stderr)
    model = build_mlp(
        [train_set.images.shape[1], *config.hidden, data.NUM_CLASSES],
        config.activation,
        config.output_activation,
        config.layers,
        config.init,
        config.seed,
        dtype,
    ).to(device)
    # DistributedDataParallel averages the gradients over the ranks during the backward pass
    network = model if world_size == 1 else torch.nn.parallel.DistributedDataParallel(model)
    test_shard = data.Split(test_set.images[rank::world_size], test_set.labels[rank::world_size])
    functional = manual_functional if config.layers == "manual" else torch.nn.functional

    def forward(x, target, reduction="mean"):
        output = network(x)
        return output, _loss(functional, config.loss, output, target, reduction)

    if config.compile:  # forward and loss as one graph; AOTAutograd compiles the backward to match
        forward = torch.compile(forward)
    optimizer = _optimizer(model, config)
    steps_per_epoch = math.ceil(len(train_set) / config.batch_size)
    scheduler = _scheduler(optimizer, config, steps_per_epoch)
    shuffler = torch.Generator().manual_seed(config.seed)  # on the CPU: the same order on every device

    start_epoch, start_step, global_step, best = 0, 0, 0, (0.0, 0)
    if resume is not None:
        model.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(resume["scheduler"])
        shuffler.set_state(resume["epoch_rng"])
        start_epoch, start_step, global_step = resume["epoch"], resume["step"], resume["global_step"]
        best = (resume["best_accuracy"], resume["best_epoch"])

    writer = SummaryWriter(run_dir, purge_step=global_step if resume is not None else None) if rank == 0 else None
    if resume is None and writer is not None:
        writer.add_text("config", "```\n" + json.dumps(dataclasses.asdict(config), indent=2) + "\n```")
    probe = train_set.images[:PROBE_SIZE], _targets(train_set.labels[:PROBE_SIZE], config.loss, dtype)

    def save(epoch, step, epoch_rng):
        if rank != 0:
            return
        checkpoint.save(
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict() if scheduler is not None else None,
                "epoch": epoch,
                "step": step,
                "global_step": global_step,
                "epoch_rng": epoch_rng,
                "best_accuracy": best[0],
                "best_epoch": best[1],
                "config": dataclasses.asdict(config),
            },
            run_dir,
        )

    started = time.perf_counter()
    bar = tqdm(
        total=config.epochs * steps_per_epoch,
        initial=global_step,
        disable=not progress or rank != 0,
        unit="step",
        dynamic_ncols=True,
    )
    test_loss = test_accuracy = float("nan")
    try:
        with _StopRequest() if world_size == 1 else _NoStopRequest() as stop:
            for epoch in range(start_epoch, config.epochs):
                epoch_rng = shuffler.get_state()  # saved so a resumed run draws this epoch's order again
                order = torch.randperm(len(train_set), generator=shuffler).to(device)
                loss_sum = torch.zeros((), device=device, dtype=dtype)
                correct = torch.zeros((), device=device, dtype=torch.long)
                seen, window_start, window_examples = 0, time.perf_counter(), 0
                model.train()
                for step in range(start_step if epoch == start_epoch else 0, steps_per_epoch):
                    if stop.requested:
                        save(epoch, step, epoch_rng)
                        return Result(test_accuracy, *best, test_loss, time.perf_counter() - started, run_dir, True)
                    index = order[step * config.batch_size : (step + 1) * config.batch_size]
                    shard = index[rank::world_size]  # the whole batch on a single process
                    x, labels = train_set.images[shard], train_set.labels[shard]
                    target = _targets(labels, config.loss, dtype)
                    output, loss, batch_loss_sum = _rank_loss(forward, x, target, len(index), world_size, config.loss)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    if scheduler is not None:
                        scheduler.step()
                    # accumulate on the device: reading a value back would stall a GPU on every step
                    loss_sum += batch_loss_sum
                    correct += (output.argmax(1) == labels).sum()
                    seen += len(shard)
                    window_examples += len(index)
                    global_step += 1
                    bar.update()
                    if global_step % config.log_every == 0 or step == steps_per_epoch - 1:
                        train_loss, train_accuracy = _mean_over_ranks(loss_sum, correct, seen)
                        if not math.isfinite(train_loss):
                            raise TrainingError(
                                f"the training loss became {train_loss} at step {global_step} (epoch {epoch + 1}): "
                                f"lower --lr (now {config.lr}); the last good checkpoint is kept in {run_dir}"
                            )
                        throughput = window_examples / (time.perf_counter() - window_start)
                        window_start, window_examples = time.perf_counter(), 0
                        if writer is not None:
                            _log_train(writer, model, optimizer, global_step, train_loss, train_accuracy, throughput)
                        bar.set_postfix(
                            loss=f"{train_loss:.4f}", acc=f"{train_accuracy:.4f}", ex_per_s=f"{throughput:,.0f}"
                        )

                test_loss, test_accuracy, predictions = evaluate(model, functional, config.loss, test_shard, dtype)
                if test_accuracy > best[0]:
                    best = (test_accuracy, epoch + 1)
                train_loss, train_accuracy = _mean_over_ranks(loss_sum, correct, seen)
                save(epoch + 1, 0, shuffler.get_state())
                if writer is not None:
                    writer.add_scalar("test/loss", test_loss, global_step)
                    writer.add_scalar("test/accuracy", test_accuracy, global_step)
                    # rank 0's share of the test set stands for the whole in the misclassified-images grid
                    _log_epoch(writer, model, config, probe, test_shard, predictions, global_step, dtype)
                    bar.write(
                        f"epoch {epoch + 1}/{config.epochs}: train loss {train_loss:.4f} acc {train_accuracy:.4f} "
                        f"| test loss {test_loss:.4f} acc {test_accuracy:.4f}"
                    )
        result = Result(test_accuracy, *best, test_loss, time.perf_counter() - started, run_dir)
        if writer is not None:
            _log_hparams(writer, config, result)
        return result
    finally:
        bar.close()
        if writer is not None:
            writer.close()


def _optimizer(model, config):
    return torch.optim.SGD(
        model.parameters(),
        lr=config.lr,
        momentum=config.momentum,
        nesterov=config.nesterov,
        weight_decay=config.weight_decay,
        fused=True,  # one kernel for the whole update rather than several per parameter
    )


def _rank_loss(forward, x, target, batch_size, world_size, loss_name):
    """``(output, the loss to differentiate, this rank's summed loss over its examples)`` for one step.

    On one process the loss is the batch mean. Under torchrun each rank sums over its share of the global batch
    and scales by world_size / batch_size, so that DDP's average of the ranks' gradients is the gradient of the
    mean over the global batch, however unevenly its examples divide among the ranks.
    """
    if world_size == 1:
        output, loss = forward(x, target)
        return output, loss, loss.detach() * batch_size
    output, loss_sum = forward(x, target, "sum")
    if loss_name == "mse":  # "mean" also averages over the outputs of each example
        loss_sum = loss_sum / output.shape[1]
    return output, loss_sum * (world_size / batch_size), loss_sum.detach()


def _log_train(writer, model, optimizer, step, loss, accuracy, throughput):
    writer.add_scalar("train/loss", loss, step)
    writer.add_scalar("train/accuracy", accuracy, step)
    writer.add_scalar("lr", optimizer.param_groups[0]["lr"], step)
    writer.add_scalar("train/examples_per_second", throughput, step)
    summaries.log_norms(writer, model, step)


def _log_hparams(writer, config, result):
    """The configuration and the final metrics, for TensorBoard's HPARAMS tab."""
    hparams = {
        name: value if isinstance(value, (int, float, str, bool)) else str(value)
        for name, value in dataclasses.asdict(config).items()
    }
    metrics = {
        "hparam/test_accuracy": result.final_accuracy,
        "hparam/best_test_accuracy": result.best_accuracy,
        "hparam/test_loss": result.final_loss,
        "hparam/seconds": result.seconds,
    }
    writer.add_hparams(hparams, metrics, run_name=".")


@torch.no_grad()
def evaluate(model, functional, loss_name, split, dtype, chunk=2000):
    """Mean loss and accuracy over ``split`` (over every rank's split under torchrun), and this split's
    predicted classes."""
    model.eval()
    loss_sum = torch.zeros((), dtype=dtype, device=split.images.device)
    predictions = []
    for start in range(0, len(split), chunk):
        x, labels = split.images[start : start + chunk], split.labels[start : start + chunk]
        output = model(x)
        loss_sum += _loss(functional, loss_name, output, _targets(labels, loss_name, dtype)) * len(labels)
        predictions.append(output.argmax(1))
    predictions = torch.cat(predictions) if predictions else split.labels.new_empty(0)
    model.train()
    loss, accuracy = _mean_over_ranks(loss_sum, (predictions == split.labels).sum(), len(split))
    return loss, accuracy, predictions


def _mean_over_ranks(loss_sum, correct, count):
    """Mean loss and accuracy from this rank's sums, summed over every rank first under torchrun."""
    totals = torch.stack([loss_sum.double(), correct.double(), torch.tensor(float(count), device=loss_sum.device)])
    loss_sum, correct, count = distributed.all_reduce_sum(totals).tolist()
    return loss_sum / max(count, 1), correct / max(count, 1)


def _log_epoch(writer, model, config, probe, test_set, predictions, step, dtype):
    summaries.log_histograms(writer, model, step)
    tiles = summaries.first_layer_tiles(model)
    if tiles is not None:
        writer.add_image("first_layer_weights", tiles, step)
    wrong = summaries.misclassified_grid(test_set.images, test_set.labels, predictions)
    if wrong is not None:
        writer.add_image("misclassified", wrong, step)
    max_abs, max_rel = summaries.gradient_agreement(model, config.loss, *probe)
    writer.add_scalar("gradient_agreement/max_abs_diff", max_abs, step)
    writer.add_scalar("gradient_agreement/max_rel_diff", max_rel, step)
    if max_rel > AGREEMENT_WARNING[dtype]:
        message = (
            f"WARNING: manualbp's gradients differ from autograd's by up to {max_rel:.2e} (relative) on the "
            "probe batch: more than rounding explains. Run `python -m manualbp.check` on this machine."
        )
        tqdm.write(message)
        warnings.warn(message, RuntimeWarning, stacklevel=2)


def _targets(labels, loss_name, dtype):
    if loss_name == "mse":  # the quadratic cost compares the output with the one-hot vector of the label
        return torch.nn.functional.one_hot(labels, data.NUM_CLASSES).to(dtype)
    return labels


def _loss(functional, loss_name, output, target, reduction="mean"):
    if loss_name == "mse":
        return functional.mse_loss(output, target, reduction=reduction)
    return functional.cross_entropy(output, target, reduction=reduction)


def _scheduler(optimizer, config, steps_per_epoch):
    total = config.epochs * steps_per_epoch
    if config.lr_schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
    if config.lr_schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.lr, total_steps=total)
    return None
