"""carafe_lab: the research toolkit around the CARAFE operator (``carafe``).

- ``carafe_lab.upsamplers``: the upsampler zoo (nearest ... CARAFE, DySample)
- ``carafe_lab.viz``: reassembly kernels, same-segment mass, figures
- ``carafe_lab.experiments``: offline dataset, mmdetection launcher, summaries
  (``python -m carafe_lab.experiments``; needs the mmdet extra)
- ``carafe_lab.ablations``: the upsampling ablations on sr / seg / det tasks
  (``python -m carafe_lab.ablations``)
- ``carafe_lab.paths``: where runs, results, data and figures go (the lab root:
  ``$CARAFE_LAB_ROOT``, else the checkout around the working directory, else
  the working directory)

The operator library ``carafe`` never imports this package.
"""
