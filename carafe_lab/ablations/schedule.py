"""The learning-rate schedule the ablation tasks share."""

import math

import torch


def warmup_cosine(optimizer, steps: int, warmup_fraction: float = 0.1):
    """Linear warm-up over the first 10% of steps, then cosine decay to zero
    (call .step() once per step). The warm-up matters: at full learning rate
    from step 0 the sr head's units died in some seeds."""
    warmup = max(1, int(steps * warmup_fraction))
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda i: (
            min(1.0, (i + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(i, steps) / steps))
        ),
    )


#: Learning-rate factor for CARAFE's kernel prediction layer (content
#: encoder) under Adam(W), used by the seg task (tasks choose it in their
#: settings). Adam moves every weight by about lr per step whatever its
#: gradient, so at the rate that suits the rest of a network the kernel logits
#: grow until the softmax saturates: each kernel then copies one pixel, its
#: gradient vanishes and it stays there. Whether and when that happened was
#: decided by float rounding (in the sr network, 1 vs 2 threads gave different
#: regimes for the same seed). A tenth of the rate keeps the kernels soft
#: enough to keep learning.
KERNEL_LR_SCALE = 0.1


def param_groups(model, lr: float, kernel_lr_scale: float = KERNEL_LR_SCALE):
    """The model's parameters as optimizer groups: CARAFE's content encoders
    (every ``content_encoder`` of a :class:`carafe.CARAFEPack`, and of
    CARAFE++'s downsampler, whose softmax kernels saturate the same way) at
    ``lr * kernel_lr_scale``, the rest at ``lr``."""
    from carafe.modules import CARAFEPack

    from ..downsamplers import CARAFEDown

    kernel = {
        id(p)
        for m in model.modules()
        if isinstance(m, (CARAFEPack, CARAFEDown))
        for p in m.content_encoder.parameters()
    }
    rest = [p for p in model.parameters() if id(p) not in kernel]
    slow = [p for p in model.parameters() if id(p) in kernel]
    groups = [{"params": rest, "lr": lr}]
    if slow:
        groups.append({"params": slow, "lr": lr * kernel_lr_scale})
    return groups
