"""The backprop figure (``pictures``' story of what one example asks of the network) drawn from plain numbers, and
encoded as TensorBoard's image summaries encode it.

This module imports numpy and matplotlib alone, and draws with matplotlib's object-oriented API (a ``Figure`` on
its own Agg canvas, every font size given where it is used): no torch, no pyplot and no change to matplotlib's
global settings, so that a worker process (``picture_writer``; ``serve`` is its loop) can draw the figures while
the run trains.
"""

import io
import os
import pickle
import signal
import sys
import traceback
from dataclasses import dataclass

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

# TensorBoard's cards are at least 335 px wide (minmax(335px, 1fr) in its grid) and draw a figure to the card's
# width: a figure about that wide, with 11-point type, reads at card size without "Show actual image size"
FIGURE_WIDTH_INCHES, FIGURE_DPI, FONT_SIZE = 5.0, 80, 11


@dataclass
class FigureData:
    """What the figure of one example shows, as numpy arrays on the host (``pictures.figure_data`` makes it).

    ``image``: the example, ``(side, side)``; ``label``: its class; ``class_names``: the classes' names, or None
    for digits; ``outputs``: aᴸ, ``(n_L,)``; ``nudges``: −∂C/∂aˡ of each hidden layer and then of the output layer;
    ``loss``: C for the example; ``hardest``: for the first hidden layer's neurons whose incoming weights the
    example asks most of, ``(j, −∂C/∂W¹_j as (side, side) or None when the inputs are not side × side, −∂C/∂a¹_j)``;
    ``columns``: the bottom row's number of panels.
    """

    image: np.ndarray
    label: int
    class_names: list | None
    outputs: np.ndarray
    nudges: list
    loss: float
    hardest: list
    columns: int


def figure(data):
    """The matplotlib ``Figure`` of ``data``, 400 px wide: the image; the output layer's activations against the
    target with the nudges as signed bars; each hidden layer's nudges; and what the example asks of the incoming
    weights of the neurons in ``data.hardest``, as images."""
    hidden = data.nudges[:-1]
    rows = 2 + len(hidden)
    names = data.class_names or [str(c) for c in range(len(data.outputs))]
    heights = [1.8, *([1.0] * len(hidden)), 1.5]
    fig = Figure(figsize=(FIGURE_WIDTH_INCHES, sum(heights) + 0.4), dpi=FIGURE_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(rows, data.columns, height_ratios=heights)

    ax = _axes(fig.add_subplot(grid[0, 0]))
    ax.imshow(data.image, cmap="gray")
    ax.set_title(names[data.label], fontsize=FONT_SIZE)
    ax.axis("off")

    _outputs(_axes(fig.add_subplot(grid[0, 1:])), data, names)

    for layer, values in enumerate(hidden):
        ax = _axes(fig.add_subplot(grid[1 + layer, :]))
        # one line per neuron (a single collection: hundreds of bars draw slowly)
        ax.vlines(range(len(values)), 0, values, colors=["tab:green" if v > 0 else "tab:red" for v in values])
        ax.axhline(0, color="black", linewidth=0.5)
        ax.tick_params(labelsize=FONT_SIZE - 2)
        ax.set_title(f"hidden layer {layer + 1}: nudges −∂C/∂a", fontsize=FONT_SIZE)
        ax.set_xlim(-1, len(values))

    for column, (neuron, weights, nudge) in enumerate(data.hardest):
        ax = _axes(fig.add_subplot(grid[rows - 1, column]))
        if weights is not None:
            bound = float(np.maximum(np.abs(weights).max(), np.float32(1e-12)))
            ax.imshow(weights, cmap="RdBu", vmin=-bound, vmax=bound)
        ax.set_title(f"−∂C/∂W¹ {neuron}\n({nudge:+.2f})", fontsize=FONT_SIZE - 1)
        ax.axis("off")
    return fig


def _outputs(ax, data, names):
    """The output layer: each neuron's activation (grey) and, on a scale of its own, its nudge (signed bars)."""
    positions = np.arange(len(data.outputs), dtype=np.float32)
    nudge = data.nudges[-1]
    ax.bar(positions - 0.2, data.outputs, width=0.4, color="0.7")
    ax.set_xticks(positions, names, rotation=90 if data.class_names else 0, fontsize=FONT_SIZE - 2)
    ax.tick_params(axis="y", labelsize=FONT_SIZE - 2)
    nudges = _axes(ax.twinx())  # a scale of its own: a confident output is asked for little
    nudges.bar(positions + 0.2, nudge, width=0.4, color=["tab:green" if v > 0 else "tab:red" for v in nudge])
    nudges.axhline(0, color="black", linewidth=0.5)
    nudges.tick_params(axis="y", labelsize=FONT_SIZE - 2)
    ax.set_ylabel("output aᴸ", fontsize=FONT_SIZE - 2)
    nudges.set_ylabel("nudge −∂C/∂aᴸ", fontsize=FONT_SIZE - 2)
    ax.set_title(f"outputs (grey), nudges; C = {data.loss:.3f}", fontsize=FONT_SIZE)


def _axes(ax):
    """``ax`` with the figure's type size for the text that tick_params does not reach (an axis's offset, "1e−3")."""
    for axis in (ax.xaxis, ax.yaxis):
        axis.get_offset_text().set_fontsize(FONT_SIZE)
    return ax


def png(fig):
    """``(height, width, channels, PNG bytes)`` of ``fig`` drawn on its canvas: the RGB image and its encoding that
    ``SummaryWriter.add_figure`` writes (it draws the figure on an Agg canvas and saves its pixels with PIL)."""
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    width, height = canvas.get_width_height()
    rgb = np.asarray(canvas.buffer_rgba())[:, :, :3]
    output = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).save(output, format="PNG")
    return height, width, 3, output.getvalue()


def draw(data):
    """``png(figure(data))``: what the picture worker returns for one figure."""
    return png(figure(data))


def serve(requests, replies):
    """The drawing worker's loop: for each ``FigureData`` read from ``requests`` (pickles, until the stream ends),
    write to ``replies`` ``("drawn", draw(data))`` or, where drawing it raised, ``("failed", "Type: message",
    traceback)``, in order. Returns quietly when the run that asked is gone."""
    while True:
        try:
            data = pickle.load(requests)
        except EOFError:
            return
        try:
            reply = ("drawn", draw(data))
        except Exception as error:  # told to the run, which raises it where it writes this figure
            reply = ("failed", f"{type(error).__name__}: {error}", traceback.format_exc())
        try:
            pickle.dump(reply, replies, pickle.HIGHEST_PROTOCOL)
            replies.flush()
        except BrokenPipeError:
            return


if __name__ == "__main__":  # python -m manualbp_trainer.drawing: picture_writer's worker
    # the run decides when to stop: Ctrl-C and SIGTERM are its own (the worker ends when its input does)
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)
    if hasattr(os, "nice"):  # the lowest priority: it draws on the cores the run leaves idle
        os.nice(19)
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # anything printed goes to stderr, not into the replies
    serve(sys.stdin.buffer, replies)
