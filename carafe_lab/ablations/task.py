"""What a task declares about itself, in one place: the harness, the tables,
the figures and the report read it from the task's ``TASK``; nothing
outside a task module names its metrics or columns."""

from dataclasses import dataclass, field
from typing import Callable, Optional, Tuple


@dataclass(frozen=True)
class Task:
    """name: the --task name.
    metrics: the two headline metrics every run returns; the first ranks the
    variants and is the one compared against the baseline.
    axis: metric -> axis label of a figure (units included); ``{channel}`` is
    filled from the results' ``psnr_channel`` (sr).
    percent: metrics stored as fractions and shown in percent in the tables
    (det AP, as papers and the published column show it).
    results_keys: entries added to every results.json of this task.
    keeps_run_folders: each training writes a run folder of its own beside the
    results (det: mmengine's logs and checkpoint).
    columns: extra table columns, (header, cell(row) -> str, or None where the
    row has no value; a column with no value in any row is left out).
    baseline_note: cell suffix for the baseline row's first metric, or None.
    metric_label: (results, metric) -> column name, or None for the metric's name.
    saves_models: every training is given a folder (runs/<variant>_seed<n>
    beside the results) to save its model in, kept locally, not committed.
    upsampler_channels: setting -> the channels of each upsampler the task's
    model holds (one entry per upsampler), for the tables' parameter counts
    of the model as trained.
    encoder_features: the task's model has an encoder feature at each
    upsampler's output resolution and passes it to the upsamplers that take
    one (``upsamplers.needs_skip``: FADE, SAPA); False: they cannot run on
    it, and studies leave them out.
    downsampler_channels: setting -> the channels of each stride-2 step a
    variant's ``downsampler`` option replaces (carafe_lab.downsamplers),
    for the same counts; () where the task takes no downsampler.
    """

    name: str
    metrics: Tuple[str, str]
    axis: dict
    percent: frozenset = frozenset()
    results_keys: dict = field(default_factory=dict)
    keeps_run_folders: bool = False
    saves_models: bool = False
    columns: Tuple[Tuple[str, Callable], ...] = ()
    baseline_note: Optional[Callable] = None
    metric_label: Optional[Callable] = None
    upsampler_channels: Callable = lambda setting: (256,)
    encoder_features: bool = True
    downsampler_channels: Callable = lambda setting: ()

    def label(self, results, metric):
        return self.metric_label(results, metric) if self.metric_label else metric

    def axis_label(self, results, metric):
        return self.axis.get(metric, metric).format(channel=results.get("psnr_channel", "RGB"))

    def shown(self, metric, value):
        """value in the units the tables show."""
        return 100 * value if metric in self.percent else value
