"""CPU latency of exported CARAFE models in ONNX Runtime against PyTorch eager
(which runs our CPU kernel), in one run, as ratios, with the largest output
difference between the two.

    python benchmarks/bench_export.py [--quick] [--repeat N] [--out FILE]

Models: the op alone (features and kernels as inputs; k=5, G=1, s=2),
CARAFEPack (C=256, C_m=64, k_enc=3, k_up=5, x2) at the FPN shapes of
bench_op.py, and the offline Faster R-CNN with a CARAFE FPN up to the RPN
head's raw outputs (carafe.mmdet.export.RawDetector, random weights: latency
does not depend on them) when mmdet is installed. ONNX Runtime gets as many
intra-op threads as torch uses. Median of repeats after a warm-up
(carafe_lab.timing.median_seconds). Writes JSON with the machine under
benchmarks/results/.
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from bench_op import QUICK_SIZES, SIZES, machine, write_result

import carafe
from carafe.export import export_onnx
from carafe.reference import random_inputs
from carafe_lab.timing import median_seconds

K, G, S = 5, 1, 2


class Op(torch.nn.Module):
    def forward(self, features, masks):
        return carafe.carafe(features, masks, K, G, S)


def cases(quick):
    """(name, model, example inputs for export, timed inputs)."""
    out = []
    for size, (N, C, H, W) in (QUICK_SIZES if quick else SIZES).items():
        f, m = random_inputs(N, C, H, W, K, G, S)
        out.append((f"op {size}", Op().eval(), (f, m), (f, m)))
        torch.manual_seed(0)
        pack = carafe.CARAFEPack(C, S, up_kernel=K, up_group=G).eval()
        out.append((f"CARAFEPack {size}", pack, (f,), (f,)))
    try:
        from mmdet.registry import MODELS
        from mmdet.utils import register_all_modules
        from mmengine.config import Config

        from carafe.mmdet.export import RawDetector  # (registers the plugin too)

        register_all_modules()
        config = (
            Path(__file__).resolve().parent.parent
            / "experiments"
            / "configs"
            / "faster-rcnn_r18_fpn-carafe_offline.py"
        )
        torch.manual_seed(0)
        detector = MODELS.build(Config.fromfile(str(config)).model)
        detector.init_weights()
        raw = RawDetector(detector.eval()).eval()
        side = 128 if quick else 256
        image = torch.rand(2, 3, side, side) * 255
        out.append(
            (
                f"Faster R-CNN R18 CARAFE-FPN to RPN outputs 2x3x{side}x{side}",
                raw,
                (image,),
                (image,),
            )
        )
    except ImportError as e:
        print(f"detector skipped (mmdet stack not installed: {e})")
    return out


def bench(name, model, example, inputs, repeat, threads, folder):
    import onnxruntime as ort

    path = Path(folder) / "model.onnx"
    t0 = time.perf_counter()
    export_onnx(model, example, path)
    export_seconds = time.perf_counter() - t0
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feeds = {i.name: x.numpy() for i, x in zip(session.get_inputs(), inputs)}
    with torch.no_grad():
        expected = model(*inputs)
        expected = [t.numpy() for t in (expected if isinstance(expected, tuple) else (expected,))]
        eager = median_seconds(lambda: model(*inputs), "cpu", repeat)
    got = session.run(None, feeds)
    onnx_seconds = median_seconds(lambda: session.run(None, feeds), "cpu", repeat)
    diff = max(float(np.abs(a - b).max()) for a, b in zip(got, expected))
    row = {
        "model": name,
        "pytorch_eager_ms": 1e3 * eager,
        "onnxruntime_ms": 1e3 * onnx_seconds,
        "onnxruntime_over_eager": onnx_seconds / eager,
        "max_abs_diff": diff,
        "export_seconds": export_seconds,
    }
    print(
        f"{name:>58}: eager {row['pytorch_eager_ms']:8.2f} ms, ONNX Runtime "
        f"{row['onnxruntime_ms']:8.2f} ms ({row['onnxruntime_over_eager']:.2f}x), "
        f"max |diff| {diff:.1e}"
    )
    return row


def main(argv=None):
    parser = argparse.ArgumentParser(description="ONNX export latency benchmark")
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--out", type=Path, help="JSON path (default: benchmarks/results/...)")
    args = parser.parse_args(argv)
    import onnxruntime as ort

    info = machine("cpu")
    info["onnxruntime"] = ort.__version__
    threads = torch.get_num_threads()
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for name, model, example, inputs in cases(args.quick):
            rows.append(bench(name, model, example, inputs, args.repeat, threads, folder))
    result = {
        "machine": info,
        "threads": threads,
        "quick": args.quick,
        "k": K,
        "group_size": G,
        "scale_factor": S,
        "results": rows,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }
    write_result(result, "bench_export_cpu", info, args.quick, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
