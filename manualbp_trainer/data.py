"""MNIST-style data sets as whole tensors on the training device, read once and normalised once.

No DataLoader and no per-sample transforms: at 28×28 pixels the whole set fits in memory many times over, so the
training loop draws each mini-batch by indexing these tensors with a shuffled permutation, on the device.
"""

import gzip
import os
import shutil
import tempfile
from dataclasses import dataclass

import torch
import torchvision
from torchvision.datasets.mnist import read_image_file, read_label_file

DATASETS = {"mnist": torchvision.datasets.MNIST, "fashion-mnist": torchvision.datasets.FashionMNIST}
IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
NUM_CLASSES = 10
IMAGE_PIXELS = 28 * 28
# the first test labels of each data set: enough to tell which one a folder of IDX files holds
FIRST_TEST_LABELS = {"mnist": [7, 2, 1, 0, 4, 1, 4, 9, 5, 9], "fashion-mnist": [9, 2, 1, 1, 6, 1, 4, 6, 5, 7]}


class DataError(Exception):
    """The data could not be found or read; the message says what to do."""


@dataclass
class Split:
    """One split of a data set: ``images`` ``(N, 784)`` floating point, ``labels`` ``(N,)`` int64."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self):
        return self.labels.shape[0]


def load(dataset="mnist", data_root="data", data_dir=None, device="cpu", dtype=torch.float32, normalize=True):
    """Return ``(train, test)`` Splits on ``device``.

    Args:
        dataset: ``"mnist"`` or ``"fashion-mnist"``, downloaded by torchvision into ``data_root`` when
            ``data_dir`` is None.
        data_dir: a folder holding the four IDX files (``train-images-idx3-ubyte`` … ``t10k-labels-idx1-ubyte``,
            each raw or ``.gz``), read as local files with no download.
        normalize: scale pixels to [0, 1] and then standardise with the training set's mean and standard
            deviation; if False, pixels are only scaled to [0, 1].
    """
    if data_dir is not None:
        raw = {split: _read_idx_pair(data_dir, *names) for split, names in IDX_FILES.items()}
    else:
        raw = {split: _download(dataset, data_root, train=split == "train") for split in IDX_FILES}
    (train_images, train_labels), (test_images, test_labels) = raw["train"], raw["test"]
    if train_images.shape[1:] != test_images.shape[1:]:
        raise DataError(
            f"train images are {tuple(train_images.shape[1:])} pixels but test images are "
            f"{tuple(test_images.shape[1:])}: the IDX files come from different data sets"
        )
    train_x = train_images.to(device).flatten(1).to(dtype) / 255
    test_x = test_images.to(device).flatten(1).to(dtype) / 255
    if normalize:
        mean, std = train_x.mean(), train_x.std()
        train_x, test_x = (train_x - mean) / std, (test_x - mean) / std
    return Split(train_x, train_labels.to(device)), Split(test_x, test_labels.to(device))


def identify(data_dir):
    """``"mnist"`` or ``"fashion-mnist"`` when the IDX files in ``data_dir`` are that data set's, else ``"idx"``.

    The test labels tell: each data set's 10,000 test labels begin with its own sequence.
    """
    if not os.path.isdir(data_dir):
        raise DataError(f"--data-dir {data_dir} is not a folder: pass the folder holding the four IDX files")
    labels = _read_idx(_find(data_dir, IDX_FILES["test"][1]), read_label_file, "labels (N,)")
    for name, first in FIRST_TEST_LABELS.items():
        if labels.shape[0] == 10_000 and labels[: len(first)].tolist() == first:
            return name
    return "idx"


def _download(dataset, data_root, train):
    try:
        data = DATASETS[dataset](data_root, train=train, download=True)
    except Exception as error:  # torchvision raises RuntimeError, URLError or OSError, depending on what failed
        raise DataError(
            f"could not get {dataset} into {os.path.abspath(data_root)} ({_cause(error)}): connect to the "
            "internet, or pass --data-dir DIR with the four IDX files"
        ) from error
    return data.data, data.targets


def _read_idx_pair(data_dir, images_name, labels_name):
    if not os.path.isdir(data_dir):
        raise DataError(f"--data-dir {data_dir} is not a folder: pass the folder holding the four IDX files")
    images = _read_idx(_find(data_dir, images_name), read_image_file, "images (N, rows, cols)")
    if images.shape[1] * images.shape[2] != IMAGE_PIXELS:  # the networks take 28 × 28 = 784 inputs
        raise DataError(
            f"{images_name} holds {images.shape[1]}×{images.shape[2]} images, but the networks here take MNIST's "
            "28×28: pass a folder of 28×28 IDX files (MNIST or Fashion-MNIST)"
        )
    labels = _read_idx(_find(data_dir, labels_name), read_label_file, "labels (N,)")
    if images.shape[0] != labels.shape[0]:
        raise DataError(
            f"{images_name} holds {images.shape[0]} images but {labels_name} holds {labels.shape[0]} labels: "
            "the two files must come from the same split"
        )
    if labels.numel() and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
        raise DataError(f"{labels_name} holds labels outside 0..{NUM_CLASSES - 1}: is it an MNIST label file?")
    return images, labels


def _find(data_dir, name):
    for candidate in (name, name + ".gz"):
        path = os.path.join(data_dir, candidate)
        if os.path.isfile(path):
            return path
    raise DataError(f"{data_dir} has no {name} (or {name}.gz): the folder needs all four MNIST IDX files")


def _read_idx(path, reader, what):
    """Parse one IDX file with torchvision's reader, after decompressing it if it is gzipped."""
    try:
        if not path.endswith(".gz"):
            return reader(path)
        with tempfile.TemporaryDirectory() as tmp:
            plain = os.path.join(tmp, "idx")
            with gzip.open(path, "rb") as source, open(plain, "wb") as target:
                shutil.copyfileobj(source, target)
            return reader(plain)
    except Exception as error:  # torchvision's reader fails by assert, TypeError, ValueError or RuntimeError
        raise DataError(
            f"{path} is not a valid IDX file of {what} ({_cause(error) or type(error).__name__}): it is "
            "empty, truncated, corrupt or of the wrong kind; download it again"
        ) from error


def _cause(error):
    """The line of an error message that says most: torchvision puts the underlying cause last."""
    lines = [line.strip() for line in str(error).strip().split("\n") if line.strip()]
    return lines[-1] if lines else ""
