"""The rows that hold the derivatives to the truth: the forward and each gradient against autograd through the
reference (float32 and float64), forward mode against the reference's, and finite differences (gradcheck)."""

import torch
import torch.autograd.forward_ad as fwAD
from torch.autograd.function import BackwardCFunction

from manualbp.verify.case import (
    DTYPES,
    TIGHT,
    Raised,
    backward,
    call,
    combined,
    message,
    outputs_pairs,
    row,
    same_forward,
)
from manualbp.verify.compare import compare


def forward_and_gradients(case):
    """``forward <dtype>``, ``grad <input> <dtype>`` and ``grad_output unchanged``.

    The forward and each gradient against autograd through the reference, from the same inputs and the same
    random upstream gradient. A gradient's shape as the backward returns it must be the input's: autograd sums a
    larger one down to the input (so a gradient left unsummed over a broadcast dimension passes every value
    check); it is read by calling the Function's backward node directly, where ``function`` is a Function's apply.
    """
    unchanged = True
    for dtype in DTYPES:
        tag = str(dtype).removeprefix("torch.")
        grad_names = [f"grad {case.names[i]} {tag}" for i in case.wanted]
        tolerance = case.tolerances[dtype]
        args = case.cast(dtype)
        try:
            outputs = call(case.function, args, "function")
        except Raised as error:
            yield row(f"forward {tag}", "fail", str(error))
            yield from (row(name, "n/a", f"the function's forward raised (row forward {tag})") for name in grad_names)
            continue
        forward_ok = True
        if case.reference is None:
            yield row(f"forward {tag}", "n/a", "no reference: the gradcheck rows (finite differences) alone")
        else:
            reference_args = case.cast(dtype)
            try:
                expected = call(case.reference, reference_args, "reference")
                verdict = same_forward(outputs, expected, tolerance)
                forward_ok = verdict.approximate
                why = (
                    ""
                    if forward_ok
                    else (
                        f"the reference's forward differs from the function's beyond {case.tolerance_text(dtype)} "
                        f"({verdict.worst}): the reference must compute the same function"
                    )
                )
                yield row(f"forward {tag}", "pass" if forward_ok else "fail", why, verdict)
            except Raised as error:
                forward_ok = False
                yield row(f"forward {tag}", "fail", str(error))
        upstreams = case.random_like(outputs, salt=1 if dtype == torch.float32 else 2)
        kept = [u.clone() for u in upstreams]
        try:
            grads = backward(outputs, case.leaves(args), upstreams, "function")
        except Raised as error:
            yield from (row(name, "fail", str(error)) for name in grad_names)
            continue
        unchanged = unchanged and all(torch.equal(u, k) for u, k in zip(upstreams, kept, strict=True))
        returned_shapes = _returned_shapes(case, dtype, upstreams)
        if case.reference is None or not forward_ok:
            why = (
                "no reference: the gradcheck rows (finite differences) alone"
                if case.reference is None
                else (f"no comparison: the forward differs from the reference's (row forward {tag})")
            )
            for name, i in zip(grad_names, case.wanted, strict=True):
                shape_error = _shape_error(case, i, returned_shapes)
                yield row(name, "fail", shape_error) if shape_error else row(name, "n/a", why)
            continue
        try:
            expected_grads = backward(expected, case.leaves(reference_args), kept, "reference")
        except Raised as error:
            yield from (row(name, "fail", str(error)) for name in grad_names)
            continue
        for name, i, grad, expected_grad in zip(grad_names, case.wanted, grads, expected_grads, strict=True):
            verdict = compare(grad, expected_grad, tolerance)
            why = _shape_error(case, i, returned_shapes)
            if not why and not verdict.approximate:
                why = f"not within {tag} tolerance ({case.tolerance_text(dtype)}): {verdict.worst}"
            yield row(name, "fail" if why else "pass", why, verdict)
    if unchanged:
        yield row("grad_output unchanged", "pass")
    else:
        yield row(
            "grad_output unchanged",
            "fail",
            "the backward wrote into grad_output in place: autograd may hand the same tensor to other nodes; "
            "compute the gradient into a new tensor",
        )


def _returned_shapes(case, dtype, upstreams):
    """The shapes the Function's backward returns, one per argument, called directly (not through autograd,
    which would sum them to the inputs' shapes); None where that cannot be read."""
    if case.function_class is None:
        return None
    args = case.cast(dtype)
    result = case.function(*args)
    if not isinstance(result, torch.Tensor) or not isinstance(result.grad_fn, BackwardCFunction):
        return None
    with torch.no_grad():
        returned = result.grad_fn.apply(upstreams[0].clone())  # a copy: a backward may write into it
    returned = returned if isinstance(returned, tuple) else (returned,)
    return [None if g is None else list(g.shape) for g in returned]


def _shape_error(case, i, returned_shapes):
    if returned_shapes is None or i >= len(returned_shapes) or returned_shapes[i] is None:
        return ""
    shape = list(case.args[i].shape)
    if returned_shapes[i] == shape:
        return ""
    return (
        f"the backward returns a gradient of shape {returned_shapes[i]} for {case.names[i]} of shape {shape}: "
        "autograd sums it down and hides the missing sum over a broadcast dimension; sum it in the backward"
    )


def tangents(case):
    """``jvp <dtype>``: forward mode (the Function's ``jvp``) against forward mode through the reference, for the
    same random tangents of the inputs."""
    for dtype in DTYPES:
        name = f"jvp {str(dtype).removeprefix('torch.')}"
        if case.reference is None:
            yield row(name, "n/a", "no reference: the gradcheck forward AD row checks the jvp by finite differences")
            continue
        directions = case.random_like(case.leaves(case.cast(dtype)), salt=3)
        try:
            actual = _forward_mode(case.function, case, dtype, directions, "function")
        except NotImplementedError:
            yield row(name, "n/a", "the function defines no jvp (forward mode)")
            continue
        except Raised as error:
            yield row(name, "fail", str(error))
            continue
        try:
            expected = _forward_mode(case.reference, case, dtype, directions, "reference")
        except (Raised, NotImplementedError) as error:
            yield row(name, "n/a", f"forward mode through the reference fails: {message(error)}")
            continue
        try:
            _, verdict = combined(outputs_pairs(actual, expected), case.tolerances[dtype])
        except Raised:
            yield row(name, "n/a", "no comparison: the outputs differ from the reference's (row forward)")
            continue
        why = (
            ""
            if verdict.approximate
            else (f"the jvp disagrees with forward mode through the reference ({verdict.worst})")
        )
        yield row(name, "pass" if verdict.approximate else "fail", why, verdict)


def _forward_mode(fn, case, dtype, directions, who):
    args = case.cast(dtype, requires_grad=())
    with fwAD.dual_level():
        for i, direction in zip(case.wanted, directions, strict=True):
            args[i] = fwAD.make_dual(args[i], direction)
        try:
            outputs = fn(*args)
        except NotImplementedError:
            raise
        except Exception as error:
            raise Raised(f"the {who} raised {type(error).__name__} in forward mode: {message(error)}") from error
        outputs = outputs if isinstance(outputs, tuple | list) else (outputs,)
        outputs = [o for o in outputs if isinstance(o, torch.Tensor) and o.is_floating_point()]
        unpacked = [fwAD.unpack_dual(o) for o in outputs]
        return [torch.zeros_like(u.primal) if u.tangent is None else u.tangent.clone() for u in unpacked]


def _has_forward_mode(case):
    """Whether the function runs under forward-mode AD (a Function without ``jvp`` raises NotImplementedError)."""
    try:
        _forward_mode(case.function, case, torch.float64, case.random_like(case.leaves(case.args), salt=9), "function")
    except NotImplementedError:
        return False
    except Exception:
        return True  # it fails otherwise: let the gradcheck rows say how
    return True


def gradchecks(case):
    """``gradcheck``, ``gradcheck forward AD``, ``gradcheck batched grad`` and ``gradgradcheck``: finite
    differences in float64 at ``TIGHT``, the slow mode (the whole Jacobian).

    The first three are one gradcheck call (its numerical Jacobian is the costly part) and, only if that fails, one
    call each, to tell which failed."""
    forward_mode = _has_forward_mode(case)
    first = (
        ("gradcheck", {"check_batched_grad": False}),
        ("gradcheck forward AD", {"check_forward_ad": True, "check_backward_ad": False, "check_undefined_grad": False}),
        ("gradcheck batched grad", {"check_batched_grad": True}),
    )
    try:
        torch.autograd.gradcheck(
            case.function,
            tuple(case.cast(torch.float64)),
            **TIGHT,
            check_forward_ad=forward_mode,
            check_batched_grad=True,
        )
        together = True
    except Exception:
        together = False
    for name, flags in first:
        if name == "gradcheck forward AD" and not forward_mode:
            yield row(name, "n/a", "the function defines no jvp (forward mode)")
        elif together:
            yield row(name, "pass")
        else:
            yield _gradcheck_row(name, torch.autograd.gradcheck, case, flags)
    yield _gradcheck_row("gradgradcheck", torch.autograd.gradgradcheck, case, {})


def _gradcheck_row(name, check, case, flags):
    try:
        check(case.function, tuple(case.cast(torch.float64)), **TIGHT, **flags)
        return row(name, "pass")
    except Exception as error:
        if "once_differentiable" in str(error):
            return row(name, "n/a", "the backward is marked @once_differentiable: no second derivative")
        return row(name, "fail", f"{type(error).__name__}: {message(error)}")
