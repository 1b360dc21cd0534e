"""Train and test mmdetection configs with mmengine's Runner (no training
loop of our own), each run in its own folder, claimed atomically (a second
run started in the same second gets ``<timestamp>_2``)::

    experiments/runs/<config name>/<YYYYmmdd_HHMMSS>/
        <timestamp>/<timestamp>.log, <timestamp>/vis_data/scalars.json   (mmengine)
        <config name>.py                                                   (dumped config)
        overrides.json  (its differences from ../config.py, the first run's dump; compact.py)
        epoch_N.pth, last_checkpoint                                       (mmengine)
        env.json, metrics.json, metrics.jsonl, run.json                    (ours)

``test`` writes into a new folder, ``experiments/evaluations/<config
name>/<timestamp>/``, never into the run it reads. Only ``resume`` writes into
an existing run. Checkpoints are loaded as data (see checkpoints.py).
"""

import contextlib
import sys
import zipfile
from pathlib import Path

from .. import paths
from .checkpoints import CheckpointError, check_readable, trusting
from .folders import is_empty, new_folder, remove_if_empty
from .quiet import LogWriter, filter_known_warnings, runner_class

#: Modules of carafe 0.2 that moved to carafe_lab (configs dumped then name them).
REMOVED_MODULES = ("carafe.experiments", "carafe.ablations")


class LaunchError(ValueError):
    """A launcher call that cannot go ahead; nothing was written."""


def _cpu_distributed(cfg):
    """mmengine 0.10 assumes a GPU per process when distributed: init_dist
    calls torch.cuda.set_device and the DDP wrapper gets device_ids. On a
    machine without CUDA, start the gloo process group here (mmengine then
    leaves it alone) and wrap the model in DDP without device_ids."""
    import torch.distributed as dist
    from mmengine.model import MMDistributedDataParallel
    from mmengine.registry import MODEL_WRAPPERS

    if "CarafeCPUDistributedDataParallel" not in MODEL_WRAPPERS.module_dict:

        @MODEL_WRAPPERS.register_module(name="CarafeCPUDistributedDataParallel")
        class _CPUDDP:  # not a DDP subclass, so mmengine adds no device_ids
            def __new__(cls, module, **kwargs):
                return MMDistributedDataParallel(module=module, device_ids=None, **kwargs)

    if not dist.is_initialized():
        dist.init_process_group(backend="gloo")
    cfg.model_wrapper_cfg = dict(
        type="CarafeCPUDistributedDataParallel",
        broadcast_buffers=False,
        find_unused_parameters=cfg.get("find_unused_parameters", False),
    )


def _removed_module(error):
    """The carafe 0.2 module (REMOVED_MODULES) whose import failed somewhere
    in error's chain (mmengine wraps a failed custom import), or None."""
    while error is not None:
        name = getattr(error, "name", None)
        if (
            isinstance(error, ModuleNotFoundError)
            and name
            and any(name == old or name.startswith(old + ".") for old in REMOVED_MODULES)
        ):
            return name
        error = error.__cause__ or error.__context__
    return None


def load_config(config, cfg_options=None, launcher="none", extra_hooks=()):
    import torch
    from mmengine.config import Config

    from carafe.mmcv_ext import install

    filter_known_warnings()
    # before the config's custom_imports import mmdet (mmcv-lite: see carafe.mmcv_ext)
    install()

    if not Path(config).is_file():
        raise LaunchError(f"config: {config} is not a file")
    try:
        cfg = Config.fromfile(str(config))
    except Exception as e:  # noqa: BLE001 (a broken config fails in many ways)
        removed = _removed_module(e)
        if removed:
            new = "carafe_lab" + removed[len("carafe") :]
            raise LaunchError(
                f"config: {config} imports {removed}, removed in carafe 0.3.0: "
                f"the module is {new} (replace it in the config's "
                "custom_imports)"
            ) from e
        raise LaunchError(
            f"config: {config} cannot be read ({type(e).__name__}: "
            f"{str(e).strip().splitlines()[0] if str(e).strip() else ''})"
        ) from e
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    cfg.launcher = launcher
    _share_offline_data(cfg)
    if not torch.cuda.is_available():
        # mmdet's default runtime asks for NCCL, which needs GPUs.
        cfg.env_cfg = dict(cfg.get("env_cfg", {}))
        cfg.env_cfg["dist_cfg"] = dict(backend="gloo")
    # custom_imports are acted on inside Config.fromfile only, so the modules
    # the launcher adds are imported here.
    import carafe.mmdet  # noqa: F401
    import carafe_lab.experiments.backbones  # noqa: F401  (registers ZooDownResNet)
    import carafe_lab.experiments.hooks  # noqa: F401  (registers CarafeRunRecorderHook)
    import carafe_lab.experiments.necks  # noqa: F401  (registers CARAFEZooFPN)

    hooks = list(cfg.get("custom_hooks", []))
    if not any(h.get("type") == "CarafeRunRecorderHook" for h in hooks):
        hooks.append(dict(type="CarafeRunRecorderHook"))
    # On the offline dataset every pixel's object is known: score the FPN's
    # CARAFE kernels against it at the end of training (kernel_scores.json).
    if cfg.get("offline_data") is not None and not any(
        h.get("type") == "CarafeKernelScoreHook" for h in hooks
    ):
        hooks.append(dict(type="CarafeKernelScoreHook"))
    cfg.custom_hooks = hooks + [dict(h) for h in extra_hooks]
    return cfg


def _share_offline_data(cfg):
    """The offline datasets (CarafeOfflineCocoDataset) generate themselves
    from their own offline_data, which the base config binds to the
    top-level offline_data when it is read; options given later (e.g.
    --cfg-options offline_data.num_train=8) change only the top level. Give
    every offline dataset of the config the top-level parameters, so that
    the data written and the data read are the same."""
    if cfg.get("offline_data") is None:
        return
    params = dict(cfg.offline_data)
    for name in ("train_dataloader", "val_dataloader", "test_dataloader"):
        dataset = (cfg.get(name) or {}).get("dataset")
        if dataset is not None and dataset.get("type") == "CarafeOfflineCocoDataset":
            dataset.offline_data = dict(params)


def prepare_data(cfg):
    """Generate the offline dataset a config declares (``offline_data``) at
    the folder its training set reads. ``offline_data.root`` is evaluated in
    the base file, so a config that sets its own ``data_root`` (another
    generated dataset, or real data) leaves it pointing at the default: the
    dataset's own ``data_root`` decides. Nothing is generated for a config
    whose training set is not under ``offline_data.root`` unless that root is
    the dataset's data_root, and data this generator did not write are never
    written over (see ensure_offline_coco)."""
    if cfg.get("offline_data") is None:
        return
    from .data import ensure_offline_coco

    params = dict(cfg.offline_data)
    declared = params.pop("root", None)
    data_root = cfg.get("train_dataloader", {}).get("dataset", {}).get("data_root")
    root = data_root or declared
    if root is None:
        raise ValueError("offline_data: no root given and the training set has no data_root")
    if declared and data_root and Path(declared).resolve() != Path(data_root).resolve():
        print(
            f"offline data: generating at the training set's data_root {data_root} "
            f"(offline_data.root {declared} is the base config's default)"
        )
    ensure_offline_coco(root, **params)


def torch_cuda_available():
    import torch

    return torch.cuda.is_available()


def new_work_dir(config, root=None):
    """A new, empty run folder root/<config name>/<timestamp>[_n] (root:
    the lab's experiments/runs by default)."""
    return new_folder(Path(root or paths.runs()) / Path(config).stem)


def latest_work_dir(config):
    runs = sorted((paths.runs() / Path(config).stem).glob("*/last_checkpoint"))
    return runs[-1].parent if runs else None


def resume_checkpoint(folder, named=None):
    """The checkpoint to resume the run in folder from: named (what its
    last_checkpoint file says) if that file exists, else the newest complete
    epoch_N.pth / iter_N.pth in folder. mmengine's CheckpointHook writes the
    new checkpoint, removes the oldest one kept, then rewrites last_checkpoint:
    a run killed between these steps leaves last_checkpoint missing (killed
    during its first save) or naming a file that is gone, and the newest
    checkpoint possibly half-written. A checkpoint is complete when it ends in
    a zip directory (torch.save's format); if none is, the newest is taken.
    With no checkpoint at all, named is returned (None if there was no
    last_checkpoint)."""
    if named is not None and Path(named).is_file():
        return named
    found = [
        (kind == "iter", int(number), path)
        for path in Path(folder).glob("*_*.pth")
        for kind, _, number in [path.stem.partition("_")]
        if kind in ("epoch", "iter") and number.isdigit()
    ]
    if not found:
        return named
    # one run saves either by epoch or by iteration; prefer the newest of the kind named
    kind_named = None if named is None else Path(named).stem.partition("_")[0]
    same_kind = [f for f in found if kind_named == ("iter" if f[0] else "epoch")] or found
    complete = [f for f in same_kind if zipfile.is_zipfile(f[2])]
    newest = max(complete or same_kind)[2]
    why = (
        f"{Path(folder) / 'last_checkpoint'} is missing"
        if named is None
        else f"{named} (named in {Path(folder) / 'last_checkpoint'}) no longer exists"
    )
    print(
        f"resume: {why}; resuming from {newest}, the newest complete checkpoint in the run",
        file=sys.stderr,
    )
    return str(newest)


def _checkpoint_in(work_dir):
    """The checkpoint a run in work_dir would resume from, or None when the
    folder holds none (or is missing)."""
    if work_dir is None or not Path(work_dir).is_dir():
        return None
    pointer = Path(work_dir) / "last_checkpoint"
    named = pointer.read_text().strip() if pointer.is_file() else None
    checkpoint = resume_checkpoint(work_dir, named)
    return checkpoint if checkpoint is not None and Path(checkpoint).is_file() else None


def _is_main_rank():
    import os

    return int(os.environ.get("RANK", "0")) == 0


def finish_distributed():
    """Wait for every rank, then leave the process group, if this process
    joined one. A process that exits with gloo's threads still running can
    abort in its destructor ("terminate called without an active exception",
    SIGABRT) after its work is done, and torchrun then fails the whole job."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def init_distributed(launcher, dist_cfg=None):
    """Join the process group of `launcher` ("pytorch": the environment
    torchrun sets: RANK, WORLD_SIZE, MASTER_ADDR, ...) unless this process
    has joined one already; "none" does nothing. With CUDA through mmengine's
    init_dist (dist_cfg: its backend, NCCL in mmdet's runtime); without, a
    gloo group (mmengine's init_dist would call torch.cuda.set_device)."""
    import torch.distributed as dist

    if launcher == "none" or dist.is_initialized():
        return
    if torch_cuda_available():
        from mmengine.dist import init_dist

        init_dist(launcher, **dict(dist_cfg or {}))
    else:
        dist.init_process_group(backend="gloo")


def _agree(launcher, cfg, choose):
    """Run choose() on rank 0 only and hand its result (or its error) to every
    rank: the folder is claimed once, and all ranks write into it."""
    if launcher == "none":
        return choose()
    import torch.distributed as dist

    init_distributed(launcher, cfg.get("env_cfg", {}).get("dist_cfg", {}))
    box = [None]
    if dist.get_rank() == 0:
        try:
            box = [("ok", choose())]
        except (LaunchError, CheckpointError) as e:
            box = [("error", e)]
    dist.broadcast_object_list(box, src=0)
    kind, value = box[0]
    if kind == "error":
        raise value
    return value


def _run_in(folder, created, cfg, launcher, trusted_checkpoint, action, quiet=False):
    """Prepare the data and build mmengine's Runner in folder, then
    action(runner); a folder this call created is removed again if the run
    fails before writing a file into it. quiet: see train."""
    cfg.work_dir = str(folder)
    try:
        prepare_data(cfg)
        if launcher != "none" and not torch_cuda_available():
            _cpu_distributed(cfg)
        with trusting(trusted_checkpoint):
            runner = runner_class(quiet).from_cfg(cfg)
            if not quiet:
                return action(runner)
            # pycocotools print()s (loading annotations, the COCO evaluation
            # table) while the runner builds its datasets and evaluates
            log = LogWriter(runner.logger)
            try:
                with contextlib.redirect_stdout(log):
                    return action(runner)
            finally:
                log.flush()
    except BaseException:
        if created and _is_main_rank():
            remove_if_empty(folder)
        raise


def train(
    config,
    work_dir=None,
    cfg_options=None,
    launcher="none",
    resume=False,
    quiet=False,
    trusted_checkpoint=None,
):
    """Train config; returns the run folder. With resume=True, continue the
    run in work_dir (default: this config's latest run that has a checkpoint)
    from its last checkpoint; the earlier logs stay in place. resume="auto"
    (a study's runs): continue the run in work_dir when it has a checkpoint,
    else start it there. Otherwise work_dir must be new or empty (default: a new folder under
    experiments/runs/<config name>/). quiet=True (for notebooks): mmengine's
    log (environment, config, losses, warnings) and what pycocotools prints go
    to the run's log file (<run>/<timestamp>/<timestamp>.log) only, errors
    still to the output, and a progress bar (carafe_lab.progress) shows the
    progress. trusted_checkpoint: a file you trust to be unpickled fully
    (see carafe_lab.experiments.checkpoints); all others load as weights only.

    A mistake (missing config, nothing to resume, unreadable checkpoint, a
    non-empty work_dir) raises LaunchError or CheckpointError before anything
    is written."""
    cfg = load_config(config, cfg_options, launcher)
    if quiet:
        cfg.custom_hooks = list(cfg.custom_hooks) + [dict(type="CarafeProgressHook")]

    def choose():
        with trusting(trusted_checkpoint):
            if resume == "auto":
                checkpoint = _checkpoint_in(work_dir)
                if checkpoint is not None:
                    check_readable(checkpoint)
                    return Path(work_dir), False, checkpoint
            elif resume:
                folder = Path(work_dir) if work_dir else latest_work_dir(config)
                pointer = None if folder is None else folder / "last_checkpoint"
                named = pointer.read_text().strip() if pointer and pointer.is_file() else None
                checkpoint = None if folder is None else resume_checkpoint(folder, named)
                if checkpoint is None:
                    where = (
                        folder
                        if folder is not None
                        else f"experiments/runs/{Path(config).stem}/ (no run with a checkpoint)"
                    )
                    raise LaunchError(
                        f"resume: no checkpoint to resume from in {where}; "
                        "expected a last_checkpoint file or an epoch_N.pth / iter_N.pth "
                        "written by a run"
                    )
                # read it now: a bad checkpoint must fail before anything is written
                check_readable(checkpoint)
                return folder, False, checkpoint
            if cfg.get("load_from"):  # a readable local checkpoint, checked now
                check_readable(cfg.load_from)
            if work_dir is None:
                return new_work_dir(config), True, None
            folder = Path(work_dir)
            if folder.exists() and not is_empty(folder):
                if resume == "auto":
                    raise LaunchError(
                        f"work_dir: {folder} holds files but no checkpoint (a run "
                        "stopped before its first save); move the folder aside to "
                        "train that run again from the start"
                    )
                raise LaunchError(
                    f"work_dir: {folder} already holds files; pass --resume to "
                    "continue the run there, or give a new folder"
                )
            created = not folder.exists()
            folder.mkdir(parents=True, exist_ok=True)
            return folder, created, None

    folder, created, checkpoint = _agree(launcher, cfg, choose)
    if checkpoint is not None:  # rank 0's choice: every rank resumes, or none
        cfg.resume = True
        cfg.load_from = checkpoint  # mmengine resumes from load_from when resume is set
    _run_in(
        folder, created, cfg, launcher, trusted_checkpoint, lambda runner: runner.train(), quiet
    )
    if work_dir is None and _is_main_rank():
        # a run among this config's runs: keep its config as overrides of theirs
        from .compact import record_or_warn

        record_or_warn(folder)
    return folder


def test(
    config,
    checkpoint,
    work_dir=None,
    cfg_options=None,
    launcher="none",
    trusted_checkpoint=None,
    extra_hooks=(),
):
    """Evaluate checkpoint; metrics land in work_dir/test_metrics.json, with
    the log and env.json. work_dir must be new or empty and outside the run
    the checkpoint belongs to (default: a new folder under
    experiments/evaluations/<config name>/): the run is only read.
    extra_hooks: hook configs added to the config's custom_hooks (e.g.
    CarafePhaseMeanSwapHook). Returns the metrics."""
    cfg = load_config(config, cfg_options, launcher, extra_hooks)

    def choose():
        with trusting(trusted_checkpoint):
            check_readable(checkpoint)
        run_dir = Path(checkpoint).resolve().parent
        if work_dir is None:
            return new_work_dir(config, paths.evaluations()), True
        folder = Path(work_dir)
        if folder.resolve() == run_dir or run_dir in folder.resolve().parents:
            raise LaunchError(
                f"work_dir: {folder} is inside the run {run_dir} that the "
                "checkpoint belongs to; test never writes into the run it reads"
            )
        if folder.exists() and not is_empty(folder):
            raise LaunchError(f"work_dir: {folder} already holds files; give a new folder")
        created = not folder.exists()
        folder.mkdir(parents=True, exist_ok=True)
        return folder, created

    folder, created = _agree(launcher, cfg, choose)
    cfg.load_from = str(checkpoint)
    cfg.resume = False
    return _run_in(folder, created, cfg, launcher, trusted_checkpoint, lambda runner: runner.test())
