"""Train an MLP on MNIST with manualbp's hand-derived layers: `python train.py --help`."""

import sys

from manualbp_trainer.cli import main

if __name__ == "__main__":
    sys.exit(main())
