"""Train and test mmdetection configs with mmengine's Runner (no training
loop of our own), each run in its own folder::

    experiments/runs/<config name>/<YYYYmmdd_HHMMSS>/
        <timestamp>/<timestamp>.log, <timestamp>/vis_data/scalars.json   (mmengine)
        <config name>.py                                                   (dumped config)
        epoch_N.pth, last_checkpoint                                       (mmengine)
        env.json, metrics.json, metrics.jsonl, run.json                    (ours)
"""

import os
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RUNS = REPO / "experiments" / "runs"


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
    cfg.model_wrapper_cfg = dict(type="CarafeCPUDistributedDataParallel",
                                 broadcast_buffers=False,
                                 find_unused_parameters=cfg.get("find_unused_parameters", False))


def _trusted_checkpoints():
    # torch >= 2.6 loads with weights_only=True, which rejects the numpy
    # objects mmengine stores in checkpoint meta (resume, load_from). These
    # are checkpoints our own runs wrote, or ones the user chose to load.
    os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")


def load_config(config, cfg_options=None, launcher="none"):
    import torch
    from mmengine.config import Config
    cfg = Config.fromfile(str(config))
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    cfg.launcher = launcher
    if not torch.cuda.is_available():
        # mmdet's default runtime asks for NCCL, which needs GPUs.
        cfg.env_cfg = dict(cfg.get("env_cfg", {}))
        cfg.env_cfg["dist_cfg"] = dict(backend="gloo")
    # custom_imports are acted on inside Config.fromfile only, so the modules
    # the launcher adds are imported here.
    import carafe.experiments.hooks  # noqa: F401  (registers CarafeRunRecorderHook)
    import carafe.mmdet  # noqa: F401
    hooks = list(cfg.get("custom_hooks", []))
    if not any(h.get("type") == "CarafeRunRecorderHook" for h in hooks):
        hooks.append(dict(type="CarafeRunRecorderHook"))
    # On the offline dataset every pixel's object is known: score the FPN's
    # CARAFE kernels against it at the end of training (kernel_scores.json).
    if cfg.get("offline_data") is not None and \
            not any(h.get("type") == "CarafeKernelScoreHook" for h in hooks):
        hooks.append(dict(type="CarafeKernelScoreHook"))
    cfg.custom_hooks = hooks
    return cfg


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
        print(f"offline data: generating at the training set's data_root {data_root} "
              f"(offline_data.root {declared} is the base config's default)")
    ensure_offline_coco(root, **params)


def torch_cuda_available():
    import torch
    return torch.cuda.is_available()


def new_work_dir(config):
    return RUNS / Path(config).stem / time.strftime("%Y%m%d_%H%M%S")


def latest_work_dir(config):
    runs = sorted((RUNS / Path(config).stem).glob("*/last_checkpoint"))
    return runs[-1].parent if runs else None


def train(config, work_dir=None, cfg_options=None, launcher="none", resume=False, quiet=False):
    """Train config; returns the run folder. With resume=True, continue the
    run in work_dir (default: this config's latest run that has a checkpoint)
    from its last checkpoint; the earlier logs stay in place. quiet=True (for
    notebooks): mmengine logs warnings only (no environment and config dump
    in the output; the log file in the run folder has the same) and a
    tqdm.auto bar shows the progress."""
    _trusted_checkpoints()
    from mmengine.runner import Runner
    cfg = load_config(config, cfg_options, launcher)
    if quiet:
        cfg.log_level = "WARNING"
        cfg.custom_hooks = list(cfg.custom_hooks) + [dict(type="CarafeProgressHook")]
    if resume:
        work_dir = Path(work_dir) if work_dir else latest_work_dir(config)
        if work_dir is None or not (Path(work_dir) / "last_checkpoint").exists():
            raise SystemExit(f"--resume: no checkpoint to resume from in {work_dir} "
                             f"(expected {work_dir}/last_checkpoint)")
        cfg.resume = True
        cfg.load_from = None
    else:
        work_dir = Path(work_dir) if work_dir else new_work_dir(config)
    cfg.work_dir = str(work_dir)
    prepare_data(cfg)
    if launcher != "none" and not torch_cuda_available():
        _cpu_distributed(cfg)
    runner = Runner.from_cfg(cfg)
    runner.train()
    return Path(work_dir)


def test(config, checkpoint, work_dir=None, cfg_options=None, launcher="none"):
    """Evaluate checkpoint; metrics land in work_dir/test_metrics.json
    (default work_dir: the checkpoint's folder). Returns the metrics."""
    _trusted_checkpoints()
    from mmengine.runner import Runner
    cfg = load_config(config, cfg_options, launcher)
    cfg.work_dir = str(work_dir or Path(checkpoint).parent)
    cfg.load_from = str(checkpoint)
    prepare_data(cfg)
    if launcher != "none" and not torch_cuda_available():
        _cpu_distributed(cfg)
    runner = Runner.from_cfg(cfg)
    return runner.test()
