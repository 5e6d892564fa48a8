"""CUDA graphs by default where a run allows them: the decision (``cuda_graphs.refusal``, ``used``, ``note``) for
each reason a run cannot have them and for the run that can, the one line a GPU run says when it trains eagerly,
nothing on the CPU, --cuda-graphs and --no-cuda-graphs, and what a checkpoint keeps of the choice. The decision is
a function of the Config: a Config on "cuda" needs no GPU to be decided."""

import dataclasses
import os

import pytest
import torch
from idx import write_idx_dir

from manualbp_trainer import cli, cuda_graphs, loop
from manualbp_trainer.config import Config

NOTE = "note: no CUDA graphs, each step runs eagerly: {why} (--no-cuda-graphs: eager without this note)"
SMALL = ["--hidden", "16", "--epochs", "2", "--batch-size", "100", "--no-progress", "--no-pictures", "--device", "cpu"]

REFUSALS = [
    pytest.param(
        {"model": "cnn"},
        False,
        "--cuda-graphs is not supported with --model cnn: replaying BatchNorm's running statistics and Dropout's "
        "random masks from a captured graph is untested: train it without --cuda-graphs",
        "--model cnn: replaying BatchNorm's running statistics and Dropout's random masks from a captured graph is "
        "untested",
        id="cnn",
    ),
    pytest.param(
        {"compile": True},
        False,
        "--cuda-graphs and --compile each replace the step's launches: pass one of them",
        "--compile replaces the step's launches itself",
        id="compile",
    ),
    pytest.param(
        {"lr_schedule": "onecycle"},
        False,
        "--cuda-graphs with --lr-schedule onecycle: OneCycleLR changes the momentum at every step, and a captured "
        "step keeps the momentum it was captured with: use --lr-schedule cosine or constant",
        "--lr-schedule onecycle changes the momentum at every step, and a captured step keeps the momentum it was "
        "captured with",
        id="onecycle",
    ),
    pytest.param(
        {},
        True,
        "--cuda-graphs runs on one process: launch train.py without torchrun",
        "torchrun launched several processes, and a captured step runs on one",
        id="torchrun",
    ),
]


@pytest.fixture(scope="module")
def idx_dir(tmp_path_factory):
    return write_idx_dir(str(tmp_path_factory.mktemp("idx")))


def test_a_gpu_run_that_allows_them_replays_its_steps_from_cuda_graphs_by_default_and_says_so():
    for device in ("cuda", "cuda:1"):
        config = Config(device=device)
        assert cuda_graphs.refusal(config, under_torchrun=False) is None
        assert cuda_graphs.used(config, under_torchrun=False) is True
        assert cuda_graphs.note(config, under_torchrun=False) is None
        assert loop.start_lines(config, device, 1, "runs/r") == [f"training on {device} with CUDA graphs into runs/r"]


@pytest.mark.parametrize("changes, under_torchrun, error, why", REFUSALS)
def test_each_reason_against_cuda_graphs_makes_a_default_gpu_run_eager_with_one_line_saying_why(
    changes, under_torchrun, error, why
):
    config = Config(device="cuda", **changes)
    refused = cuda_graphs.refusal(config, under_torchrun)
    assert refused == cuda_graphs.Refusal(error, why, on_gpu=True)
    assert cuda_graphs.used(config, under_torchrun) is False
    assert cuda_graphs.note(config, under_torchrun) == NOTE.format(why=why)
    world_size = 2 if under_torchrun else 1
    processes = " (2 processes)" if under_torchrun else ""
    assert loop.start_lines(config, "cuda", world_size, "runs/r") == [
        f"training on cuda{processes} into runs/r",
        NOTE.format(why=why),
    ]


@pytest.mark.parametrize("model", ["mlp", "cnn", "vit"])
def test_on_the_cpu_cuda_graphs_are_off_and_nothing_is_said(model):
    config = Config(model=model, device="cpu")
    refused = cuda_graphs.refusal(config, under_torchrun=False)
    assert refused.on_gpu is False
    if model != "cnn":  # the CNN's own reason comes first, for an explicit --cuda-graphs
        assert refused.error == "--cuda-graphs needs a GPU, and this run is on cpu: pass --device cuda"
        assert refused.why == "the run is on cpu"
    assert cuda_graphs.used(config, under_torchrun=False) is False
    assert cuda_graphs.note(config, under_torchrun=False) is None
    assert loop.start_lines(config, "cpu", 1, "runs/r") == ["training on cpu into runs/r"]


@pytest.mark.parametrize("changes, under_torchrun, error, why", REFUSALS[1:])  # the CNN is never asked: it refuses
def test_no_cuda_graphs_is_eager_without_a_note_and_cuda_graphs_is_kept(changes, under_torchrun, error, why):
    allowed, refused = Config(device="cuda"), Config(device="cuda", **changes)
    for config in (allowed, refused):
        off = dataclasses.replace(config, cuda_graphs=False)
        assert cuda_graphs.used(off, under_torchrun) is False
        assert cuda_graphs.note(off, under_torchrun) is None
    # --cuda-graphs is refused in launch where refusal finds a reason; where it does not, it is used
    assert cuda_graphs.used(dataclasses.replace(allowed, cuda_graphs=True), under_torchrun=False) is True
    assert cuda_graphs.note(dataclasses.replace(refused, cuda_graphs=True), under_torchrun) is None


@pytest.mark.parametrize(
    "flags, expected", [([], None), (["--cuda-graphs"], True), (["--no-cuda-graphs"], False)], ids=str
)
def test_the_flags_give_the_choice_and_leaving_them_out_leaves_it_to_the_run(flags, expected):
    config, explicit = cli.config_from_args(cli.build_parser().parse_args(flags))
    assert config.cuda_graphs is expected
    assert ("cuda_graphs" in explicit) is (expected is not None)


def test_help_says_cuda_graphs_are_on_where_the_run_allows_them_and_how_to_turn_them_off():
    (action,) = [action for action in cli.build_parser()._actions if "--cuda-graphs" in action.option_strings]
    assert action.option_strings == ["--cuda-graphs", "--no-cuda-graphs"]
    assert "By default on wherever the run allows it" in action.help
    assert action.help.endswith("--no-cuda-graphs runs eagerly (default: where the run allows it)")


def _fail(capsys, argv):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    return exit_info.value.code, capsys.readouterr().err.strip().splitlines()


def test_a_cpu_run_says_nothing_of_cuda_graphs_and_its_checkpoint_keeps_the_choice(capsys, tmp_path, idx_dir):
    argv = ["--data-dir", idx_dir, "--logdir", str(tmp_path), "--run-name", "r", *SMALL]
    assert cli.main(argv) == 0
    assert capsys.readouterr().err.strip().splitlines() == [f"training on cpu into {tmp_path / 'r'}"]
    saved = torch.load(tmp_path / "r" / "checkpoint.pt", weights_only=True)
    assert saved["config"]["cuda_graphs"] is None  # the default: decided again where the run goes on


def test_a_run_made_with_cuda_graphs_resumed_on_the_cpu_says_to_pass_no_cuda_graphs(capsys, tmp_path, idx_dir):
    argv = ["--data-dir", idx_dir, "--logdir", str(tmp_path), "--run-name", "r", *SMALL]
    assert cli.main(argv) == 0
    run_dir = str(tmp_path / "r")
    path = os.path.join(run_dir, "checkpoint.pt")
    saved = torch.load(path, weights_only=True)
    saved["config"]["cuda_graphs"], saved["config"]["device"], saved["epoch"] = True, "cpu", 1  # as if from a GPU
    torch.save(saved, path)
    capsys.readouterr()
    code, lines = _fail(capsys, ["--resume", run_dir, "--no-progress"])
    assert code == 2 and lines == [
        f"train.py: error: --resume {run_dir}: the run was made with --cuda-graphs, and the run is on cpu: pass "
        "--no-cuda-graphs to continue it with eager steps"
    ]
    assert cli.main(["--resume", run_dir, "--no-progress", "--no-cuda-graphs"]) == 0
    resumed = torch.load(path, weights_only=True)
    assert resumed["config"]["cuda_graphs"] is False and resumed["epoch"] == 2  # the resumed run's choice
    assert capsys.readouterr().err.strip().splitlines() == [f"training on cpu into {run_dir}"]


def test_an_explicit_cuda_graphs_on_the_cpu_is_one_line_with_exit_2(capsys, tmp_path, idx_dir):
    argv = ["--data-dir", idx_dir, "--logdir", str(tmp_path), *SMALL, "--cuda-graphs"]
    code, lines = _fail(capsys, argv)
    assert code == 2 and lines == [
        "train.py: error: --cuda-graphs needs a GPU, and this run is on cpu: pass --device cuda"
    ]
    assert os.listdir(tmp_path) == []
