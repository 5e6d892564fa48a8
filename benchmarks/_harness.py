"""What every benchmark shares: side-by-side timing, the machine's description, markdown tables.

Timing is interleaved: each round times every variant once with ``torch.utils.benchmark.Timer``
(``blocked_autorange``), each round starting with the next variant, so slow phases of a shared machine hit all
variants alike and each variant runs first in an equal share of the rounds; the figure quoted is the
median over rounds of the per-round ratio, with its interquartile range as the spread.
"""

import argparse
import platform
import statistics
import sys

import torch
from torch.utils.benchmark import Timer


def parser(description):
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where to run (default: cpu)")
    p.add_argument("--quick", action="store_true", help="a few small cases and short timings: proves the script works")
    p.add_argument("--rounds", type=positive_int, default=None, help="interleaved timing rounds (default: per script)")
    p.add_argument(
        "--round-seconds",
        type=positive_float,
        default=None,
        help="how long each variant is timed in a round (default: per script); shorter rounds, more of them, pair "
        "each variant's time with the others' more closely on a machine whose speed drifts",
    )
    return p


def round_seconds(args, default):
    """The seconds each variant is timed in a round: ``--round-seconds``, else 0.01 with ``--quick``, else
    ``default``."""
    if args.round_seconds is not None:
        return args.round_seconds
    return 0.01 if args.quick else default


def timing(args, rounds=11, seconds=0.2):
    """``(device, rounds, seconds per round)`` for a script's parsed ``args``: the checked ``--device``,
    ``--rounds`` (else 2 with ``--quick``, else ``rounds``) and ``round_seconds(args, seconds)``."""
    return check_device(args), args.rounds or (2 if args.quick else rounds), round_seconds(args, seconds)


def positive_int(text):
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive int, got {text!r}")
    return value


def positive_float(text):
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def check_device(args):
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit(f"{sys.argv[0]}: error: --device cuda: no CUDA device is available here; use --device cpu")
    return torch.device(args.device)


def machine(device):
    """One line naming the hardware and the software that produced a table."""
    if device.type == "cuda":
        hardware = torch.cuda.get_device_name(device)
    else:
        hardware = f"{_cpu_name()}, {torch.get_num_threads()} threads"
    return f"{hardware}; torch {torch.__version__}; Python {platform.python_version()}"


def _cpu_name():
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def compare(variants, device, rounds, min_run_time):
    """Time each callable of ``variants`` (name → function of no arguments), interleaved over ``rounds``.

    Returns ``{name: [seconds per call, one per round]}``.
    """
    times = {name: [] for name in variants}
    for function in variants.values():  # warm up: first calls allocate, pick kernels, fill caches
        function()
    synchronize(device)
    names = list(variants)
    for index in range(rounds):
        start = index % len(names)  # each round starts with the next variant: none is always timed first
        for name in names[start:] + names[:start]:
            function = variants[name]
            timer = Timer(
                "function(); synchronize(device)",
                globals=dict(function=function, synchronize=synchronize, device=device),
                num_threads=torch.get_num_threads(),  # Timer's default is one thread
            )
            times[name].append(timer.blocked_autorange(min_run_time=min_run_time).median)
    return times


def ratio(numerator, denominator):
    """Median and interquartile range of the per-round ratios ``numerator[i] / denominator[i]``."""
    ratios = sorted(n / d for n, d in zip(numerator, denominator, strict=True))
    if len(ratios) < 2:
        return ratios[0], ratios[0], ratios[0]
    q1, _, q3 = statistics.quantiles(ratios, n=4, method="inclusive")
    return statistics.median(ratios), q1, q3


def format_ratio(numerator, denominator):
    median, q1, q3 = ratio(numerator, denominator)
    return f"{median:.3f} ({q1:.3f}–{q3:.3f})"


def microseconds(times):
    return f"{statistics.median(times) * 1e6:,.1f}"


def count(value):
    """A table cell for a number of bytes or the like, or "—" where there is none (a CUDA figure on the CPU)."""
    return "—" if value is None else f"{value:,}"


def table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def command(script, args, *flags):
    """The command line that reproduces a table: ``python benchmarks/<script>`` with ``flags``, ``--device`` unless it
    is the CPU, and the timing options that were given."""
    device = [f"--device {args.device}"] if args.device != "cpu" else []
    timing = [f"--rounds {args.rounds}"] if getattr(args, "rounds", None) else []
    timing += [f"--round-seconds {args.round_seconds:g}"] if getattr(args, "round_seconds", None) else []
    return " ".join(["python", f"benchmarks/{script}", *flags, *device, *timing])


def report(title, device, command, body):
    print(f"### {title}\n\nMachine: {machine(device)}. Command: `{command}`\n\n{body}\n", flush=True)


def median_difference(first, second):
    """Median over rounds of ``first[i] − second[i]``, in seconds."""
    return statistics.median(a - b for a, b in zip(first, second, strict=True))
