"""``python -m ussafety.data.splits build|check|show``."""

import sys

from ussafety.data.splits.cli import main

if __name__ == "__main__":
    sys.exit(main())
