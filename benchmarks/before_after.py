"""The training step of ``benchmarks/step.py``, this checkout's manualbp against an earlier commit's, in one process.

    python benchmarks/before_after.py REVISION [--path per-layer|one-node|mlp_loss] [--quick] [--rounds N]

REVISION's ``manualbp`` (and ``manualbp_trainer``, where it has one) is exported with ``git archive`` into a
temporary folder under another name, ``manualbp_before``, its imports rewritten to match, so both versions load
into one Python process. Each round then times three steps of the same network on the same batch, before, after
and torch.nn, interleaved as every benchmark here is (``_harness.compare``), so a slow phase of a shared machine
hits all three alike. Separate processes, one per version, differ by more than the effect being measured here.
Each row gives both ratios to torch.nn and after ÷ before, medians of the per-round ratios with their IQR.

``--path`` picks the path through manualbp, as ``step.py``'s columns name them: ``one-node`` (the default:
``manualbp.nn.MLP`` as the trainer's ``build_mlp`` makes it, and manualbp's loss), ``per-layer`` (torch.nn's model
converted by ``manualbp.convert``) or ``mlp_loss`` (``manualbp.functional.mlp_loss``, the network and its loss as one
node).
"""

import importlib
import io
import os
import re
import subprocess
import sys
import tarfile
import tempfile

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import _harness  # noqa: E402
import step  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("manualbp", "manualbp_trainer")


def export(revision, folder):
    """Write REVISION's packages into ``folder`` as ``manualbp_before`` (and ``manualbp_trainer_before``); return
    the module that holds its ``build_mlp``."""
    try:
        if not _exists(revision, ""):
            sys.exit(f"before_after.py: error: cannot export {revision!r}: not a commit of this repository")
        packages = [package for package in PACKAGES if _exists(revision, package)]
        if not packages:
            sys.exit(f"before_after.py: error: {revision!r} has no manualbp package to compare against")
        archive = subprocess.run(
            ["git", "archive", revision, *packages],
            cwd=ROOT,
            capture_output=True,
            check=True,
        ).stdout
    except subprocess.CalledProcessError as error:
        sys.exit(f"before_after.py: error: cannot export {revision!r}: {error.stderr.decode().strip()}")
    except FileNotFoundError:
        sys.exit("before_after.py: error: git is not installed; it is needed to export the earlier commit")
    rename = re.compile(r"\b(manualbp|manualbp_trainer)\b")
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        for member in tar.getmembers():
            if not member.isfile():
                continue
            top, _, rest = member.name.partition("/")
            path = os.path.join(folder, f"{top}_before", rest)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            text = tar.extractfile(member).read()
            if member.name.endswith(".py"):
                text = rename.sub(r"\1_before", text.decode()).encode()
            with open(path, "wb") as file:
                file.write(text)
    sys.path.insert(0, folder)
    # build_mlp has lived in manualbp.model, then manualbp_trainer.model, and now manualbp_trainer.networks
    candidates = [f"{package}_before.{name}" for package in reversed(packages) for name in ("networks", "model")]
    for candidate in candidates:
        if _exists(revision, candidate.replace("_before", "").replace(".", "/") + ".py"):
            break
    else:
        sys.exit(f"before_after.py: error: {revision!r} has no module holding build_mlp (looked for {candidates})")
    try:
        return importlib.import_module(candidate), importlib.import_module("manualbp_before")
    except ImportError as error:
        sys.exit(f"before_after.py: error: cannot import {revision}'s {candidate.replace('_before', '')}: {error.msg}")


def _exists(revision, path):
    return (
        subprocess.run(["git", "cat-file", "-e", f"{revision}:{path}"], cwd=ROOT, capture_output=True).returncode == 0
    )


# --path → step.make_step's name for the same path
PATHS = {"one-node": "mlp", "per-layer": "manual", "mlp_loss": "mlp_loss"}


def make_before_step(model_module, manualbp, path, sizes, activation, loss, batch_size):
    """``step.make_step``'s manualbp step along ``path``, with the earlier commit's model builder, ``convert`` and
    functions."""
    output_activation = "sigmoid" if loss == "mse" else None
    model = model_module.build_mlp(
        list(sizes), activation, output_activation, "torch" if path == "per-layer" else "manual"
    )
    model = manualbp.convert(model) if path == "per-layer" else model
    x, target = step.make_batch(sizes, loss, batch_size, torch.device("cpu"))
    if path == "mlp_loss":
        parameters = step.layers_of(model, manualbp.nn.ACTIVATIONS)
        return step.training_step(model, lambda: manualbp.functional.mlp_loss(x, target, *parameters, loss))
    loss_function = manualbp.functional.mse_loss if loss == "mse" else manualbp.functional.cross_entropy
    return step.training_step(model, lambda: loss_function(model(x), target))


def main(argv=None):
    parser = _harness.parser(__doc__.split("\n\n")[0])
    parser.add_argument("revision", help="the earlier commit, e.g. 2aac3b4")
    parser.add_argument(
        "--path", choices=PATHS, default="one-node", help="the path through manualbp (default: one-node)"
    )
    args = parser.parse_args(argv)
    if args.device != "cpu":
        parser.error("--device: this comparison runs on the CPU only")
    rounds = args.rounds or (2 if args.quick else 15)
    min_run_time = _harness.round_seconds(args, 0.2)
    device = torch.device("cpu")
    with tempfile.TemporaryDirectory() as folder:
        model_module, manualbp = export(args.revision, folder)
        rows = []
        for case in step.QUICK_CASES if args.quick else step.CASES:
            try:
                before = make_before_step(model_module, manualbp, args.path, *case)
            except (AttributeError, TypeError) as error:  # a layout older than the trainer's build_mlp
                sys.exit(f"before_after.py: error: cannot build {args.revision}'s network for {case}: {error}")
            steps = {
                "before": before,
                "after": step.make_step(*case, PATHS[args.path], device),
                "torch": step.make_step(*case, "torch", device),
            }
            times = _harness.compare(steps, device, rounds, min_run_time)
            rows.append(
                [
                    *step.case_cells(*case),
                    _harness.format_ratio(times["before"], times["torch"]),
                    _harness.format_ratio(times["after"], times["torch"]),
                    _harness.format_ratio(times["after"], times["before"]),
                ]
            )
    header = [*step.CASE_HEADER, f"before ({args.revision}) ÷ torch.nn", "after ÷ torch.nn", "after ÷ before"]
    flags = (
        [args.revision]
        + ([f"--path {args.path}"] if args.path != "one-node" else [])
        + (["--quick"] if args.quick else [])
    )
    command = _harness.command("before_after.py", args, *flags)
    _harness.report(
        "Training step, an earlier commit against this checkout, eager", device, command, _harness.table(header, rows)
    )
    return rows


if __name__ == "__main__":
    main()
