"""The `inpaint` task: filling holes in real photographs, the fourth task of
the CARAFE paper (its abstract reports +1.1 dB on inpainting), at a size a
CPU trains in minutes.

Data: square crops of the photographs scikit-image ships, split as the sr
task splits them (:mod:`carafe_lab.ablations.photos`: 10 photographs for
training, 3 held out; no photograph is in both). Each crop gets a hole drawn
from a torch.Generator (:func:`hole_mask`): a rectangle, or free-form brush
strokes (polylines of thick segments with round ends). Training crops and
holes are drawn from the run's seed at every step; the held-out set
(:func:`held_out_set`) is a fixed set of crops of the held-out photographs,
rectangles and strokes alternating, drawn from TEST_SEED: every variant and
seed is scored on the same pixels.

Model (:class:`InpaintNet`): the image with its hole filled with the crop's
mean known colour, and the mask, (N, 4, H, W) in; strided 3x3 convolutions
down to 1/8 and two dilated ones there (the receptive field must reach
across a hole); then three x2 steps with the upsampler under test (1/8 ->
1/4 -> 1/2 -> 1/1), each added to a lateral 1x1 projection of the encoder
feature at that resolution and followed by a 3x3 convolution; a 3x3 head
adds a residual to the input's RGB. Deep inside a hole the high-resolution
skip connections see only the fill colour, so what fills it comes up
through the upsamplers. Loss: L1 over the hole pixels. Evaluation
composites, as inpainting papers do: the known pixels kept, the network's
output (clamped to [0, 1]) in the holes.

Metrics (``skimage.metrics`` on RGB in [0, 1], per crop, then averaged over
the crops): PSNR inside the holes (``hole_psnr``) and over the whole image
(``psnr``); SSIM over the whole image (``ssim``; Gaussian window, sigma 1.5,
Wang et al. 2004) and its map averaged over the hole pixels (``hole_ssim``);
hole PSNR per hole kind; hole PSNR and SSIM of the holes filled with the
crop's mean known colour, for reference. The two headline metrics are
``hole_psnr`` and ``ssim``, not whole-image PSNR: in a composite the known
pixels are exact, so a crop's whole-image MSE is its hole fraction times its
hole MSE, and
``psnr = hole_psnr + 10 log10(1 / hole fraction)`` per crop. With every
variant scored on the same holes the two differ by a constant, and any
comparison of ``psnr`` is the comparison of ``hole_psnr``. SSIM (whole
image) sees structure and contrast that PSNR does not, and inpainting
papers commonly report it beside PSNR.
"""

import functools
import math
import time

import numpy as np
import torch
from torch import Tensor, nn

from ..environment import intra_op_threads
from ..upsamplers import build_upsampler, upsample
from .photos import TEST_IMAGES, TRAIN_IMAGES, load_images, random_patches
from .saved import build_saved, save_model
from .schedule import KERNEL_LR_SCALE, param_groups, warmup_cosine
from .task import Task


def _label(results, metric):
    return {"hole_psnr": "hole psnr (RGB, dB)"}.get(metric, metric)


TASK = Task(
    name="inpaint",
    metrics=("hole_psnr", "ssim"),
    axis={"hole_psnr": "PSNR in the holes, dB (RGB)", "ssim": "SSIM (whole image, RGB)"},
    saves_models=True,
    baseline_note=lambda row: f" (mean fill {row['seeds'][0]['mean_fill_hole_psnr']:.2f})",
    metric_label=_label,
    # three decoder steps at the setting's width
    upsampler_channels=lambda setting: (SETTINGS[setting]["channels"],) * 3,
)

SETTINGS = {
    # steps, batch, crop size (divisible by 8), features, lr, held-out crops
    # per held-out photograph
    "default": dict(
        steps=1500,
        batch=8,
        size=64,
        channels=24,
        lr=3e-3,
        kernel_lr_scale=KERNEL_LR_SCALE,
        test_crops=16,
    ),
    "quick": dict(
        steps=60,
        batch=4,
        size=48,
        channels=16,
        lr=3e-3,
        kernel_lr_scale=KERNEL_LR_SCALE,
        test_crops=4,
    ),
}
# lr: nearest, seed 0, 1000 steps: 1e-2 diverged; of 2e-3, 3e-3 and 5e-3,
# 3e-3 with the hole loss scored highest in the holes.
# kernel_lr_scale: CARAFE's kernel encoder at a tenth of the rate, as on seg
# (schedule.KERNEL_LR_SCALE): under Adam at the full rate its softmax can
# saturate, and whether it does was decided by float rounding; no inpaint
# measurement says this task wants sharper kernels (as sr's did).

HOLE_KINDS = ("rectangle", "strokes")
#: Seeds of the held-out set (crops and holes) and of the training crops the
#: phase-mean kernels are averaged over: the same for every variant and seed.
TEST_SEED = 2000
PHASE_MEAN_SEED = 1000
#: The least std of a held-out hole's pixels (see :func:`held_out_set`).
FLAT_STD = 0.02
#: Training crops the phase-mean kernels of the mechanism study average over.
PHASE_MEAN_IMAGES = 64
#: Intra-op threads of a training and its evaluation: torch's CPU kernels
#: split their sums by thread, so another count would take another path. One,
#: as a study with --jobs 2 on two cores runs them.
TRAIN_THREADS = 1


# --- holes ---------------------------------------------------------------------


def _uniform(gen, low, high):
    return low + (high - low) * float(torch.rand((), generator=gen, dtype=torch.float64))


def _randint(gen, low, high):
    """An integer in [low, high]."""
    return int(torch.randint(low, high + 1, (1,), generator=gen))


def _strokes(size, gen):
    """Free-form brush strokes: 1-3 polylines of 1-4 segments, each segment
    size/8 to size/4 long at a random angle, the brush size/12 to size/6
    wide (at least 2 px), drawn with round ends (every pixel centre within
    half the width of a segment)."""
    centres = torch.arange(size, dtype=torch.float64) + 0.5
    yy, xx = torch.meshgrid(centres, centres, indexing="ij")
    mask = torch.zeros(size, size, dtype=torch.bool)
    for _ in range(_randint(gen, 1, 3)):
        radius = max(_uniform(gen, size / 12, size / 6), 2.0) / 2
        y0, x0 = _uniform(gen, 0, size), _uniform(gen, 0, size)
        for _ in range(_randint(gen, 1, 4)):
            angle = _uniform(gen, 0, 2 * math.pi)
            length = _uniform(gen, size / 8, size / 4)
            y1 = min(max(y0 + length * math.sin(angle), 0.0), float(size))
            x1 = min(max(x0 + length * math.cos(angle), 0.0), float(size))
            # distance of every pixel centre to the segment (y0, x0)-(y1, x1)
            dy, dx = y1 - y0, x1 - x0
            t = ((yy - y0) * dy + (xx - x0) * dx) / max(dy * dy + dx * dx, 1e-12)
            t = t.clamp(0, 1)
            mask |= (yy - y0 - t * dy) ** 2 + (xx - x0 - t * dx) ** 2 <= radius**2
            y0, x0 = y1, x1
    return mask


def hole_mask(size, gen, kind=None):
    """One hole for a (size, size) crop: a float (size, size) tensor, 1 in the
    hole, 0 on the known pixels, never empty. kind: "rectangle" (sides size/4
    to size/2, anywhere inside the crop), "strokes" (see :func:`_strokes`), or
    None for either with equal odds. Every draw comes from the
    torch.Generator gen, so a seed gives the same holes on any machine."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 16:
        raise ValueError(f"size: expected an integer >= 16, got {size!r}")
    if kind is None:
        kind = HOLE_KINDS[_randint(gen, 0, len(HOLE_KINDS) - 1)]
    if kind not in HOLE_KINDS:
        raise ValueError(f"kind: expected one of {HOLE_KINDS} or None, got {kind!r}")
    if kind == "strokes":
        return _strokes(size, gen).float()
    h, w = _randint(gen, size // 4, size // 2), _randint(gen, size // 4, size // 2)
    y, x = _randint(gen, 0, size - h), _randint(gen, 0, size - w)
    mask = torch.zeros(size, size)
    mask[y : y + h, x : x + w] = 1
    return mask


def training_batch(images, n, size, gen):
    """n random crops of images (a list of (3, H, W)) with a random hole each:
    ((n, 3, size, size) in [0, 1], masks (n, 1, size, size), 1 in the holes)."""
    crops = random_patches(images, n, size, gen)
    masks = torch.stack([hole_mask(size, gen) for _ in range(n)]).unsqueeze(1)
    return crops, masks


@functools.cache
def held_out_set(size, per_image):
    """The held-out set: per_image crops of each held-out photograph at
    random positions, each with a hole, rectangles and strokes alternating,
    all drawn from TEST_SEED. A draw whose hole covers nearly constant pixels
    (their std below FLAT_STD: the sky of `camera`, a saturated highlight) is
    drawn again: any fill that reaches that colour scores an infinite or
    near-infinite PSNR there, which would decide the mean over the crops on
    its own while saying nothing about upsampling. Returns (images (N, 3,
    size, size), masks (N, 1, size, size), kinds: N hole kinds), N = 3 *
    per_image. Cached: callers must not modify the tensors."""
    if isinstance(per_image, bool) or not isinstance(per_image, int) or per_image < 1:
        raise ValueError(f"per_image: expected an integer >= 1, got {per_image!r}")
    # one thread: the std that accepts a hole is a sum, and its rounding
    # must not depend on the caller's thread count
    with intra_op_threads(TRAIN_THREADS):
        return _held_out_set(size, per_image)


def _held_out_set(size, per_image):
    gen = torch.Generator().manual_seed(TEST_SEED)
    crops, masks, kinds = [], [], []
    for im in load_images(TEST_IMAGES):
        _, H, W = im.shape
        kept = 0
        for _ in range(100 * per_image):  # far more than needed: a guard, not a budget
            if kept == per_image:
                break
            y, x = _randint(gen, 0, H - size), _randint(gen, 0, W - size)
            crop = im[:, y : y + size, x : x + size]
            kind = HOLE_KINDS[kept % len(HOLE_KINDS)]
            mask = hole_mask(size, gen, kind)
            if crop[:, mask > 0.5].std() >= FLAT_STD:
                crops.append(crop)
                masks.append(mask)
                kinds.append(kind)
                kept += 1
        if kept < per_image:
            raise RuntimeError(f"held_out_set: found {kept} of {per_image} non-flat holes")
    return torch.stack(crops), torch.stack(masks).unsqueeze(1), tuple(kinds)


@functools.cache
def phase_mean_set(size, n=PHASE_MEAN_IMAGES):
    """Training crops with holes from PHASE_MEAN_SEED, the network inputs
    (n, 4, size, size) that the mechanism study's phase-mean kernels average
    over. Cached: callers must not modify the tensor."""
    gen = torch.Generator().manual_seed(PHASE_MEAN_SEED)
    with intra_op_threads(TRAIN_THREADS):  # the fill colour is a sum
        return network_input(*training_batch(load_images(TRAIN_IMAGES), n, size, gen))


# --- the network -------------------------------------------------------------------


def known_mean(images, masks):
    """Each image's mean colour over its known pixels (masks = 0), (N, 3, 1, 1);
    images (N, 3, H, W), masks (N, 1, H, W)."""
    known = 1 - masks
    return (images * known).sum((2, 3), keepdim=True) / known.sum((2, 3), keepdim=True)


def network_input(images, masks):
    """(N, 4, H, W): the images (N, 3, H, W) with their holes filled with
    their known pixels' mean colour, and the masks (N, 1, H, W), 1 in the
    holes."""
    filled = images * (1 - masks) + known_mean(images, masks) * masks
    return torch.cat([filled, masks], dim=1)


def composite(prediction, images, masks):
    """(N, 3, H, W): the known pixels of images, prediction (clamped to
    [0, 1]) in the holes (masks (N, 1, H, W) = 1)."""
    return masks * prediction.clamp(0, 1) + (1 - masks) * images


def _conv(cin, cout, stride=1, dilation=1):
    # no normalisation layer: batch statistics would mix the holes' fill
    # into the known pixels' features
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride, dilation, dilation), nn.LeakyReLU(0.1, inplace=True)
    )


class InpaintNet(nn.Module):
    """(N, 4, H, W) masked image and mask (:func:`network_input`) -> (N, 3,
    H, W) image, H and W divisible by 8; the upsampler under test at each of
    the decoder's three x2 steps (see the module docstring)."""

    def __init__(self, upsampler: str, channels: int, **options):
        super().__init__()
        c = channels
        self.enc0 = _conv(4, c)  # 1/1
        self.enc1 = nn.Sequential(_conv(c, c, 2), _conv(c, c))  # 1/2
        self.enc2 = nn.Sequential(_conv(c, 2 * c, 2), _conv(2 * c, 2 * c))  # 1/4
        self.enc3 = nn.Sequential(  # 1/8
            _conv(2 * c, 2 * c, 2), _conv(2 * c, 2 * c, dilation=2), _conv(2 * c, 2 * c, dilation=4)
        )
        self.reduce = nn.Conv2d(2 * c, c, 1)
        self.laterals = nn.ModuleList(
            [nn.Conv2d(2 * c, c, 1), nn.Conv2d(c, c, 1), nn.Conv2d(c, c, 1)]
        )
        self.ups = nn.ModuleList([build_upsampler(upsampler, c, 2, **options) for _ in range(3)])
        self.smooth = nn.ModuleList([_conv(c, c) for _ in range(3)])
        self.head = nn.Conv2d(c, 3, 3, padding=1)
        # He initialisation of the network's own convolutions (those inside
        # the upsamplers keep their own): with no normalisation layers,
        # torch's default initialisation shrinks the signal at every layer.
        for name, m in self.named_modules():
            if isinstance(m, nn.Conv2d) and not name.startswith("ups."):
                nn.init.kaiming_normal_(m.weight, a=0.1, nonlinearity="leaky_relu")
                nn.init.zeros_(m.bias)
        # The output is the input's mean-colour fill plus a residual the
        # network learns, as sr learns one over bicubic; its last layer starts
        # at a tenth of He's scale, small but not zero (zero would leave the
        # decoder without gradient until the head has grown; a hundredth
        # trained no better: nearest, seed 0, 1500 steps: 20.70 dB against
        # 21.01 in the holes).
        with torch.no_grad():
            self.head.weight.mul_(0.1)
            self.head.bias.zero_()

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1] != 4 or x.shape[-1] % 8 or x.shape[-2] % 8:
            raise ValueError(
                "x: expected (N, 4, H, W) (masked image and mask) with H and W divisible "
                f"by 8, got {tuple(x.shape)}"
            )
        f0 = self.enc0(x)
        f1 = self.enc1(f0)
        f2 = self.enc2(f1)
        p = self.reduce(self.enc3(f2))
        for i, skip in enumerate((f2, f1, f0)):
            # the lateral projection is the encoder feature at the output
            # resolution, for upsamplers that take one (FADE, SAPA)
            lateral = self.laterals[i](skip)
            p = self.smooth[i](lateral + upsample(self.ups[i], p, lateral))
        return x[:, :3] + self.head(p)


def hole_l1(prediction, images, masks):
    """The training loss: |prediction - images| (N, 3, H, W) averaged over
    the hole pixels (masks (N, 1, H, W) = 1) and channels of the batch. The
    known pixels do not count: the composite keeps them whatever the
    network says there. With them in the loss, weighted 1 against the holes'
    6, training did worse (nearest, seed 0, 1000 steps, on an earlier
    held-out set: 22.26 dB in the holes, at the mean fill's 22.34; 23.41
    with the holes alone)."""
    return ((prediction - images).abs() * masks).sum() / (3 * masks.sum())


def inpaint(model, images, masks, device="cpu", batch=16):
    """The composited inpainting (:func:`composite`) of images (N, 3, H, W)
    with holes masks (N, 1, H, W), without gradients, on the CPU."""
    out = []
    with torch.no_grad():
        for i in range(0, len(images), batch):
            x, m = images[i : i + batch].to(device), masks[i : i + batch].to(device)
            out.append(composite(model(network_input(x, m)), x, m).cpu())
    return torch.cat(out)


# --- metrics -----------------------------------------------------------------------


def _check_pair(prediction, target, mask=None):
    if prediction.ndim != 3 or prediction.shape[0] != 3 or prediction.shape != target.shape:
        raise ValueError(
            "prediction, target: expected two (3, H, W) images of the same shape, got "
            f"{tuple(prediction.shape)} and {tuple(target.shape)}"
        )
    if mask is None:
        return None
    if mask.shape[-2:] != target.shape[-2:] or mask.numel() != target[0].numel():
        raise ValueError(
            f"mask: expected (H, W) or (1, H, W) = {tuple(target.shape[-2:])}, "
            f"got {tuple(mask.shape)}"
        )
    holes = mask.reshape(target.shape[-2:]).cpu().numpy() > 0.5
    if not holes.any():
        raise ValueError("mask: expected at least one hole pixel (value 1), got none")
    return holes


def _numpy(image):
    return image.detach().double().cpu().numpy()


def _psnr(target, prediction):
    from skimage.metrics import peak_signal_noise_ratio

    with np.errstate(divide="ignore"):  # a perfect prediction: inf dB
        return float(peak_signal_noise_ratio(target, prediction, data_range=1.0))


def psnr(prediction, target):
    """PSNR (dB, data range 1) of prediction against target, (3, H, W) in
    [0, 1], over every pixel and channel."""
    _check_pair(prediction, target)
    return _psnr(_numpy(target), _numpy(prediction))


def hole_psnr(prediction, target, mask):
    """PSNR (dB, data range 1) over the hole pixels only (mask (H, W) or
    (1, H, W), 1 in the hole; all three channels) of prediction against
    target, (3, H, W) in [0, 1]."""
    holes = _check_pair(prediction, target, mask)
    return _psnr(_numpy(target)[:, holes], _numpy(prediction)[:, holes])


def _ssim(prediction, target):
    """(SSIM as skimage averages it, the SSIM map (H, W) averaged over channels)."""
    from skimage.metrics import structural_similarity

    mean, full = structural_similarity(
        _numpy(target),
        _numpy(prediction),
        channel_axis=0,
        data_range=1.0,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        full=True,
    )
    return float(mean), full.mean(axis=0)


def ssim(prediction, target):
    """SSIM of prediction against target, (3, H, W) in [0, 1] (Wang et al.
    2004: Gaussian window, sigma 1.5; the channels' mean)."""
    _check_pair(prediction, target)
    return _ssim(prediction, target)[0]


def hole_ssim(prediction, target, mask):
    """The SSIM map of prediction against target ((3, H, W) in [0, 1])
    averaged over the hole pixels (mask (H, W) or (1, H, W), 1 in the hole);
    near the border the map's windows are skimage's reflected ones."""
    holes = _check_pair(prediction, target, mask)
    return float(_ssim(prediction, target)[1][holes].mean())


def mean_fill(images, masks):
    """The reference inpainting: each crop's holes filled with the mean
    colour of its known pixels; images (N, 3, H, W), masks (N, 1, H, W)."""
    return network_input(images, masks)[:, :3]


def scores(filled, images, masks, kinds=None):
    """The task's metrics of inpaintings filled (N, 3, H, W) of images with
    holes masks (N, 1, H, W), each per crop then averaged over the crops:
    {"hole_psnr", "psnr", "ssim", "hole_ssim"}, and "hole_psnr_<kind>" per
    hole kind when kinds (N hole kinds) are given."""
    per = {"hole_psnr": [], "psnr": [], "ssim": [], "hole_ssim": []}
    for f, im, m in zip(filled, images, masks):
        per["hole_psnr"].append(hole_psnr(f, im, m))
        per["psnr"].append(psnr(f, im))
        mean, full = _ssim(f, im)
        per["ssim"].append(mean)
        per["hole_ssim"].append(float(full[m[0].numpy() > 0.5].mean()))
    out = {k: sum(v) / len(v) for k, v in per.items()}
    for kind in sorted(set(kinds or ())):
        values = [v for v, k in zip(per["hole_psnr"], kinds) if k == kind]
        out[f"hole_psnr_{kind}"] = sum(values) / len(values)
    return out


def evaluate_model(model, setting="default", device="cpu", **overrides):
    """The metrics of :func:`scores` of model on the setting's held-out set
    (:func:`held_out_set`), and "mean_fill_hole_psnr", "mean_fill_ssim" of the
    mean-colour fill on the same holes."""
    cfg = settings(setting, None, overrides)
    images, masks, kinds = held_out_set(cfg["size"], cfg["test_crops"])
    model.eval()
    with intra_op_threads(TRAIN_THREADS):
        result = scores(inpaint(model, images, masks, device), images, masks, kinds)
        reference = scores(mean_fill(images, masks), images, masks)
    result["mean_fill_hole_psnr"] = reference["hole_psnr"]
    result["mean_fill_ssim"] = reference["ssim"]
    return result


# --- training and the study's entry points -------------------------------------------


def settings(setting, steps, overrides):
    """The setting's values with steps and overrides applied; bad names and
    crop sizes are errors that name them."""
    if setting not in SETTINGS:
        raise ValueError(f"setting: expected one of {sorted(SETTINGS)}, got {setting!r}")
    unknown = sorted(set(overrides) - set(SETTINGS[setting]))
    if unknown:
        raise ValueError(
            f"overrides: {unknown} are not settings of the inpaint task; "
            f"expected some of {sorted(SETTINGS[setting])}"
        )
    cfg = {**SETTINGS[setting], **overrides}
    if steps is not None:
        cfg["steps"] = steps
    if cfg["size"] % 8 or cfg["size"] < 16:
        raise ValueError(f"size: expected a multiple of 8, at least 16, got {cfg['size']!r}")
    return cfg


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
    """Train an InpaintNet on random crops of the training photographs with
    random holes, with TRAIN_THREADS intra-op threads whatever the caller's
    setting. Returns (model in eval mode, training seconds, the settings
    used). ``progress``: a callable wrapping the step range (e.g. tqdm)."""
    cfg = settings(setting, steps, overrides)
    train = load_images(TRAIN_IMAGES)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = InpaintNet(upsampler, cfg["channels"], **options).to(device)
    opt = torch.optim.Adam(param_groups(model, cfg["lr"], cfg["kernel_lr_scale"]), lr=cfg["lr"])
    sched = warmup_cosine(opt, cfg["steps"])
    start = time.perf_counter()
    model.train()
    steps_iter = range(cfg["steps"])
    with intra_op_threads(TRAIN_THREADS):
        for _ in progress(steps_iter) if progress else steps_iter:
            images, masks = training_batch(train, cfg["batch"], cfg["size"], gen)
            images, masks = images.to(device), masks.to(device)
            prediction = model(network_input(images, masks))
            loss = hole_l1(prediction, images, masks)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    return model.eval(), time.perf_counter() - start, cfg


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
    """Train on the training photographs, evaluate on the held-out ones.
    Returns the metrics of :func:`evaluate_model`, "train_seconds" and
    "threads". scale is the upsampler's step and must be 2 (the decoder goes
    up in x2 steps). With work_dir, the trained model is saved there (for
    :func:`evaluate`) and the result names it."""
    if scale != 2:
        raise ValueError(f"scale: the inpaint task's decoder upsamples in x2 steps; got {scale}")
    model, seconds, _ = train_model(upsampler, options, seed, setting, device, steps, **overrides)
    result = evaluate_model(model, setting, device, **overrides)
    result["train_seconds"] = seconds
    result["threads"] = TRAIN_THREADS
    if work_dir is not None:
        result["work_dir"] = save_model(work_dir, model, upsampler, options, setting, overrides)
    return result


def load_model(work_dir, device="cpu"):
    """The InpaintNet saved by :func:`run` in work_dir, in eval mode, and
    what it was trained with ({"upsampler", "options", "setting", "overrides"})."""

    def build(saved):
        cfg = settings(saved["setting"], None, saved["overrides"])
        return InpaintNet(saved["upsampler"], cfg["channels"], **saved["options"])

    return build_saved(work_dir, build, device)


#: The evaluations of a trained model that :func:`evaluate` knows.
EVALUATIONS = ("phase_mean",)


def evaluate(evaluation, trained, setting="default", device="cpu", **overrides):
    """An evaluation of a trained model (the result :func:`run` returned
    with a work_dir): "phase_mean" evaluates it with each CARAFE upsampler's
    kernels replaced by its own phase-mean kernels (the mean over
    PHASE_MEAN_IMAGES training crops, per sub-pixel phase;
    :mod:`carafe_lab.mechanism`). Returns the metrics of
    :func:`evaluate_model` and "of" (the trained model's folder)."""
    if evaluation not in EVALUATIONS:
        raise ValueError(f"evaluation: expected one of {EVALUATIONS}, got {evaluation!r}")
    model, saved = load_model(trained["work_dir"], device)
    result = phase_mean_metrics(model, saved["setting"], device, **saved["overrides"])
    result["of"] = trained["work_dir"]
    return result


def phase_mean_metrics(model, setting="default", device="cpu", **overrides):
    """:func:`evaluate_model`'s metrics of a trained InpaintNet with each
    CARAFE upsampler's kernels replaced by its own phase-mean kernels over
    :func:`phase_mean_set`."""
    from ..mechanism import carafe_modules, phase_means_of, swapped_kernels

    cfg = settings(setting, None, overrides)
    inputs = phase_mean_set(cfg["size"])
    with intra_op_threads(TRAIN_THREADS):
        means = phase_means_of(
            model, (inputs[i : i + 16].to(device) for i in range(0, len(inputs), 16))
        )
    with swapped_kernels(carafe_modules(model), means):
        return evaluate_model(model, setting, device, **overrides)
