"""Memory: bytes saved for backward by one training step, and on CUDA its peak allocated memory, manualbp
against torch.nn.

    python benchmarks/memory.py [--device cuda] [--quick]

Saved bytes are counted with ``torch.autograd.graph.saved_tensors_hooks`` over the forward pass and loss: every
tensor autograd keeps for the backward, counted once per storage (a tensor saved by two layers, such as one
layer's output and the next layer's input, is one allocation). Parameters and the input batch are listed apart,
since they live anyway; "activations" is what the step adds.
"""

import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import _harness  # noqa: E402
import step  # noqa: E402


def saved_bytes(sizes, activation, loss, batch_size, layers, device):
    """``(activation bytes, parameter and input bytes, peak allocated bytes or None)`` of one training step."""
    return saved_for_backward(*step.make_case(sizes, activation, loss, batch_size, layers, device), device)


def saved_for_backward(model, x, target, cost, device):
    """``saved_bytes`` for any ``model`` on the batch ``x`` with the loss ``cost(output)`` (``target`` lives
    anyway, like ``x``)."""
    living = {t.untyped_storage().data_ptr() for t in [x, target, *model.parameters()]}
    storages = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        baseline = torch.cuda.memory_allocated(device)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss_value = cost(model(x))
    loss_value.backward()
    peak = None
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device) - baseline
    activations = sum(size for pointer, size in storages.items() if pointer not in living)
    return activations, sum(size for pointer, size in storages.items() if pointer in living), peak


def main(argv=None):
    args = _harness.parser(__doc__.split("\n\n")[0]).parse_args(argv)
    device = _harness.check_device(args)
    rows = []
    for sizes, activation, loss, batch_size in step.QUICK_CASES if args.quick else step.CASES:
        manual = saved_bytes(sizes, activation, loss, batch_size, "manual", device)
        reference = saved_bytes(sizes, activation, loss, batch_size, "torch", device)
        rows.append(
            [
                *step.case_cells(sizes, activation, loss, batch_size),
                f"{manual[0]:,}",
                f"{reference[0]:,}",
                f"{manual[1]:,}",
                f"{reference[1]:,}",
                _harness.count(manual[2]),
                _harness.count(reference[2]),
            ]
        )
    header = [
        *step.CASE_HEADER,
        "saved activations, manualbp (bytes)",
        "torch.nn",
        "saved parameters + input, manualbp",
        "torch.nn",
        "CUDA peak, manualbp",
        "torch.nn",
    ]
    command = _harness.command("memory.py", args)
    _harness.report("Memory saved for backward, per training step", device, command, _harness.table(header, rows))
    return rows


if __name__ == "__main__":
    main()
