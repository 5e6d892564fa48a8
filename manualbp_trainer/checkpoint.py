"""Checkpoints written atomically: a reader sees the previous file or the new one, never half of one."""

import contextlib
import os
import shutil

import torch

FILENAME = "checkpoint.pt"
KEYS = ("model", "optimizer", "scheduler", "epoch", "step", "global_step", "epoch_rng", "best_accuracy", "best_epoch")


class CheckpointError(Exception):
    """A checkpoint could not be found or read; the message says what to do."""


class SaveError(CheckpointError):
    """A checkpoint could not be written (a full disk, a file-size limit); the previous one is left as it was."""


def save(state, run_dir):
    """Write ``state`` to ``run_dir/checkpoint.pt``: first to a temporary file beside it, then rename.

    If the write fails (a full disk, a file-size limit, an interrupt), the temporary file is removed and the
    previous checkpoint is left as it was; the failure is raised as SaveError.
    """
    path = os.path.join(run_dir, FILENAME)
    temporary = path + ".tmp"
    try:
        torch.save(state, temporary)
        os.replace(temporary, path)  # atomic on POSIX and Windows when both live in one folder
    except BaseException as error:
        with contextlib.suppress(OSError):
            os.remove(temporary)
        if not isinstance(error, Exception):  # KeyboardInterrupt: the caller decides what an interrupt means
            raise
        # torch's zip writer reports a short write as "unexpected pos …", without the OS's reason
        reason = error.strerror if isinstance(error, OSError) and error.strerror else "the write was cut short"
        free = shutil.disk_usage(run_dir).free
        raise SaveError(
            f"could not write {path} ({reason}; {free / 1e6:,.0f} MB free on its disk): free disk space, or raise "
            "the file-size limit (ulimit -f)"
        ) from error
    return path


def load(run_dir):
    """Read the checkpoint of ``run_dir`` to continue it, raising CheckpointError with a clear message if it cannot."""
    return read(run_dir, (*KEYS, "config"), "--resume ")


def _lost(flag):
    """What an unreadable checkpoint means for the command that read it: --resume has nothing to continue."""
    return ": the run cannot be continued; start a new one" if flag.startswith("--resume") else ""


def read(run_dir, keys, flag=""):
    """Read ``run_dir``'s checkpoint and check it holds ``keys``; errors name the run after ``flag``."""
    if os.path.isfile(run_dir):  # the checkpoint file itself, say: the run is the folder that holds it
        folder = os.path.dirname(run_dir) or "."
        raise CheckpointError(f"{flag}{run_dir} is a file: give the run's directory, {folder}, not a file in it")
    if not os.path.isdir(run_dir):
        raise CheckpointError(f"{flag}{run_dir}: no such run directory")
    path = os.path.join(run_dir, FILENAME)
    if not os.path.isfile(path):
        raise CheckpointError(f"{flag}{run_dir}: it holds no {FILENAME}; was it made by train.py?")
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except PermissionError as error:
        raise CheckpointError(f"{flag}{run_dir}: {FILENAME} is unreadable ({error.strerror})") from error
    except Exception as error:  # torch.load's message would only mislead (it suggests weights_only=False)
        raise CheckpointError(
            f"{flag}{run_dir}: {FILENAME} is corrupt or not a checkpoint (torch.load raised "
            f"{type(error).__name__}){_lost(flag)}"
        ) from error
    missing = [key for key in keys if not isinstance(saved, dict) or key not in saved]
    if missing:
        raise CheckpointError(
            f"{flag}{run_dir}: {FILENAME} lacks {', '.join(missing)}: it was not written by this train.py{_lost(flag)}"
        )
    return saved


def cause(error):
    """One line that names ``error``: its type, and its message's first line when it has one."""
    lines = [line.strip() for line in str(error).strip().split("\n") if line.strip()]
    name = type(error).__name__
    return f"{name}: {lines[0]}" if lines else name
