"""The inpaint task: its holes and held-out set, the train / test split, the
metrics inside the holes, the network with every upsampler of the zoo, a
training that learns, thread-count independence, the studies it runs in and
its published column."""

import json
import math

import pytest

pytest.importorskip("skimage", reason="the inpaint task needs scikit-image's photographs")
pytest.importorskip("matplotlib", reason="figures need matplotlib")

import torch

from carafe_lab.ablations import harness, inpaint, paper, photos, sr, tables
from carafe_lab.ablations.studies import STUDIES, STUDY_TASKS
from carafe_lab.environment import intra_op_threads
from carafe_lab.upsamplers import UPSAMPLERS


def test_holes_are_non_empty_binary_and_within_their_bounds():
    gen = torch.Generator().manual_seed(0)
    for size in (16, 48, 64):
        for kind in inpaint.HOLE_KINDS:
            for _ in range(40):
                mask = inpaint.hole_mask(size, gen, kind)
                assert mask.shape == (size, size) and mask.dtype == torch.float32
                assert set(mask.unique().tolist()) <= {0.0, 1.0}
                fraction = float(mask.mean())
                assert 0 < fraction < 0.5
                if kind == "rectangle":
                    rows, cols = mask.any(1).nonzero(), mask.any(0).nonzero()
                    h, w = len(rows), len(cols)
                    assert mask.sum() == h * w  # a filled rectangle
                    assert size // 4 <= h <= size // 2 and size // 4 <= w <= size // 2
    # either kind when none is asked for, both seen
    seen = {
        "rectangle" if _is_rectangle(inpaint.hole_mask(32, gen)) else "strokes" for _ in range(20)
    }
    assert seen == {"rectangle", "strokes"}


def _is_rectangle(mask):
    return int(mask.sum()) == int(mask.any(1).sum()) * int(mask.any(0).sum())


def test_holes_and_batches_are_determined_by_the_seed():
    images = [torch.rand(3, 80, 90), torch.rand(3, 70, 70)]

    def batch(seed):
        return inpaint.training_batch(images, 4, 32, torch.Generator().manual_seed(seed))

    (a, ma), (b, mb), (c, mc) = batch(3), batch(3), batch(4)
    assert a.shape == (4, 3, 32, 32) and ma.shape == (4, 1, 32, 32)
    assert torch.equal(a, b) and torch.equal(ma, mb)
    assert not (torch.equal(a, c) and torch.equal(ma, mc))


def test_held_out_set_is_fixed_balanced_and_has_no_flat_holes():
    images, masks, kinds = inpaint.held_out_set(48, 3)
    assert images.shape == (9, 3, 48, 48) and masks.shape == (9, 1, 48, 48)
    assert kinds == ("rectangle", "strokes", "rectangle") * 3  # alternating per photograph
    for im, m in zip(images, masks):
        assert m.sum() > 0 and im[:, m[0] > 0.5].std() >= inpaint.FLAT_STD
    again = inpaint.held_out_set.__wrapped__(48, 3)  # rebuilt, not the cached one
    assert torch.equal(again[0], images) and torch.equal(again[1], masks)
    with pytest.raises(ValueError, match="per_image: expected an integer >= 1"):
        inpaint.held_out_set(48, 0)


def test_training_and_held_out_photographs_are_disjoint():
    assert not set(photos.TRAIN_IMAGES) & set(photos.TEST_IMAGES)
    # the sr task's split, the one split of the photographs
    assert sr.TRAIN_IMAGES is photos.TRAIN_IMAGES and sr.TEST_IMAGES is photos.TEST_IMAGES
    train = photos.load_images(photos.TRAIN_IMAGES)
    for im in photos.load_images(photos.TEST_IMAGES):
        assert not any(t.shape == im.shape and torch.equal(t, im) for t in train)


def _square_hole(size=32, lo=8, hi=24):
    mask = torch.zeros(1, size, size)
    mask[:, lo:hi, lo:hi] = 1
    return mask


def test_metrics_inside_the_holes():
    torch.manual_seed(0)
    target = 0.2 + 0.6 * torch.rand(3, 32, 32)
    mask = _square_hole()
    fraction = float(mask.mean())  # 256 / 1024
    # a perfect prediction: infinite PSNR, SSIM 1
    assert inpaint.hole_psnr(target, target, mask) == math.inf
    assert inpaint.psnr(target, target) == math.inf
    assert inpaint.ssim(target, target) == pytest.approx(1.0)
    assert inpaint.hole_ssim(target, target, mask) == pytest.approx(1.0)
    # an error of 0.1 in the hole only: hole MSE 0.01 -> 20 dB; the whole
    # image's MSE is the hole fraction of it
    wrong = target + 0.1 * mask
    assert inpaint.hole_psnr(wrong, target, mask) == pytest.approx(20.0)
    assert inpaint.hole_psnr(wrong, target, mask[0]) == pytest.approx(20.0)  # (H, W) mask
    assert inpaint.psnr(wrong, target) == pytest.approx(20.0 + 10 * math.log10(1 / fraction))
    assert inpaint.hole_ssim(wrong, target, mask) < 1
    # an error outside the hole does not count inside it
    outside = target + 0.1 * (1 - mask)
    assert inpaint.hole_psnr(outside, target, mask) == math.inf


def test_scores_of_composites_keep_psnr_a_constant_above_hole_psnr():
    """Known pixels are exact in a composite, so per crop psnr - hole_psnr =
    10 log10(1 / hole fraction), whatever fills the holes: the reason the
    task's headline is hole PSNR and SSIM."""
    images, masks, kinds = inpaint.held_out_set(48, 2)
    filled = inpaint.mean_fill(images, masks)
    known = masks == 0
    assert torch.equal(
        filled.expand_as(images)[known.expand_as(images)], images[known.expand(-1, 3, -1, -1)]
    )
    means = inpaint.known_mean(images, masks)
    assert torch.allclose(filled * masks, means * masks)  # the known mean colour in the holes
    offset = sum(10 * math.log10(1 / float(m.mean())) for m in masks) / len(masks)
    for fill in (filled, inpaint.composite(torch.rand_like(images), images, masks)):
        s = inpaint.scores(fill, images, masks, kinds)
        assert s["psnr"] - s["hole_psnr"] == pytest.approx(offset)
        per_kind = [s["hole_psnr_rectangle"], s["hole_psnr_strokes"]]
        assert s["hole_psnr"] == pytest.approx(sum(per_kind) / 2)  # as many of each
        assert 0 < s["ssim"] < 1 and s["hole_ssim"] < s["ssim"]


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: inpaint.hole_mask(8, torch.Generator()), "size: expected an integer >= 16"),
        (lambda: inpaint.hole_mask(32, torch.Generator(), "circle"), "kind: expected one of"),
        (
            lambda: inpaint.hole_psnr(torch.rand(3, 8, 8), torch.rand(3, 8, 8), torch.zeros(8, 8)),
            "mask: expected at least one hole pixel",
        ),
        (
            lambda: inpaint.hole_psnr(torch.rand(3, 8, 8), torch.rand(3, 8, 8), torch.ones(4, 4)),
            r"mask: expected \(H, W\)",
        ),
        (lambda: inpaint.psnr(torch.rand(3, 8, 8), torch.rand(3, 8, 9)), "prediction, target"),
        (lambda: inpaint.settings("bogus", None, {}), "setting: expected one of"),
        (lambda: inpaint.settings("quick", None, {"width": 3}), r"overrides: \['width'\]"),
        (lambda: inpaint.settings("quick", None, {"size": 44}), "size: expected a multiple of 8"),
        (lambda: inpaint.run("nearest", {}, scale=4, setting="quick", steps=1), "scale"),
        (lambda: inpaint.InpaintNet("nearest", 8)(torch.rand(1, 3, 16, 16)), r"x: expected \(N, 4"),
        (lambda: inpaint.evaluate("bogus", {}), "evaluation: expected one of"),
    ],
)
def test_bad_input_is_named(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize("name", sorted(UPSAMPLERS))
def test_network_output_shape_with_every_upsampler(name):
    torch.manual_seed(0)
    net = inpaint.InpaintNet(name, 8)
    assert all(type(up) is UPSAMPLERS[name] for up in net.ups) and len(net.ups) == 3
    images, masks = torch.rand(2, 3, 32, 24), torch.zeros(2, 1, 32, 24)
    masks[:, :, 8:20, 4:12] = 1
    # one thread, as the task runs its network (on a loaded machine two
    # threads can wait on each other far longer than this takes)
    with intra_op_threads(inpaint.TRAIN_THREADS):
        out = net(inpaint.network_input(images, masks))
        assert out.shape == (2, 3, 32, 24)
        inpaint.hole_l1(out, images, masks).backward()
    assert all(p.grad is not None for p in net.ups.parameters())


def test_a_short_training_reduces_the_loss():
    images, masks = inpaint.training_batch(
        photos.load_images(photos.TRAIN_IMAGES), 8, 48, torch.Generator().manual_seed(7)
    )
    x = inpaint.network_input(images, masks)
    torch.manual_seed(0)  # the initial weights train_model starts from at seed 0
    before = inpaint.InpaintNet("carafe", inpaint.SETTINGS["quick"]["channels"])
    model, seconds, cfg = inpaint.train_model("carafe", {}, seed=0, setting="quick", steps=12)
    with torch.no_grad():
        loss_before = inpaint.hole_l1(before(x), images, masks)
        loss_after = inpaint.hole_l1(model(x), images, masks)
    assert loss_after < 0.5 * loss_before and seconds > 0 and cfg["steps"] == 12


def test_training_does_not_depend_on_the_callers_thread_count():
    before = torch.get_num_threads()
    states = []
    try:
        for threads in (2, 1):
            torch.set_num_threads(threads)
            model, _, _ = inpaint.train_model("dysample", {}, seed=1, setting="quick", steps=3)
            states.append(model.state_dict())
            assert torch.get_num_threads() == threads  # restored afterwards
    finally:
        torch.set_num_threads(before)
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


def test_registered_for_the_upsamplers_and_mechanism_studies():
    assert harness.TASKS["inpaint"] is inpaint and harness.task_of("inpaint") is inpaint.TASK
    assert "inpaint" in STUDY_TASKS["mechanism"] and "upsamplers" not in STUDY_TASKS
    assert inpaint.TASK.metrics == ("hole_psnr", "ssim") and inpaint.TASK.saves_models
    assert inpaint.TASK.upsampler_channels("default") == (24, 24, 24)


def test_mechanism_study_runs_on_inpaint(tmp_path):
    """CARAFE trains and saves its models; the phase-mean arm evaluates them
    (no training of its own), as :func:`inpaint.evaluate` does directly."""
    out = harness.run_study(
        "mechanism",
        "inpaint",
        quick=True,
        seeds=1,
        out_root=tmp_path,
        steps=2,
        log=lambda *_: None,
        variants=["carafe", "carafe_phase_mean"],
    )
    results = json.loads((out / "results.json").read_text())
    assert results["complete"] and results["published_source"] is None
    trained, swap = (r["seeds"][0] for r in results["rows"])
    assert swap["of"] == trained["work_dir"] and "train_seconds" not in swap
    for s in (trained, swap):
        assert 5 < s["hole_psnr"] < 60 and 0 < s["ssim"] <= 1 and s["psnr"] > s["hole_psnr"]
    again = inpaint.evaluate("phase_mean", trained, setting="quick")
    assert again["hole_psnr"] == swap["hole_psnr"]
    model, saved = inpaint.load_model(trained["work_dir"])
    assert saved["upsampler"] == "carafe" and saved["setting"] == "quick"
    with pytest.raises(FileNotFoundError, match="work_dir: no trained model"):
        inpaint.load_model(tmp_path)
    assert "published" not in (out / "table.md").read_text()


def test_upsamplers_study_on_inpaint_has_the_papers_inpainting_gain(tmp_path):
    out = harness.run_study(
        "upsamplers",
        "inpaint",
        quick=True,
        seeds=1,
        out_root=tmp_path,
        steps=1,
        log=lambda *_: None,
        variants=["nearest", "carafe"],
    )
    results = json.loads((out / "results.json").read_text())
    assert "CARAFE paper's abstract" in results["published_source"]
    table = (out / "table.md").read_text()
    rows = {line.split(" | ")[0]: line for line in table.splitlines() if line.startswith("| ")}
    assert rows["| carafe"].endswith("| +1.1 (gain) |") and rows["| nearest"].endswith("| - |")
    assert paper.column("inpaint").header in table and "hole psnr (RGB, dB)" in table
    assert "mean fill" in rows["| nearest"]
    assert (out / "figure.png").stat().st_size > 1000


def test_published_column_is_chosen_by_task():
    assert paper.has_column("upsamplers", "inpaint") and paper.has_column("upsamplers", "det")
    for task in ("sr", "seg"):
        assert not paper.has_column("upsamplers", task) and paper.source("upsamplers", task) is None
    assert not paper.has_column("mechanism", "inpaint")
    assert paper.paper_cell("upsamplers", "carafe", "inpaint") == "+1.1 (gain)"
    assert paper.paper_cell("upsamplers", "carafe", "det") == "38.6"
    assert paper.paper_cell("upsamplers", "nearest", "inpaint") == "-"
    assert paper.sources("upsamplers", "inpaint") == [
        paper.COLUMNS["inpaint"].numbers["upsamplers"]["carafe"][1]
    ]
    with pytest.raises(ValueError, match="task: published numbers exist for"):
        paper.column("sr")
    # a det table never shows the inpainting gain, nor an inpaint table the box AP
    det = tables.study_markdown(_fake("det", "bbox_mAP"))
    inp = tables.study_markdown(_fake("inpaint", "hole_psnr"))
    assert paper.column("det").header in det and "(gain)" not in det
    assert paper.column("inpaint").header in inp and "38.6" not in inp


def _fake(task, metric):
    second = harness.task_of(task).metrics[1]
    rows = [
        {
            "label": label,
            "upsampler": name,
            "options": options,
            "params_c256_s2": 1,
            "flops_per_pixel_c256_s2": 1,
            "seeds": [
                {"seed": i, metric: v, second: v, "mean_fill_hole_psnr": 17.0}
                for i, v in enumerate([0.3, 0.31])
            ],
        }
        for label, name, options in STUDIES["upsamplers"]
    ]
    return {
        "study": "upsamplers",
        "task": task,
        "setting": "default",
        "scale": 2,
        "seeds": 2,
        "rows": rows,
    }
