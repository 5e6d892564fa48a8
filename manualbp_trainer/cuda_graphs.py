"""``--cuda-graphs``: the whole training step captured once as a CUDA graph and replayed at every step.

A training step on a small network is mostly launch overhead: the host queues some fifty kernels (forward,
the hand-derived backward, the optimiser's update, the running sums), each in a few microseconds of Python, while
the GPU runs each in a few microseconds. A CUDA graph records those launches once and replays them with one call,
so the host's cost per step becomes that call. This follows PyTorch's "whole-network capture" recipe
(https://pytorch.org/docs/stable/notes/cuda.html#whole-network-capture):

- the first ``WARMUP`` steps of each batch length run as usual on a side stream (they are real training steps;
  the first calls create the optimiser's momentum buffers and cuBLAS's workspaces), then the step is captured
  with the gradients unset, so that its backward allocates them from the graph's private memory;
- what a replay reads and writes keeps its address: the batch's indices are copied into the captured index
  tensor, and the optimiser reads the learning rate from a one-element tensor on the device, which the host fills
  from the scheduler's value before each step (the fused SGD kernel takes a tensor learning rate; the scheduler
  itself still sees a number, as in every other run, and so does the checkpoint);
- a batch of another length (the last, short batch of an epoch) gets a graph of its own;
- every other hyperparameter is fixed in the graph: a schedule that changes the momentum as it goes (OneCycleLR's
  ``cycle_momentum``) cannot be replayed, and a replay after such a change raises rather than train on with the
  captured value.

Nothing here reads a value back from the GPU, so within an epoch the host never waits for it.

CUDA graphs are on by default wherever a run allows them (``refusal`` finds nothing against it): a run that leaves
them to the default and cannot have them trains eagerly and says why in one line (``note``); ``--cuda-graphs``
asks for them and is refused where they cannot run, ``--no-cuda-graphs`` turns them off.
"""

from typing import NamedTuple

import torch

from manualbp_trainer.model import MODELS

WARMUP = 3  # eager steps of a batch length before it is captured, as in PyTorch's recipe
FIXED = ("momentum", "dampening", "nesterov", "weight_decay", "maximize")  # numbers the captured update holds


class Refusal(NamedTuple):
    """Why a run cannot replay its steps from CUDA graphs: ``error``, the one line an explicit --cuda-graphs gets;
    ``why``, the reason alone, for a run that left them to the default; ``on_gpu``: whether the run is on a GPU
    (on the CPU CUDA graphs are no question, and a run that did not ask for them is told nothing)."""

    error: str
    why: str
    on_gpu: bool


def refusal(config, under_torchrun):
    """Why ``config`` (its device resolved: ``"cpu"``, ``"cuda"``, ``"cuda:1"``) cannot replay its training steps
    from CUDA graphs, as a ``Refusal``; None when it can. ``under_torchrun``: whether torchrun launched the run."""
    spec, on_gpu = MODELS[config.model], config.device.startswith("cuda")
    if not spec.supports("cuda_graphs"):
        why = f"--model {spec.name}: {spec.unsupported['cuda_graphs']}"
        return Refusal(
            f"--cuda-graphs is not supported with --model {spec.name}: {spec.unsupported['cuda_graphs']}: train it "
            "without --cuda-graphs",
            why,
            on_gpu,
        )
    if not on_gpu:
        return Refusal(
            f"--cuda-graphs needs a GPU, and this run is on {config.device}: pass --device cuda",
            f"the run is on {config.device}",
            on_gpu,
        )
    if config.compile:
        return Refusal(
            "--cuda-graphs and --compile each replace the step's launches: pass one of them",
            "--compile replaces the step's launches itself",
            on_gpu,
        )
    if config.lr_schedule == "onecycle":
        return Refusal(
            "--cuda-graphs with --lr-schedule onecycle: OneCycleLR changes the momentum at every step, and a "
            "captured step keeps the momentum it was captured with: use --lr-schedule cosine or constant",
            "--lr-schedule onecycle changes the momentum at every step, and a captured step keeps the momentum it "
            "was captured with",
            on_gpu,
        )
    if under_torchrun:
        return Refusal(
            "--cuda-graphs runs on one process: launch train.py without torchrun",
            "torchrun launched several processes, and a captured step runs on one",
            on_gpu,
        )
    return None


def used(config, under_torchrun):
    """Whether the run replays its steps from CUDA graphs: as ``config.cuda_graphs`` says when it was given (an
    explicit --cuda-graphs has been checked against ``refusal`` already), else wherever ``refusal`` allows."""
    if config.cuda_graphs is not None:
        return config.cuda_graphs
    return refusal(config, under_torchrun) is None


def note(config, under_torchrun):
    """The line a run on a GPU prints when it left CUDA graphs to the default and cannot have them; None when it
    uses them, when it chose (--cuda-graphs, --no-cuda-graphs), and on the CPU."""
    refused = refusal(config, under_torchrun)
    if config.cuda_graphs is not None or refused is None or not refused.on_gpu:
        return None
    return f"note: no CUDA graphs, each step runs eagerly: {refused.why} (--no-cuda-graphs: eager without this note)"


class GraphedStep:
    """``step(index)`` of a ``loop.TrainStep``, replayed from CUDA graphs (one per batch length).

    ``step`` may only queue work on the device and must take the same path each time (no Python branch on a value
    it reads back, no new tensors kept between steps), which ``loop.TrainStep`` does for an MLP under SGD.
    """

    def __init__(self, step, model, optimizer):
        if len(optimizer.param_groups) != 1:
            raise ValueError("GraphedStep: the optimiser must have one parameter group (one learning rate to feed)")
        self.step, self.optimizer = step, optimizer
        self.parameters = [p for p in model.parameters() if p.requires_grad]
        first = self.parameters[0]
        self.lr = torch.zeros((), device=first.device, dtype=torch.float32)  # the fused kernel reads float32
        self.side_stream = torch.cuda.Stream(first.device)
        self.graphs = {}  # batch length → (graph, its index tensor, the gradients its backward writes)
        self.fixed = None  # the optimiser's FIXED hyperparameters when the first graph was captured
        self.eager_steps = {}  # batch length → steps run before its capture

    def reset(self):
        self.step.reset()

    def sums(self):
        return self.step.sums()

    def __call__(self, index):
        length = len(index)
        if length in self.graphs:
            self._check_fixed()
            graph, static_index, gradients = self.graphs[length]
            static_index.copy_(index)
            self.lr.fill_(self.optimizer.param_groups[0]["lr"])
            graph.replay()
            for parameter, gradient in zip(self.parameters, gradients, strict=True):
                parameter.grad = gradient  # what the last step computed, for the logged gradient norms
            return
        if self.eager_steps.get(length, 0) < WARMUP:
            self.eager_steps[length] = self.eager_steps.get(length, 0) + 1
            self.lr.fill_(self.optimizer.param_groups[0]["lr"])
            self._on_side_stream(self._with_tensor_lr, index)
            return
        self.graphs[length] = self._capture(index)
        self(index)  # the captured step has not run yet: run it

    def _with_tensor_lr(self, index):
        """The step, its optimiser reading the learning rate from ``self.lr`` (filled by the caller), as the
        captured step does: every step takes the same kernels, and the same rounding of the learning rate."""
        group = self.optimizer.param_groups[0]
        number = group["lr"]
        group["lr"] = self.lr
        try:
            self.step(index)
        finally:
            group["lr"] = number

    def _on_side_stream(self, function, *args):
        self.side_stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(self.side_stream):
            function(*args)
        torch.cuda.current_stream().wait_stream(self.side_stream)

    def _fixed_now(self):
        group = self.optimizer.param_groups[0]
        return {name: group.get(name) for name in FIXED}

    def _check_fixed(self):
        if self._fixed_now() != self.fixed:
            changed = ", ".join(name for name in FIXED if self._fixed_now()[name] != self.fixed[name])
            raise ValueError(
                f"GraphedStep: the optimiser's {changed} changed after the step was captured, and a CUDA graph "
                "replays the captured value: keep it fixed (a learning-rate schedule may change only the lr)"
            )

    def _capture(self, index):
        if self.fixed is None:
            self.fixed = self._fixed_now()
        self._check_fixed()
        static_index = index.clone()
        graph = torch.cuda.CUDAGraph()
        self.optimizer.zero_grad(set_to_none=True)  # the captured backward allocates them in the graph's pool
        with torch.cuda.graph(graph):  # records the kernels without running them: nothing changes yet
            self._with_tensor_lr(static_index)
        gradients = [parameter.grad for parameter in self.parameters]
        return graph, static_index, gradients
