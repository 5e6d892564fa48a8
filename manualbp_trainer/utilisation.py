"""How busy the GPU was while a run trained, said in one line at its end:

    GPU utilisation: 87 % mean over 14.2 s of training (NVIDIA H200)

A thread reads ``torch.cuda.utilization`` (the share of the last sample period, 1/6 s to 1 s, in which a kernel ran
on the GPU, as nvidia-smi reports it; it needs the nvidia-ml-py package) every ``INTERVAL`` seconds while the
epochs train. Each read is a few NVML calls, once every 0.2 s, so it costs the training nothing it could measure;
a read that fails stops the sampling, and the line says why instead of a number. A CPU run samples nothing and
says nothing.

Why not time the GPU with CUDA events instead, where NVML is missing: the time between two events on a stream is
the stream's span, idle gaps included, and the gaps (the host queueing the next kernels) are what a utilisation
figure is for.
"""

import threading
import time

import torch

INTERVAL = 0.2  # seconds between samples


class Sampler:
    """``read()``, a percentage, every ``interval`` seconds in a thread of its own while the sampler is entered (the
    first after one interval), and ``line()`` afterwards. ``read`` None: a CPU run's sampler, which samples
    nothing and whose line is None. Nothing that ``read`` raises reaches the run."""

    def __init__(self, read, device_name=None, interval=INTERVAL, clock=time.perf_counter):
        self.read, self.device_name, self.interval, self.clock = read, device_name, interval, clock
        self.samples, self.failure, self.seconds = [], None, 0.0
        self.stopped = threading.Event()
        self.thread = None

    @classmethod
    def of(cls, device):
        """The sampler of ``device`` (a ``torch.device``): its utilisation on a GPU, nothing on the CPU."""
        if device.type != "cuda":
            return cls(None)
        return cls(lambda: torch.cuda.utilization(device), torch.cuda.get_device_name(device))

    def __enter__(self):
        if self.read is not None:
            self.started = self.clock()
            self.thread = threading.Thread(target=self._sample, daemon=True, name="gpu-utilisation")
            self.thread.start()
        return self

    def __exit__(self, *exception):
        if self.thread is not None:
            self.stopped.set()
            self.thread.join()
            self.seconds = self.clock() - self.started
        return False

    def line(self):
        """The run's last line about its GPU, or None on the CPU."""
        if self.read is None:
            return None
        return utilisation_line(self.samples, self.seconds, self.device_name, self.failure, self.interval)

    def _sample(self):
        while not self.stopped.wait(self.interval):
            try:
                value = float(self.read())
            except Exception as error:  # NVML missing, or not supported here (a MIG slice): say so at the end
                self.failure = _why(error)
                return
            if not self.stopped.is_set():  # a read that the run's end overtook is not of its training
                self.samples.append(value)


def utilisation_line(samples, seconds, device_name, failure=None, interval=INTERVAL):
    """``"GPU utilisation: 87 % mean over 14.2 s of training (NVIDIA H200)"``: the mean of ``samples`` (percentages)
    taken over ``seconds``; or, without a sample, that it was not measured and why (``failure``, or a run shorter
    than one ``interval``)."""
    over = f"over {seconds:.1f} s of training ({device_name})"
    if failure is not None:
        return f"GPU utilisation: not measured {over}: {failure}"
    if not samples:
        return f"GPU utilisation: not measured {over}: the run was shorter than one sample ({interval:g} s)"
    return f"GPU utilisation: {sum(samples) / len(samples):.0f} % mean {over}"


def _why(error):
    if isinstance(error, ModuleNotFoundError):
        return "torch.cuda.utilization needs the nvidia-ml-py package (pip install nvidia-ml-py)"
    return f"torch.cuda.utilization raised {type(error).__name__}: {error}"
