"""python -m carafe.experiments {data,train,test,summarize} ...

    data       [--root DIR]                       write the offline dataset
    train      CONFIG [--work-dir DIR] [--cfg-options k=v ...] [--launcher none|pytorch] [--resume]
    test       CONFIG CHECKPOINT [--work-dir DIR] [--cfg-options k=v ...]
    summarize  [--runs DIR] [--out DIR] [--update-readme]   tables and plots of every run

Distributed (mmengine's launcher, as mmdetection users run it):
    torchrun --nproc_per_node=2 -m carafe.experiments train CONFIG --launcher pytorch
"""

import argparse
import sys


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m carafe.experiments",
                                     description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("data", help="write the offline COCO-format dataset")
    p.add_argument("--root", default=None)

    from mmengine.config import DictAction
    for name in ("train", "test"):
        p = sub.add_parser(name)
        p.add_argument("config")
        if name == "test":
            p.add_argument("checkpoint")
        p.add_argument("--work-dir", default=None)
        p.add_argument("--cfg-options", nargs="+", action=DictAction, default=None,
                       help="override config entries, e.g. train_cfg.max_epochs=2")
        p.add_argument("--launcher", choices=["none", "pytorch", "slurm", "mpi"],
                       default="none")
        if name == "train":
            p.add_argument("--resume", action="store_true",
                           help="continue the run in --work-dir (default: the config's "
                                "latest run) from its last checkpoint")
        p.add_argument("--local_rank", "--local-rank", type=int, default=0,
                       help=argparse.SUPPRESS)

    p = sub.add_parser("summarize", help="results table and plots of every run")
    p.add_argument("--runs", default=None)
    p.add_argument("--out", default=None)
    p.add_argument("--update-readme", action="store_true",
                   help="also write the table into README.md")

    args = parser.parse_args(argv)
    if args.command == "data":
        from .data import DEFAULT_ROOT, ensure_offline_coco
        root = ensure_offline_coco(args.root or DEFAULT_ROOT)
        print(f"offline dataset at {root}")
    elif args.command == "train":
        from .launcher import train
        run = train(args.config, args.work_dir, args.cfg_options, args.launcher, args.resume)
        print(f"run folder: {run}")
    elif args.command == "test":
        from .launcher import test
        metrics = test(args.config, args.checkpoint, args.work_dir, args.cfg_options,
                       args.launcher)
        print(metrics)
    else:
        from .summarize import summarize
        for path in summarize(args.runs, args.out, readme=args.update_readme):
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
