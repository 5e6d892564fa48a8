"""The per-layer path's training step with a Sequential's run of layers as one node (``fast.LinearChain``), against
the same model with the chain turned off (a node per Linear-activation pair, as before it) and torch.nn.

    python benchmarks/chain.py [--quick]

Four variants per case of ``benchmarks/step.py``, each its own model from the same initial weights:

- chain: ``manualbp.convert``'s model as a user gets it (the run of layers, one ``LinearChain`` node);
- pairs: the same, with ``manualbp.nn.container._linear_chain`` made to decline (one node per fused pair, the last
  Linear its own);
- node alone: ``LinearChain.apply`` called directly, without the Sequential's module call and its walk over the
  modules: what the Sequential's plumbing costs is the difference to "chain";
- torch.nn.
"""

import contextlib
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import _harness  # noqa: E402
import step  # noqa: E402

from manualbp import fast  # noqa: E402
from manualbp.nn import container  # noqa: E402


@contextlib.contextmanager
def chain_declined():
    """``manualbp.nn.container._linear_chain`` declining every run: the Sequential runs its layers pair by pair."""
    chain = container._linear_chain
    container._linear_chain = lambda *args: None
    try:
        yield
    finally:
        container._linear_chain = chain


def make_steps(sizes, activation, loss, batch_size, device):
    """The four variants' training steps, by name."""
    pairs = step.make_step(sizes, activation, loss, batch_size, "manual", device)

    def pairs_step():
        with chain_declined():
            pairs()

    model, x, _, cost = step.make_case(sizes, activation, loss, batch_size, "manual", device)
    weights, biases, activations = step.layers_of(model, {name: module for module, name in container.FUSABLE.items()})
    parameters = [tensor for pair in zip(weights, biases, strict=True) for tensor in pair]
    activations = tuple(activations)
    return {
        "chain": step.make_step(sizes, activation, loss, batch_size, "manual", device),
        "pairs": pairs_step,
        "node": step.training_step(model, lambda: cost(fast.LinearChain.apply(x, activations, *parameters))),
        "torch": step.make_step(sizes, activation, loss, batch_size, "torch", device),
    }


def main(argv=None):
    parser = _harness.parser(__doc__.split("\n\n")[0])
    args = parser.parse_args(argv)
    device, rounds, min_run_time = _harness.timing(args)
    rows = []
    for sizes, activation, loss, batch_size in step.QUICK_CASES if args.quick else step.CASES:
        times = _harness.compare(make_steps(sizes, activation, loss, batch_size, device), device, rounds, min_run_time)
        rows.append(
            [
                *step.case_cells(sizes, activation, loss, batch_size),
                _harness.microseconds(times["torch"]),
                *[_harness.format_ratio(times[name], times["torch"]) for name in ("chain", "pairs", "node")],
            ]
        )
    header = [*step.CASE_HEADER, "torch.nn µs", "chain ratio (IQR)", "pairs ratio (IQR)", "node alone ratio (IQR)"]
    title = "Per-layer training step: the run of layers as one node, pair by pair, and the node alone"
    _harness.report(title, device, _harness.command("chain.py", args), _harness.table(header, rows))


if __name__ == "__main__":
    main()
