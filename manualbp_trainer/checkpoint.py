"""Checkpoints written atomically: a reader sees the previous file or the new one, never half of one."""

import os

import torch

FILENAME = "checkpoint.pt"


class CheckpointError(Exception):
    """A checkpoint could not be found or read; the message says what to do."""


def save(state, run_dir):
    """Write ``state`` to ``run_dir/checkpoint.pt``: first to a temporary file beside it, then rename."""
    path = os.path.join(run_dir, FILENAME)
    temporary = path + ".tmp"
    torch.save(state, temporary)
    os.replace(temporary, path)  # atomic on POSIX and Windows when both live in one folder
    return path


def load(run_dir):
    """Read the checkpoint of ``run_dir``, raising CheckpointError with a clear message if it cannot."""
    if not os.path.isdir(run_dir):
        raise CheckpointError(f"--resume {run_dir}: no such run directory")
    path = os.path.join(run_dir, FILENAME)
    if not os.path.isfile(path):
        raise CheckpointError(f"--resume {run_dir}: it holds no {FILENAME}; was it made by train.py?")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        message = str(error).strip().split("\n")[0]
        raise CheckpointError(f"--resume {run_dir}: {FILENAME} is unreadable ({message})") from error
