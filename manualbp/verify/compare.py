"""The verdict on one computed tensor against the one taken as true, and the table the verdicts print as.

The three columns of makemore's backprop notebook ("Becoming a Backprop Ninja"): *exact* (equal to the bit),
*approximate* (within ``torch.testing.assert_close``'s tolerance for the dtype) and *maxdiff* (the largest absolute
difference). ``python -m manualbp.check`` and ``manualbp.verify`` both judge with ``compare`` and print with
``format_table``.
"""

from dataclasses import dataclass

import torch

# torch.testing.assert_close's defaults for these dtypes
TOLERANCES = {torch.float32: {"rtol": 1.3e-6, "atol": 1e-5}, torch.float64: {"rtol": 1e-7, "atol": 1e-7}}


@dataclass(frozen=True)
class Verdict:
    exact: bool
    approximate: bool
    maxdiff: float
    reference_max: float  # the largest |entry| of the true tensor: the scale maxdiff is measured against
    worst: str = ""  # where the largest difference is, and the two values there ("" when they are equal)


def compare(actual, expected, tolerance=None):
    """The verdict on ``actual`` against ``expected`` (same shape; NaN equals NaN), at ``tolerance`` (``rtol`` and
    ``atol``; by default ``TOLERANCES`` for ``actual``'s dtype)."""
    tolerance = TOLERANCES[actual.dtype] if tolerance is None else tolerance
    exact = bool(((actual == expected) | (actual.isnan() & expected.isnan())).all())
    approximate = torch.allclose(actual, expected, equal_nan=True, **tolerance)
    if actual.numel() == 0:
        return Verdict(exact, approximate, 0.0, 0.0)
    difference = (actual.double() - expected.double()).abs()
    difference = difference.where(~(actual.isnan() & expected.isnan()), 0.0)  # NaN against NaN agrees
    difference = difference.nan_to_num(nan=float("inf"))  # a NaN against a number is the worst disagreement
    maxdiff = difference.max().item()
    worst = ""
    if maxdiff > 0:
        index = tuple(i.item() for i in torch.unravel_index(difference.argmax(), difference.shape))
        worst = f"at {list(index)}: {actual[index].item():.6g} against {expected[index].item():.6g}"
    reference_max = expected.abs().max().item()
    return Verdict(exact, approximate, maxdiff, reference_max, worst)


def format_table(header, lines):
    """``lines`` (tuples of strings, one per row) under ``header`` in left-aligned columns, as
    ``python -m manualbp.check`` prints them."""
    widths = [max(len(line[i]) for line in (header, *lines)) for i in range(len(header))]

    def render(cells):
        return "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)).rstrip()

    return "\n".join([render(header), render(["-" * w for w in widths]), *map(render, lines)])
