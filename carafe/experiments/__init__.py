"""Detection experiments with mmdetection 3: offline dataset, launcher and
summaries (``python -m carafe.experiments {data,train,test,summarize}``).

Needs the ``mmdet`` extra; nothing here is imported by ``import carafe``."""
