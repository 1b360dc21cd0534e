"""Deprecated alias of carafe_lab.experiments.offline_dataset, kept so that the
configs dumped by runs before 0.2.0 (custom_imports
'carafe.experiments.offline_dataset') still load; goes in the next release."""

from carafe_lab.experiments.offline_dataset import CarafeOfflineCocoDataset  # noqa: F401
