"""Train a tiny character-level GPT built only from manualbp layers, beside the same GPT built from torch.nn.

    uv run python examples/char_gpt.py                   # float64 on the CPU, 300 steps
    uv run python examples/char_gpt.py --dtype float32 --steps 500 --plot curves.png

The model is nanoGPT's in miniature: token and position embeddings, blocks of pre-LayerNorm causal
self-attention and a GELU MLP, each with a residual connection, a final LayerNorm, a linear head and cross-entropy.
Every layer is manualbp's (``Embedding``, ``LayerNorm``, ``MultiheadAttention``, ``Linear``, ``GELU``,
``CrossEntropyLoss``); the residual adds and reshapes are plain tensor operations. A deep copy turned back into
torch.nn by ``manualbp.convert(..., to="torch")`` starts from the same weights, sees the same batches and takes the
same AdamW steps, so the two loss curves may differ only by float rounding: the script prints both and the
largest difference between them, and which nodes the manualbp model's backward graph is made of.

The text is the Zen of Python (``this.s``, decoded with rot13): 856 characters, 45 distinct ones, the same in
every Python since 2.2, so the run is the same on any machine. A model this size learns it nearly by heart; the
point here is that hand-derived gradients train a transformer exactly as autograd's do, not the text it writes.
"""

import argparse
import codecs
import contextlib
import copy
import importlib
import io
import os
import time

import torch

import manualbp
import manualbp.nn as mnn

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def zen_of_python():
    """The text: ``this.s`` is the Zen of Python in rot13."""
    with contextlib.redirect_stdout(io.StringIO()):  # importing ``this`` prints the Zen
        this = importlib.import_module("this")
    return codecs.decode(this.s, "rot13")


class Block(torch.nn.Module):
    """x + attention(LayerNorm(x)), then + MLP(LayerNorm(x)): a pre-LN transformer block."""

    def __init__(self, d_model, n_head):
        super().__init__()
        self.norm1 = mnn.LayerNorm(d_model)
        self.attention = mnn.MultiheadAttention(d_model, n_head, batch_first=True)
        self.norm2 = mnn.LayerNorm(d_model)
        self.mlp = mnn.Sequential(mnn.Linear(d_model, 4 * d_model), mnn.GELU(), mnn.Linear(4 * d_model, d_model))

    def forward(self, x, causal_mask):
        h = self.norm1(x)
        x = x + self.attention(h, h, h, attn_mask=causal_mask, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class CharGPT(torch.nn.Module):
    """Characters ``(N, T)`` and their successors ``(N, T)`` → the mean cross-entropy of predicting each successor."""

    def __init__(self, vocab_size, block_size, d_model, n_layer, n_head):
        super().__init__()
        self.token = mnn.Embedding(vocab_size, d_model)
        self.position = mnn.Embedding(block_size, d_model)
        self.blocks = torch.nn.ModuleList(Block(d_model, n_head) for _ in range(n_layer))
        self.norm = mnn.LayerNorm(d_model)
        self.head = mnn.Linear(d_model, vocab_size)
        self.criterion = mnn.CrossEntropyLoss()

    def forward(self, characters, targets):
        length = characters.shape[1]
        positions = torch.arange(length, device=characters.device)
        # True above the diagonal: position i may not look at the positions after it
        causal_mask = torch.ones(length, length, dtype=torch.bool, device=characters.device).triu(1)
        x = self.token(characters) + self.position(positions)
        for block in self.blocks:
            x = block(x, causal_mask)
        logits = self.head(self.norm(x))
        return self.criterion(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


def batches(data, block_size, batch_size, generator):
    """Endless random windows of ``data``: ``(characters, the characters one step later)``, each ``(N, T)``."""
    windows = data.unfold(0, block_size + 1, 1)
    while True:
        chosen = windows[torch.randint(len(windows), (batch_size,), generator=generator)]
        yield chosen[:, :-1], chosen[:, 1:]


def backward_node_names(loss):
    """The type names of every node of ``loss``'s backward graph: manualbp's Functions (``LinearBackward``, ...)
    and torch's own nodes (``AddBackward0``, ...), told apart."""
    seen, manual, builtin, stack = set(), set(), set(), [loss.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        is_custom = isinstance(node, torch.autograd.function.BackwardCFunction)
        (manual if is_custom else builtin).add(type(node).__name__)
        stack.extend(next_node for next_node, _ in node.next_functions)
    return sorted(manual), sorted(builtin)


def train(args):
    """Train the manualbp GPT and its torch.nn twin side by side on the same batches; return the vocabulary's
    size, both loss curves and the names of the manualbp model's backward nodes (its own, then torch's)."""
    text = zen_of_python()
    vocabulary = sorted(set(text))
    data = torch.tensor([vocabulary.index(c) for c in text])
    device, dtype = torch.device(args.device), DTYPES[args.dtype]

    torch.manual_seed(args.seed)
    manual = CharGPT(len(vocabulary), args.block_size, args.d_model, args.n_layer, args.n_head)
    reference = manualbp.convert(copy.deepcopy(manual), to="torch")  # the same weights, torch.nn's layers
    models = {"manualbp": manual.to(device, dtype), "torch.nn": reference.to(device, dtype)}
    optimizers = {name: torch.optim.AdamW(model.parameters(), lr=args.lr) for name, model in models.items()}
    curves = {name: [] for name in models}
    nodes = None

    generator = torch.Generator().manual_seed(args.seed)
    data_stream = batches(data, args.block_size, args.batch_size, generator)
    for _ in range(args.steps):
        characters, targets = (t.to(device) for t in next(data_stream))
        for name, model in models.items():
            loss = model(characters, targets)
            if nodes is None and name == "manualbp":
                nodes = backward_node_names(loss)
            optimizers[name].zero_grad()
            loss.backward()
            optimizers[name].step()
            curves[name].append(loss.item())
    return len(vocabulary), curves, nodes


def plot(curves, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (losses, differences) = plt.subplots(2, 1, sharex=True, figsize=(6, 5))
    for name, curve in curves.items():
        losses.plot(curve, label=name, linestyle="-" if name == "manualbp" else "--")
    losses.set_ylabel("training loss")
    losses.legend()
    gaps = [abs(a - b) / abs(b) for a, b in zip(curves["manualbp"], curves["torch.nn"], strict=True)]
    steps = [step for step, gap in enumerate(gaps) if gap > 0]  # a log scale has no 0: exact steps are left out
    differences.semilogy(steps, [gaps[step] for step in steps], ".")
    differences.set_ylabel("relative difference\n(steps with none left out)")
    differences.set_xlabel("step")
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description="Train a character-level GPT built from manualbp layers beside the same GPT from torch.nn.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--steps", type=int, default=300, help="AdamW steps")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (cuda:N)")
    parser.add_argument(
        "--dtype",
        choices=sorted(DTYPES),
        default="float64",
        help="float64: the curves agree to ~1e-14 (relative); float32: to ~1e-6, rounding differences that "
        "training carries forward",
    )
    parser.add_argument("--seed", type=int, default=0, help="seeds the initial weights and the batches")
    parser.add_argument("--lr", type=float, default=3e-3, help="AdamW learning rate")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--block-size", type=int, default=32, help="characters of context")
    parser.add_argument("--d-model", type=int, default=64, help="width of the residual stream")
    parser.add_argument("--n-layer", type=int, default=2, help="transformer blocks")
    parser.add_argument("--n-head", type=int, default=4, help="attention heads (must divide --d-model)")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="CPU threads for torch's kernels: a model this small gains nothing from more, and on a busy machine "
        "their waiting on each other makes a run several times slower",
    )
    parser.add_argument("--every", type=int, default=25, help="print the losses every this many steps")
    parser.add_argument("--plot", metavar="FILE", help="also save both curves as a PNG (matplotlib)")
    args = parser.parse_args(argv)
    for name in ("steps", "lr", "batch_size", "block_size", "d_model", "n_layer", "n_head", "threads", "every"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    if args.plot is not None and not args.plot.lower().endswith(".png"):
        parser.error(f"--plot {args.plot}: the curves are saved as a PNG image; name the file FILE.png")
    if args.plot is not None and not os.path.isdir(os.path.dirname(os.path.abspath(args.plot))):
        parser.error(f"--plot {args.plot}: there is no folder {os.path.dirname(os.path.abspath(args.plot))} for it")
    if args.d_model % args.n_head:
        parser.error(f"--n-head must divide --d-model, got {args.n_head} and {args.d_model}")
    if args.block_size >= len(zen_of_python()):
        parser.error(f"--block-size must be shorter than the text ({len(zen_of_python())} characters)")
    try:
        device = torch.device(args.device)
    except RuntimeError as error:
        parser.error(f"--device: {error}")
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available here")
    if device.type not in ("cpu", "cuda"):
        parser.error(f"--device must be cpu or cuda, got {args.device}")
    return args


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    vocab_size, curves, (manual_nodes, builtin_nodes) = train(args)
    elapsed = time.perf_counter() - start
    ours, theirs = curves["manualbp"], curves["torch.nn"]

    print(f"text: the Zen of Python, {len(zen_of_python())} characters, vocabulary of {vocab_size}")
    print(f"{args.dtype} on {args.device}; ln(vocabulary) = {torch.tensor(float(vocab_size)).log().item():.4f}")
    print("manualbp nodes in the backward graph: " + " ".join(manual_nodes))
    print("torch nodes in the backward graph: " + " ".join(builtin_nodes))
    print(f"{'step':>5} {'manualbp':>20} {'torch.nn':>20} {'difference':>10}")
    for step in sorted({*range(0, args.steps, args.every), args.steps - 1}):
        print(f"{step:>5} {ours[step]:>20.15f} {theirs[step]:>20.15f} {ours[step] - theirs[step]:>10.2e}")
    absolute = max(abs(a - b) for a, b in zip(ours, theirs, strict=True))
    relative = max(abs(a - b) / abs(b) for a, b in zip(ours, theirs, strict=True))
    print(f"trained both models for {args.steps} steps in {elapsed:.1f} s")
    if args.plot:
        plot(curves, args.plot)
        print(f"curves saved to {args.plot}")
    print(
        f"first loss {ours[0]:.6f}, last loss {ours[-1]:.6f}, "
        f"max abs difference {absolute:.3e}, max rel difference {relative:.3e}"
    )


if __name__ == "__main__":
    main()
