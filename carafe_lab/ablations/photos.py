"""The real photographs the image tasks (sr, inpaint) train and test on: the
images scikit-image ships, split once into training and held-out images so
that no task ever trains on a photograph it is scored on."""

import torch

TRAIN_IMAGES = (
    "chelsea",
    "rocket",
    "immunohistochemistry",
    "hubble_deep_field",
    "retina",
    "brick",
    "grass",
    "gravel",
    "coins",
    "moon",
)
TEST_IMAGES = ("astronaut", "coffee", "camera")


def load_images(names):
    """RGB float images in [0, 1], a list of (3, H, W) (grey ones repeated
    over the three channels)."""
    from skimage import data

    out = []
    for name in names:
        im = torch.from_numpy(getattr(data, name)().copy()).float() / 255.0
        if im.ndim == 2:
            im = im.unsqueeze(-1).expand(-1, -1, 3)
        out.append(im[..., :3].permute(2, 0, 1).contiguous())
    return out


def random_patches(images, n, size, gen):
    """n square patches (n, 3, size, size), each from an image of images (a
    list of (3, H, W)) chosen at random, at a random position; all draws from
    the torch.Generator gen."""
    out = []
    for _ in range(n):
        im = images[int(torch.randint(len(images), (1,), generator=gen))]
        _, H, W = im.shape
        y = int(torch.randint(H - size + 1, (1,), generator=gen))
        x = int(torch.randint(W - size + 1, (1,), generator=gen))
        out.append(im[:, y : y + size, x : x + size])
    return torch.stack(out)
