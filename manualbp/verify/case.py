"""What every check of ``manualbp.verify`` shares: the sample (``Case``), running the function or the reference
(``call``, ``backward``) with a failure that names which raised, and a row's fields (``row``)."""

import torch

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


def message(error):
    lines = [line for line in str(error).strip().splitlines() if line.strip()]
    text = lines[0] if lines else ""
    return text if len(text) <= 240 else text[:237] + "..."


def call(fn, args, who):
    """``fn(*args)``'s floating-point tensors (a tensor, or those of a tuple)."""
    try:
        result = fn(*args)
    except Exception as error:
        raise Raised(f"the {who} raised {type(error).__name__}: {message(error)}") from error
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
        raise Raised(f"the {who}'s backward raised {type(error).__name__}: {message(error)}") from error
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


def same_forward(outputs, expected, tolerance):
    return combined(outputs_pairs(outputs, expected), tolerance)[1]
