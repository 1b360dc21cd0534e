"""The `seg` task: semantic segmentation of the offline shapes dataset (the
generator of `carafe_lab.experiments.data`, drawn in memory: background + the four
shape classes, objects from 4 px up, textured with real photographs).

The network is a small FPN-style decoder, where upsampling matters: a
stride-8 encoder (strided 3x3 convolutions), then the upsampler under test
three times (1/8 -> 1/4 -> 1/2 -> 1/1), each time added to a lateral 1x1
projection of the encoder feature at that resolution, then a 1x1 classifier
at full resolution. Metrics on held-out images: mIoU over the five classes,
and the boundary F-score (Csurka et al. 2013: per class, boundary pixels of
prediction and ground truth matched within a 2 px tolerance, F averaged over
the classes present), where the quality of upsampling shows most.
"""

import functools
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..downsamplers import build_downsampler, split_options
from ..environment import intra_op_threads
from ..upsamplers import build_upsampler, upsample
from .saved import build_saved, save_model
from .schedule import KERNEL_LR_SCALE, param_groups, warmup_cosine
from .task import Task

TASK = Task(
    name="seg",
    metrics=("miou", "boundary_f"),
    axis={"miou": "mIoU (fraction)", "boundary_f": "boundary F-score (2 px)"},
    saves_models=True,
    # three decoder steps at the setting's width
    upsampler_channels=lambda setting: (SETTINGS[setting]["channels"],) * 3,
    # the encoder's three stride-2 steps (1/1 -> 1/2 -> 1/4 -> 1/8)
    downsampler_channels=lambda setting: tuple(
        m * SETTINGS[setting]["channels"] for m in DOWNSAMPLER_CHANNELS
    ),
)
#: The input channels of the encoder's stride-2 steps, in multiples of the width.
DOWNSAMPLER_CHANNELS = (1, 1, 2)

NUM_CLASSES = 5  # background + disk, square, triangle, star
SETTINGS = {
    # steps, batch, image size, features, train / val images, lr
    "default": dict(
        steps=500,
        batch=8,
        size=96,
        channels=24,
        num_train=256,
        num_val=32,
        lr=3e-3,
        kernel_lr_scale=KERNEL_LR_SCALE,
    ),
    "quick": dict(
        steps=60,
        batch=4,
        size=64,
        channels=16,
        num_train=32,
        num_val=8,
        lr=3e-3,
        kernel_lr_scale=KERNEL_LR_SCALE,
    ),
}
BOUNDARY_TOLERANCE = 2  # pixels


def make_split(num, size, seed):
    """(images (N, 3, size, size) float in [0, 1], labels (N, size, size) int64)
    drawn with the offline detection dataset's generator."""
    from ..experiments.data import load_sources, make_image

    rng = np.random.default_rng(seed)
    objects_src, backgrounds = load_sources()
    images = np.empty((num, size, size, 3), np.uint8)
    labels = np.zeros((num, size, size), np.int64)
    for i in range(num):
        image, masks, classes = make_image(rng, size, objects_src, backgrounds, max_objects=6)
        images[i] = image
        for mask, cls in zip(masks, classes):  # masks are already occlusion-resolved
            labels[i][mask.astype(bool)] = cls + 1
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    return x, torch.from_numpy(labels)


# Every variant and seed of a study trains on the same images: draw them once.
_cached_split = functools.lru_cache(maxsize=None)(make_split)


def _conv(cin, cout, stride=1):
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride, 1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


def _down(cin, cout, downsampler):
    """An encoder's stride-2 step: the strided 3x3 conv, or, with a
    downsampler (name, options), that downsampler (cin -> cin) followed by
    the same conv at stride 1."""
    if downsampler is None:
        return _conv(cin, cout, 2)
    name, options = downsampler
    return nn.Sequential(build_downsampler(name, cin, **options), _conv(cin, cout))


class SegNet(nn.Module):
    """(N, 3, H, W) -> logits (N, NUM_CLASSES, H, W); H, W divisible by 8.

    options: the upsampler's, except ``downsampler`` (a name in
    carafe_lab.downsamplers, or dict(name=..., **options)): each of the
    encoder's three stride-2 steps then becomes that downsampler followed
    by its conv at stride 1 (channels as DOWNSAMPLER_CHANNELS)."""

    def __init__(self, upsampler: str, channels: int, **options):
        super().__init__()
        c = channels
        options, down = split_options(options)
        # Encoder to 1/8: the shape classes need a receptive field of a whole
        # object; the work is at low resolution, where it is cheap.
        self.enc0 = _conv(3, c)  # 1/1
        self.enc1 = nn.Sequential(_down(c, c, down), _conv(c, c))  # 1/2
        self.enc2 = nn.Sequential(_down(c, 2 * c, down), _conv(2 * c, 2 * c))  # 1/4
        self.enc3 = nn.Sequential(
            _down(2 * c, 2 * c, down), _conv(2 * c, 2 * c), _conv(2 * c, 2 * c)
        )  # 1/8
        # FPN-style top-down path: reduce to c channels, then three x2 steps
        # with the upsampler under test, each added to a lateral projection.
        self.reduce = nn.Conv2d(2 * c, c, 1)
        self.laterals = nn.ModuleList(
            [nn.Conv2d(2 * c, c, 1), nn.Conv2d(c, c, 1), nn.Conv2d(c, c, 1)]
        )
        self.ups = nn.ModuleList([build_upsampler(upsampler, c, 2, **options) for _ in range(3)])
        self.smooth = nn.ModuleList([_conv(c, c), _conv(c, c)])
        self.classifier = nn.Sequential(nn.ReLU(inplace=True), nn.Conv2d(c, NUM_CLASSES, 1))

    def forward(self, x):
        f0 = self.enc0(x)
        f1 = self.enc1(f0)
        f2 = self.enc2(f1)
        p = self.reduce(self.enc3(f2))
        for i, skip in enumerate((f2, f1, f0)):
            # the lateral projection is the encoder feature at the output
            # resolution, for upsamplers that take one (FADE, SAPA)
            lateral = self.laterals[i](skip)
            p = lateral + upsample(self.ups[i], p, lateral)
            if i < 2:
                p = self.smooth[i](p)
        return self.classifier(p)


def confusion(pred, target, n=NUM_CLASSES):
    """(n, n) counts, rows = ground truth."""
    return torch.bincount(target.reshape(-1) * n + pred.reshape(-1), minlength=n * n).view(n, n)


def miou(conf):
    """Mean IoU over the classes present in the ground truth or the prediction."""
    conf = conf.double()
    inter = conf.diag()
    union = conf.sum(0) + conf.sum(1) - inter
    present = union > 0
    return (inter[present] / union[present]).mean().item()


def _boundary(mask):
    """Boundary pixels of a boolean (N, H, W) mask: inside, with a 4-neighbour
    outside (image borders do not count)."""
    m = mask.float().unsqueeze(1)
    eroded = -F.max_pool2d(-F.pad(m, (1, 1, 1, 1), mode="replicate"), 3, 1)
    return (m - eroded).squeeze(1) > 0


def _dilate(mask, radius):
    return F.max_pool2d(mask.float().unsqueeze(1), 2 * radius + 1, 1, radius).squeeze(1) > 0


def boundary_f(pred, target, tolerance=BOUNDARY_TOLERANCE, n=NUM_CLASSES):
    """Boundary F-score of label maps pred, target (N, H, W), averaged over the
    classes whose ground-truth or predicted boundary is non-empty."""
    scores = []
    for c in range(n):
        bp, bt = _boundary(pred == c), _boundary(target == c)
        n_p, n_t = int(bp.sum()), int(bt.sum())
        if n_p == 0 and n_t == 0:
            continue
        precision = float((bp & _dilate(bt, tolerance)).sum()) / n_p if n_p else 0.0
        recall = float((bt & _dilate(bp, tolerance)).sum()) / n_t if n_t else 0.0
        scores.append(
            0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
        )
    return sum(scores) / len(scores)


def train_model(
    upsampler,
    options,
    seed=0,
    setting="default",
    device="cpu",
    steps=None,
    progress=None,
    **overrides,
):
    """Train a SegNet on the generated training images. Returns (model in
    eval mode, training seconds, the settings used). ``progress``: a
    callable wrapping the step range (e.g. tqdm.auto.trange's iterable), for
    notebooks."""
    cfg = dict(SETTINGS[setting])
    if steps is not None:
        cfg["steps"] = steps
    cfg.update(overrides)
    # The data do not depend on the seed: seeds vary the model and batches only.
    train_x, train_y = _cached_split(cfg["num_train"], cfg["size"], 1000)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = SegNet(upsampler, cfg["channels"], **options).to(device)
    opt = torch.optim.AdamW(
        param_groups(model, cfg["lr"], cfg["kernel_lr_scale"]), lr=cfg["lr"], weight_decay=1e-4
    )
    sched = warmup_cosine(opt, cfg["steps"])
    start = time.perf_counter()
    model.train()
    steps_iter = range(cfg["steps"])
    with intra_op_threads(TRAIN_THREADS):
        _train_steps(
            model,
            opt,
            sched,
            train_x,
            train_y,
            gen,
            cfg,
            device,
            progress(steps_iter) if progress else steps_iter,
        )
    return model.eval(), time.perf_counter() - start, cfg


#: Intra-op threads of a training: torch's CPU convolutions split their sums
#: by thread, so the same seed trained with another thread count takes another
#: path (seed 0: mIoU 0.280 at 1 thread, 0.272 at 2). One thread, as the
#: studies run (one training per core), makes a notebook's model the study's.
TRAIN_THREADS = 1


def _train_steps(model, opt, sched, train_x, train_y, gen, cfg, device, steps):
    for _ in steps:
        idx = torch.randint(len(train_x), (cfg["batch"],), generator=gen)
        x, y = train_x[idx], train_y[idx]
        if torch.rand((), generator=gen) < 0.5:  # horizontal flip
            x, y = x.flip(-1), y.flip(-1)
        loss = F.cross_entropy(model(x.to(device)), y.to(device))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()


def validation_split(setting="default", **overrides):
    """The held-out images and labels of a setting: ((N, 3, S, S), (N, S, S))."""
    cfg = {**SETTINGS[setting], **overrides}
    return _cached_split(cfg["num_val"], cfg["size"], 2000)


def evaluate_model(model, val_x, val_y, device="cpu"):
    """mIoU, boundary F and pixel accuracy of model on (val_x, val_y)."""
    model.eval()
    preds = []
    with torch.no_grad():
        for i in range(0, len(val_x), 8):
            preds.append(model(val_x[i : i + 8].to(device)).argmax(1).cpu())
    pred = torch.cat(preds)
    return {
        "miou": miou(confusion(pred, val_y)),
        "boundary_f": boundary_f(pred, val_y),
        "pixel_acc": (pred == val_y).double().mean().item(),
    }


def run(
    upsampler,
    options,
    scale=2,
    seed=0,
    setting="default",
    device="cpu",
    steps=None,
    work_dir=None,
    **overrides,
):
    """Train on the generated training images, evaluate on held-out ones.
    Returns {"miou", "boundary_f", "pixel_acc", "train_seconds"} and, for
    CARAFE, the kernels' same-segment mass (see :func:`kernel_scores`).
    scale is the upsampler's step and must be 2 (the decoder goes up in x2
    steps). With work_dir, the trained model is saved there as model.pt
    (for :func:`evaluate`) and the result names it."""
    if scale != 2:
        raise ValueError(f"scale: the seg task's decoder upsamples in x2 steps; got {scale}")
    model, seconds, cfg = train_model(upsampler, options, seed, setting, device, steps, **overrides)
    val_x, val_y = validation_split(setting, **overrides)
    result = evaluate_model(model, val_x, val_y, device)
    result["train_seconds"] = seconds
    if upsampler == "carafe":
        reports = kernel_reports(model, val_x, val_y, device)
        for level, report in reports.items():
            result[f"same_segment_boundary_{level}"] = report["masses"]["carafe"]["boundary"]
        result["kernels"] = reports
    if work_dir is not None:
        result["work_dir"] = save_model(work_dir, model, upsampler, options, setting, overrides)
    return result


def load_model(work_dir, device="cpu"):
    """The SegNet saved by :func:`run` in work_dir, in eval mode, and what
    it was trained with ({"upsampler", "options", "setting", "overrides"})."""

    def build(saved):
        cfg = {**SETTINGS[saved["setting"]], **saved["overrides"]}
        return SegNet(saved["upsampler"], cfg["channels"], **saved["options"])

    return build_saved(work_dir, build, device)


#: The evaluations of a trained model that :func:`evaluate` knows.
EVALUATIONS = ("phase_mean",)


def evaluate(evaluation, trained, setting="default", device="cpu", **overrides):
    """An evaluation of a trained model (the result :func:`run` returned
    with a work_dir): "phase_mean" evaluates it with each CARAFE upsampler's
    kernels replaced by its own phase-mean kernels (the mean over the
    training images, per sub-pixel phase; :mod:`carafe_lab.mechanism`).
    Returns the metrics of :func:`evaluate_model` and "of" (the trained
    model's folder)."""
    if evaluation not in EVALUATIONS:
        raise ValueError(f"evaluation: expected one of {EVALUATIONS}, got {evaluation!r}")
    model, saved = load_model(trained["work_dir"], device)
    result = phase_mean_metrics(model, saved["setting"], device, **saved["overrides"])
    result["of"] = trained["work_dir"]
    return result


def phase_mean_metrics(model, setting="default", device="cpu", **overrides):
    """:func:`evaluate_model`'s metrics of a trained SegNet with each CARAFE
    upsampler's kernels replaced by its own phase-mean kernels, averaged over
    the setting's training images (:mod:`carafe_lab.mechanism`)."""
    from ..mechanism import carafe_modules, phase_means_of, swapped_kernels

    cfg = {**SETTINGS[setting], **overrides}
    train_x, _ = _cached_split(cfg["num_train"], cfg["size"], 1000)
    means = phase_means_of(
        model, (train_x[i : i + 8].to(device) for i in range(0, len(train_x), 8))
    )
    val_x, val_y = validation_split(setting, **overrides)
    with swapped_kernels(carafe_modules(model), means):
        return evaluate_model(model, val_x, val_y, device)


# --- the decoder's reassembly kernels ----------------------------------------

#: Output stride (image pixels per output pixel) of each decoder upsampler.
LEVEL_STRIDES = {"1/8->1/4": 4, "1/4->1/2": 2, "1/2->1/1": 1}


def decoder_kernels(model, x):
    """The CARAFE kernels of each decoder step for images x (N, 3, H, W):
    {level: (N, G, k, k, Ho, Wo)} with levels as in LEVEL_STRIDES."""
    from ..viz import reassembly_kernels

    inputs = {}
    hooks = [
        up.register_forward_pre_hook(lambda m, args, i=i: inputs.__setitem__(i, args[0]))
        for i, up in enumerate(model.ups)
    ]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    return {
        level: reassembly_kernels(model.ups[i], inputs[i]) for i, level in enumerate(LEVEL_STRIDES)
    }


def kernel_reports(model, images, labels, device="cpu", width=1, batch=8):
    """The decoder's kernels on images (N, 3, H, W) with ground-truth labels
    (N, H, W), scored against their content-agnostic controls at each
    decoder step: {level: :func:`carafe_lab.viz.kernel_report`} (the
    phase means and permutations are over all the images)."""
    from ..viz import kernel_report

    collected = {}
    model.eval()
    for i in range(0, len(images), batch):
        for level, kernels in decoder_kernels(model, images[i : i + batch].to(device)).items():
            collected.setdefault(level, []).append(kernels.cpu())
    return {
        level: kernel_report(torch.cat(parts), labels, 2, width)
        for level, parts in collected.items()
    }


def kernel_scores(model, images, labels, device="cpu", width=1, batch=8):
    """Same-segment mass (:func:`carafe_lab.viz.content_awareness`) of the CARAFE
    decoder's kernels on images (N, 3, H, W) with ground-truth labels
    (N, H, W), at each decoder step, beside its controls and the equivalent
    kernels of nearest and bilinear upsampling on the same grid:
    {level: {"carafe" | "phase_mean" | "permuted" | "uniform" | "gaussian" |
    "bilinear" | "nearest": {"boundary", "interior", "n_boundary",
    "n_interior"}}} (the "masses" of :func:`kernel_reports`)."""
    return {
        level: report["masses"]
        for level, report in kernel_reports(model, images, labels, device, width, batch).items()
    }
