"""Data-parallel training under ``torchrun``: PyTorch's own process group and DistributedDataParallel.

``torchrun --nproc_per_node N train.py …`` starts N copies of train.py with RANK, WORLD_SIZE and LOCAL_RANK in
their environment. Each copy joins one process group (gloo on CPU, NCCL on CUDA), draws the same shuffled order
from the shared seed, and trains on its share of every global batch; DistributedDataParallel averages the
gradients across the copies during the backward pass. A plain ``python train.py`` never gets here.
"""

import datetime
import os

import torch
import torch.distributed as dist

# how long a rank waits in a collective before it gives up: a rank that died takes the job down with it
TIMEOUT = datetime.timedelta(minutes=5)


def launched_by_torchrun():
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init(device_name):
    """Join the process group torchrun set up. CUDA ranks each take one GPU, by their LOCAL_RANK."""
    cuda = device_name == "cuda" or (device_name == "auto" and torch.cuda.is_available())
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if cuda else "gloo", timeout=TIMEOUT)


def rank_and_world_size():
    """``(rank, world_size)`` of this process: ``(0, 1)`` when not distributed."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def all_reduce_sum(tensor):
    """Sum ``tensor`` over every rank, in place (nothing to do on a single process)."""
    if rank_and_world_size()[1] > 1:
        dist.all_reduce(tensor)
    return tensor


def broadcast_from_rank_0(value):
    """Rank 0's ``value`` on every rank (a picklable object)."""
    if rank_and_world_size()[1] == 1:
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def shutdown():
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
