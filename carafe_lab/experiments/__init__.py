"""Detection experiments with mmdetection 3: offline dataset, launcher and
summaries (``python -m carafe_lab.experiments {data,train,test,summarize}``).

Needs the ``mmdet`` extra for train / test / predict."""
