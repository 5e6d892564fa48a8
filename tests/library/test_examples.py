"""Every script in examples/ runs as a user would run it (once each), and computes what it claims."""

import math
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _run(script, *args):
    finished = subprocess.run(
        [sys.executable, os.path.join(ROOT, "examples", script), *args],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert finished.returncode == 0, finished.stderr[-3000:]
    return finished.stdout


def _number(pattern, text):
    found = re.search(pattern, text)
    assert found, f"{pattern!r} not in the output:\n{text}"
    return float(found.group(1))


def test_every_example_is_tested():
    scripts = {name for name in os.listdir(os.path.join(ROOT, "examples")) if name.endswith(".py")}
    assert scripts == {
        "char_gpt.py",
        "convert_vit.py",
        "functional_module.py",
        "per_sample_gradients.py",
        "verify_custom_function.py",
    }


@pytest.mark.slow
def test_converted_vit_fine_tunes_with_the_gradients_of_the_unconverted_one():
    output = _run("convert_vit.py")
    # each block: two LayerNorm, attention, two Linear, GELU and three Dropout; the patch embedding's Conv2d, the
    # encoder's Dropout and LayerNorm, and the head's Linear; the attention's out_proj is a subclass, left alone
    assert re.search(r"converted (\d+) layers .*\((.*)\) and (\d+) Sequential", output).groups() == (
        "22",
        "7 Dropout, 5 LayerNorm, 5 Linear, 2 MultiheadAttention, 2 GELU, 1 Conv2d",
        "2",
    )
    losses = [float(v) for v in re.search(r"fine-tuning losses: (.*)", output).group(1).split()]
    assert len(losses) == 10 and losses[-1] < losses[0]
    assert _number(r"largest gradient difference over the fine-tuning steps: (\S+)", output) < 1e-4


@pytest.mark.slow
def test_functional_module_fits_its_target_with_autograds_gradients():
    output = _run("functional_module.py")
    first = _number(r"mean squared error: (\S+) before training", output)
    last = _number(r"before training, (\S+) after", output)
    assert last < 0.1 * first
    assert _number(r"largest gradient difference against torch.nn.functional: (\S+)", output) < 1e-4


@pytest.mark.slow
def test_per_sample_gradients_equal_one_backward_pass_per_example():
    output = _run("per_sample_gradients.py")
    for name, shape in {"0.weight": "(32, 64, 784)", "0.bias": "(32, 64)", "2.weight": "(32, 10, 64)"}.items():
        assert f"{name}: per-sample gradients of shape {shape}" in output
    assert _number(r"largest difference from one backward pass per example: (\S+)", output) < 1e-5


@pytest.mark.slow
def test_verify_custom_function_passes_the_right_swish_and_names_the_rows_that_catch_each_mistake():
    output = _run("verify_custom_function.py")
    assert output.rstrip().endswith(": OK") and "19 pass, 0 fail, 1 n/a" in output
    for mistake, rows in {
        "scaled": ["grad x float32", "grad x float64", "gradcheck", "gradcheck batched grad"],
        "unsummed": ["grad beta float32", "grad beta float64", "needs_input_grad"],
    }.items():
        finished = subprocess.run(
            [sys.executable, os.path.join(ROOT, "examples", "verify_custom_function.py"), "--mistake", mistake],
            capture_output=True,
            text=True,
            timeout=600,
            cwd=ROOT,
        )
        assert finished.returncode == 1, finished.stderr[-3000:]
        verdict = finished.stdout.rstrip().splitlines()[-1]
        assert verdict.split("FAILED: ")[1] == "; ".join(f"{row} (sample 0)" for row in rows)


# the char GPT's backward graph: one node per manualbp layer type, and around them only torch's plain tensor ops
# (the residual adds, reshapes and head splits; AccumulateGrad for the parameters)
CHAR_GPT_MANUALBP_NODES = {
    "EmbeddingBackward",
    "LayerNormBackward",
    "LinearBackward",
    "GELUBackward",
    "ScaledDotProductAttentionBackward",
    "OneHotCrossEntropyLossBackward",
}
CHAR_GPT_TORCH_NODES_ALLOWED = {
    "AccumulateGrad",
    "AddBackward0",
    "CloneBackward0",
    "ExpandBackward0",
    "PermuteBackward0",
    "SplitBackward0",
    "TransposeBackward0",
    "UnsafeViewBackward0",
    "ViewBackward0",
}


@pytest.mark.slow
def test_char_gpt_from_manualbp_layers_trains_on_the_loss_curve_of_the_same_gpt_from_torch_nn():
    output = _run("char_gpt.py", "--dtype", "float64")  # the defaults otherwise: 300 steps on the CPU
    vocabulary = _number(r"vocabulary of (\d+)", output)
    assert vocabulary == 45  # the Zen of Python's distinct characters
    manual_nodes = set(re.search(r"manualbp nodes in the backward graph: (.*)", output).group(1).split())
    torch_nodes = set(re.search(r"torch nodes in the backward graph: (.*)", output).group(1).split())
    assert manual_nodes == CHAR_GPT_MANUALBP_NODES
    assert torch_nodes <= CHAR_GPT_TORCH_NODES_ALLOWED, torch_nodes - CHAR_GPT_TORCH_NODES_ALLOWED
    first = _number(r"first loss (\S+),", output)
    last = _number(r"last loss (\S+),", output)
    assert abs(first - math.log(vocabulary)) < 0.5  # an untrained model guesses about uniformly
    assert last < 0.25 * first  # measured: 3.957 → 0.369
    assert _number(r"max rel difference (\S+)", output) < 1e-10  # measured in float64: 8.4e-15


@pytest.mark.slow
@pytest.mark.parametrize(
    "script, argv, message",
    [
        ("convert_vit.py", ["--bogus"], "unrecognized arguments: --bogus"),
        ("functional_module.py", ["--steps", "0"], "--steps must be positive, got 0"),
        ("per_sample_gradients.py", ["--batch-size", "0"], "--batch-size must be positive, got 0"),
        ("verify_custom_function.py", ["--rows", "0"], "--rows must be positive, got 0"),
        ("verify_custom_function.py", ["--mistake", "sign"], "invalid choice: 'sign'"),
        ("char_gpt.py", ["--plot", "curves.txt"], "--plot curves.txt: the curves are saved as a PNG image"),
        (
            "char_gpt.py",
            ["--plot", "no-such-folder/curves.png"],
            "--plot no-such-folder/curves.png: there is no folder",
        ),
    ],
)
def test_examples_refuse_bad_arguments_with_exit_2_before_running(script, argv, message):
    finished = subprocess.run(
        [sys.executable, os.path.join(ROOT, "examples", script), *argv], capture_output=True, text=True, cwd=ROOT
    )
    assert finished.returncode == 2 and message in finished.stderr and "Traceback" not in finished.stderr
