"""``python -m manualbp.check``: the report a user runs to trust the library on their own machine."""

import subprocess
import sys

import pytest
import torch

from manualbp import check
from manualbp.check import CASES


def _main(capsys, *args):
    """``check.main(args)`` in this process: ``(exit status, stdout, stderr)``; argparse's exits included."""
    try:
        code = check.main(list(args))
    except SystemExit as exit:
        code = exit.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _rows(output):
    return [line.split() for line in output.splitlines() if line.split() and line.split()[0] in {c.name for c in CASES}]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_check_prints_a_row_per_tier_and_gradient_and_exits_zero(capsys, dtype):
    code, output, error = _main(capsys, "--dtype", dtype)
    assert code == 0, error
    lines = output.splitlines()
    header = next(line for line in lines if line.startswith("layer"))
    assert header.split() == ["layer", "tier", "quantity", "exact", "approximate", "maxdiff"]
    rows = _rows(output)
    assert len(rows) == 2 * sum(1 + len(case.differentiable) for case in CASES)  # each tier
    assert {row[1] for row in rows} == {"reference", "fast"}
    assert all(row[-2] == "True" for row in rows)  # every row within tolerance
    for tier in ("reference", "fast"):
        assert ("Linear", tier, "grad", "weight", "True", "True", "0.000e+00") in {tuple(r) for r in rows}
    assert f"of {len(rows)} within tolerance" in lines[-1]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_check_on_cuda_without_a_gpu_is_a_one_line_error_with_exit_2(capsys):
    code, _, error = _main(capsys, "--device", "cuda")
    assert code == 2
    assert "no CUDA device is available here; use --device cpu" in error.strip().splitlines()[-1]


def test_check_rejects_an_unknown_dtype_with_exit_2(capsys):
    code, _, error = _main(capsys, "--dtype", "float16")
    assert code == 2 and "invalid choice: 'float16'" in error


@pytest.mark.parametrize("seed", [str(2**64), "-9223372036854775809", "one"])
def test_check_rejects_a_seed_that_torch_cannot_take_with_exit_2(capsys, seed):
    code, _, error = _main(capsys, "--seed", seed)
    assert code == 2 and error.strip().splitlines()[-1] == (
        "python -m manualbp.check: error: argument --seed: expected an integer from -2**63 to 2**64 - 1 "
        f"(torch.manual_seed's range), got '{seed}'"
    )


@pytest.mark.slow
def test_python_dash_m_manualbp_check_runs_as_a_user_runs_it():
    result = subprocess.run([sys.executable, "-m", "manualbp.check"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout.splitlines()[-1].endswith("within tolerance")
