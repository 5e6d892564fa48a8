"""Every script in examples/ runs as a user would run it, and computes what it claims."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "examples"))
import convert_vit  # noqa: E402
import functional_module  # noqa: E402
import per_sample_gradients  # noqa: E402

EXAMPLES = sorted(name for name in os.listdir(os.path.join(ROOT, "examples")) if name.endswith(".py"))


@pytest.mark.parametrize("script", EXAMPLES)
def test_example_runs_as_a_script(script):
    finished = subprocess.run(
        [sys.executable, os.path.join(ROOT, "examples", script)], capture_output=True, text=True, timeout=300, cwd=ROOT
    )
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert "largest" in finished.stdout  # each ends by reporting its check against PyTorch


def test_converted_vit_fine_tunes_with_the_gradients_of_the_unconverted_one():
    count, worst, losses = convert_vit.main(steps=4)
    assert count == 7  # two blocks × (two Linear + one GELU), and the head
    assert worst < 1e-4
    assert losses[-1] < losses[0]


def test_functional_module_fits_its_target_with_autograds_gradients():
    first, last, worst = functional_module.main(steps=100)
    assert last < 0.1 * first
    assert worst < 1e-4


def test_per_sample_gradients_equal_one_backward_pass_per_example():
    shapes, worst = per_sample_gradients.main(batch_size=8)
    assert shapes == {"0.weight": (8, 64, 784), "0.bias": (8, 64), "2.weight": (8, 10, 64), "2.bias": (8, 10)}
    assert worst < 1e-5
