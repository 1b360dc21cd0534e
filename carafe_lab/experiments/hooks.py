"""mmengine hook that records what a run needs to be read later: the
environment (versions, device, git commit, command) and every evaluation's
metrics, in the run folder. Added to every run by the launcher."""

import json
import time
from pathlib import Path

from mmengine.dist import is_main_process
from mmengine.hooks import Hook
from mmengine.registry import HOOKS

from .. import paths


def environment(device: str) -> dict:
    """carafe_lab.environment.describe (with the commit of the checkout the
    run was launched from, the lab root) plus the mmdet stack's versions, and
    whose compiled ops mmcv ran (mmcv_ops: 'mmcv', or 'carafe.mmcv_ext' on
    mmcv-lite)."""
    import mmcv
    import mmdet
    import mmengine

    from carafe.mmcv_ext import route

    from ..environment import describe

    info = describe(device, commit_of=paths.root())
    info.update(
        mmcv=mmcv.__version__,
        mmcv_ops=route(),
        mmdet=mmdet.__version__,
        mmengine=mmengine.__version__,
        device=device,
    )
    return info


def _progress(runner):
    """(epoch, iter) of the training loop, or (None, None) when the runner
    only tests: asking a test-only runner for them would build its training
    loop and data."""
    from mmengine.runner import BaseLoop

    if isinstance(getattr(runner, "_train_loop", None), BaseLoop):
        return runner.epoch, runner.iter
    return None, None


def _read_dict(path):
    """A JSON object from path, or {} when the file is missing, empty or
    damaged (a killed session can leave any of these)."""
    try:
        value = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _plain(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)


@HOOKS.register_module()
class CarafeRunRecorderHook(Hook):
    """Writes env.json at the start; after each validation or test appends
    the metrics to metrics.jsonl and rewrites metrics.json (the latest);
    while training keeps run.json up to date (iterations, wall time of every
    session, peak memory), so that a killed session's time is not lost when
    the run is resumed."""

    priority = "VERY_LOW"

    def __init__(self, interval: int = 50):
        self.interval = interval  # iterations between run.json updates
        self._started = None
        self._previous = []

    def before_run(self, runner) -> None:
        if not is_main_process():
            return
        self._started = time.time()
        work_dir = Path(runner.work_dir)
        device = str(next(runner.model.parameters()).device)
        env = environment(device)
        env["started"] = time.strftime("%Y-%m-%d %H:%M:%S")
        env["world_size"] = runner.world_size
        path = work_dir / "env.json"
        training = _progress(runner)[1] is not None
        # A resumed training run keeps the first environment and lists the
        # later ones (the launcher never points a test at an existing run).
        if path.exists() and training:
            first = _read_dict(path)
            first.setdefault("resumed", []).append(env)
            env = first
        path.write_text(json.dumps(env, indent=2) + "\n")
        if training:
            previous = _read_dict(work_dir / "run.json")
            sessions = previous.get("sessions")
            if sessions is None and previous.get("wall_seconds") is not None:
                sessions = [{"seconds": previous["wall_seconds"], "iter": previous.get("iter")}]
            self._previous = list(sessions or [])

    def _record(self, runner, metrics, split):
        if not is_main_process() or not metrics:
            return
        work_dir = Path(runner.work_dir)
        epoch, iteration = _progress(runner)
        row = {
            "split": split,
            "epoch": epoch,
            "iter": iteration,
            **{k: _plain(v) for k, v in metrics.items()},
        }
        with open(work_dir / "metrics.jsonl", "a") as fh:
            fh.write(json.dumps(row) + "\n")
        (work_dir / ("metrics.json" if split == "val" else "test_metrics.json")).write_text(
            json.dumps(row, indent=2) + "\n"
        )

    def _write_summary(self, runner) -> None:
        """run.json: how far the run got and what it cost: the wall time of
        every session (this one up to now), their sum and peak memory."""
        epoch, iteration = _progress(runner)
        if not is_main_process() or iteration is None or self._started is None:
            return
        import resource

        import torch

        session = {
            "started": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self._started)),
            "seconds": round(time.time() - self._started, 1),
            "iter": iteration,
        }
        sessions = self._previous + [session]
        summary = {
            "epoch": epoch,
            "iter": iteration,
            "wall_seconds": round(sum(s.get("seconds") or 0 for s in sessions), 1),
            "sessions": sessions,
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        }
        if torch.cuda.is_available():
            summary["peak_cuda_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        path = Path(runner.work_dir) / "run.json"
        tmp = path.with_suffix(".json.tmp")  # never a half-written run.json
        tmp.write_text(json.dumps(summary, indent=2) + "\n")
        tmp.replace(path)

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        if self.every_n_train_iters(runner, self.interval):
            self._write_summary(runner)

    def after_train_epoch(self, runner) -> None:
        self._write_summary(runner)

    def after_run(self, runner) -> None:
        self._write_summary(runner)

    def after_val_epoch(self, runner, metrics=None) -> None:
        self._record(runner, metrics, "val")

    def after_test_epoch(self, runner, metrics=None) -> None:
        self._record(runner, metrics, "test")


def _unwrapped(runner):
    from mmengine.model import is_model_wrapper

    return runner.model.module if is_model_wrapper(runner.model) else runner.model


def instance_label_maps(coco_json, file_names, size):
    """Ground-truth segments of images of a COCO file: (N, size, size) int64,
    0 for background and 1.. for the visible part of each object (the offline
    dataset's masks are already occlusion-resolved)."""
    import numpy as np
    import torch
    from pycocotools.coco import COCO

    coco = COCO(str(coco_json))
    by_name = {im["file_name"]: im["id"] for im in coco.dataset["images"]}
    out = np.zeros((len(file_names), size, size), np.int64)
    for n, name in enumerate(file_names):
        for i, ann in enumerate(coco.loadAnns(coco.getAnnIds(imgIds=by_name[name]))):
            mask = coco.annToMask(ann).astype(bool)
            out[n][mask[:size, :size]] = i + 1
    return torch.from_numpy(out)


def _fpn_kernels(model, images):
    """{"P(l+1)->P(l)": kernels (N, G, k, k, Ho, Wo)} of the CARAFE
    upsamplers of a CARAFEOpFPN neck on normalised images (N, 3, S, S)."""
    import torch

    from carafe.modules import CARAFEPack

    from ..viz import reassembly_kernels

    neck = model.neck
    inputs = {}
    hooks = [
        m.register_forward_pre_hook(lambda mod, args, j=j: inputs.__setitem__(j, args[0]))
        for j, m in enumerate(neck.upsample_modules)
        if isinstance(m, CARAFEPack)
    ]
    try:
        with torch.no_grad():
            neck(model.backbone(images))
    finally:
        for h in hooks:
            h.remove()
    out = {}
    for j, x in sorted(inputs.items()):
        level = neck.start_level + j  # output level: P2 at stride 4 is level 0
        out[f"P{level + 3}->P{level + 2}"] = reassembly_kernels(neck.upsample_modules[j], x).cpu()
    return out


def fpn_kernel_reports(model, images, labels, width=1):
    """The CARAFE FPN kernels of :func:`_fpn_kernels` scored against their
    content-agnostic controls (:func:`carafe_lab.viz.kernel_report`) with
    instance label maps (N, S, S) as the segments: {"P(l+1)->P(l)": report},
    for the steps whose output grid leaves pixels to score inside the border
    margin."""
    from ..viz import kernel_report

    out = {}
    for name, kernels in _fpn_kernels(model, images).items():
        k, (Ho, Wo) = kernels.shape[2], kernels.shape[-2:]
        margin = 2 * (k // 2)  # content_awareness's default: windows reaching the padding
        if labels.shape[-1] % Wo or min(Ho, Wo) <= 2 * margin:
            continue
        report = kernel_report(kernels, labels, 2, width)
        carafe = report["masses"]["carafe"]
        if carafe["n_boundary"] and carafe["n_interior"]:
            out[name] = report
    return out


def fpn_kernel_scores(model, images, labels, width=1):
    """Same-segment mass of the CARAFE kernels of a CARAFEOpFPN neck (see
    :func:`carafe_lab.viz.content_awareness`) beside their controls and
    nearest's and bilinear's, for normalised images (N, 3, S, S) (the data
    preprocessor's output) and instance label maps (N, S, S):
    {"P(l+1)->P(l)": {kind: {"boundary", "interior", "n_boundary",
    "n_interior"}}} (the "masses" of :func:`fpn_kernel_reports`)."""
    return {
        name: r["masses"] for name, r in fpn_kernel_reports(model, images, labels, width).items()
    }


def validation_images(runner, model, num_images):
    """The first num_images validation images as the model sees them
    (N, 3, S, S) and their instance label maps (N, S, S), or None when the
    pipeline resizes or pads them away from the annotations' pixels. The
    dataset is built from the config (a test-only runner has no validation
    loop to take it from)."""
    import copy

    from mmdet.registry import DATASETS

    dataset = DATASETS.build(copy.deepcopy(runner.cfg.val_dataloader.dataset))
    n = min(num_images, len(dataset))
    batch = [dataset[i] for i in range(n)]
    data = model.data_preprocessor(
        {
            "inputs": [b["inputs"] for b in batch],
            "data_samples": [b["data_samples"] for b in batch],
        },
        False,
    )
    images = data["inputs"]
    names = [Path(s.img_path).name for s in data["data_samples"]]
    labels = instance_label_maps(Path(dataset.ann_file), names, images.shape[-1])
    if labels.shape[-2:] != images.shape[-2:]:
        return None
    return images, labels


@HOOKS.register_module()
class CarafeKernelScoreHook(Hook):
    """At the end of training, when the neck has CARAFE upsamplers: their
    kernels' same-segment mass on the first ``num_images`` validation images
    (ground truth from the validation annotations), written to
    kernel_scores.json in the run folder. Added by the launcher to configs
    whose validation set is the offline dataset."""

    priority = "LOW"

    def __init__(self, num_images: int = 32, width: int = 1):
        self.num_images, self.width = num_images, width

    def after_train(self, runner) -> None:
        if not is_main_process():
            return
        from carafe.modules import CARAFEPack

        model = _unwrapped(runner)
        neck = getattr(model, "neck", None)
        if neck is None or not any(
            isinstance(m, CARAFEPack) for m in getattr(neck, "upsample_modules", [])
        ):
            return
        was_training = model.training
        model.eval()
        try:
            found = validation_images(runner, model, self.num_images)
            if found is None:
                return  # resized or padded images: the annotations' pixels do not match
            reports = fpn_kernel_reports(model, *found, self.width)
        finally:
            model.train(was_training)
        write_kernel_reports(Path(runner.work_dir), len(found[0]), self.width, reports)


def write_kernel_reports(folder, num_images, width, reports):
    """kernel_scores.json (the masses, as older runs wrote them) and
    kernel_report.json (the full reports) in folder."""
    common = {"num_images": num_images, "band_width": width, "alignment": "centre"}
    (folder / "kernel_scores.json").write_text(
        json.dumps({**common, "levels": {k: r["masses"] for k, r in reports.items()}}, indent=2)
        + "\n"
    )
    (folder / "kernel_report.json").write_text(
        json.dumps({**common, "levels": reports}, indent=2) + "\n"
    )


@HOOKS.register_module()
class CarafePhaseMeanSwapHook(Hook):
    """For a test run: before the test epoch, the phase-mean kernels of the
    neck's CARAFE upsamplers (their mean predicted kernel per sub-pixel
    phase, over the first ``num_images`` training images through the test
    pipeline) replace their predicted kernels until the epoch ends, so the
    test measures the trained model without content adaptation (see
    :mod:`carafe_lab.mechanism`). The kernels are written to
    phase_mean_kernels.json in the test's folder. With score_images > 0 the
    trained model's own kernels are first scored against their controls on
    that many validation images (kernel_report.json, as
    CarafeKernelScoreHook writes it)."""

    priority = "HIGH"

    def __init__(
        self, num_images: int = 256, batch: int = 8, score_images: int = 0, width: int = 1
    ):
        self.num_images, self.batch = num_images, batch
        self.score_images, self.width = score_images, width
        self._swap = None

    def before_test_epoch(self, runner) -> None:
        import copy

        import torch
        from mmdet.registry import DATASETS

        from ..mechanism import carafe_modules, recording_phase_means, swapped_kernels

        model = _unwrapped(runner)
        modules = carafe_modules(model.neck)
        if not modules:
            raise ValueError("CarafePhaseMeanSwapHook: the model's neck has no CARAFE upsampler")
        dataset_cfg = copy.deepcopy(runner.cfg.train_dataloader.dataset)
        dataset_cfg["pipeline"] = copy.deepcopy(runner.cfg.test_dataloader.dataset.pipeline)
        dataset_cfg["indices"] = self.num_images
        dataset = DATASETS.build(dataset_cfg)
        model.eval()
        if self.score_images and is_main_process():
            with torch.no_grad():
                found = validation_images(runner, model, self.score_images)
                if found is not None:
                    write_kernel_reports(
                        Path(runner.work_dir),
                        len(found[0]),
                        self.width,
                        fpn_kernel_reports(model, *found, self.width),
                    )
        with recording_phase_means(modules) as means, torch.no_grad():
            for start in range(0, len(dataset), self.batch):
                items = [dataset[i] for i in range(start, min(start + self.batch, len(dataset)))]
                data = model.data_preprocessor(
                    {
                        "inputs": [b["inputs"] for b in items],
                        "data_samples": [b["data_samples"] for b in items],
                    },
                    False,
                )
                model.extract_feat(data["inputs"])
            kernels = means()
        if is_main_process():
            (Path(runner.work_dir) / "phase_mean_kernels.json").write_text(
                json.dumps(
                    {
                        "num_images": len(dataset),
                        "layout": "(G, k*k, s, s) per upsampler, neck order",
                        "kernels": [k.tolist() for k in kernels],
                    }
                )
                + "\n"
            )
        self._swap = swapped_kernels(modules, kernels)
        self._swap.__enter__()

    def after_test_epoch(self, runner, metrics=None) -> None:
        if self._swap is not None:
            self._swap.__exit__(None, None, None)
            self._swap = None


@HOOKS.register_module()
class CarafeProgressHook(Hook):
    """A progress bar (:mod:`carafe_lab.progress`: a widget in JupyterLab)
    over the training iterations, the loss as its postfix, for notebooks,
    where the launcher keeps mmengine's log out of the output
    (``launcher.train(..., quiet=True)``)."""

    priority = "LOW"

    def before_train(self, runner) -> None:
        from ..progress import tqdm

        self._bar = (
            tqdm(
                total=runner.max_iters,
                initial=runner.iter,
                desc="training",
                unit="it",
                mininterval=2,
            )
            if is_main_process()
            else None
        )

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        if self._bar is None:
            return
        self._bar.update(1)
        if outputs and "loss" in outputs:
            loss = outputs["loss"]
            # a tensor still carrying its graph: float() of it warns
            loss = float(loss.detach() if hasattr(loss, "detach") else loss)
            self._bar.set_postfix(loss=f"{loss:.3f}", refresh=False)

    def after_train(self, runner) -> None:
        if self._bar is not None:
            self._bar.close()
