"""What carafe.convert_upsamplers adds to real models: parameters, FLOPs and
CPU latency before and after, in one run, as ratios, with each model's place
on the roofline measured in the same run.

    python benchmarks/bench_convert.py [--quick] [--rounds N] [--out FILE]

Models (random weights: latency does not depend on them), eval mode, no grad,
one image of 640x640 (--quick: 320x320):
- ultralytics' YOLOv8n from its bundled yaml (the ``yolo`` extra): its two
  nn.Upsample layers (256 and 128 channels) become CARAFEPacks;
- mmdet's YOLOX-s through the ``CARAFEConverted`` config key: its PAFPN's one
  upsample, called at 256 and 128 channels, becomes one CARAFEPack per count.
A model whose package is missing is skipped, and said so.

CARAFE at the paper's settings (k_up 5, k_enc 3, C_m 64). FLOPs: torch's
FlopCounterMode (2 per multiply-add) over one forward, plus the reassembly of
our op, which it cannot see: 2*C*k_up^2 per output pixel of each CARAFE call.
Latency: rounds interleaving the original and the converted model (the ratio
is the median of the per-round ratios, so that drift of a shared machine
cancels); each model's share of the roofline from carafe_lab.roofline's
paired rounds (float32 sgemm and a buffer copy timed beside each call; floor
bytes: weights, input and outputs read or written once). Writes JSON with the
machine under benchmarks/results/.
"""

import argparse
import copy
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
from bench_op import machine, write_result
from torch.utils.flop_counter import FlopCounterMode

import carafe
from carafe.convert import convert_upsamplers
from carafe_lab.roofline import paired_shares
from carafe_lab.timing import seconds

REPO = Path(__file__).resolve().parent.parent


def yolov8n():
    """(name, original, converted, report, call) or None when ultralytics is missing."""
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_AUTOINSTALL", "False")
    os.environ.setdefault("YOLO_VERBOSE", "False")
    os.environ.setdefault("YOLO_CONFIG_DIR", tempfile.mkdtemp(prefix="carafe-yolo-settings-"))
    try:
        from ultralytics.nn.tasks import DetectionModel
    except ImportError as e:
        print(f"YOLOv8n skipped (ultralytics not installed: {e})")
        return None
    torch.manual_seed(0)
    original = DetectionModel("yolov8n.yaml", verbose=False).eval()
    converted, report = convert_upsamplers(copy.deepcopy(original), torch.zeros(1, 3, 64, 64))
    return "YOLOv8n (ultralytics)", original, converted.eval(), report, lambda m, x: m(x)


def yolox_s():
    try:
        from mmdet.registry import MODELS
        from mmdet.utils import register_all_modules
        from mmengine.config import Config
        from mmengine.logging import MMLogger

        import carafe.mmdet  # noqa: F401 (registers CARAFEConverted)
    except ImportError as e:
        print(f"YOLOX-s skipped (mmdet stack not installed: {e})")
        return None
    import logging

    register_all_modules()
    MMLogger.get_current_instance().setLevel(logging.WARNING)
    config = Config.fromfile(str(REPO / "experiments/configs/yolox_s-carafe_8xb8-300e_coco.py"))
    torch.manual_seed(0)
    original = MODELS.build(config.model.model)
    original.init_weights()
    torch.manual_seed(0)
    converted = MODELS.build(config.model)
    converted.init_weights()
    report = converted.carafe_conversion
    return (
        "YOLOX-s (mmdet, CARAFEConverted)",
        original.eval(),
        converted.eval(),
        report,
        lambda m, x: m(x, mode="tensor"),
    )


def flops(model, call, x):
    """FLOPs of one forward: FlopCounterMode's, plus each CARAFE call's reassembly."""
    extra = []

    def hook(module, args, output):
        k = module.up_kernel
        extra.append(
            2 * output.shape[0] * output.shape[1] * k * k * output.shape[2] * output.shape[3]
        )

    handles = [
        m.register_forward_hook(hook) for m in model.modules() if isinstance(m, carafe.CARAFEPack)
    ]
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            call(model, x)
    finally:
        for h in handles:
            h.remove()
    return counter.get_total_flops() + sum(extra)


def floor_bytes(model, call, x):
    """Bytes a forward must move at least: weights, the input and the outputs."""
    with torch.no_grad():
        out = call(model, x)
    leaves = [t for t in torch.utils._pytree.tree_leaves(out) if isinstance(t, torch.Tensor)]
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    return (
        weights + x.numel() * x.element_size() + sum(t.numel() * t.element_size() for t in leaves)
    )


def params(model):
    return sum(p.numel() for p in model.parameters())


def bench(case, side, rounds):
    name, original, converted, report, call = case
    x = torch.rand(1, 3, side, side)
    with torch.no_grad():
        before, after = (lambda: call(original, x)), (lambda: call(converted, x))
        for fn in (before, after, before, after):  # warm-up
            fn()
        ratios, t_before, t_after = [], [], []
        for _ in range(rounds):
            tb, ta = seconds(before), seconds(after)
            t_before.append(tb)
            t_after.append(ta)
            ratios.append(ta / tb)
        roof = {}
        for label, model, fn in (("original", original, before), ("converted", converted, after)):
            roof[label] = paired_shares(
                fn, flops(model, call, x) / 1e9, floor_bytes(model, call, x), "cpu", rounds=rounds
            )
    row = {
        "model": name,
        "input": list(x.shape),
        "replaced": [
            {"name": r.name, "channels": list(r.channels), "params": r.params_added}
            for r in report.replaced
        ],
        "params_before": params(original),
        "params_after": params(converted),
        "params_added": params(converted) - params(original),
        "gflops_before": flops(original, call, x) / 1e9,
        "gflops_after": flops(converted, call, x) / 1e9,
        "ms_before": 1e3 * statistics.median(t_before),
        "ms_after": 1e3 * statistics.median(t_after),
        "latency_ratio": statistics.median(ratios),
        "latency_ratio_rounds": ratios,
        "roofline": roof,
    }
    row["gflops_added"] = row["gflops_after"] - row["gflops_before"]
    print(
        f"{name}, input {row['input']}:\n"
        f"  params {row['params_before']:,} -> {row['params_after']:,} "
        f"(+{row['params_added']:,}, {row['params_after'] / row['params_before']:.3f}x)\n"
        f"  GFLOPs {row['gflops_before']:.2f} -> {row['gflops_after']:.2f} "
        f"(+{row['gflops_added']:.2f}, {row['gflops_after'] / row['gflops_before']:.3f}x)\n"
        f"  latency {row['ms_before']:.1f} -> {row['ms_after']:.1f} ms, converted/original "
        f"{row['latency_ratio']:.3f}x (median of {rounds} interleaved rounds, "
        f"range {min(ratios):.3f}-{max(ratios):.3f})"
    )
    for label in ("original", "converted"):
        r = roof[label]
        print(
            f"  {label}: {r['pct_of_roofline']:.0f}% of the roofline ({r['bound']}-bound; "
            f"sgemm {r['sgemm_gflops']:.0f} GFLOP/s, copy {r['copy_GBps']:.1f} GB/s measured)"
        )
    return row


def main(argv=None):
    parser = argparse.ArgumentParser(description="convert_upsamplers: params, FLOPs, latency")
    parser.add_argument("--quick", action="store_true", help="320x320 input (a smoke run)")
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--out", type=Path, help="JSON path (default: benchmarks/results/...)")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error(f"--rounds: expected an integer >= 1, got {args.rounds}")
    side = 320 if args.quick else 640
    rows = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for make in (yolov8n, yolox_s):
            case = make()
            if case is not None:
                rows.append(bench(case, side, args.rounds))
    info = machine("cpu")
    result = {
        "machine": info,
        "threads": torch.get_num_threads(),
        "quick": args.quick,
        "carafe": dict(up_kernel=5, encoder_kernel=3, compressed_channels=64),
        "results": rows,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }
    write_result(result, "bench_convert_cpu", info, args.quick, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
