"""``python -m neurosepclr`` (also what ``torchrun -m neurosepclr`` launches)."""

import sys

from neurosepclr.cli import main

if __name__ == "__main__":
    sys.exit(main())
