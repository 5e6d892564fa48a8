"""Train an MLP on MNIST with manualbp's hand-derived layers: `python train.py --help`."""

import signal
import sys

from manualbp_trainer.cli import main

if __name__ == "__main__":
    try:
        status = main()
    finally:  # the run is saved and over: a Ctrl-C while Python shuts down would only print a traceback
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.exit(status)
