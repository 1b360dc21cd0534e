"""python -m carafe_lab.ablations list
python -m carafe_lab.ablations report [--update-docs]
python -m carafe_lab.ablations run STUDY [--task sr|seg|det|inpaint] [--quick] [--seeds N]
                                     [--device cpu|cuda] [--scale 2|4]
                                     [--variants LABEL ...] [--jobs N] [--out DIR]
python -m carafe_lab.ablations resume FOLDER [--jobs N] [--seeds N] [--reevaluate]
                                     (an interrupted study, or more seeds for one)

Tasks: sr (x2/x4 super-resolution of photographs; PSNR, SSIM), seg (semantic
segmentation of the offline shapes; mIoU, boundary F), det (Faster R-CNN on the
offline shapes through the detection launcher; box AP; needs the mmdet extra),
inpaint (filling rectangular and free-form holes in photographs; PSNR in the
holes, SSIM).
Writes experiments/ablations/<study>/<task>/<timestamp>/ (results.json,
table.md, figure.png; runs/ with det's mmengine logs and the trained models of
seg and inpaint, kept locally). --scale 4 is for sr.
"""

import argparse
import sys


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
    q = sub.add_parser("resume", help="continue an interrupted study in its folder")
    q.add_argument("folder")
    q.add_argument("--jobs", type=int, default=1)
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
            report.update_verdict(verdict)
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
                args.folder, jobs=args.jobs, seeds=args.seeds, reevaluate=args.reevaluate
            )
            print(f"wrote {out}")
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
        )
    except ValueError as e:
        parser.error(str(e))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
