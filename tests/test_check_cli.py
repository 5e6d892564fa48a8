"""``python -m manualbp.check``: the report a user runs to trust the library on their own machine."""

import subprocess
import sys

import pytest
import torch

from manualbp.check import CASES


def _run(*args):
    return subprocess.run([sys.executable, "-m", "manualbp.check", *args], capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_check_prints_a_row_per_gradient_and_exits_zero(dtype):
    result = _run("--dtype", dtype)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    header = next(line for line in lines if line.startswith("layer"))
    assert header.split() == ["layer", "tier", "quantity", "exact", "approximate", "maxdiff"]
    rows = [line.split() for line in lines if line.split() and line.split()[0] in {c.name for c in CASES}]
    assert len(rows) == 2 * sum(1 + len(case.differentiable) for case in CASES)  # each tier
    assert {row[1] for row in rows} == {"reference", "fast"}
    assert all(row[-2] == "True" for row in rows)  # every row within tolerance
    for tier in ("reference", "fast"):
        assert ("Linear", tier, "grad", "weight", "True", "True", "0.000e+00") in {tuple(r) for r in rows}
    assert f"of {len(rows)} within tolerance" in lines[-1]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_check_on_cuda_without_a_gpu_is_a_one_line_error_with_exit_2():
    result = _run("--device", "cuda")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "no CUDA device is available here; use --device cpu" in result.stderr.strip().splitlines()[-1]


def test_check_rejects_an_unknown_dtype_with_exit_2():
    result = _run("--dtype", "float16")
    assert result.returncode == 2 and "invalid choice: 'float16'" in result.stderr
