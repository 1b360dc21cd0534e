"""Deprecated alias: moved to ``carafe_lab.experiments`` in 0.2.0 (the research
toolkit left the operator library); this alias goes in the next release."""

import warnings

warnings.warn("carafe.experiments moved to carafe_lab.experiments (carafe 0.2.0); this alias will be "
              "removed in the next release", DeprecationWarning, stacklevel=2)
