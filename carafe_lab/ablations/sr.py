"""The `sr` task: x2 / x4 super-resolution of real photographs (the images
scikit-image ships), which isolates the upsampler. A small fixed encoder
works at low resolution, the upsampler under test brings its features to high
resolution, a small head predicts the residual over bicubic upsampling.

Metrics follow the super-resolution convention: PSNR and SSIM on the Y
channel (ITU-R BT.601 luma, 16-235 of 255), a border of `scale` pixels
shaved, computed with ``skimage.metrics`` (SSIM with the Gaussian 11 x 11,
sigma 1.5 window of Wang et al. 2004); plain bicubic upsampling on the same
crops is reported for reference.

Geometry: the LR pixel i covers HR pixels [s*i, s*i + s) (antialiased
bicubic downscaling, align_corners=False), and CARAFE's output pixel p reads
the window centred on LR pixel p // s, which contains both bicubic taps
nearest p's sample point (p + 0.5) / s - 0.5: the two agree, no shift is
needed. A kernel that copies one fixed neighbour (seen in earlier runs) is
not an alignment artefact but a saturated softmax (see
``schedule.KERNEL_LR_SCALE``): the head's 3 x 3 convolutions can undo such a
shift, so nothing in the loss pulls the kernel back, and on this task a
sharp kernel costs no PSNR.
"""

import time

import torch
import torch.nn.functional as F
from torch import nn

from ..upsamplers import build_upsampler, needs_skip
from .photos import TEST_IMAGES, TRAIN_IMAGES, load_images, random_patches
from .schedule import param_groups, warmup_cosine
from .task import Task


def at_bicubic(row, tolerance_db=0.01):
    """How many of a row's seeds ended at plain bicubic (PSNR within
    tolerance): the head learned a zero residual and the upsampler then gets
    no gradient, a failure of training rather than of the upsampler."""
    return sum(abs(s["psnr"] - s["bicubic_psnr"]) < tolerance_db for s in row["seeds"])


def _psnr_label(results, metric):
    # results written before the Y-channel convention have no psnr_channel: RGB
    if metric == "psnr":
        return f"psnr ({results.get('psnr_channel', 'RGB')}, dB)"
    return metric


#: The wider border shave reported beside the convention's `scale` pixels: 8
#: HR pixels exclude every output pixel whose CARAFE window (k_up 5: 2 LR
#: pixels) or encoder and head receptive field reaches the zero padding, so a
#: kernel's border handling cannot decide a comparison.
WIDE_SHAVE = 8


def _wide_shave_cell(row):
    """Mean [95% CI] over the seeds of the PSNR with WIDE_SHAVE pixels shaved;
    None for results written before the metric existed."""
    from ..stats import mean_ci

    values = [s[f"psnr_shave{WIDE_SHAVE}"] for s in row["seeds"] if f"psnr_shave{WIDE_SHAVE}" in s]
    if len(values) != len(row["seeds"]) or not values:
        return None
    if len(values) == 1:
        return f"{values[0]:.3f}"
    mean, low, high = mean_ci(values)
    return f"{mean:.3f} [{low:.3f}, {high:.3f}]"


TASK = Task(
    name="sr",
    metrics=("psnr", "ssim"),
    axis={"psnr": "PSNR, dB ({channel} channel)", "ssim": "SSIM (Y channel)"},
    results_keys={"psnr_channel": "Y"},
    columns=(
        (f"psnr (Y, {WIDE_SHAVE} px shaved, dB) [95% CI]", _wide_shave_cell),
        ("seeds stuck at bicubic", lambda row: str(at_bicubic(row))),
    ),
    baseline_note=lambda row: f" (bicubic {row['seeds'][0]['bicubic_psnr']:.2f})",
    metric_label=_psnr_label,
    upsampler_channels=lambda setting: (SETTINGS[setting]["channels"],),
    # No encoder feature exists at the output resolution: the only
    # high-resolution signal is the bicubic upsampling of the input, which
    # holds nothing the low-resolution features lack, so feeding FADE or SAPA
    # a projection of it would test another operator than the papers'
    # (whose premise is high-resolution encoder detail).
    encoder_features=False,
)

SETTINGS = {
    # steps, batch, HR patch, features, eval crop (HR pixels)
    "default": dict(
        steps=600, batch=16, patch=48, channels=32, eval_crop=192, lr=1e-3, kernel_lr_scale=1.0
    ),
    "quick": dict(
        steps=60, batch=8, patch=48, channels=16, eval_crop=96, lr=1e-3, kernel_lr_scale=1.0
    ),
}
# kernel_lr_scale stays 1 here (unlike seg): on sr sharper kernels score
# higher, and the held-out PSNR of CARAFE fell with the slower kernel encoder
# (seed 0: 31.86 dB at 1, 31.71 at 0.3, 31.31 at 0.1; kernel entropy 1.04,
# 1.60, 2.39 nats), while its seeds' PSNR spread was already small.


def downscale(hr, s):
    return F.interpolate(
        hr, scale_factor=1 / s, mode="bicubic", antialias=True, align_corners=False
    )


class SRNet(nn.Module):
    """LR (N, 3, h, w) -> SR (N, 3, s*h, s*w) around the upsampler under test."""

    def __init__(self, upsampler: str, scale: int, channels: int, **options):
        super().__init__()
        if needs_skip(upsampler):
            raise ValueError(
                f"upsampler: {upsampler!r} needs an encoder feature at the output resolution, "
                "which sr does not have (its input is the low-resolution image alone); "
                "choose an upsampler that takes none"
            )
        self.scale = scale
        self.encoder = nn.Sequential(
            nn.Conv2d(3, channels, 3, padding=1),
            nn.LeakyReLU(0.1, inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.LeakyReLU(0.1, inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1),
        )
        self.upsampler = build_upsampler(upsampler, channels, scale, **options)
        self.head = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.LeakyReLU(0.1, inplace=True),
            nn.Conv2d(channels, 3, 3, padding=1),
        )
        # Start close to bicubic upsampling: training learns the residual. A
        # small (not zero) last layer, and leaky ReLUs: with zero weights, or
        # plain ReLUs, the L1 loss first drives the residual to zero by
        # killing the head's units (seen: 51% -> 3% active in 70 steps), and
        # short runs ended exactly at bicubic whatever the upsampler.
        with torch.no_grad():
            self.head[-1].weight.mul_(0.1)
            self.head[-1].bias.zero_()

    def forward(self, lr):
        base = F.interpolate(lr, scale_factor=self.scale, mode="bicubic", align_corners=False)
        return base + self.head(self.upsampler(self.encoder(lr)))


def luma(rgb):
    """ITU-R BT.601 luma in [16, 235] of RGB in [0, 1]: (..., 3, H, W) -> (..., H, W)
    numpy float64, the channel super-resolution results are reported on."""
    x = rgb.detach().clamp(0, 1).double().cpu().numpy()
    return 16.0 + (65.481 * x[..., 0, :, :] + 128.553 * x[..., 1, :, :] + 24.966 * x[..., 2, :, :])


def psnr(a, b, border):
    """PSNR (dB) of the Y channels of a, b (3, H, W) in [0, 1], border shaved."""
    from skimage.metrics import peak_signal_noise_ratio

    ya, yb = luma(a)[border:-border, border:-border], luma(b)[border:-border, border:-border]
    return float(peak_signal_noise_ratio(yb, ya, data_range=255))


def ssim(a, b, border):
    """SSIM of the Y channels (Wang et al. 2004: Gaussian window, sigma 1.5)."""
    from skimage.metrics import structural_similarity

    ya, yb = luma(a)[border:-border, border:-border], luma(b)[border:-border, border:-border]
    return float(
        structural_similarity(
            yb, ya, data_range=255, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
        )
    )


def train_model(
    upsampler,
    options,
    scale=2,
    seed=0,
    setting="default",
    device="cpu",
    steps=None,
    progress=None,
    **overrides,
):
    """Train an SRNet on random patches of the training photographs.
    Returns (model in eval mode, training seconds, the settings used).
    ``progress``: a callable wrapping the step range (e.g. tqdm), for notebooks."""
    cfg = dict(SETTINGS[setting])
    if steps is not None:
        cfg["steps"] = steps
    cfg.update(overrides)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    train = load_images(TRAIN_IMAGES)
    model = SRNet(upsampler, scale, cfg["channels"], **options).to(device)
    opt = torch.optim.Adam(param_groups(model, cfg["lr"], cfg["kernel_lr_scale"]), lr=cfg["lr"])
    sched = warmup_cosine(opt, cfg["steps"])
    patch = cfg["patch"] - cfg["patch"] % scale
    start = time.perf_counter()
    steps_iter = range(cfg["steps"])
    for _ in progress(steps_iter) if progress else steps_iter:
        hr = random_patches(train, cfg["batch"], patch, gen).to(device)
        loss = F.l1_loss(model(downscale(hr, scale)), hr)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return model.eval(), time.perf_counter() - start, cfg


def test_crops(scale, eval_crop):
    """The held-out evaluation crops: centred, at most eval_crop HR pixels a
    side, divisible by scale; a list of (3, c, c) tensors."""
    crops = []
    for im in load_images(TEST_IMAGES):
        _, H, W = im.shape
        c = min(eval_crop, H, W)
        c -= c % scale
        y0, x0 = (H - c) // 2, (W - c) // 2
        crops.append(im[:, y0 : y0 + c, x0 : x0 + c])
    return crops


def evaluate(model, scale, eval_crop, device="cpu"):
    """PSNR / SSIM (Y channel) of model and of plain bicubic on the held-out
    crops, with the convention's border of `scale` pixels shaved, and with
    WIDE_SHAVE pixels shaved (keys ending in ``_shave8``)."""
    wide = f"_shave{WIDE_SHAVE}"
    scores = {
        key: []
        for name in ("", "bicubic_")
        for key in (f"{name}psnr", f"{name}ssim", f"{name}psnr{wide}", f"{name}ssim{wide}")
    }
    with torch.no_grad():
        for crop in test_crops(scale, eval_crop):
            hr = crop.unsqueeze(0).to(device)
            lr = downscale(hr, scale)
            sr = model(lr).cpu()
            # plain bicubic on the same crops: the bar a learned upsampler must clear
            bicubic = F.interpolate(
                lr, scale_factor=scale, mode="bicubic", align_corners=False
            ).cpu()
            hr = hr.cpu()
            for name, out in (("", sr), ("bicubic_", bicubic)):
                for suffix, border in (("", scale), (wide, WIDE_SHAVE)):
                    scores[f"{name}psnr{suffix}"].append(psnr(out[0], hr[0], border))
                    scores[f"{name}ssim{suffix}"].append(ssim(out[0], hr[0], border))
    return {k: sum(v) / len(v) for k, v in scores.items()}


def run(
    upsampler, options, scale=2, seed=0, setting="default", device="cpu", steps=None, **overrides
):
    """Train on random patches of the training photographs, evaluate on the
    held-out ones. Returns {"psnr", "ssim", "bicubic_psnr", "bicubic_ssim",
    their "_shave8" twins, "train_seconds"}."""
    model, seconds, cfg = train_model(
        upsampler, options, scale, seed, setting, device, steps, **overrides
    )
    result = evaluate(model, scale, cfg["eval_crop"], device)
    result["train_seconds"] = seconds
    return result
