"""The mmcv-lite route against full mmcv on one training: the same offline
Faster R-CNN run (config, seed, one intra-op thread) trained once on each
stack, compared logged iteration by logged iteration (losses, accuracy,
gradient norm) and by final box AP, beside the box AP of the same variant's
other seeds in the study the full-mmcv run belongs to (the seed spread).

    python scripts/mmcv_lite_parity.py FULL_RUN LITE_RUN --study RESULTS_JSON \\
        --out experiments/results/mmcv_lite_parity/parity.json [--lite-commit SHA]

FULL_RUN and LITE_RUN are run folders (each with env.json, metrics.json and
*/vis_data/scalars.json); RESULTS_JSON is the study's results.json. Writes
OUT and prints a one-line summary. Reads only; writes only OUT.
"""

import argparse
import json
import math
import os
import sys
from pathlib import Path

#: What each logged training row is compared on.
TRAIN_KEYS = ("loss", "loss_rpn_cls", "loss_rpn_bbox", "loss_cls", "loss_bbox", "acc", "grad_norm")
#: The first logged iterations, where the issue asks for agreement to float noise.
FIRST_ITERATIONS = 100


def _scalars(run: Path):
    paths = list(run.glob("*/vis_data/scalars.json"))
    if len(paths) != 1:
        raise SystemExit(f"run: expected one */vis_data/scalars.json in {run}, found {len(paths)}")
    rows = [json.loads(line) for line in paths[0].read_text().splitlines() if line.strip()]
    return {row["iter"]: row for row in rows if "loss" in row and "iter" in row}


def _run_info(run: Path) -> dict:
    env = json.loads((run / "env.json").read_text())
    metrics = json.loads((run / "metrics.json").read_text())
    summary = json.loads((run / "run.json").read_text())
    return {
        "run": _rel(run),
        # env.json written before the mmcv-lite route existed has no mmcv_ops:
        # such a run can only have run full mmcv's compiled ops
        "mmcv_ops": env.get("mmcv_ops", "mmcv"),
        "mmcv": env.get("mmcv"),
        "torch": env.get("torch"),
        "torch_threads": env.get("torch_threads"),
        "git_commit": env.get("git_commit"),
        "iter": summary.get("iter"),
        "wall_seconds": summary.get("wall_seconds"),
        "bbox_mAP": metrics["coco/bbox_mAP"],
        "bbox_mAP_50": metrics["coco/bbox_mAP_50"],
    }


#: Paths are recorded relative to the checkout, so that the JSON does not
#: depend on where it was written from.
REPO = Path(__file__).resolve().parents[1]


def _rel(path: Path) -> str:
    path = path.resolve()
    try:
        return str(path.relative_to(REPO))
    except ValueError:
        return str(path)


def _seed_spread(study: Path, full_run: Path) -> dict:
    """The box AP of every seed of the full run's variant in the study."""
    results = json.loads(study.read_text())
    for row in results["rows"]:
        seeds = row.get("seeds", [])
        if any(Path(s.get("work_dir", "")).name == full_run.resolve().name for s in seeds):
            return {
                "study": _rel(study),
                "variant": row["label"],
                "bbox_mAP_by_seed": {str(s["seed"]): s["bbox_mAP"] for s in seeds},
            }
    raise SystemExit(f"study: no row of {study} has a seed whose work_dir is {full_run.name}")


def compare(full_run: Path, lite_run: Path, study: Path, lite_commit=None) -> dict:
    full, lite = _scalars(full_run), _scalars(lite_run)
    iterations = sorted(set(full) & set(lite))
    if not iterations:
        raise SystemExit("no logged iteration in common")
    per_iteration = []
    for it in iterations:
        diffs = {
            k: abs(full[it][k] - lite[it][k]) for k in TRAIN_KEYS if k in full[it] and k in lite[it]
        }
        per_iteration.append(
            {
                "iter": it,
                "loss_full": full[it]["loss"],
                "loss_lite": lite[it]["loss"],
                "max_abs_diff": max(diffs.values()),
            }
        )
    first = [row for row in per_iteration if row["iter"] <= FIRST_ITERATIONS]
    info_full, info_lite = _run_info(full_run), _run_info(lite_run)
    if lite_commit:  # a run launched outside a checkout records no commit
        info_lite["git_commit"] = info_lite["git_commit"] or lite_commit
    spread = _seed_spread(study, full_run)
    seeds_ap = list(spread["bbox_mAP_by_seed"].values())
    return {
        "what": (
            "one offline Faster R-CNN run trained on full mmcv 2.1.0 (its compiled ops) "
            "and on mmcv-lite 2.1.0 with carafe.mmcv_ext, same config and seed, one "
            "intra-op thread: logged training rows and final box AP compared"
        ),
        "compared_keys": list(TRAIN_KEYS),
        "full": info_full,
        "lite": info_lite,
        "logged_iterations": len(iterations),
        "identical_logged_iterations": sum(row["max_abs_diff"] == 0 for row in per_iteration),
        "max_abs_diff_first_iterations": {
            "up_to_iter": FIRST_ITERATIONS,
            "value": max(row["max_abs_diff"] for row in first) if first else math.nan,
        },
        "max_abs_diff_all_iterations": max(row["max_abs_diff"] for row in per_iteration),
        "bbox_mAP_diff": info_lite["bbox_mAP"] - info_full["bbox_mAP"],
        "seed_spread": {**spread, "range": [min(seeds_ap), max(seeds_ap)]},
        "per_iteration": per_iteration,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("full_run", type=Path)
    parser.add_argument("lite_run", type=Path)
    parser.add_argument("--study", type=Path, required=True, help="the study's results.json")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument(
        "--lite-commit",
        help="the commit the lite run's code was at, where its env.json has none "
        "(a run launched from outside the checkout)",
    )
    args = parser.parse_args(argv)
    result = compare(args.full_run, args.lite_run, args.study, args.lite_commit)
    tmp = args.out.with_suffix(args.out.suffix + ".tmp")
    tmp.write_text(json.dumps(result, indent=1) + "\n")
    os.replace(tmp, args.out)
    print(
        f"{result['identical_logged_iterations']}/{result['logged_iterations']} logged "
        f"iterations identical; box AP full {result['full']['bbox_mAP']}, lite "
        f"{result['lite']['bbox_mAP']} (seeds: {result['seed_spread']['bbox_mAP_by_seed']})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
