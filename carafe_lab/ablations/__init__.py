"""Upsampling ablations (the paper's Sec. 4.4): studies over the upsampler zoo
run on small tasks, with results, tables and figures under
experiments/ablations/. ``python -m carafe_lab.ablations {list,run}``."""
