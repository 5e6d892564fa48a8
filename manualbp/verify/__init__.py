"""``manualbp.verify``: the proof manualbp gives its own layers, for anyone's ``torch.autograd.Function``.

    report = manualbp.verify(MyFunction.apply, reference, (x, weight))
    print(report)          # one row per check: pass / fail / n/a, exact / approximate / maxdiff, and why
    assert report.ok       # or manualbp.testing.assert_verified(...), which names the failing rows

``reference`` is a plain differentiable PyTorch implementation of the same forward: autograd through it is the
truth the Function's gradients are held to (exact, within ``torch.testing.assert_close``'s tolerance, maxdiff) in
float32 and float64, with a random upstream gradient (not ``.sum()``, which hides a transposed or mis-scaled
formula). Without one (``None``) the proof is finite differences alone, the gradcheck rows, and the report says so.

The rows, for each sample of inputs (``gradients.py`` and ``behaviour.py`` state each check's rule):

- ``forward float32`` / ``float64``: the Function's output against the reference's.
- ``grad <input> float32`` / ``float64``: each input's gradient against autograd's through the reference; the
  shape the backward returns must be the input's (autograd would sum a gradient left unsummed over a broadcast
  dimension and hide the mistake).
- ``grad_output unchanged``: the backward must not write into the gradient it is given.
- ``jvp float32`` / ``float64``: forward mode (the Function's ``jvp``) against the reference's, where it has one.
- ``gradcheck``, ``gradcheck forward AD``, ``gradcheck batched grad``, ``gradgradcheck``: finite differences in
  float64 at atol 1e-8 / rtol 1e-6 (PyTorch's default, atol 1e-5 / rtol 1e-3, lets a 0.1 % error through), in the
  slow mode that builds the whole Jacobian.
- ``vmap``: ``torch.func.vmap`` of the forward and of the backward against a loop, where the Function supports it.
- ``non-contiguous inputs``, ``expanded inputs``: the same values in strided memory give the same results;
  ``zero rows``: a batch of none.
- ``needs_input_grad``: with one input at a time asking for a gradient, the backward returns None for the others
  and does less work than when all ask.
- ``saved for backward``: the bytes the Function keeps for its backward (beyond its inputs), against the
  reference's.
- ``torch.compile``: ``torch.compile(fullgraph=True)`` gives the eager results (only with ``compile=True``: it
  takes tens of seconds).

Everything runs on the device the inputs are on (CUDA too). Keep the samples small (tens of elements): the
gradcheck rows build the full Jacobian by finite differences.
"""

import inspect
from dataclasses import dataclass

import torch

from manualbp.verify.behaviour import compiled, layouts, needs_input_grad, saved_for_backward, vmap, zero_rows
from manualbp.verify.case import Case, message, row
from manualbp.verify.compare import TOLERANCES, Verdict, compare, format_table
from manualbp.verify.gradients import forward_and_gradients, gradchecks, tangents

__all__ = ["Report", "Row", "TOLERANCES", "Verdict", "compare", "format_table", "verify"]

RESULTS = ("pass", "fail", "n/a")


@dataclass(frozen=True)
class Row:
    """One check: ``result`` is ``"pass"``, ``"fail"`` or ``"n/a"``; ``why`` says what was found (always, but
    for a plain pass); the verdict columns are None where the check compares no tensors."""

    sample: int
    name: str
    result: str
    why: str = ""
    exact: bool | None = None
    approximate: bool | None = None
    maxdiff: float | None = None


@dataclass(frozen=True)
class Report:
    """What ``verify`` found: ``rows``, and ``ok`` when none failed. ``str(report)`` is the table."""

    title: str
    rows: tuple

    @property
    def ok(self):
        return not self.failed

    @property
    def failed(self):
        return [row for row in self.rows if row.result == "fail"]

    def row(self, name, sample=0):
        """The row called ``name`` (of sample ``sample``)."""
        for found in self.rows:
            if found.name == name and found.sample == sample:
                return found
        raise KeyError(f"no row {name!r} for sample {sample}; the rows are {sorted({r.name for r in self.rows})}")

    def __str__(self):
        header = ("sample", "row", "result", "exact", "approximate", "maxdiff", "why")

        def cell(value):
            return "" if value is None else f"{value:.3e}" if isinstance(value, float) else str(value)

        lines = [
            (str(r.sample), r.name, r.result, cell(r.exact), cell(r.approximate), cell(r.maxdiff), r.why)
            for r in self.rows
        ]
        counts = ", ".join(f"{sum(r.result == result for r in self.rows)} {result}" for result in RESULTS)
        verdict = "OK" if self.ok else "FAILED: " + "; ".join(f"{r.name} (sample {r.sample})" for r in self.failed)
        return f"{self.title}\n\n{format_table(header, lines)}\n\n{counts}: {verdict}"


def verify(function, reference, inputs, *, names=None, compile=False, skip=(), tolerances=None, seed=0):
    """Prove ``function``'s backward (and ``jvp``) against autograd through ``reference`` and against finite
    differences; return the ``Report`` (it does not raise for a failed check: see ``manualbp.testing``).

    Args:
        function: a ``torch.autograd.Function``'s ``apply`` (or the class), or any callable built on one; it
            returns a tensor or a tuple of them (those of a floating-point dtype are differentiated).
        reference: a plain differentiable PyTorch implementation of the same forward, called with the same
            arguments; or None for finite differences alone.
        inputs: one sample (a tuple of arguments, or a single tensor) or a list of samples. The tensors that
            require grad are the ones differentiated (if none does, every floating-point tensor is); other
            arguments (integer targets, sizes, flags) are passed as they are. Each sample is run in float32 and
            float64, on the device its tensors are on.
        names: the arguments' names for the rows (``grad weight float32``); by default the parameter names of the
            Function's forward, else the reference's, else input0, input1, ...
        compile: also check ``torch.compile(function, fullgraph=True)`` (tens of seconds); True for the default
            backend (Inductor), or a backend's name (``"aot_eager"``: tracing and AOTAutograd, no code generation).
        skip: names of rows to leave out (reported as n/a), e.g. ``("vmap",)``.
        tolerances: ``{dtype: {"rtol": ..., "atol": ...}}`` for the *approximate* column, in place of
            ``torch.testing.assert_close``'s defaults (``TOLERANCES``).
        seed: seed of the random upstream gradients, tangents and permutations.
    """
    if isinstance(function, type) and issubclass(function, torch.autograd.Function):
        function = function.apply
    if not callable(function):
        raise TypeError(f"verify: function must be callable (a Function's apply), got {type(function).__name__}")
    if reference is not None and not callable(reference):
        raise TypeError(
            f"verify: reference must be a callable PyTorch implementation of the forward, or None, "
            f"got {type(reference).__name__}"
        )
    samples = [_sample(s, i) for i, s in enumerate(inputs if isinstance(inputs, list) else [inputs])]
    if not samples:
        raise ValueError("verify: inputs is an empty list; pass one sample (a tuple of arguments) or a list of them")
    tolerances = {**TOLERANCES, **(tolerances or {})}
    if names is None:
        owner = getattr(function, "__self__", None)
        forward = owner.forward if isinstance(owner, type) and issubclass(owner, torch.autograd.Function) else None
        names = _argument_names((forward, reference, function), len(samples[0]))
    elif len(names) != len(samples[0]):
        raise ValueError(f"verify: {len(names)} names for {len(samples[0])} arguments: give one name per argument")
    found = []
    for index, args in enumerate(samples):
        case = Case(function, reference, args, names, tolerances, seed)
        for fields in _run_all(case, compile=compile):
            if any(fields["name"] == s or fields["name"].startswith(f"{s} ") for s in skip):
                fields = row(fields["name"], "n/a", "skipped (skip=...)")
            found.append(Row(sample=index, **fields))
    device = samples[0][0].device if isinstance(samples[0][0], torch.Tensor) else _first_tensor(samples[0]).device
    name = getattr(getattr(function, "__self__", None), "__name__", None) or getattr(function, "__name__", "function")
    against = "autograd through the reference" if reference is not None else "finite differences alone (no reference)"
    title = f"manualbp.verify of {name} against {against}, torch {torch.__version__} on {device}"
    return Report(title, tuple(found))


CHECKS = (forward_and_gradients, tangents, gradchecks, vmap, layouts, zero_rows, needs_input_grad, saved_for_backward)


def _run_all(case, compile=False):
    """Every check's rows; a check that raises where it did not expect to is one failed row, named after it."""
    for check in (*CHECKS, lambda case: compiled(case, compile)):
        try:
            yield from check(case)
        except Exception as error:
            name = check.__name__ if check in CHECKS else "torch.compile"
            yield row(name, "fail", f"raised {type(error).__name__}: {message(error)}")


def _first_tensor(args):
    return next(a for a in args if isinstance(a, torch.Tensor))


def _sample(sample, index):
    """One sample as a tuple of arguments; a one-line error if it holds nothing to differentiate."""
    args = sample if isinstance(sample, tuple) else (sample,)
    tensors = [a for a in args if isinstance(a, torch.Tensor)]
    if not tensors:
        kinds = ", ".join(type(a).__name__ for a in args) or "nothing"
        raise TypeError(
            f"verify: inputs sample {index} holds no tensor (got {kinds}); pass the arguments as torch tensors, "
            "e.g. (torch.randn(4, 3), ...), a tuple for one sample or a list of tuples for several"
        )
    if not any(t.is_floating_point() for t in tensors):
        raise TypeError(
            f"verify: inputs sample {index} holds no floating-point tensor to differentiate "
            f"(dtypes {[str(t.dtype) for t in tensors]})"
        )
    if len({t.device for t in tensors}) > 1:
        raise ValueError(f"verify: inputs sample {index} mixes devices {sorted({str(t.device) for t in tensors})}")
    return args


def _argument_names(callables, count):
    """The names of the first ``count`` positional parameters of the first of ``callables`` that has as many,
    else input0, input1, ..."""
    for callable_ in callables:
        if callable_ is None:
            continue
        try:
            parameters = list(inspect.signature(callable_).parameters.values())
        except (TypeError, ValueError):
            continue
        names = [p.name for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        if len(names) >= count:
            return names[:count]
    return [f"input{i}" for i in range(count)]
