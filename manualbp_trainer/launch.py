"""What train.py does once its flags are parsed (``cli``): check the configuration, lock and pick the run directory,
train, stop cleanly on Ctrl-C or SIGTERM, and report, every error in one line."""

import contextlib
import dataclasses
import fcntl
import os
import signal
import sys
import tempfile
import threading
import time
import traceback

import torch

from manualbp_trainer import checkpoint, cuda_graphs, data, distributed
from manualbp_trainer.config import RESUMABLE, Config, flag
from manualbp_trainer.loop import TrainingError, resolve_device, train
from manualbp_trainer.model import MODEL_FIELDS, MODELS


def run(parser, args, config, explicit, stop=None):
    """Check ``config`` (made from ``args``; ``explicit``: the flags given), train it, and return the exit status;
    errors exit through ``parser``. ``stop``: as ``cli.main``'s."""
    with contextlib.ExitStack() as lock:  # the run directory's lock, held until the run ends
        try:
            config, resume = _prepare(args, config, explicit, lock)
        except (ValueError, data.DataError, checkpoint.CheckpointError, OSError) as error:
            parser.exit(2, f"train.py: error: {error}\n")
        with _writer_thread_errors_told_once():
            if distributed.launched_by_torchrun():
                return _run_under_torchrun(parser, args, config, resume, stop, lock)
            if stop is not None:
                return _run(parser, args, config, resume, stop, lock)
            with StopSignals() as signals:
                return _run(parser, args, config, resume, signals.stop, lock, signals.training())


def _prepare(args, config, explicit, lock):
    """The run's checked Config and, with --resume, its checkpoint, loaded once its directory is locked."""
    _check_model_flags(args, explicit)
    resume = None
    if args.resume is not None:
        _check_resume_flags(args, explicit)
        _lock(args.resume, lock)
        resume = checkpoint.load(args.resume)
        config = _resumed_config(args.resume, resume, explicit)
        _check_same_data(args.resume, config)
        _check_writable(args.resume)
    _check_combinations(args, config, explicit)
    config = dataclasses.replace(config, device=str(resolve_device(config.device)))
    _check_cuda_graphs(args, config, explicit)
    if args.resume is None:
        config = dataclasses.replace(config, dataset=_dataset_name(config, explicit))
        _check_memory(config)
    return config, resume


def _check_resume_flags(args, explicit):
    changed = sorted(set(explicit) - RESUMABLE)
    if changed or args.preset:
        flags = ", ".join(map(flag, changed)) or "--preset"
        raise ValueError(
            f"{flags} cannot change when resuming: --resume continues the run as it was "
            "configured (only --device, --compile, --cuda-graphs, --data-dir, --data-root, --log-every and "
            "--pictures may differ)"
        )
    if args.run_name is not None or args.logdir is not None:
        raise ValueError(
            f"--resume {args.resume} continues the run in that directory: leave out "
            f"{'--run-name' if args.run_name is not None else '--logdir'} (to train elsewhere, copy the run "
            "and resume the copy)"
        )


def _check_combinations(args, config, explicit):
    """Flags that cannot go together, and a device that is not here."""
    spec = MODELS[config.model]
    if explicit.get("pictures") and not spec.supports("pictures"):  # a run resumed with --pictures
        raise ValueError(spec.unsupported["pictures"])
    if distributed.launched_by_torchrun() and not spec.supports("torchrun"):
        raise ValueError(
            f"--model {spec.name} runs on one process: {spec.unsupported['torchrun']}: launch train.py without torchrun"
        )
    if config.nesterov and config.momentum == 0:
        raise ValueError("--nesterov needs a --momentum above 0: pass --momentum 0.9, say, or --no-nesterov")
    if config.device == "cuda" and not torch.cuda.is_available():
        if "device" not in explicit:  # the device the resumed run was made on
            raise ValueError(
                f"--resume {args.resume}: the run trained on cuda and no CUDA device is available "
                "here: pass --device cpu to continue it on the CPU"
            )
        raise ValueError("--device cuda: no CUDA device is available here; use --device cpu or auto")


def _run_under_torchrun(parser, args, config, resume, stop, lock):
    distributed.init(config.device)
    # every rank must stop at the same step, so Ctrl-C is torchrun's: it ends the whole job
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return _run(parser, args, config, resume, stop or threading.Event(), lock)
    finally:
        signal.signal(signal.SIGINT, previous)
        distributed.shutdown()


def _lock(run_dir, lock):
    """Hold an exclusive lock on ``run_dir`` (rank 0 does, under torchrun) in ``lock`` (an ExitStack), or refuse
    in one line: two processes training one run would both write its checkpoint and its events. The lock is the
    kernel's (flock) on the open directory: a process that is killed, even by kill -9, leaves it free."""
    # the rank torchrun gave (the process group may not be joined yet: a resume locks before it is)
    if int(os.environ.get("RANK", "0")) != 0 or not os.path.isdir(run_dir):  # checkpoint.load says it is missing
        return
    descriptor = os.open(run_dir, os.O_RDONLY | os.O_CLOEXEC)
    lock.callback(os.close, descriptor)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise ValueError(
            f"{run_dir} is in use: another train.py is training it; let that one finish, or stop it (Ctrl-C) and "
            f"continue with --resume {run_dir}"
        ) from None


def _make_run_dir(path):
    try:
        os.makedirs(path)
    except FileExistsError:
        raise
    except OSError as error:
        raise ValueError(
            f"cannot make the run directory {path} ({error.strerror}): choose a writable --logdir"
        ) from error


def _new_run_dir(args, config):
    logdir = args.logdir or "runs"  # --logdir's default, left None in the parser so that --resume can refuse it
    if args.run_name is not None:
        if not args.run_name or os.sep in args.run_name or args.run_name in (".", ".."):
            raise ValueError(f"--run-name {args.run_name!r} must be a plain folder name")
        path = os.path.join(logdir, args.run_name)
        if os.path.exists(path):
            raise ValueError(f"{path} already exists: choose another --run-name, or continue it with --resume {path}")
        _make_run_dir(path)
        return path
    network = config.model
    if "hidden" in MODELS[config.model].uses:
        network = "-".join(map(str, [network, *config.hidden, config.activation]))
    # what tells runs apart first: TensorBoard's HPARAMS table cuts its trial IDs (the names) after ~15 characters
    base = (
        f"{network}_{config.layers}_{config.dataset}_{config.loss}_lr{config.lr:g}_bs{config.batch_size}_"
        f"{time.strftime('%Y%m%d-%H%M%S')}"
    )
    for attempt in range(1, 1000):
        path = os.path.join(logdir, base if attempt == 1 else f"{base}-{attempt}")
        try:
            _make_run_dir(path)  # exist_ok=False: an existing run is never reused
            return path
        except FileExistsError:
            continue
    raise ValueError(f"could not make a new run directory under {logdir}")


@contextlib.contextmanager
def _writer_thread_errors_told_once():
    """TensorBoard writes events from a thread of its own. When that fails (a full disk), the writer raises the
    error again in the main thread at its next call, where the run reports it in one line; the thread's own
    traceback would only say it twice."""
    previous = threading.excepthook

    def hook(args):
        frames = traceback.extract_tb(args.exc_traceback)
        if not (isinstance(args.exc_value, OSError) and any("tensorboard" in frame.filename for frame in frames)):
            previous(args)

    threading.excepthook = hook
    try:
        yield
    finally:
        threading.excepthook = previous


class StopSignals:
    """SIGINT (Ctrl-C) and SIGTERM (what docker stop, systemd, Kubernetes and Slurm send before they kill) on a run
    of one process. The first sets ``stop``, recording the signal in ``stop.signal``: the run stops at the next
    step boundary and saves its position. A second one while ``training()`` is entered stops it at once
    (KeyboardInterrupt). When training returns, both are ignored from then on: the run is saved, and all that is
    left is to say so.

    Ignoring them there, before the run says that it stopped, matters to someone who holds Ctrl-C down: a flood of
    signals that meets a Python handler in a blocking call runs the handler again at each retry, nested, until a
    RecursionError ends the process with status -2 rather than 130 (this happened to the test that holds it down)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.stop = threading.Event()
        self.stop.signal = None
        self._training = False

    def _handle(self, signum, frame):
        if self.stop.is_set() and self._training:
            raise KeyboardInterrupt
        self.stop.signal = self.stop.signal or signal.Signals(signum)
        self.stop.set()

    @contextlib.contextmanager
    def training(self):
        self._training = True
        try:
            yield
        finally:
            self._training = False
            for signum in self.SIGNALS:
                signal.signal(signum, signal.SIG_IGN)

    def __enter__(self):
        self._previous = {signum: signal.signal(signum, self._handle) for signum in self.SIGNALS}
        return self

    def __exit__(self, *exc):
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


def _resumed_config(run_dir, saved, explicit):
    """The saved run's Config, with the flags that may differ when resuming; a finished run is refused."""
    values = dict(saved["config"])
    values.update({name: value for name, value in explicit.items() if name in RESUMABLE})
    try:
        values["hidden"] = tuple(values["hidden"])
        config = Config(**values)
    except (KeyError, TypeError) as error:
        raise checkpoint.CheckpointError(
            f"--resume {run_dir}: its checkpoint's config does not fit this train.py ({checkpoint.cause(error)}): "
            "the run cannot be continued: start a new one"
        ) from error
    if saved["epoch"] >= config.epochs:
        raise ValueError(
            f"--resume {run_dir}: the run is finished ({saved['epoch']} of {config.epochs} epochs): there is "
            "nothing to continue; start a new run to train longer"
        )
    return config


def _check_writable(run_dir):
    """Fail now, not from TensorBoard's writer thread, if the run directory cannot be written."""
    try:
        with tempfile.TemporaryFile(dir=run_dir):
            pass
    except OSError as error:
        raise ValueError(
            f"--resume {run_dir}: cannot write into it ({error.strerror}): make it writable (chmod u+w) or copy "
            "the run somewhere writable and resume the copy"
        ) from error


def _check_model_flags(args, explicit):
    """A flag that shapes another kind of model is refused: it would be silently ignored."""
    spec = MODELS[args.model or "mlp"]
    flags = [flag(name) for name in MODEL_FIELDS if name not in spec.uses and name in explicit]
    flags += [f"--preset {args.preset}"] if args.preset and spec.uses != MODEL_FIELDS else []
    if flags:
        verb = "describes" if len(flags) == 1 else "describe"
        raise ValueError(
            f"{', '.join(flags)} {verb} the MLP, and --model {spec.name} has layers of its own (see --help): drop "
            f"{'it' if len(flags) == 1 else 'them'}, or train --model mlp"
        )
    if explicit.get("pictures") and not spec.supports("pictures"):
        raise ValueError(spec.unsupported["pictures"])


def _check_cuda_graphs(args, config, explicit):
    """--cuda-graphs where the run cannot replay its steps is refused (left to the default, the run trains eagerly
    and says why: ``cuda_graphs.note``)."""
    refused = cuda_graphs.refusal(config, distributed.launched_by_torchrun())
    if not config.cuda_graphs or refused is None:
        return
    if "cuda_graphs" not in explicit:  # a resumed run's own --cuda-graphs
        raise ValueError(
            f"--resume {args.resume}: the run was made with --cuda-graphs, and {refused.why}: pass --no-cuda-graphs "
            "to continue it with eager steps"
        )
    raise ValueError(refused.error)


def _check_same_data(run_dir, config):
    """A resumed run must read the data it trained on: a --data-dir holding other files is refused."""
    if config.data_dir is None or config.dataset == "idx":  # downloaded by name, or files no one can tell apart
        return
    found = data.identify(config.data_dir)
    if found != config.dataset:
        what = f"{found}'s" if found != "idx" else "neither MNIST's nor Fashion-MNIST's"
        raise ValueError(
            f"--resume {run_dir}: the run trained on {config.dataset}, but the files in --data-dir "
            f"{config.data_dir} are {what}: pass the folder of the data it trained on"
        )


def _dataset_name(config, explicit):
    """The data set's name as the run records it: with --data-dir, what the files are."""
    if config.data_dir is None:
        return config.dataset
    found = data.identify(config.data_dir)
    if "dataset" in explicit and found not in ("idx", config.dataset):
        raise ValueError(f"--dataset {config.dataset}, but the files in --data-dir {config.data_dir} are {found}'s")
    return config.dataset if "dataset" in explicit else found


def _check_memory(config):
    """Refuse, before anything is written, a model whose weights, gradients and momentum cannot fit."""
    spec = MODELS[config.model]
    count = spec.parameter_count(config)
    model = f"--hidden {' '.join(map(str, config.hidden))}" if "hidden" in spec.uses else f"--model {spec.name}"
    advice = f"choose {spec.shrink}" if spec.shrink else "train on another device"
    copies = 3 if config.momentum > 0 else 2
    needed = count * getattr(torch, config.dtype).itemsize * copies
    device = torch.device(config.device)
    available = torch.cuda.mem_get_info(device)[0] if device.type == "cuda" else _free_host_memory()
    if available is not None and needed > available:
        raise ValueError(
            f"{model}: the model's weights, gradients and momentum need {_bytes(needed)} but {config.device} has "
            f"{_bytes(available)} free: {advice}"
        )


def _free_host_memory():
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _bytes(count):
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if count < 1000 or unit == "PB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000


def _remove_if_empty(run_dir):
    """A run that failed before writing anything leaves no directory behind (a resumed one is never empty)."""
    if distributed.rank_and_world_size()[0] == 0 and os.path.isdir(run_dir) and not os.listdir(run_dir):
        os.rmdir(run_dir)


def _what_is_kept(run_dir, resumable=False):
    """What a failed run leaves in ``run_dir``, said for the end of its error line."""
    try:
        saved = checkpoint.load(run_dir)
    except checkpoint.CheckpointError:
        return f"no checkpoint was saved: {run_dir} holds only the TensorBoard events so far"
    position = f"epoch {saved['epoch']}" + (f", step {saved['step']}" if saved["step"] else "")
    then = f": continue with --resume {run_dir}" if resumable else ""
    return f"the last good checkpoint ({position}) is kept in {run_dir}{then}"


def _run(parser, args, config, resume, stop, lock, training=None):
    """Pick the run directory (rank 0 does, under torchrun), train, and report; errors end the process.

    ``training`` (a context manager) is entered while ``train`` runs.
    """
    rank, world_size = distributed.rank_and_world_size()
    prefix = f"rank {rank}: " if world_size > 1 else ""
    run_dir = _run_dir(parser, args, config, lock, prefix)
    try:
        with training or contextlib.nullcontext():
            progress = not args.no_progress and sys.stderr.isatty()
            result = train(config, run_dir, resume=resume, progress=progress, stop=stop)
    except (data.DataError, checkpoint.CheckpointError, TrainingError, RuntimeError, OSError) as error:
        status, message = _failure(error, config, run_dir)
        parser.exit(status, f"train.py: error: {prefix}{message}\n")
    except KeyboardInterrupt:  # a second Ctrl-C, or under torchrun the first: stop now, keep what was saved
        parser.exit(
            130,
            f"train.py: {prefix}stopped: {run_dir} keeps the checkpoint of the last finished epoch, if any; "
            f"continue with --resume {run_dir}\n",
        )
    if rank != 0:
        return 0
    if result.interrupted:
        signum = getattr(stop, "signal", None) or signal.SIGINT  # a caller's own stop event stands for Ctrl-C
        by = "" if signum == signal.SIGINT else f" by {signum.name}"
        if result.gpu_utilisation is not None:
            print(result.gpu_utilisation, file=sys.stderr)
        print(f"interrupted{by}: saved the run in {run_dir}; continue it with --resume {run_dir}", file=sys.stderr)
        return 128 + signum  # the shell's status for a process ended by that signal: 130, 143
    print(
        f"final test accuracy {result.final_accuracy:.4f}, best {result.best_accuracy:.4f} (epoch "
        f"{result.best_epoch}), {result.seconds:.1f} s, run {run_dir}"
    )
    if result.gpu_utilisation is not None:
        print(result.gpu_utilisation)
    return 0


def _run_dir(parser, args, config, lock, prefix):
    """The run directory: --resume's (locked already), or a new one that rank 0 makes and locks."""
    if args.resume is not None:
        return args.resume
    run_dir = error = None
    if distributed.rank_and_world_size()[0] == 0:
        try:
            run_dir = _new_run_dir(args, config)
            _lock(run_dir, lock)
        except (ValueError, OSError) as problem:
            error = str(problem)
    run_dir, error = distributed.broadcast_from_rank_0((run_dir, error))
    if error is not None:
        parser.exit(2, f"train.py: error: {prefix}{error}\n")
    return run_dir


def _failure(error, config, run_dir):
    """``(exit status, message)`` for an error that ended training; a RuntimeError that is not a failed
    allocation is a bug, raised again: its traceback is the useful report."""
    if isinstance(error, data.DataError):
        _remove_if_empty(run_dir)
        return 2, str(error)
    if isinstance(error, checkpoint.SaveError):  # a full disk: the run can go on from its last checkpoint
        return 1, f"{error}; {_what_is_kept(run_dir, resumable=True)}"
    if isinstance(error, checkpoint.CheckpointError):  # a checkpoint that does not fit its own configuration
        return 2, f"--resume {run_dir}: {error}"
    if isinstance(error, TrainingError):
        return 1, f"{error}; {_what_is_kept(run_dir)}"
    if isinstance(error, torch.OutOfMemoryError) or (isinstance(error, RuntimeError) and "alloc" in str(error)):
        _remove_if_empty(run_dir)
        shrink = MODELS[config.model].shrink
        smaller = f"{shrink} or" if shrink else "a smaller"
        return 1, f"out of memory on {config.device} ({checkpoint.cause(error)}): choose {smaller} --batch-size"
    if isinstance(error, RuntimeError):
        raise error
    # an OSError: TensorBoard's event file, on a full disk or in a folder that went away
    return 1, (
        f"could not write TensorBoard's events into {run_dir} ({error.strerror or error}): free disk space, or "
        f"raise the file-size limit (ulimit -f); {_what_is_kept(run_dir, resumable=True)}"
    )
