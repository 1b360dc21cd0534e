"""Deprecated alias: moved to ``carafe_lab.ablations`` in 0.2.0 (the research
toolkit left the operator library); this alias goes in the next release."""

import warnings

warnings.warn("carafe.ablations moved to carafe_lab.ablations (carafe 0.2.0); this alias will be "
              "removed in the next release", DeprecationWarning, stacklevel=2)
