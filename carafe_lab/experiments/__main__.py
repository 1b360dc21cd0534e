"""python -m carafe_lab.experiments {data,train,test,summarize} ...

    data       [--root DIR]                       write the offline dataset
    train      CONFIG [--work-dir DIR] [--cfg-options k=v ...] [--launcher none|pytorch] [--resume]
               [--trust-checkpoint FILE]
    test       CONFIG CHECKPOINT [--work-dir DIR] [--cfg-options k=v ...] [--trust-checkpoint FILE]
    summarize  [--runs DIR] [--out DIR] [--update-docs]     tables and plots of every run

Distributed (mmengine's launcher, as mmdetection users run it):
    torchrun --nproc_per_node=2 -m carafe_lab.experiments train CONFIG --launcher pytorch

Checkpoints load as weights only (tensors and the few types mmengine
checkpoints hold); --trust-checkpoint FILE unpickles that one file fully.
A mistake ends with one line on stderr and exit status 2 (--debug: the
traceback instead).
"""

import argparse
import sys


def _dict_action():
    """mmengine's DictAction, with a malformed KEY=VALUE reported by argparse
    (one line) instead of a ValueError traceback. Without mmengine, `--help`
    and `data` still work; train/test then say what to install."""
    try:
        from mmengine.config import DictAction
    except ImportError:

        class DictAction(argparse.Action):
            def __call__(self, parser, namespace, values, option_string=None):
                setattr(namespace, self.dest, dict(v.split("=", 1) for v in values))

    class CheckedDictAction(DictAction):
        def __call__(self, parser, namespace, values, option_string=None):
            for kv in values:
                if "=" not in kv or not kv.split("=", 1)[0]:
                    raise argparse.ArgumentError(
                        self, f"expected KEY=VALUE pairs (e.g. train_cfg.max_epochs=2), got {kv!r}"
                    )
            try:
                super().__call__(parser, namespace, values, option_string)
            except Exception as e:  # noqa: BLE001
                raise argparse.ArgumentError(self, f"cannot parse {values!r}: {e}") from e

    return CheckedDictAction


def main(argv=None):
    from .quiet import filter_known_warnings

    # mmengine's deprecation notice would bury the one-line errors below
    filter_known_warnings()
    parser = argparse.ArgumentParser(
        prog="python -m carafe_lab.experiments", description=__doc__.splitlines()[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--debug", action="store_true", help="show the traceback of an error instead of one line"
    )

    p = sub.add_parser("data", help="write the offline COCO-format dataset", parents=[common])
    p.add_argument("--root", default=None)

    DictAction = _dict_action()
    for name in ("train", "test"):
        p = sub.add_parser(name, parents=[common])
        p.add_argument("config")
        if name == "test":
            p.add_argument("checkpoint")
        p.add_argument("--work-dir", default=None)
        p.add_argument(
            "--cfg-options",
            nargs="+",
            action=DictAction,
            default=None,
            help="override config entries, e.g. train_cfg.max_epochs=2",
        )
        p.add_argument("--launcher", choices=["none", "pytorch", "slurm", "mpi"], default="none")
        if name == "train":
            p.add_argument(
                "--resume",
                action="store_true",
                help="continue the run in --work-dir (default: the config's "
                "latest run) from its last checkpoint",
            )
        p.add_argument(
            "--trust-checkpoint",
            default=None,
            metavar="FILE",
            help="unpickle this checkpoint fully (it can run code): only for a "
            "file you trust; every other checkpoint loads as weights only",
        )
        p.add_argument("--local_rank", "--local-rank", type=int, default=0, help=argparse.SUPPRESS)

    p = sub.add_parser("summarize", help="results table and plots of every run", parents=[common])
    p.add_argument("--runs", default=None)
    p.add_argument("--out", default=None)
    p.add_argument(
        "--update-docs",
        "--update-readme",
        dest="update_docs",
        action="store_true",
        help="also write the tables into docs/detection.md",
    )

    args = parser.parse_args(argv)
    try:
        return _run(args)
    except KeyboardInterrupt:
        raise
    except Exception as e:  # noqa: BLE001 (one line for any mistake; --debug for the rest)
        if args.debug:
            raise
        message = str(e).strip().splitlines()[0] if str(e).strip() else ""
        print(
            f"error: {message or type(e).__name__} ({type(e).__name__}; --debug shows the "
            "traceback)",
            file=sys.stderr,
        )
        return 2


def _needs_mmdet():
    try:
        import mmdet  # noqa: F401
        import mmengine  # noqa: F401
    except ImportError as e:
        raise RuntimeError(
            f"this command needs the mmdet extra ({e}): `make setup`, or "
            "pip install --no-build-isolation -e '.[mmdet-lite]' (on mmcv-lite: nothing "
            "of mmcv compiled), or scripts/install_mmcv.sh then the same with '.[mmdet]'"
        ) from None
    from carafe.mmcv_ext import install

    install()  # mmcv-lite: mmcv's compiled ops from carafe.mmcv_ext (see there)


def _run(args):
    if args.command in ("train", "test"):
        _needs_mmdet()
    if args.command == "data":
        from .data import ensure_offline_coco

        root = ensure_offline_coco(args.root)
        print(f"offline dataset at {root}")
    elif args.command == "train":
        from .launcher import finish_distributed, train

        run = train(
            args.config,
            args.work_dir,
            args.cfg_options,
            args.launcher,
            args.resume,
            trusted_checkpoint=args.trust_checkpoint,
        )
        finish_distributed()
        print(f"run folder: {run}")
    elif args.command == "test":
        from .launcher import finish_distributed, test

        metrics = test(
            args.config,
            args.checkpoint,
            args.work_dir,
            args.cfg_options,
            args.launcher,
            trusted_checkpoint=args.trust_checkpoint,
        )
        finish_distributed()
        print(metrics)
    else:
        from .summarize import summarize

        for path in summarize(args.runs, args.out, docs=args.update_docs):
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
