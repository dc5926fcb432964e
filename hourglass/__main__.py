"""``python -m hourglass ...``: the same as the ``hourglass`` console script."""

import sys

from hourglass.cli import main

if __name__ == "__main__":
    sys.exit(main())
