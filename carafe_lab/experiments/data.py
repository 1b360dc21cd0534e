"""A small, deterministic COCO-format instance dataset for offline / CPU runs.

Objects of four shape classes (disk, square, triangle, star), from small to
large (so that upsampling quality matters), textured with crops of the
photographs scikit-image ships, pasted with random rotation and occlusion
onto a background. Backgrounds are either ``"texture"`` (crops of brick,
grass, gravel and photographs at full detail: hard, objects hide in them) or
``"smooth"`` (the same sources blurred to their low frequencies and tinted:
natural colour gradients, no clutter; what the detection proxy uses, so a
detector trained for minutes on a CPU learns the task). Each image gets
boxes and polygon masks of the visible parts, in the standard COCO layout::

    ROOT/annotations/instances_train.json, ROOT/annotations/instances_val.json
    ROOT/train/000000.png ..., ROOT/val/000000.png ...
    ROOT/meta.json            (the generator's parameters)

``ensure_offline_coco(root)`` writes it on first use and reuses it while the
parameters match.
"""

import json
import math
from pathlib import Path

import numpy as np

CLASSES = ("disk", "square", "triangle", "star")
GENERATOR_VERSION = 2
BACKGROUNDS = ("texture", "smooth")
#: The detection proxy's dataset (experiments/configs/_base_/offline_shapes.py
#: states the same values; a test checks they agree).
DEFAULT_PARAMS = dict(
    num_train=2000, num_val=200, size=128, max_objects=6, min_radius=6, background="smooth", seed=0
)

# Photographs and textures bundled with scikit-image (no download).
_OBJECT_SOURCES = (
    "astronaut",
    "chelsea",
    "coffee",
    "rocket",
    "immunohistochemistry",
    "hubble_deep_field",
    "retina",
    "colorwheel",
)
_BACKGROUND_SOURCES = ("brick", "grass", "gravel", "camera", "moon", "coins")


def load_sources():
    from skimage import data

    def rgb(name):
        im = getattr(data, name)()
        if im.ndim == 2:
            im = np.stack([im] * 3, axis=-1)
        return np.ascontiguousarray(im[..., :3]).astype(np.uint8)

    return [rgb(n) for n in _OBJECT_SOURCES], [rgb(n) for n in _BACKGROUND_SOURCES]


def _crop(rng, image, h, w):
    """A random h x w crop of image (resized up first if it is too small)."""
    import cv2

    H, W = image.shape[:2]
    if H < h or W < w:
        f = max(h / H, w / W) * 1.05
        image = cv2.resize(image, (int(W * f) + 1, int(H * f) + 1))
        H, W = image.shape[:2]
    y, x = rng.integers(0, H - h + 1), rng.integers(0, W - w + 1)
    return image[y : y + h, x : x + w]


def _shape_polygon(rng, cls, cx, cy, r):
    angle = rng.uniform(0, 2 * math.pi)
    if cls == "disk":
        a = r * rng.uniform(0.7, 1.0)
        b = r * rng.uniform(0.7, 1.0)
        t = np.linspace(0, 2 * math.pi, 48, endpoint=False)
        pts = np.stack([a * np.cos(t), b * np.sin(t)], 1)
    elif cls == "square":
        pts = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], float) * r * 0.75
    elif cls == "triangle":
        t = np.array([0, 2 * math.pi / 3, 4 * math.pi / 3]) - math.pi / 2
        pts = np.stack([np.cos(t), np.sin(t)], 1) * r
    else:  # star: five points
        t = np.arange(10) * math.pi / 5 - math.pi / 2
        rad = np.where(np.arange(10) % 2 == 0, r, r * 0.45)
        pts = np.stack([rad * np.cos(t), rad * np.sin(t)], 1)
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    return pts @ rot.T + np.array([cx, cy])


def _mask_polygons(mask):
    import cv2

    contours, _ = cv2.findContours(
        mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE
    )
    polys = [c.reshape(-1).astype(float).tolist() for c in contours if len(c) >= 3]
    return polys


def make_image(
    rng, size, objects_src, backgrounds, max_objects, min_radius=4, background="texture"
):
    """One image (size, size, 3) uint8 RGB, its objects' visible masks (each
    (size, size) uint8, occlusion resolved) and their class indices."""
    import cv2

    if background not in BACKGROUNDS:
        raise ValueError(f"background: expected one of {BACKGROUNDS}, got {background!r}")
    bg = _crop(rng, backgrounds[rng.integers(len(backgrounds))], size, size).astype(np.float32)
    if background == "smooth":
        # Low frequencies only: a Gaussian of a quarter of the image side.
        bg = cv2.GaussianBlur(bg, (0, 0), size / 4)
    tint = rng.uniform(0.6, 1.2, size=3).astype(np.float32)
    image = np.clip(bg * tint, 0, 255)
    masks, labels = [], []
    for _ in range(int(rng.integers(2, max_objects + 1))):
        cls = int(rng.integers(len(CLASSES)))
        # log-uniform radius: min_radius (4 px: COCO "small") to size/3 ("large")
        r = float(np.exp(rng.uniform(math.log(min_radius), math.log(size / 3))))
        cx, cy = rng.uniform(0, size), rng.uniform(0, size)
        poly = _shape_polygon(rng, CLASSES[cls], cx, cy, r)
        mask = np.zeros((size, size), np.uint8)
        cv2.fillPoly(mask, [np.round(poly).astype(np.int32)], 1)
        if mask.sum() < 12:
            continue
        texture = _crop(rng, objects_src[rng.integers(len(objects_src))], size, size)
        texture = texture.astype(np.float32) * rng.uniform(0.8, 1.3)
        m = mask.astype(bool)
        image[m] = np.clip(texture[m], 0, 255)
        for prev in masks:  # the new object occludes the earlier ones
            prev[m] = 0
        masks.append(mask)
        labels.append(cls)
    return image.astype(np.uint8), masks, labels


def generate(
    root,
    num_train=64,
    num_val=16,
    size=256,
    max_objects=6,
    seed=0,
    min_radius=4,
    background="texture",
):
    """Write the dataset under root (see the module docstring); returns root."""
    import cv2

    root = Path(root)
    objects_src, backgrounds = load_sources()
    categories = [{"id": i + 1, "name": n, "supercategory": "shape"} for i, n in enumerate(CLASSES)]
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    for split, count, split_seed in (("train", num_train, seed), ("val", num_val, seed + 1)):
        rng = np.random.default_rng(split_seed)
        (root / split).mkdir(parents=True, exist_ok=True)
        images, annotations = [], []
        for idx in range(count):
            image, masks, labels = make_image(
                rng, size, objects_src, backgrounds, max_objects, min_radius, background
            )
            name = f"{idx:06d}.png"
            cv2.imwrite(str(root / split / name), image[..., ::-1])  # RGB -> BGR for cv2
            images.append({"id": idx + 1, "file_name": name, "height": size, "width": size})
            for mask, label in zip(masks, labels):
                area = int(mask.sum())
                polys = _mask_polygons(mask)
                if area < 8 or not polys:
                    continue  # almost fully occluded
                ys, xs = np.nonzero(mask)
                x0, y0 = int(xs.min()), int(ys.min())
                bbox = [x0, y0, int(xs.max()) - x0 + 1, int(ys.max()) - y0 + 1]
                annotations.append(
                    {
                        "id": len(annotations) + 1,
                        "image_id": idx + 1,
                        "category_id": label + 1,
                        "bbox": bbox,
                        "area": area,
                        "segmentation": polys,
                        "iscrowd": 0,
                    }
                )
        coco = {
            "images": images,
            "annotations": annotations,
            "categories": categories,
            "info": {"description": "carafe offline shapes dataset"},
        }
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(coco))
    return root


def ensure_offline_coco(root=None, **params):
    """The dataset at root (default: data/offline_coco under the lab root,
    carafe_lab.paths), generated now unless one with the same parameters
    is already there (parameters default to DEFAULT_PARAMS). Returns the root
    as a Path. A non-empty folder this generator did not write (no meta.json)
    is never written into."""
    import fcntl

    from .. import paths

    root = Path(root) if root is not None else paths.offline_data()
    unknown = set(params) - set(DEFAULT_PARAMS)
    if unknown:
        raise ValueError(
            f"offline dataset: unknown parameter(s) {sorted(unknown)}; "
            f"expected some of {sorted(DEFAULT_PARAMS)}"
        )
    wanted = {"version": GENERATOR_VERSION, **DEFAULT_PARAMS, **params}
    meta = root / "meta.json"
    if (
        root.is_dir()
        and any(root.iterdir())
        and not meta.exists()
        and not (root / ".lock").exists()
    ):
        raise ValueError(
            f"offline dataset: {root} holds files this generator did not write "
            "(no meta.json); refusing to write into it. Point the config's "
            "data_root (and offline_data.root) at an empty or generated folder."
        )
    root.mkdir(parents=True, exist_ok=True)
    # Processes of a distributed run start together: one writes, the others
    # wait on the lock and then find it written.
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if meta.exists() and json.loads(meta.read_text()) == wanted:
            return root
        if meta.exists():
            meta.unlink()
        generate(root, **{k: v for k, v in wanted.items() if k != "version"})
        meta.write_text(json.dumps(wanted, indent=2))
    return root
