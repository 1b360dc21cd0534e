"""The learning-rate schedule the ablation tasks share."""

import math

import torch


def warmup_cosine(optimizer, steps: int, warmup_fraction: float = 0.1):
    """Linear warm-up over the first 10% of steps, then cosine decay to zero
    (call .step() once per step). The warm-up matters: at full learning rate
    from step 0 the sr head's units died in some seeds."""
    warmup = max(1, int(steps * warmup_fraction))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: min(1.0, (i + 1) / warmup) * 0.5
                                             * (1 + math.cos(math.pi * min(i, steps) / steps)))
