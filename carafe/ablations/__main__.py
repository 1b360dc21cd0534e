"""Deprecated: `python -m carafe.ablations` runs `python -m carafe_lab.ablations`."""

import sys

from carafe_lab.ablations.__main__ import main

if __name__ == "__main__":
    print("note: `python -m carafe.ablations` is deprecated; use `python -m carafe_lab.ablations` "
          "(this alias will be removed in the next release)", file=sys.stderr)
    sys.exit(main())
