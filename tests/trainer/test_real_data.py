"""One epoch on the real Fashion-MNIST, read from Debian's dataset-fashion-mnist through --data-dir."""

import os
import re
import subprocess
import sys

import pytest

FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.slow
@pytest.mark.skipif(
    not os.path.isdir(FASHION_MNIST) and not os.environ.get("CI"),
    reason="apt-get install dataset-fashion-mnist to run this (CI always does)",
)
def test_one_epoch_on_real_fashion_mnist_reaches_80_percent_and_is_named_fashion_mnist(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "train.py",
            "--data-dir",
            FASHION_MNIST,
            "--epochs",
            "1",
            "--logdir",
            str(tmp_path),
            "--no-progress",
            "--no-pictures",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    accuracy = float(re.search(r"final test accuracy (\d\.\d+)", result.stdout).group(1))
    assert accuracy >= 0.80
    (run,) = os.listdir(tmp_path)
    assert "_fashion-mnist_" in run  # recognised from the files, with no --dataset
