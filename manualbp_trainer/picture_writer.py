"""The backprop figures drawn off the training loop: a worker process draws each epoch's figures (``drawing``) while
the next epoch trains, and the run writes them to TensorBoard as they come back, with the tag and step each was
asked for, as ``SummaryWriter.add_figure`` would have written them.

The worker runs at the lowest priority (nice 19), so that it draws on cores the run leaves idle and never takes
one from the training. Where the run must have the figures (before a checkpoint, at its end) it draws those the
worker has not begun itself, as it did before there was a worker: waiting for the figures never takes longer
than drawing them, on a machine whose cores are all busy too.

A process, not a thread: drawing a figure is mostly matplotlib's Python (its layout and its ticks), which holds
the GIL, and the training loop gives the GIL up at every tensor operation; a drawing thread then keeps it for up
to the interpreter's switch interval (5 ms) each time. On the 2-core CPU a training step of the default MLP took
3.4 ms alone, 43 ms beside a thread drawing these figures, and 3.4 ms beside a process drawing them. And a plain
``python -m manualbp_trainer.drawing`` rather than a ``multiprocessing`` pool: a spawned pool's worker runs the
caller's main script again before it starts (a script that calls ``loop.train`` without an
``if __name__ == "__main__"`` guard would train a second time there, and fail), and a forked one would copy the
run's threads' locks and its CUDA state.
"""

import collections
import concurrent.futures
import contextlib
import os
import pickle
import signal
import subprocess
import sys
import threading

from tensorboard.compat.proto.summary_pb2 import Summary

from manualbp_trainer import drawing

LIMIT = 32  # figures asked for and not yet written: three epochs' worth of the ten classes
# worker processes: the cores the run's own threads leave, one on 2 or 3 cores, up to four (a GPU host's many
# cores draw an epoch's figures in about the time one draws one of them)
WORKERS = max(1, min(4, (os.cpu_count() or 1) - 2))


class PictureError(RuntimeError):
    """A figure could not be drawn: its exception (the worker's traceback in the cause), or the worker died."""


class _WorkerTraceback(Exception):
    """The worker's traceback, as the cause of the ``PictureError`` its exception became."""


class PictureWriter:
    """Figures drawn by a worker process and written to ``writer`` (a ``SummaryWriter``) by the thread that asks
    for them, in the order asked.

    ``submit(tag, step, data)`` hands a ``drawing.FigureData`` to a worker (``workers`` of them, in turn, each
    started with its first figure),
    first writing the oldest figure when ``limit`` are waiting; ``write_finished()`` writes the figures drawn so
    far without waiting; ``flush(step)`` writes every figure of a step before ``step``, drawing itself those the
    worker has not begun; ``close()`` writes them all and ends the worker; ``abandon()`` ends it at once. A figure
    that could not be drawn raises ``PictureError`` in the call that would have written it.
    """

    def __init__(self, writer, limit=LIMIT, workers=WORKERS):
        self.writer, self.limit, self.most_workers = writer, limit, workers
        self.pending = collections.deque()  # (tag, step, future), in the order asked for
        self.workers, self.submitted = [], 0

    def submit(self, tag, step, data):
        while len(self.pending) >= self.limit:
            self._write_oldest()
        if len(self.workers) < self.most_workers:
            self.workers.append(_Worker())
        worker = self.workers[self.submitted % len(self.workers)]
        self.submitted += 1
        self.pending.append((tag, step, worker.draw(data)))

    def write_finished(self):
        while self.pending and self.pending[0][2].done():
            self._write_oldest()

    def flush(self, step):
        while self.pending and self.pending[0][1] < step:
            self._write_oldest()
        self.write_finished()

    def close(self):
        """Write every figure asked for, then end the worker (giving up the rest when writing one fails or is
        interrupted)."""
        try:
            while self.pending:
                self._write_oldest()
        finally:
            self.abandon()

    def abandon(self):
        """Give up the figures not yet written, and end the workers now."""
        self.pending.clear()
        for worker in self.workers:
            worker.end()
        self.workers, self.submitted = [], 0

    def _write_oldest(self):
        """Write the oldest figure, drawing it here if its worker has not begun it."""
        tag, step, future = self.pending.popleft()
        data = next((data for worker in self.workers if (data := worker.take_back(future)) is not None), None)
        if data is not None:
            _draw_into(future, data)
        try:
            height, width, channels, encoded = future.result()
        except PictureError as error:
            raise PictureError(f"drawing the figure {tag} of step {step} failed ({error})") from error
        image = Summary.Image(height=height, width=width, colorspace=channels, encoded_image_string=encoded)
        self.writer.file_writer.add_summary(Summary(value=[Summary.Value(tag=tag, image=image)]), step)


def _draw_into(future, data):
    try:
        future.set_result(drawing.draw(data))
    except Exception as error:  # as the worker would have told it
        raise_later = PictureError(f"{type(error).__name__}: {error}")
        raise_later.__cause__ = error
        future.set_exception(raise_later)


class _Worker:
    """``python -m manualbp_trainer.drawing`` (``drawing.serve``), which draws the figures pickled to its stdin and
    pickles their PNGs to its stdout, in order. A thread hands it one figure at a time, the oldest waiting, once it
    has replied to the last, and reads the reply into that figure's future: the others stay here, where
    ``take_back`` can take them."""

    def __init__(self):
        self.waiting = collections.deque()  # (data, future) not yet handed to the worker, oldest first
        self.changed = threading.Condition()  # a figure to hand over, or the end
        self.ended = None  # why the worker is gone, once it is
        package_root = os.path.dirname(os.path.dirname(os.path.abspath(drawing.__file__)))
        path = os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))
        command = [sys.executable, "-m", "manualbp_trainer.drawing"]
        with _signals_held_back():  # the process and the thread inherit the mask
            environment = {**os.environ, "PYTHONPATH": path}
            self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=environment)
            self.thread = threading.Thread(target=self._serve, daemon=True, name="picture_writer")
            self.thread.start()

    def draw(self, data):
        future = concurrent.futures.Future()
        with self.changed:
            if self.ended is not None:
                future.set_exception(PictureError(self.ended))
            else:
                self.waiting.append((data, future))
                self.changed.notify()
        return future

    def take_back(self, future):
        """The figure of ``future`` if the worker has not been handed it (it is then the caller's to draw); None."""
        with self.changed:
            for index, (data, waiting) in enumerate(self.waiting):
                if waiting is future:
                    del self.waiting[index]
                    return data
        return None

    def end(self):
        """End the worker now (it only draws: nothing of the run is lost with it)."""
        with self.changed:
            self.ended = self.ended or "the run ended the worker"
            self.changed.notify()
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        self.thread.join()

    def _serve(self):
        future = None
        try:
            while (data_and_future := self._next()) is not None:
                data, future = data_and_future
                pickle.dump(data, self.process.stdin, pickle.HIGHEST_PROTOCOL)
                self.process.stdin.flush()
                reply = pickle.load(self.process.stdout)
                if reply[0] == "drawn":
                    future.set_result(reply[1])
                else:
                    error = PictureError(reply[1])
                    error.__cause__ = _WorkerTraceback(f"in the worker process:\n{reply[2]}")
                    future.set_exception(error)
        except (EOFError, OSError, pickle.UnpicklingError):  # the worker died: this figure and the waiting ones fail
            self._fail(future, f"the worker drawing the figures ended (exit status {self.process.wait()})")
        finally:
            with contextlib.suppress(OSError):
                self.process.stdin.close()

    def _next(self):
        with self.changed:
            while not self.waiting and self.ended is None:
                self.changed.wait()
            return self.waiting.popleft() if self.ended is None else None

    def _fail(self, future, why):
        with self.changed:
            self.ended = self.ended or why
            failed = [*([future] if future is not None else []), *(waiting for _, waiting in self.waiting)]
            self.waiting.clear()
        for each in failed:
            if not each.done():
                each.set_exception(PictureError(why))


@contextlib.contextmanager
def _signals_held_back():
    """Ctrl-C and SIGTERM held back in this thread meanwhile: a process or thread started here inherits the mask (a
    process through fork and exec, until it ignores them itself: ``drawing``'s ``__main__``), so that the signals
    meant for the run (a terminal sends Ctrl-C to every process of its group) stop the run alone, which then
    writes or gives up what the worker has. The run gets those that came meanwhile once they are let through."""
    if not hasattr(signal, "pthread_sigmask"):  # Windows: no signal masks
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
