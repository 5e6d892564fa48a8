"""Train an MLP or a small CNN on MNIST with manualbp's hand-derived layers: `uv run train.py --help`."""

import signal
import sys

from manualbp_trainer.cli import main

if __name__ == "__main__":
    # Ctrl-C is handled while main trains (manualbp_trainer.launch.StopSignals); before and after, in Python's start-up
    # and shutdown, it could only print a traceback ("Exception ignored in atexit callback")
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.exit(main())
