"""The rows that hold a Function to how PyTorch calls it: under ``torch.func.vmap``, on strided and empty inputs,
with some inputs not asking for a gradient, for the memory it keeps, and under ``torch.compile``."""

import torch
from torch.autograd.function import BackwardCFunction

from manualbp.fast.call import without_jvp
from manualbp.verify.case import Raised, backward, call, combined, message, outputs_pairs, row


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
                "vmap", "fail", text if isinstance(error, Raised) else f"{type(error).__name__}: {message(error)}"
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
    (within tolerance: the compiler may fuse and reorder). ``enabled`` is True (Inductor, the default backend) or
    the name of a backend (``"aot_eager"``: Dynamo and AOTAutograd without code generation, seconds not tens)."""
    if not enabled:
        yield row("torch.compile", "n/a", "not run: pass compile=True (it takes tens of seconds)")
        return
    function, note = case.function, ""
    if case.function_class is not None and case.function_class.jvp is not torch.autograd.Function.jvp:
        # Dynamo cannot trace a Function that defines jvp ("Unsupported custom jvp"): compile its twin without
        # one, as manualbp's own layers do under torch.compile (a compiled graph has no forward mode anyway)
        function, note = without_jvp(case.function_class).apply, "compiled without its jvp, which Dynamo cannot trace"
    backend = "inductor" if enabled is True else enabled
    compiled_function = torch.compile(lambda *args: function(*args), fullgraph=True, backend=backend)
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
