"""Deprecated: `python -m carafe.experiments` runs `python -m carafe_lab.experiments`."""

import sys

from carafe_lab.experiments.__main__ import main

if __name__ == "__main__":
    print("note: `python -m carafe.experiments` is deprecated; use `python -m carafe_lab.experiments` "
          "(this alias will be removed in the next release)", file=sys.stderr)
    sys.exit(main())
