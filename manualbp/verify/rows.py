"""The checks ``manualbp.verify`` runs, one function per kind of row, each stating its rule.

Each yields rows as dicts (``name``, ``result``, ``why`` and, where tensors are compared, ``exact``,
``approximate`` and ``maxdiff``). A check that raises is a failed row naming what raised, never a crash of the
whole report.
"""

import torch
import torch.autograd.forward_ad as fwAD
from torch.autograd.function import BackwardCFunction

from manualbp.fast.call import without_jvp
from manualbp.verify.compare import Verdict, compare

DTYPES = (torch.float32, torch.float64)

# gradcheck at the tolerance PyTorch's own ops pass; its default (atol 1e-5, rtol 1e-3) lets a 0.1 % error through
TIGHT = {"eps": 1e-6, "atol": 1e-8, "rtol": 1e-6}


class Case:
    """One sample of arguments for ``function`` and ``reference``, and the ways verify casts and varies it."""

    def __init__(self, function, reference, args, names, tolerances, seed):
        self.function, self.reference, self.args, self.names = function, reference, args, names
        self.tolerances, self.seed = tolerances, seed
        tensors = [i for i, a in enumerate(args) if isinstance(a, torch.Tensor)]
        asked = [i for i in tensors if args[i].requires_grad]
        # the inputs to differentiate: those that require grad, else every floating-point tensor
        self.wanted = asked or [i for i in tensors if args[i].is_floating_point()]
        self.device = args[tensors[0]].device
        owner = getattr(function, "__self__", None)
        # only a Function's own apply takes the arguments its backward returns gradients for, one by one
        self.function_class = owner if isinstance(owner, type) and issubclass(owner, torch.autograd.Function) else None

    def cast(self, dtype, transform=None, requires_grad=None):
        """The arguments as fresh ``dtype`` leaves (``transform`` applied to every tensor); the inputs in
        ``requires_grad`` (default: the wanted ones) require grad."""
        requires_grad = self.wanted if requires_grad is None else requires_grad
        args = []
        for i, a in enumerate(self.args):
            if isinstance(a, torch.Tensor):
                a = a.detach().to(dtype) if a.is_floating_point() else a.detach()
                a = transform(a) if transform is not None else a.clone()
                if i in requires_grad:
                    a = a.detach().requires_grad_()
            args.append(a)
        return args

    def leaves(self, args, indices=None):
        return [args[i] for i in (self.wanted if indices is None else indices)]

    def random_like(self, tensors, salt):
        """Random tensors shaped like ``tensors`` (upstream gradients, tangents): the same for a given salt."""
        generator = torch.Generator().manual_seed(self.seed * 1000 + salt)
        return [torch.randn(t.shape, generator=generator, dtype=t.dtype).to(self.device) for t in tensors]

    def tolerance_text(self, dtype):
        tolerance = self.tolerances[dtype]
        return f"rtol {tolerance['rtol']:g}, atol {tolerance['atol']:g}"


class Raised(Exception):
    """The function or the reference raised: the message names which and what."""


def row(name, result, why="", verdict=None):
    fields = {"name": name, "result": result, "why": why}
    if verdict is not None:
        fields |= {"exact": verdict.exact, "approximate": verdict.approximate, "maxdiff": verdict.maxdiff}
    return fields


def _message(error):
    lines = [line for line in str(error).strip().splitlines() if line.strip()]
    text = lines[0] if lines else ""
    return text if len(text) <= 240 else text[:237] + "..."


def call(fn, args, who):
    """``fn(*args)``'s floating-point tensors (a tensor, or those of a tuple)."""
    try:
        result = fn(*args)
    except Exception as error:
        raise Raised(f"the {who} raised {type(error).__name__}: {_message(error)}") from error
    items = result if isinstance(result, tuple | list) else (result,)
    outputs = [o for o in items if isinstance(o, torch.Tensor) and o.is_floating_point()]
    if not outputs:
        raise Raised(f"the {who} returned no floating-point tensor (got {type(result).__name__})")
    return outputs


def backward(outputs, leaves, upstreams, who, retain_graph=False):
    """The gradients of ``outputs`` · ``upstreams`` with respect to ``leaves`` (zeros where unused)."""
    pairs = [(o, u) for o, u in zip(outputs, upstreams, strict=True) if o.requires_grad]
    if not pairs:
        raise Raised(f"the {who}'s output does not require grad: it is detached from the inputs")
    try:
        grads = torch.autograd.grad(
            [o for o, _ in pairs], leaves, [u for _, u in pairs], retain_graph=retain_graph, allow_unused=True
        )
    except Exception as error:
        raise Raised(f"the {who}'s backward raised {type(error).__name__}: {_message(error)}") from error
    return [torch.zeros_like(leaf) if g is None else g for g, leaf in zip(grads, leaves, strict=True)]


def combined(pairs, tolerance):
    """One verdict for several (actual, expected) pairs, and what disagrees (by label) where something does."""
    verdicts = {label: compare(a, e, tolerance) for label, a, e in pairs}
    exact = all(v.exact for v in verdicts.values())
    approximate = all(v.approximate for v in verdicts.values())
    maxdiff = max((v.maxdiff for v in verdicts.values()), default=0.0)
    worst = "; ".join(f"{label} {v.worst}" for label, v in verdicts.items() if not v.approximate)
    return verdicts, Verdict(exact, approximate, maxdiff, 0.0, worst)


def outputs_pairs(actual, expected):
    """``(label, actual, expected)`` for each output, or Raised if the two return different counts or shapes."""
    if len(actual) != len(expected):
        raise Raised(f"the function returns {len(actual)} floating-point tensors, the reference {len(expected)}")
    pairs = [(f"output {k}", a.detach(), e.detach()) for k, (a, e) in enumerate(zip(actual, expected, strict=True))]
    for label, a, e in pairs:
        if a.shape != e.shape:
            raise Raised(
                f"the reference computes another forward: {label} has shape {list(a.shape)} from the function, "
                f"{list(e.shape)} from the reference"
            )
    return pairs


def _same_forward(outputs, expected, tolerance):
    return combined(outputs_pairs(outputs, expected), tolerance)[1]


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
                verdict = _same_forward(outputs, expected, tolerance)
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
            yield row(name, "n/a", f"forward mode through the reference fails: {_message(error)}")
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
            raise Raised(f"the {who} raised {type(error).__name__} in forward mode: {_message(error)}") from error
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
        return row(name, "fail", f"{type(error).__name__}: {_message(error)}")


def vmap(case):
    """``vmap``: ``torch.func.vmap`` over a batch of two samples (the inputs and a permutation of their entries),
    of the forward and of the backward (``torch.func.vjp``), against the two computed one by one."""
    args = case.cast(torch.float32, requires_grad=())
    generator = torch.Generator().manual_seed(case.seed)
    batched = []
    for i in case.wanted:
        t = args[i]
        permuted = t.flatten()[torch.randperm(t.numel(), generator=generator).to(t.device)].view_as(t)
        batched.append(torch.stack([t, permuted]))

    def forward(*wanted):
        call_args = list(args)
        for i, t in zip(case.wanted, wanted, strict=True):
            call_args[i] = t
        return tuple(call(case.function, call_args, "function"))

    def pullback(wanted, upstreams):
        _, vjp_fn = torch.func.vjp(forward, *wanted)
        return vjp_fn(upstreams)

    try:
        one_by_one = [forward(*(b[k] for b in batched)) for k in range(2)]
        draws, count = case.random_like([*one_by_one[0], *one_by_one[1]], salt=4), len(one_by_one[0])
        upstreams = tuple(torch.stack([draws[k], draws[count + k]]) for k in range(count))
        looped_grads = [pullback([b[k] for b in batched], tuple(u[k] for u in upstreams)) for k in range(2)]
        outputs = torch.func.vmap(forward)(*batched)
        grads = torch.func.vmap(pullback)(batched, upstreams)
    except Exception as error:
        text = str(error)
        if "vmap staticmethod" in text or "generate_vmap_rule" in text or "setup_context" in text:
            yield row("vmap", "n/a", "the Function does not support torch.func (set generate_vmap_rule = True)")
        else:
            yield row(
                "vmap", "fail", text if isinstance(error, Raised) else f"{type(error).__name__}: {_message(error)}"
            )
        return
    pairs = [(f"output {k}", o, torch.stack([one[k] for one in one_by_one])) for k, o in enumerate(outputs)]
    pairs += [
        (f"grad {case.names[i]}", g, torch.stack([looped[j] for looped in looped_grads]))
        for j, (i, g) in enumerate(zip(case.wanted, grads, strict=True))
    ]
    _, verdict = combined(pairs, case.tolerances[torch.float32])
    why = "" if verdict.approximate else f"vmap disagrees with the samples one by one ({verdict.worst})"
    yield row("vmap", "pass" if verdict.approximate else "fail", why, verdict)


def noncontiguous(t):
    """The same values as ``t`` in memory with a stride of 2 in the last dimension."""
    if t.dim() == 0:
        return t.clone()
    wide = torch.zeros(*t.shape, 2, dtype=t.dtype, device=t.device)
    wide[..., 0] = t
    return wide[..., 0]


def expanded(t):
    """The first entry along dimension 0 broadcast over it (stride 0): the values change, the memory is shared."""
    if t.dim() == 0 or t.shape[0] < 2:
        return t.clone()
    return t[:1].expand(t.shape)


def layouts(case):
    """``non-contiguous inputs`` and ``expanded inputs``: the function on strided inputs against the function on
    contiguous copies of the same values (outputs and gradients)."""
    for name, transform in (("non-contiguous inputs", noncontiguous), ("expanded inputs", expanded)):
        try:
            results = []
            for make in (lambda t, transform=transform: transform(t).contiguous(), transform):
                args = case.cast(torch.float32, transform=make)
                outputs = call(case.function, args, "function")
                upstreams = case.random_like(outputs, salt=5)
                results.append([*outputs, *backward(outputs, case.leaves(args), upstreams, "function")])
        except Raised as error:
            yield row(name, "fail", str(error))
            continue
        labels = [f"output {k}" for k in range(len(results[0]) - len(case.wanted))]
        labels += [f"grad {case.names[i]}" for i in case.wanted]
        _, verdict = combined(
            [(label, v.detach(), c.detach()) for label, v, c in zip(labels, results[1], results[0], strict=True)],
            case.tolerances[torch.float32],
        )
        why = "" if verdict.approximate else f"results differ from contiguous inputs' ({verdict.worst})"
        yield row(name, "pass" if verdict.approximate else "fail", why, verdict)


def zero_rows(case):
    """``zero rows``: every tensor whose leading size is the first floating-point tensor's (the batch) cut to
    none; the outputs and gradients have the right (empty) shapes and agree with the reference's."""
    first = case.args[case.wanted[0]]
    if first.dim() == 0 or first.shape[0] == 0:
        yield row("zero rows", "n/a", "the first input has no batch dimension to empty")
        return
    rows = first.shape[0]

    def cut(t):
        return t[:0].clone() if t.dim() >= 1 and t.shape[0] == rows else t.clone()

    try:
        args = case.cast(torch.float32, transform=cut)
        outputs = call(case.function, args, "function")
        grads = backward(outputs, case.leaves(args), case.random_like(outputs, salt=6), "function")
    except Raised as error:
        yield row("zero rows", "fail", f"with a batch of zero rows, {error}")
        return
    wrong = [case.names[i] for i, g in zip(case.wanted, grads, strict=True) if g.shape != args[i].shape]
    if wrong:
        yield row("zero rows", "fail", f"gradients of the wrong shape for {', '.join(wrong)}")
        return
    if case.reference is None:
        yield row("zero rows", "pass", "runs and returns gradients of the inputs' shapes (no reference)")
        return
    try:
        reference_args = case.cast(torch.float32, transform=cut)
        expected = call(case.reference, reference_args, "reference")
        expected_grads = backward(expected, case.leaves(reference_args), case.random_like(expected, salt=6), "ref")
    except Raised as error:
        yield row("zero rows", "n/a", f"the reference refuses a batch of zero rows too ({error})")
        return
    try:
        pairs = outputs_pairs(outputs, expected)
    except Raised as error:
        yield row("zero rows", "fail", f"with a batch of zero rows, {error}")
        return
    pairs += [(f"grad {case.names[i]}", a, e) for i, a, e in zip(case.wanted, grads, expected_grads, strict=True)]
    _, verdict = combined(pairs, case.tolerances[torch.float32])
    why = "" if verdict.approximate else f"differs from the reference ({verdict.worst})"
    yield row("zero rows", "pass" if verdict.approximate else "fail", why, verdict)


class _CountCalls(torch.overrides.TorchFunctionMode):
    """Counts the torch calls that return a tensor (the backward's arithmetic; not ``.shape`` and the like)."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        result = func(*args, **(kwargs or {}))
        self.count += isinstance(result, torch.Tensor)
        return result


def _backward_work(case, asking):
    """``(torch calls the backward makes, gradients returned for inputs that did not ask for one)`` with only the
    inputs ``asking`` requiring grad.

    Each custom Function's node in the graph is run once by autograd (a pre-hook keeps the gradient it is given)
    and once more by calling it directly, under a mode that counts the calls: autograd's engine runs backward
    where Python modes do not reach, and it would drop a gradient returned for an input that did not ask.
    """
    args = case.cast(torch.float32, requires_grad=asking)
    outputs = call(case.function, args, "function")
    given, seen, stack = {}, set(), [o.grad_fn for o in outputs if o.grad_fn is not None]
    top = outputs[0].grad_fn
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        if isinstance(node, BackwardCFunction):
            node.register_prehook(lambda grad_outputs, node=node: given.__setitem__(node, grad_outputs))
        stack.extend(next_node for next_node, _ in node.next_functions if next_node is not None)
    backward(outputs, case.leaves(args, asking), case.random_like(outputs, salt=7), "function", retain_graph=True)
    calls, unasked = 0, []
    for node, grad_outputs in given.items():
        with torch.no_grad(), _CountCalls() as counter:
            returned = node.apply(*grad_outputs)
        calls += counter.count
        returned = returned if isinstance(returned, tuple) else (returned,)
        for i, (grad, asked) in enumerate(zip(returned, node.needs_input_grad, strict=False)):
            if grad is not None and not asked:
                named = node is top and case.function_class is not None and i < len(case.names)
                unasked.append(case.names[i] if named else f"input {i} of {type(node).__name__}")
    return calls, unasked


def needs_input_grad(case):
    """``needs_input_grad``: with one input at a time requiring grad, the backward returns None for every other
    one and makes fewer torch calls than with all of them (a backward that ignores ``ctx.needs_input_grad`` makes
    the same calls whichever input asks)."""
    if len(case.wanted) < 2:
        yield row("needs_input_grad", "n/a", "one input to differentiate: nothing to leave out")
        return
    try:
        everything, _ = _backward_work(case, case.wanted)
        alone = {i: _backward_work(case, [i]) for i in case.wanted}
    except Raised as error:
        yield row("needs_input_grad", "fail", str(error))
        return
    unasked = sorted({name for _, names in alone.values() for name in names})
    work = ", ".join(f"only {case.names[i]} {count}" for i, (count, _) in alone.items())
    if unasked:
        why = f"the backward returns a gradient for {', '.join(unasked)}, which did not ask for one (no grad): "
        yield row("needs_input_grad", "fail", why + "check ctx.needs_input_grad before computing each gradient")
    elif everything > 0 and all(count == everything for count, _ in alone.values()):
        yield row(
            "needs_input_grad",
            "fail",
            f"the backward makes the same {everything} torch calls whichever input asks for a gradient: it computes "
            "the gradients nobody asked for (check ctx.needs_input_grad)",
        )
    else:
        yield row("needs_input_grad", "pass", f"torch calls in backward: all {everything}, {work}")


def _saved_bytes(fn, args, who):
    storages = {}

    def pack(tensor):
        storages[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        call(fn, args, who)
    return sum(storages.values())


def saved_for_backward(case):
    """``saved for backward``: the bytes autograd keeps for the backward, counted once per storage, inputs
    included (in a network an input is the layer before's output, which the saving keeps alive); the Function's
    must not exceed the reference's."""
    if case.reference is None:
        yield row("saved for backward", "n/a", "no reference to measure against")
        return
    try:
        mine = _saved_bytes(case.function, case.cast(torch.float32), "function")
        theirs = _saved_bytes(case.reference, case.cast(torch.float32), "reference")
    except Raised as error:
        yield row("saved for backward", "fail", str(error))
        return
    why = f"{mine} bytes, the reference {theirs}"
    yield row("saved for backward", "pass" if mine <= theirs else "fail", why)


def compiled(case, enabled):
    """``torch.compile``: ``torch.compile(fullgraph=True)`` of the function gives the eager outputs and gradients
    (within tolerance: the compiler may fuse and reorder)."""
    if not enabled:
        yield row("torch.compile", "n/a", "not run: pass compile=True (it takes tens of seconds)")
        return
    function, note = case.function, ""
    if case.function_class is not None and case.function_class.jvp is not torch.autograd.Function.jvp:
        # Dynamo cannot trace a Function that defines jvp ("Unsupported custom jvp"): compile its twin without
        # one, as manualbp's own layers do under torch.compile (a compiled graph has no forward mode anyway)
        function, note = without_jvp(case.function_class).apply, "compiled without its jvp, which Dynamo cannot trace"
    compiled_function = torch.compile(lambda *args: function(*args), fullgraph=True)
    results = []
    try:
        for fn, who in ((function, "function"), (compiled_function, "compiled function")):
            args = case.cast(torch.float32)
            outputs = call(fn, args, who)
            upstreams = case.random_like(outputs, salt=8)
            results.append([o.detach() for o in outputs] + backward(outputs, case.leaves(args), upstreams, who))
    except Raised as error:
        if "Unsupported custom jvp" in str(error):
            yield row(
                "torch.compile", "n/a", "Dynamo cannot trace a Function that defines jvp (Unsupported custom jvp)"
            )
        else:
            yield row("torch.compile", "fail", str(error))
        return
    labels = [f"output {k}" for k in range(len(results[0]) - len(case.wanted))]
    labels += [f"grad {case.names[i]}" for i in case.wanted]
    _, verdict = combined(list(zip(labels, results[1], results[0], strict=True)), case.tolerances[torch.float32])
    why = note if verdict.approximate else f"compiled results differ from eager ({verdict.worst})"
    yield row("torch.compile", "pass" if verdict.approximate else "fail", why, verdict)


CHECKS = (forward_and_gradients, tangents, gradchecks, vmap, layouts, zero_rows, needs_input_grad, saved_for_backward)


def run_all(case, compile=False):
    """Every check's rows; a check that raises where it did not expect to is one failed row, named after it."""
    for check in (*CHECKS, lambda case: compiled(case, compile)):
        try:
            yield from check(case)
        except Exception as error:
            name = check.__name__ if check in CHECKS else "torch.compile"
            yield row(name, "fail", f"raised {type(error).__name__}: {_message(error)}")
