"""The benchmark scripts run in their quick mode and print complete tables (slow: each is a subprocess). No timing
is asserted here: speed is measured by the scripts themselves (BENCHMARKS.md); bytes saved for backward are
counts, and are asserted in the default run."""

import os
import re
import subprocess
import sys

import pytest
import torch
from idx import write_idx_dir

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
import cnn  # noqa: E402
import epoch  # noqa: E402
import memory  # noqa: E402
import models  # noqa: E402
import speedrun  # noqa: E402
import step  # noqa: E402

RATIO = r"\d+\.\d{3} \(\d+\.\d{3}–\d+\.\d{3}\)"


def _run(script, *args):
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", script), "--quick", *args],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def _table_rows(output):
    """The body rows of every markdown table in ``output`` (not the headers, not the separator lines)."""
    lines = output.splitlines()
    headers = {i - 1 for i, line in enumerate(lines) if line.startswith("| ---")}
    separators = {i + 1 for i in headers}
    return [line for i, line in enumerate(lines) if line.startswith("| ") and i not in headers | separators]


@pytest.mark.parametrize(
    "script, argv, message",
    [
        (step, ["--rounds", "-1"], "argument --rounds: expected a positive int, got '-1'"),
        (epoch, ["--data-dir", "{missing}"], "is not a folder: pass the folder holding the four IDX files"),
        (epoch, ["--data-dir", "{empty}"], "has no train-images-idx3-ubyte (or train-images-idx3-ubyte.gz)"),
        (epoch, ["--data-dir", "{idx}", "--hidden", "0"], "argument --hidden: expected a positive int, got '0'"),
        (speedrun, ["--data-dir", "{missing}"], "is not a folder: pass the folder holding the four IDX files"),
        (speedrun, ["--data-dir", "{idx}", "--batch-size", "0"], "argument --batch-size: expected a positive int"),
        (speedrun, ["--data-dir", "{idx}", "--target", "98"], "argument --target: expected an accuracy in (0, 1]"),
        (models, ["--models", "resnet18,vgg"], "argument --models: expected a comma-separated list of resnet18"),
        (models, ["--rounds", "0"], "argument --rounds: expected a positive int, got '0'"),
    ],
)
def test_benchmarks_refuse_bad_input_with_exit_2_before_measuring(capsys, tmp_path, script, argv, message):
    (tmp_path / "empty").mkdir()
    places = {"missing": str(tmp_path / "missing"), "empty": str(tmp_path / "empty"), "idx": str(tmp_path)}
    with pytest.raises(SystemExit) as exit_info:
        script.main([arg.format(**places) for arg in argv])
    error = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and message in error[-1] and "Traceback" not in "\n".join(error)


@pytest.mark.slow
def test_step_benchmark_prints_a_ratio_for_every_quick_case():
    rows = _table_rows(_run("step.py"))
    assert len(rows) == len(step.QUICK_CASES)
    assert all(re.search(RATIO, row) for row in rows)


@pytest.mark.slow
def test_step_benchmark_compiles_both_variants():
    rows = _table_rows(_run("step.py", "--compile"))
    assert len(rows) == len(step.QUICK_CASES)
    assert all(re.search(RATIO, row) for row in rows)


@pytest.mark.slow
def test_before_after_benchmark_loads_an_earlier_commit_beside_this_checkout():
    # HEAD as the earlier commit: always in the clone, and the exported copy must load under its other name
    rows = _table_rows(_run("before_after.py", "HEAD"))
    assert len(rows) == len(step.QUICK_CASES)
    assert all(len(re.findall(RATIO, row)) == 3 for row in rows)  # before and after ÷ torch.nn, after ÷ before


@pytest.mark.slow
def test_before_after_benchmark_refuses_an_unknown_commit_in_one_line():
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", "before_after.py"), "no-such-commit", "--quick"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode != 0
    assert "cannot export 'no-such-commit'" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_layer_benchmark_prints_a_ratio_for_every_layer_and_width():
    rows = _table_rows(_run("layers.py"))
    assert len(rows) == 8 * 2  # eight layers, two quick batch sizes
    assert all(len(re.findall(RATIO, row)) == 2 for row in rows)  # two quick widths


@pytest.mark.parametrize("layers", ["manual", "mlp"], ids=["per-layer", "one-node"])
@pytest.mark.parametrize("case", step.CASES, ids=lambda case: "-".join(map(str, case[0])) + f"@{case[3]}")
def test_manualbp_saves_no_more_for_backward_than_torch_nn(case, layers):
    sizes, activation, loss, batch_size = case
    manual = memory.saved_bytes(sizes, activation, loss, batch_size, layers, torch.device("cpu"))
    reference = memory.saved_bytes(sizes, activation, loss, batch_size, "torch", torch.device("cpu"))
    assert manual[0] <= reference[0]
    assert manual[1] <= reference[1]
    assert manual[0] >= batch_size * sum(sizes[1:-1]) * 4  # at least every hidden activation, in float32


@pytest.mark.slow
def test_cnn_benchmark_prints_a_ratio_and_saved_bytes_for_every_quick_batch_and_a_profile():
    output = _run("cnn.py", "--profile")
    rows = _table_rows(output)
    assert [row.split(" | ")[0] for row in rows] == [f"| {batch}" for batch in cnn.QUICK_BATCHES]
    assert all(re.search(RATIO, row) for row in rows)
    assert "Top operators, `--layers manual`" in output and "Top operators, `--layers torch`" in output


@pytest.mark.slow
def test_models_benchmark_prints_a_ratio_for_each_converted_model_and_a_profile():
    output = _run("models.py", "--profile")
    rows = _table_rows(output)
    assert [row.split(" | ")[0] for row in rows] == [f"| {models.MODELS[name]}" for name in models.MODELS]
    assert all(re.search(RATIO, row) for row in rows)
    assert "Top operators, resnet18, `manual`" in output and "Top operators, transformer, `torch`" in output


@pytest.mark.parametrize("batch_size", [1, 16])
def test_the_cnn_saves_no_more_for_backward_than_its_torch_nn_twin(batch_size):
    manual = memory.saved_for_backward(*cnn.make_case(batch_size, "manual", torch.device("cpu")), torch.device("cpu"))
    reference = memory.saved_for_backward(*cnn.make_case(batch_size, "torch", torch.device("cpu")), torch.device("cpu"))
    assert manual[0] <= reference[0]
    assert manual[1] <= reference[1]
    # at least each batch norm's input, the convolutions' outputs: 32 channels of 28×28 and 64 of 14×14, float32
    assert manual[0] >= batch_size * (32 * 28 * 28 + 64 * 14 * 14) * 4


@pytest.mark.slow
def test_overhead_benchmark_prints_every_layer_and_the_function_floor():
    output = _run("overhead.py")
    rows = _table_rows(output)
    assert [row.split(" | ")[1] for row in rows[:6]] == [
        "Linear 784→30",
        "sigmoid (10×30)",
        "Linear 30→10",
        "sigmoid (10×10)",
        "mse_loss (10×10)",
        "**whole training step**",
    ]
    assert len(rows) == 6 + 3 + len(step.QUICK_CASES)
    floor = rows[-len(step.QUICK_CASES) :]  # torch.nn, floor, manualbp: one step per case
    assert [row.split(" | ")[0] for row in floor] == ["| " + "-".join(map(str, case[0])) for case in step.QUICK_CASES]
    for row in floor:
        assert len(re.findall(r"\d\.\d{3} \(\d\.\d{3}–\d\.\d{3}\)", row)) == 3, row


@pytest.mark.slow
def test_kernels_benchmark_prints_three_variants_and_two_ratios_for_every_quick_case():
    import kernels

    rows = _table_rows(_run("kernels.py"))
    assert [row.split(" | ")[0] for row in rows] == [f"| {case[0]}" for case in kernels.cases(quick=True)]
    assert all(len(re.findall(RATIO, row)) == 2 for row in rows)


@pytest.mark.slow
def test_cnn_backward_benchmark_prints_each_form_against_pytorchs_kernel_for_every_quick_shape():
    import cnn_backward

    rows = _table_rows(_run("cnn_backward.py"))
    shapes = [" × ".join(map(str, case)) for case in cnn_backward.QUICK_CONVOLUTIONS]
    shapes += [" × ".join(map(str, case)) for case in cnn_backward.QUICK_ACTIVATIONS] * 2
    assert [row.split(" | ")[0] for row in rows] == [f"| {shape}" for shape in shapes]
    forms = [3] * len(cnn_backward.QUICK_CONVOLUTIONS) + [2] * 2 * len(cnn_backward.QUICK_ACTIVATIONS)
    assert [len(re.findall(RATIO, row)) for row in rows] == forms  # one ratio per form, each against PyTorch's


@pytest.mark.slow
def test_chain_benchmark_prints_the_three_per_layer_variants_for_every_quick_case():
    import chain

    rows = _table_rows(_run("chain.py"))
    assert [row.split(" | ")[0] for row in rows] == ["| " + "-".join(map(str, case[0])) for case in step.QUICK_CASES]
    assert all(len(re.findall(RATIO, row)) == 3 for row in rows)  # chain, pairs and the node alone, each ÷ torch.nn
    assert fast_chain_is_restored(chain)


def fast_chain_is_restored(chain):
    """Whether ``chain.chain_declined`` puts the Sequential's chain back after it."""
    from manualbp.nn import container

    before = container._linear_chain
    with chain.chain_declined():
        declined = container._linear_chain is not before
    return declined and container._linear_chain is before


@pytest.mark.slow
def test_memory_benchmark_prints_every_quick_case():
    rows = _table_rows(_run("memory.py"))
    assert len(rows) == len(step.QUICK_CASES)


@pytest.mark.slow
def test_epoch_benchmark_runs_every_pipeline_on_idx_files(tmp_path):
    write_idx_dir(tmp_path, n_train=1000, n_test=500, gz=True)
    output = _run("epoch.py", "--data-dir", str(tmp_path), "--hidden", "32")
    rows = _table_rows(output)
    assert [row.split(" | ")[0] for row in rows] == [
        "| trainer, `--layers manual`",
        "| trainer, `--layers torch`",
        "| DataLoader pipeline (torch.nn)",
        rows[3].split(" | ")[0],
        *(f"| {name}" for name in [*epoch.PHASES, epoch.REST]),
    ]
    assert rows[3].startswith("| compute limit: the epoch's")
    assert all(re.search(r"\d+\.\d{3} s", row) for row in rows[:4])
    cells = {row.split(" | ")[0][2:]: row.split(" | ")[1:3] for row in rows[4:]}
    phases = {name: [float(c.removesuffix(" ms").replace(",", "")) for c in both] for name, both in cells.items()}
    assert all(milliseconds >= 0 for both in phases.values() for milliseconds in both)
    # the phases that do real work at this size took measurable time with either layers
    for name in [*epoch.PHASES][:3]:  # the training, the evaluation, the summaries
        assert min(phases[name]) > 0, name


@pytest.mark.slow
def test_speedrun_prints_a_row_with_an_accuracy_for_each_way_and_layers(tmp_path):
    folder = write_idx_dir(str(tmp_path / "idx"), n_train=1200, n_test=200)
    rows = _table_rows(_run("speedrun.py", "--data-dir", folder, "--modes", "eager", "--batch-size", "100"))
    assert [row.split(" | ")[:2] for row in rows] == [["| eager", "manual"], ["| eager", "torch"]]
    for row in rows:
        accuracy = float(row.split(" | ")[4])
        assert 0.5 < accuracy <= 1.0, row  # the synthetic classes are easy: both learn them
