"""The `sr` task: x2 / x4 super-resolution of real photographs (the images
scikit-image ships), which isolates the upsampler. A small fixed encoder
works at low resolution, the upsampler under test brings its features to high
resolution, a small head predicts the residual over bicubic upsampling.
PSNR (RGB) and SSIM (luminance) on held-out photographs, and those of plain
bicubic upsampling on the same crops for reference.
"""

import time

import torch
import torch.nn.functional as F
from torch import nn

from ..upsamplers import build_upsampler
from .schedule import warmup_cosine

TRAIN_IMAGES = ("chelsea", "rocket", "immunohistochemistry", "hubble_deep_field", "retina",
                "brick", "grass", "gravel", "coins", "moon")
TEST_IMAGES = ("astronaut", "coffee", "camera")

SETTINGS = {
    # steps, batch, HR patch, features, eval crop (HR pixels)
    "default": dict(steps=600, batch=16, patch=48, channels=32, eval_crop=192, lr=1e-3),
    "quick": dict(steps=60, batch=8, patch=48, channels=16, eval_crop=96, lr=1e-3),
}


def load_images(names):
    """RGB float images in [0, 1], (3, H, W)."""
    from skimage import data
    out = []
    for name in names:
        im = torch.from_numpy(getattr(data, name)().copy()).float() / 255.0
        if im.ndim == 2:
            im = im.unsqueeze(-1).expand(-1, -1, 3)
        out.append(im[..., :3].permute(2, 0, 1).contiguous())
    return out


def downscale(hr, s):
    return F.interpolate(hr, scale_factor=1 / s, mode="bicubic", antialias=True,
                         align_corners=False)


class SRNet(nn.Module):
    """LR (N, 3, h, w) -> SR (N, 3, s*h, s*w) around the upsampler under test."""

    def __init__(self, upsampler: str, scale: int, channels: int, **options):
        super().__init__()
        self.scale = scale
        self.encoder = nn.Sequential(
            nn.Conv2d(3, channels, 3, padding=1), nn.LeakyReLU(0.1, inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1), nn.LeakyReLU(0.1, inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1))
        self.upsampler = build_upsampler(upsampler, channels, scale, **options)
        self.head = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1), nn.LeakyReLU(0.1, inplace=True),
            nn.Conv2d(channels, 3, 3, padding=1))
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


def psnr(a, b, border):
    a, b = a[..., border:-border, border:-border], b[..., border:-border, border:-border]
    mse = F.mse_loss(a.clamp(0, 1), b).item()
    return 10 * torch.log10(torch.tensor(1.0 / max(mse, 1e-12))).item()


def ssim(a, b, border):
    """Mean SSIM of the luminance (Wang et al. 2004: 11x11 Gaussian, sigma 1.5)."""
    weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    x = (a.clamp(0, 1) * weights).sum(1, keepdim=True)[..., border:-border, border:-border]
    y = (b * weights).sum(1, keepdim=True)[..., border:-border, border:-border]
    g = torch.exp(-((torch.arange(11) - 5.0) ** 2) / (2 * 1.5 ** 2))
    window = (g[:, None] * g[None, :] / g.sum() ** 2).view(1, 1, 11, 11)
    mu_x, mu_y = F.conv2d(x, window), F.conv2d(y, window)
    sxx = F.conv2d(x * x, window) - mu_x ** 2
    syy = F.conv2d(y * y, window) - mu_y ** 2
    sxy = F.conv2d(x * y, window) - mu_x * mu_y
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    value = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1) * (sxx + syy + c2))
    return value.mean().item()


def _random_patches(images, n, size, gen):
    out = []
    for _ in range(n):
        im = images[int(torch.randint(len(images), (1,), generator=gen))]
        _, H, W = im.shape
        y = int(torch.randint(H - size + 1, (1,), generator=gen))
        x = int(torch.randint(W - size + 1, (1,), generator=gen))
        out.append(im[:, y:y + size, x:x + size])
    return torch.stack(out)


def train_model(upsampler, options, scale=2, seed=0, setting="default", device="cpu",
                steps=None, **overrides):
    """Train an SRNet on random patches of the training photographs.
    Returns (model in eval mode, training seconds, the settings used)."""
    cfg = dict(SETTINGS[setting])
    if steps is not None:
        cfg["steps"] = steps
    cfg.update(overrides)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    train = load_images(TRAIN_IMAGES)
    model = SRNet(upsampler, scale, cfg["channels"], **options).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg["lr"])
    sched = warmup_cosine(opt, cfg["steps"])
    patch = cfg["patch"] - cfg["patch"] % scale
    start = time.perf_counter()
    for _ in range(cfg["steps"]):
        hr = _random_patches(train, cfg["batch"], patch, gen).to(device)
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
        crops.append(im[:, y0:y0 + c, x0:x0 + c])
    return crops


def evaluate(model, scale, eval_crop, device="cpu"):
    """PSNR / SSIM of model and of plain bicubic on the held-out crops."""
    scores = {"psnr": [], "ssim": [], "bicubic_psnr": [], "bicubic_ssim": []}
    with torch.no_grad():
        for crop in test_crops(scale, eval_crop):
            hr = crop.unsqueeze(0).to(device)
            lr = downscale(hr, scale)
            sr = model(lr).cpu()
            # plain bicubic on the same crops: the bar a learned upsampler must clear
            bicubic = F.interpolate(lr, scale_factor=scale, mode="bicubic",
                                    align_corners=False).cpu()
            hr = hr.cpu()
            scores["psnr"].append(psnr(sr, hr, scale))
            scores["ssim"].append(ssim(sr, hr, scale))
            scores["bicubic_psnr"].append(psnr(bicubic, hr, scale))
            scores["bicubic_ssim"].append(ssim(bicubic, hr, scale))
    return {k: sum(v) / len(v) for k, v in scores.items()}


def run(upsampler, options, scale=2, seed=0, setting="default", device="cpu", steps=None,
        **overrides):
    """Train on random patches of the training photographs, evaluate on the
    held-out ones. Returns {"psnr", "ssim", "bicubic_psnr", "bicubic_ssim",
    "train_seconds"}."""
    model, seconds, cfg = train_model(upsampler, options, scale, seed, setting, device, steps,
                                      **overrides)
    result = evaluate(model, scale, cfg["eval_crop"], device)
    result["train_seconds"] = seconds
    return result
