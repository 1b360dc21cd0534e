"""The mmcv-lite route: carafe.mmcv_ext provides mmcv._ext (RoIAlign, nms,
CARAFE) where mmcv has no compiled ops.

Two kinds of tests, for the two installs:
- golden: where full mmcv is installed (its compiled mmcv._ext), mmcv's own
  Python wrappers are run once on its ops and once on ours (their
  ``ext_module`` swapped for carafe.mmcv_ext's, nothing installed as
  mmcv._ext), and the results compared: RoIAlign outputs and gradients, nms
  and batched_nms indices, and a few Faster R-CNN training steps;
- lite: where mmcv-lite is installed, mmdet imports, builds, trains and
  predicts with carafe.mmcv_ext as mmcv._ext.
Each skips, with the reason, on the other install.
"""

import importlib
import importlib.machinery
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from carafe import mmcv_ext

REPO = Path(__file__).resolve().parent.parent
FASTER_RCNN = REPO / "experiments" / "configs" / "faster-rcnn_r18_fpn-carafe_offline.py"
MASK_RCNN = REPO / "experiments" / "configs" / "mask-rcnn_r18_fpn-carafe_offline.py"


def _mmcv_kind():
    """'full' (mmcv with its compiled mmcv._ext), 'lite' (mmcv without one:
    mmcv-lite) or None; found without importing mmcv._ext, and by Python's
    own finder only (carafe.mmcv_ext's never answers it)."""
    spec = importlib.util.find_spec("mmcv")
    if spec is None:
        return None
    ext = importlib.machinery.PathFinder.find_spec("mmcv._ext", spec.submodule_search_locations)
    return "full" if ext is not None else "lite"


KIND = _mmcv_kind()
needs_full = pytest.mark.skipif(
    KIND != "full",
    reason=f"golden test: compares with mmcv's compiled ops, needs full mmcv (here: {KIND})",
)
needs_lite = pytest.mark.skipif(
    KIND != "lite", reason=f"needs mmcv-lite (mmcv without compiled ops; here: {KIND})"
)
needs_mmcv = pytest.mark.skipif(KIND is None, reason="needs mmcv or mmcv-lite")

SHIM = mmcv_ext.build_module("carafe_mmcv_ext_under_test")


def _ops_module(name):
    # mmcv.ops.<name> is shadowed by the function of that name in mmcv.ops
    mmcv_ext.install()  # a no-op with full mmcv; needed to import mmcv.ops on mmcv-lite
    return importlib.import_module(f"mmcv.ops.{name}")


@pytest.fixture
def run_on(monkeypatch):
    """run_on('mmcv' | 'ours'): mmcv.ops' RoIAlign, nms and CARAFE wrappers
    call that ext module from then on (this test only)."""

    def use(which):
        for name in ("roi_align", "nms", "carafe"):
            module = _ops_module(name)
            if which == "ours":
                monkeypatch.setattr(module, "ext_module", SHIM)
            else:
                monkeypatch.undo()
                assert not getattr(module.ext_module, mmcv_ext.MARKER, False)

    return use


# --- what exists -------------------------------------------------------------


def _load_ext_lookups():
    """{mmcv.ops module: names} from the load_ext calls in the installed mmcv's sources."""
    import ast

    root = Path(importlib.util.find_spec("mmcv").submodule_search_locations[0]) / "ops"
    found = {}
    for path in sorted(root.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "load_ext":
                assert ast.literal_eval(node.args[0]) == "_ext"
                found[path.stem] = tuple(ast.literal_eval(node.args[1]))
    return found


@needs_mmcv
def test_every_function_mmcv_ops_looks_up_exists():
    assert _load_ext_lookups() == mmcv_ext.MMCV_OPS_LOOKUPS
    for names in mmcv_ext.MMCV_OPS_LOOKUPS.values():
        for name in names:
            assert callable(getattr(SHIM, name))


def test_the_ops_not_provided_raise_naming_the_op_and_the_full_route():
    unsupported = mmcv_ext.unsupported_names()
    assert len(unsupported) == 103 and "roi_align_forward" not in unsupported
    for name in unsupported:
        with pytest.raises(NotImplementedError) as e:
            getattr(SHIM, name)(torch.zeros(1))
        assert f"mmcv._ext.{name} " in str(e.value) and "MMCV=full" in str(e.value)
    assert "MMCV=full" in mmcv_ext.FULL_MMCV_ROUTE


def test_importing_installs_nothing():
    code = (
        "import sys, carafe.mmcv_ext as m; "
        "assert not any(isinstance(f, m._Finder) for f in sys.meta_path); "
        "m.install(); m.install(); "
        "assert sum(isinstance(f, m._Finder) for f in sys.meta_path) == 1; "
        "assert sys.meta_path[-1].__class__ is m._Finder"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


@needs_full
def test_full_mmcv_is_never_replaced():
    code = (
        "import carafe.mmdet, carafe.mmcv_ext as m, mmcv.ops, mmcv._ext as e; "
        "assert m.route() == 'mmcv' and not m.active(), m.route(); "
        "assert e.__file__.endswith('.so'), e; "
        "assert mmcv.ops.get_compiler_version() != m.get_compiler_version()"
    )
    subprocess.run([sys.executable, "-W", "ignore", "-c", code], check=True, cwd=REPO)


# --- RoIAlign ----------------------------------------------------------------


def _roi_inputs(seed, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 3, 13, 17, generator=g, dtype=dtype)
    K = 48
    batch = torch.randint(0, 2, (K, 1), generator=g).to(dtype)
    # image coordinates at spatial_scale 0.5: the map covers [0, 34) x [0, 26)
    xy1 = torch.rand(K, 2, generator=g, dtype=dtype) * 50 - 12  # many partly outside
    wh = torch.rand(K, 2, generator=g, dtype=dtype) * 30
    rois = torch.cat([batch, xy1, xy1 + wh], 1)
    rois[0, 1:] = torch.tensor([3.0, 4.0, 3.0, 4.0])  # zero size
    rois[1, 1:] = torch.tensor([-40.0, -40.0, -20.0, -20.0])  # wholly outside
    rois[2, 1:] = torch.tensor([0.0, 0.0, 34.0, 26.0])  # the whole map
    rois[3, 1:] = torch.tensor([33.0, 25.0, 34.5, 26.5])  # across the last pixel
    return x, rois


def _roi_align_run(x, rois, output_size, sampling_ratio, pool_mode, aligned):
    from mmcv.ops import roi_align

    x = x.clone().requires_grad_()
    out = roi_align(x, rois, output_size, 0.5, sampling_ratio, pool_mode, aligned)
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=out.dtype)
    out.backward(g)
    return out.detach(), x.grad


@needs_full
@pytest.mark.parametrize("pool_mode", ["avg", "max"])
@pytest.mark.parametrize("sampling_ratio", [0, 2])
@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("seed", [0, 1])
def test_roi_align_matches_mmcv(run_on, seed, aligned, sampling_ratio, pool_mode):
    x, rois = _roi_inputs(seed)
    run_on("mmcv")
    want, want_grad = _roi_align_run(x, rois, (7, 5), sampling_ratio, pool_mode, aligned)
    run_on("ours")
    got, got_grad = _roi_align_run(x, rois, (7, 5), sampling_ratio, pool_mode, aligned)
    # sample for sample the same arithmetic, and (max mode) the gradient
    # summed in mmcv's order, as index_add_ adds on CPU: equal to the bit
    assert torch.equal(got, want)
    assert torch.equal(got_grad, want_grad)


@needs_full
@pytest.mark.parametrize("pool_mode", ["avg", "max"])
def test_roi_align_matches_mmcv_in_float64(run_on, pool_mode):
    x, rois = _roi_inputs(2, torch.float64)
    run_on("mmcv")
    want, want_grad = _roi_align_run(x, rois, 4, 0, pool_mode, True)
    run_on("ours")
    got, got_grad = _roi_align_run(x, rois, 4, 0, pool_mode, True)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(got_grad, want_grad, rtol=1e-12, atol=1e-12)


@needs_full
@pytest.mark.parametrize("pool_mode", ["avg", "max"])
def test_roi_align_without_rois(run_on, pool_mode):
    x, _ = _roi_inputs(0)
    rois = torch.zeros(0, 5)
    run_on("mmcv")
    want, want_grad = _roi_align_run(x, rois, 7, 0, pool_mode, True)
    run_on("ours")
    got, got_grad = _roi_align_run(x, rois, 7, 0, pool_mode, True)
    assert got.shape == want.shape == (0, 3, 7, 7)
    assert torch.equal(got_grad, want_grad) and not got_grad.any()


@needs_full
def test_roi_align_refuses_negative_sizes_in_aligned_mode_as_mmcv(run_on):
    from mmcv.ops import roi_align

    x, _ = _roi_inputs(0)
    rois = torch.tensor([[0.0, 10.0, 10.0, 4.0, 12.0]])
    for which in ("mmcv", "ours"):
        run_on(which)
        with pytest.raises(RuntimeError, match="non-negative size"):
            roi_align(x, rois, 7, 0.5, 0, "avg", True)
        roi_align(x, rois, 7, 0.5, 0, "avg", False)  # the legacy mode clamps it


# --- nms -----------------------------------------------------------------------


def _boxes(seed, n=60):
    """Boxes with repeated scores (ties), exact duplicates and nested boxes."""
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * 30
    wh = torch.rand(n, 2, generator=g) * 12 + 0.5
    boxes = torch.cat([xy, xy + wh], 1)
    boxes[n // 2 : n // 2 + 8] = boxes[:8]  # duplicates
    boxes[-4:] = boxes[8:12] + torch.tensor([0.2, 0.2, -0.2, -0.2])  # nested
    scores = torch.randint(0, 5, (n,), generator=g).float() / 4  # ties
    return boxes, scores


THRESHOLDS = [0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0]


@needs_full
@pytest.mark.parametrize("offset", [0, 1])
@pytest.mark.parametrize("iou_threshold", THRESHOLDS)
def test_nms_matches_mmcv(run_on, iou_threshold, offset):
    from mmcv.ops import nms

    for seed in range(25):
        boxes, scores = _boxes(seed)
        results = {}
        for which in ("mmcv", "ours"):
            run_on(which)
            results[which] = nms(boxes, scores, iou_threshold, offset=offset)
        (want_dets, want), (got_dets, got) = results["mmcv"], results["ours"]
        assert torch.equal(got, want), (seed, got, want)
        assert torch.equal(got_dets, want_dets)
        assert got.dtype == torch.long


@needs_full
def test_nms_score_threshold_max_num_numpy_and_empty(run_on):
    from mmcv.ops import nms

    boxes, scores = _boxes(3)
    cases = [
        dict(boxes=boxes, scores=scores, iou_threshold=0.5, score_threshold=0.3, max_num=5),
        dict(boxes=boxes.numpy(), scores=scores.numpy(), iou_threshold=0.5),
        dict(boxes=torch.zeros(0, 4), scores=torch.zeros(0), iou_threshold=0.5),
        dict(boxes=boxes[:1], scores=scores[:1], iou_threshold=0.5),
    ]
    for case in cases:
        results = {}
        for which in ("mmcv", "ours"):
            run_on(which)
            results[which] = nms(**case)
        for got, want in zip(results["ours"], results["mmcv"]):
            got, want = torch.as_tensor(got), torch.as_tensor(want)
            assert got.shape == want.shape and torch.equal(got, want)


@needs_full
@pytest.mark.parametrize("class_agnostic", [False, True])
@pytest.mark.parametrize("split_thr", [10000, 20])  # 20: mmcv's per-class loop
@pytest.mark.parametrize("iou_threshold", [0.0, 0.5, 1.0])
def test_batched_nms_matches_mmcv(run_on, iou_threshold, split_thr, class_agnostic):
    from mmcv.ops import batched_nms

    cfg = dict(type="nms", iou_threshold=iou_threshold, split_thr=split_thr)
    for seed in range(10):
        boxes, scores = _boxes(seed)
        idxs = torch.randint(0, 3, (len(boxes),), generator=torch.Generator().manual_seed(seed))
        results = {}
        for which in ("mmcv", "ours"):
            run_on(which)
            results[which] = batched_nms(boxes, scores, idxs, cfg, class_agnostic)
        (want_dets, want), (got_dets, got) = results["mmcv"], results["ours"]
        assert torch.equal(got, want) and torch.equal(got_dets, want_dets), seed
    for which in ("mmcv", "ours"):  # no boxes (mmcv's class offsets need some)
        run_on(which)
        empty = torch.zeros(0, 4), torch.zeros(0), torch.zeros(0)
        dets, keep = batched_nms(*empty, cfg, class_agnostic=True)
        assert dets.shape == (0, 5) and keep.shape == (0,)


def _iou_as_mmcv_computes(boxes, offset):
    """(N, N) IoUs in the float32 arithmetic of mmcv's CPU nms."""
    x1, y1, x2, y2 = boxes[:, None].unbind(-1)
    X1, Y1, X2, Y2 = boxes[None].unbind(-1)
    w = (torch.minimum(x2, X2) - torch.maximum(x1, X1) + offset).clamp_min(0)
    h = (torch.minimum(y2, Y2) - torch.maximum(y1, Y1) + offset).clamp_min(0)
    inter = w * h
    areas = (boxes[:, 2] - boxes[:, 0] + offset) * (boxes[:, 3] - boxes[:, 1] + offset)
    return inter / (areas[:, None] + areas[None] - inter)


@needs_full
@pytest.mark.parametrize("offset", [0, 1])
def test_nms_matches_mmcv_with_the_threshold_at_an_iou(offset):
    """The threshold equal to a pair's IoU to the last bit: mmcv keeps both
    (IoU > threshold is false), and so must we, however else a width might
    round (with offset 1, x2 + 1 - x1 instead of mmcv's x2 - x1 + 1 flips
    about one in 1,400 of these; hence 10,000)."""
    mmcv_nms = _ops_module("nms").ext_module.nms
    assert not getattr(_ops_module("nms").ext_module, mmcv_ext.MARKER, False)
    g = torch.Generator().manual_seed(offset)
    checked = 0
    for _ in range(2000):
        xy = torch.rand(1, 2, generator=g) * 800  # image coordinates: rounding matters
        boxes = torch.cat([xy, xy + torch.rand(1, 2, generator=g) * 60 + 1], 1)
        near = boxes[:1, :2] + torch.rand(5, 2, generator=g) * 20
        size = torch.rand(5, 2, generator=g) * 60 + 1
        boxes = torch.cat([boxes, torch.cat([near, near + size], 1)])
        scores = torch.rand(len(boxes), generator=g)
        for iou in _iou_as_mmcv_computes(boxes, offset)[0, 1:].tolist():
            want = mmcv_nms(boxes, scores, iou_threshold=iou, offset=offset)
            got = SHIM.nms(boxes, scores, iou_threshold=iou, offset=offset)
            assert torch.equal(got, want), (boxes, iou)
            checked += iou > 0
    assert checked > 7000  # most pairs overlap: the edge is really tested


def test_bad_arguments_name_the_argument_and_the_expected_value():
    boxes, scores = torch.rand(3, 4), torch.rand(3)
    with pytest.raises(ValueError, match=r"boxes must be \(N, 4\), got shape \(3, 5\)"):
        SHIM.nms(torch.rand(3, 5), scores, 0.5, 0)
    with pytest.raises(ValueError, match=r"scores must be \(N,\) = \(3,\).*got shape \(2,\)"):
        SHIM.nms(boxes, torch.rand(2), 0.5, 0)
    with pytest.raises(ValueError, match="offset must be 0 or 1, got 2"):
        SHIM.nms(boxes, scores, 0.5, 2)
    x, out = torch.rand(1, 2, 8, 8), torch.zeros(1, 2, 2, 2)
    empty = torch.zeros(0)
    with pytest.raises(ValueError, match=r"rois must be \(K, 5\).*got shape \(1, 4\)"):
        SHIM.roi_align_forward(x, torch.rand(1, 4), out, empty, empty, 2, 2, 1.0, 0, 1, True)
    with pytest.raises(ValueError, match=r"input must be \(N, C, H, W\), got shape \(2, 8, 8\)"):
        SHIM.roi_align_forward(x[0], torch.zeros(1, 5), out, empty, empty, 2, 2, 1.0, 0, 1, True)
    with pytest.raises(ValueError, match="rois must have input's dtype torch.float32"):
        SHIM.roi_align_forward(
            x, torch.zeros(1, 5).double(), out, empty, empty, 2, 2, 1.0, 0, 1, True
        )
    with pytest.raises(ValueError, match=r"pool_mode must be 0 \(max\) or 1 \(avg\), got 2"):
        SHIM.roi_align_forward(x, torch.zeros(1, 5), out, empty, empty, 2, 2, 1.0, 0, 2, True)


def test_nms_offset_one_counts_the_last_pixel():
    # boxes [0, 0, 1, 1] and [1, 0, 2, 1]: no overlap with offset 0; with
    # offset 1 each is 2 x 2 px and they share a column: IoU 2 / 6
    boxes = torch.tensor([[0.0, 0.0, 1.0, 1.0], [1.0, 0.0, 2.0, 1.0]])
    scores = torch.tensor([0.9, 0.8])
    assert SHIM.nms(boxes, scores, iou_threshold=0.3, offset=0).tolist() == [0, 1]
    assert SHIM.nms(boxes, scores, iou_threshold=0.3, offset=1).tolist() == [0]
    assert SHIM.nms(boxes, scores, iou_threshold=0.34, offset=1).tolist() == [0, 1]


# --- CARAFE --------------------------------------------------------------------


@needs_mmcv
def test_mmcv_carafe_runs_our_op(run_on):
    """mmcv's CARAFE wrappers (whose compiled op is CUDA only) on our op, CPU included."""
    import carafe
    from carafe.reference import random_inputs

    features, masks = random_inputs(2, 8, 5, 7, 5, 2, 2, dtype=torch.float64, requires_grad=True)
    want = carafe.carafe(features, masks, 5, 2, 2)
    grad = torch.randn_like(want)
    want_grads = torch.autograd.grad(want, (features, masks), grad)
    run_on("ours")
    ops = _ops_module("carafe")
    out = ops.carafe(features, masks, 5, 2, 2)
    assert torch.equal(out, want)
    got_grads = torch.autograd.grad(out, (features, masks), grad)
    assert all(torch.equal(a, b) for a, b in zip(got_grads, want_grads))
    # CARAFENaive: its backward asserts CUDA tensors, so the function itself here
    assert torch.equal(ops.carafe_naive(features.detach(), masks.detach(), 5, 2, 2), want)
    got_grads = torch.zeros_like(features), torch.zeros_like(masks)
    SHIM.carafe_naive_backward(grad, features.detach(), masks.detach(), *got_grads, 5, 2, 2)
    assert all(torch.equal(a, b) for a, b in zip(got_grads, want_grads))


# --- detection -------------------------------------------------------------------


def _faster_rcnn_steps(steps=3):
    """Losses of a few SGD steps of the offline Faster R-CNN + CARAFE on
    mmdet's demo inputs, and the boxes it then predicts; seeded."""
    from mmdet.registry import MODELS
    from mmdet.testing import demo_mm_inputs
    from mmdet.utils import register_all_modules
    from mmengine.config import Config

    import carafe.mmdet  # noqa: F401

    register_all_modules()
    cfg = Config.fromfile(str(FASTER_RCNN))
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    packed = demo_mm_inputs(2, [[3, 128, 128], [3, 112, 128]], num_items=[3, 2], num_classes=4)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    losses = []
    for _ in range(steps):
        data = model.data_preprocessor(packed, True)
        loss, log = model.parse_losses(model(**data, mode="loss"))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append({k: float(v) for k, v in log.items()})
    model.eval()
    with torch.no_grad():
        pred = model(**model.data_preprocessor(packed, False), mode="predict")
    return losses, [p.pred_instances for p in pred]


@needs_full
@pytest.mark.slow
def test_faster_rcnn_steps_are_the_same_on_our_ops(run_on):
    """Parity: the same seeded training steps with mmcv's ops and with ours
    (RoIAlign, nms and batched_nms inside RPN and RoI head) give the same
    losses and predictions."""
    run_on("mmcv")
    want_losses, want_pred = _faster_rcnn_steps()
    run_on("ours")
    got_losses, got_pred = _faster_rcnn_steps()
    assert got_losses == want_losses
    for got, want in zip(got_pred, want_pred):
        assert torch.equal(got.bboxes, want.bboxes) and torch.equal(got.labels, want.labels)


@needs_lite
def test_mmcv_ops_needs_the_provider_on_mmcv_lite():
    code = "import mmcv.ops"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode != 0 and "mmcv._ext" in proc.stderr
    code = (
        "import carafe.mmcv_ext as m; m.install(); import mmdet.models, mmcv.ops; "
        "assert m.route() == 'carafe.mmcv_ext' and m.active(); "
        "print(mmcv.ops.get_compiler_version())"
    )
    proc = subprocess.run([sys.executable, "-W", "ignore", "-c", code], capture_output=True)
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]


@needs_lite
@pytest.mark.parametrize(
    "entry",
    [
        # mmdet's tools/train.py: Config.fromfile imports the custom_imports
        # (carafe.mmdet first), then the registry builds the model
        "from mmengine.config import Config; cfg = Config.fromfile({cfg!r}); "
        "from mmdet.utils import register_all_modules; register_all_modules(); "
        "from mmdet.registry import MODELS; MODELS.build(cfg.model)",
        # the offline dataset alone (mmdet.datasets imports mmcv.ops)
        "import carafe_lab.experiments.offline_dataset",
        # our launcher
        "from carafe_lab.experiments import launcher; launcher.load_config({cfg!r})",
    ],
    ids=["mmdet-tools", "offline-dataset", "launcher"],
)
def test_entry_points_work_on_mmcv_lite(entry):
    code = entry.format(cfg=str(FASTER_RCNN)) + "; import carafe.mmcv_ext as m; "
    code += "assert m.route() == 'carafe.mmcv_ext', m.route()"
    proc = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", code],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


@needs_lite
def test_faster_rcnn_trains_and_predicts_on_mmcv_lite():
    losses, pred = _faster_rcnn_steps(steps=2)
    assert mmcv_ext.route() == "carafe.mmcv_ext"
    assert all(torch.isfinite(torch.tensor(list(step.values()))).all() for step in losses)
    assert all(len(p.bboxes) > 0 for p in pred)


# `python -m carafe_lab.experiments train`; with ours, mmcv's wrappers are
# pointed at carafe.mmcv_ext first.
_TRAIN = """
import importlib, sys
if sys.argv[1] == "ours":
    import mmcv.ops
    from carafe import mmcv_ext
    shim = mmcv_ext.build_module("shim")
    calls = {}
    for fn in ("roi_align_forward", "roi_align_backward", "nms"):
        def counted(*a, _f=getattr(shim, fn), _n=fn, **k):
            calls[_n] = calls.get(_n, 0) + 1
            return _f(*a, **k)
        setattr(shim, fn, counted)
    for name in ("roi_align", "nms", "carafe"):
        importlib.import_module("mmcv.ops." + name).ext_module = shim
from carafe_lab.experiments.__main__ import main
status = main(["train", sys.argv[2], "--work-dir", sys.argv[3], "--cfg-options", *sys.argv[4:]])
if sys.argv[1] == "ours":
    print("calls", sorted(calls.items()))
sys.exit(status)
"""
TINY_RUN = [
    "offline_data.num_train=10",
    "offline_data.num_val=4",
    "train_dataloader.batch_size=2",
    "default_hooks.logger.interval=1",
    "train_cfg.max_epochs=1",
    "train_cfg.val_interval=1",
    "randomness.seed=0",
]


@needs_full
@pytest.mark.slow
def test_launcher_training_is_the_same_on_our_ops(tmp_path):
    """Parity: 5 seeded training iterations of the offline Faster R-CNN and
    its evaluation give the same losses and box AP with mmcv's ops and ours."""
    import json

    logs = {}
    for which in ("mmcv", "ours"):
        work_dir = tmp_path / which
        proc = subprocess.run(
            [sys.executable, "-W", "ignore", "-c", _TRAIN, which, str(FASTER_RCNN), str(work_dir)]
            + TINY_RUN,
            capture_output=True,
            text=True,
            cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        calls = proc.stdout.splitlines()[-1] if which == "ours" else None
        (scalars,) = work_dir.glob("*/vis_data/scalars.json")
        rows = [json.loads(line) for line in scalars.read_text().splitlines()]
        logs[which] = [
            {k: v for k, v in row.items() if k.startswith(("loss", "coco/"))} for row in rows
        ]
    assert len([r for r in logs["mmcv"] if "loss" in r]) == 5
    assert any("coco/bbox_mAP" in r for r in logs["mmcv"])
    assert logs["ours"] == logs["mmcv"]
    assert "('nms', " in calls and "('roi_align_backward', " in calls, calls


@needs_lite
def test_launcher_trains_and_evaluates_mask_rcnn_on_mmcv_lite(tmp_path):
    """`python -m carafe_lab.experiments train` of the offline Mask R-CNN
    (RoIAlign for box and mask features and for mask targets, nms in RPN and
    test) on mmcv-lite: it trains, evaluates, and records whose ops it ran."""
    import json

    work_dir = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-W", "ignore", "-m", "carafe_lab.experiments", "train", str(MASK_RCNN)]
        + ["--work-dir", str(work_dir), "--cfg-options", *TINY_RUN],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((work_dir / "metrics.json").read_text())
    assert 0 <= metrics["coco/bbox_mAP"] <= 1 and 0 <= metrics["coco/segm_mAP"] <= 1
    assert json.loads((work_dir / "env.json").read_text())["mmcv_ops"] == "carafe.mmcv_ext"


PARITY = REPO / "experiments" / "results" / "mmcv_lite_parity"
STUDY = REPO / "experiments" / "ablations" / "mechanism" / "det" / "20261203_080417"


def test_the_committed_parity_run_agrees_and_the_docs_say_so():
    """The full-mmcv and mmcv-lite trainings committed agree as parity.json
    says (recomputed here from the run folders), and docs/install.md states
    its numbers."""
    import json

    spec = importlib.util.spec_from_file_location(
        "mmcv_lite_parity", REPO / "scripts" / "mmcv_lite_parity.py"
    )
    parity = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(parity)
    full_run = STUDY / "runs" / "01_carafe_seed0"
    result = parity.compare(full_run, PARITY / "lite_run_carafe_seed0", STUDY / "results.json")
    committed = json.loads((PARITY / "parity.json").read_text())
    for key in ("logged_iterations", "identical_logged_iterations", "bbox_mAP_diff"):
        assert result[key] == committed[key], key
    assert result["per_iteration"] == committed["per_iteration"]
    assert committed["identical_logged_iterations"] == committed["logged_iterations"] == 30
    assert (committed["full"]["mmcv_ops"], committed["lite"]["mmcv_ops"]) == (
        "mmcv",
        "carafe.mmcv_ext",
    )
    docs = " ".join((REPO / "docs" / "install.md").read_text().split())
    assert f"all {committed['logged_iterations']} logged iterations, bit for bit" in docs
    assert f"same box AP, {100 * committed['lite']['bbox_mAP']:.1f}" in docs
    for ap in committed["seed_spread"]["bbox_mAP_by_seed"].values():
        assert f"{100 * ap:.1f}" in docs
