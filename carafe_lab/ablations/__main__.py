"""python -m carafe_lab.ablations list
python -m carafe_lab.ablations report [--update-docs]
python -m carafe_lab.ablations run STUDY [--task sr|seg|det|ins|inpaint] [--quick] [--seeds N]
                                     [--setting NAME] [--device cpu|cuda] [--scale 2|4]
                                     [--variants LABEL ...] [--jobs N] [--out DIR]
                                     [--data-root DIR] [--cfg-options KEY=VALUE ...]
                                     [--launcher none|pytorch] [--dry-run]
python -m carafe_lab.ablations resume FOLDER [--jobs N] [--seeds N] [--reevaluate]
                                     [--data-root DIR] [--launcher none|pytorch]
                                     (an interrupted study, or more seeds for one)

The paper's detection setting on GPUs (det, --setting coco: R-50 FPN, COCO
2017, mmdet's 1x), every process torchrun starts training each run together:

    torchrun --nproc_per_node 8 -m carafe_lab.ablations run upsamplers --task det \
        --setting coco --data-root data/coco --seeds 5

Tasks: sr (x2/x4 super-resolution of photographs; PSNR, SSIM), seg (semantic
segmentation of the offline shapes; mIoU, boundary F), det (Faster R-CNN on the
offline shapes through the detection launcher; box AP; needs the mmdet extra),
ins (Mask R-CNN likewise, the upsampler in the FPN and the mask head; mask AP,
box AP), inpaint (filling rectangular and free-form holes in photographs; PSNR in the
holes, SSIM).
Writes experiments/ablations/<study>/<task>/<timestamp>/ (results.json,
table.md, figure.png; runs/ with det's and ins's mmengine logs and the trained models of
seg and inpaint, kept locally). --scale 4 is for sr. --dry-run prints the
runs and, for det's coco setting, their V100 GPU-hours (and the figures'
source) without training or writing anything.
"""

import argparse
import os
import sys


class _CfgOptions(argparse.Action):
    """mmengine's DictAction (KEY=VALUE ..., as mmdet's tools/train.py takes
    them), imported when used: mmengine comes with the mmdet extra."""

    def __call__(self, parser, namespace, values, option_string=None):
        try:
            from mmengine.config import DictAction
        except ImportError:
            parser.error(f"{option_string}: needs mmengine (pip install -e .[mmdet])")
        DictAction(self.option_strings, self.dest)(parser, namespace, values, option_string)


def _add_distributed(parser):
    parser.add_argument(
        "--launcher",
        choices=["none", "pytorch"],
        default=None,
        help="pytorch: started by torchrun, every process trains each run together "
        "(default: pytorch inside torchrun, else none)",
    )


def _launcher(asked):
    """The launcher asked for, or "pytorch" inside a process torchrun started
    (it sets LOCAL_RANK), else "none"."""
    if asked is not None:
        return asked
    return "pytorch" if "LOCAL_RANK" in os.environ else "none"


def main(argv=None):
    from .harness import TASKS, run_study
    from .studies import STUDIES

    parser = argparse.ArgumentParser(prog="python -m carafe_lab.ablations")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="the studies and their variants")
    p = sub.add_parser("run", help="run a study")
    p.add_argument("study", choices=sorted(STUDIES))
    p.add_argument("--task", choices=sorted(TASKS), default="sr")
    p.add_argument("--quick", action="store_true", help="a few-minute CPU setting")
    p.add_argument(
        "--setting",
        default=None,
        help="the task's setting (default 'default'; det: default, quick, coco)",
    )
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--scale", type=int, choices=[2, 4], default=2)
    p.add_argument(
        "--variants",
        nargs="+",
        default=None,
        metavar="LABEL",
        help="run only these variants (labels as `list` prints them)",
    )
    p.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="trainings at once, in separate processes sharing the CPU's threads",
    )
    p.add_argument("--out", default=None, help="root folder (default experiments/ablations)")
    p.add_argument(
        "--data-root",
        default=None,
        metavar="DIR",
        help="det --setting coco: COCO 2017 (annotations/instances_{train,val}2017.json, "
        "train2017/, val2017/)",
    )
    p.add_argument(
        "--cfg-options",
        nargs="+",
        action=_CfgOptions,
        default=None,
        metavar="KEY=VALUE",
        help="det: mmengine config options applied over the setting's (as mmdet's "
        "tools/train.py takes them), e.g. train_cfg.max_epochs=1; saved with the study",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="print the runs and their estimated GPU-hours; train and write nothing",
    )
    _add_distributed(p)
    q = sub.add_parser("resume", help="continue an interrupted study in its folder")
    q.add_argument("folder")
    q.add_argument("--jobs", type=int, default=1)
    q.add_argument("--data-root", default=None, metavar="DIR", help="the study's data, if it moved")
    _add_distributed(q)
    q.add_argument(
        "--seeds", type=int, default=None, help="raise the study's seed count to this many"
    )
    q.add_argument(
        "--reevaluate",
        action="store_true",
        help="run the evaluated variants (e.g. carafe_phase_mean) again from the "
        "kept trained models",
    )
    r = sub.add_parser("report", help="summary table of the latest default-setting results")
    r.add_argument("--root", default=None, help="results root (default experiments/ablations)")
    r.add_argument(
        "--update-docs",
        "--update-readme",
        dest="update_docs",
        action="store_true",
        help="write the tables between the abl markers of docs/ablations.md",
    )
    args = parser.parse_args(argv)
    if args.command == "report":
        from . import report

        text = report.summary_markdown(args.root)
        verdict = report.verdict_markdown(args.root)
        tasks = report.tasks_markdown(args.root)
        print(text + "\n" + verdict + "\n" + tasks)
        if args.update_docs:
            report.update_docs(text)
            report.update_verdict(
                verdict, readme_text=report.verdict_markdown(args.root, kernel_lr=False)
            )
            report.update_tasks(tasks)
        return 0
    if args.command == "list":
        for study, variants in STUDIES.items():
            print(f"{study}: " + ", ".join(label for label, _, _ in variants))
        return 0
    try:
        if args.command == "resume":
            from .harness import resume_study

            out = resume_study(
                args.folder,
                jobs=args.jobs,
                seeds=args.seeds,
                reevaluate=args.reevaluate,
                data_root=args.data_root,
                launcher=_launcher(args.launcher),
            )
            _wrote(out)
            return 0
        if args.dry_run:
            from .harness import plan_study

            print(
                plan_study(
                    args.study,
                    args.task,
                    args.quick,
                    args.seeds,
                    args.scale,
                    args.out,
                    variants=args.variants,
                    setting=args.setting,
                    data_root=args.data_root,
                    cfg_options=args.cfg_options,
                )
            )
            return 0
        out = run_study(
            args.study,
            args.task,
            args.quick,
            args.seeds,
            args.device,
            args.scale,
            args.out,
            variants=args.variants,
            jobs=args.jobs,
            setting=args.setting,
            data_root=args.data_root,
            cfg_options=args.cfg_options,
            launcher=_launcher(args.launcher),
        )
    except ValueError as e:
        parser.error(str(e))
    _wrote(out)
    return 0


def _wrote(out):
    from ..experiments.launcher import _is_main_rank, finish_distributed

    finish_distributed()
    if _is_main_rank():  # the other ranks of a distributed study wrote nothing
        print(f"wrote {out}")


if __name__ == "__main__":
    sys.exit(main())
