"""Runs a study on a task over seeds and writes
experiments/ablations/<study>/<task>/<timestamp>/{results.json, table.md, figure.png}."""

import json
import platform
import statistics
import time
from pathlib import Path

import torch

from .. import paths
from ..downsamplers import build_downsampler, split_options
from ..experiments.folders import new_folder
from ..timing import median_seconds
from ..upsamplers import build_upsampler, count_parameters, needs_skip, upsample
from . import det, inpaint, ins, paper, seg, sr
from .studies import STUDIES, STUDY_TASKS, evaluated, training_overrides

#: task name -> its module (each declares TASK, SETTINGS and run()).
TASKS = {m.TASK.name: m for m in (sr, seg, det, ins, inpaint)}


def task_of(name):
    """The Task declaration of a task name."""
    if name not in TASKS:
        raise ValueError(f"task {name!r} is not available; available: {sorted(TASKS)}")
    return TASKS[name].TASK


def metrics_of(task):
    return task_of(task).metrics


def sized_module(name, options, channels):
    """The module a variant's sizes (parameters, FLOPs, latency) describe:
    the downsampler its options name (carafe_lab.downsamplers.split_options),
    else its upsampler at scale 2."""
    up_options, down = split_options(options)
    if down is not None:
        return build_downsampler(down[0], channels, **down[1])
    return build_upsampler(name, channels, 2, **up_options)


def latency_ms(name, options, channels=64, size=64, device="cpu", repeat=10):
    """Median forward time of the upsampler (or the variant's downsampler)
    alone on (1, channels, size, size) (and a (1, channels, 2*size, 2*size)
    encoder feature if it takes one)."""
    m = sized_module(name, options, channels).to(device).eval()
    x = torch.randn(1, channels, size, size, device=device)
    skip = torch.randn(1, channels, 2 * size, 2 * size, device=device) if needs_skip(m) else None
    with torch.no_grad():
        return 1e3 * median_seconds(lambda: upsample(m, x, skip), device, repeat)


def _run_one(task, name, options, kwargs, threads):
    """One (variant, seed) training in the current process with `threads`
    intra-op threads; module-level so a spawned worker can unpickle it."""
    if threads is not None:
        torch.set_num_threads(threads)
    return TASKS[task].run(name, options, **kwargs)


def _evaluate_one(task, evaluation, trained, kwargs, threads):
    """An evaluated variant's seed: the task's ``evaluate(evaluation, trained
    result, **kwargs)``, or None when the task does not implement that
    evaluation yet (the seed then stays missing; ``resume`` fills it)."""
    if threads is not None:
        torch.set_num_threads(threads)
    evaluate = getattr(TASKS[task], "evaluate", None)
    if evaluate is None:
        return None
    try:
        return evaluate(evaluation, trained, **kwargs)
    except NotImplementedError:
        return None


def select_variants(study, labels=None, task=None):
    """The study's (label, name, options) variants, all of them or those whose
    labels are listed (kept in the study's order). With a task whose model
    has no encoder feature to give (``Task.encoder_features`` False: sr),
    the variants whose upsampler needs one (FADE, SAPA) are left out of
    "all of them", and naming one is an error."""
    variants = STUDIES[study]
    runnable = variants
    if task is not None and not task_of(task).encoder_features:
        runnable = [v for v in variants if not needs_skip(v[1])]
    if labels is None:
        return list(runnable)
    known = [label for label, _, _ in variants]
    unknown = [label for label in labels if label not in known]
    if unknown or not labels:
        raise ValueError(
            f"variants: {unknown or labels!r} not in study {study!r}; choose from {known}"
        )
    refused = [v[0] for v in variants if v[0] in labels and v not in runnable]
    if refused:
        raise ValueError(
            f"variants: {refused!r} need the encoder feature at the output resolution, "
            f"which task {task!r} does not have; choose from {[v[0] for v in runnable]}"
        )
    return [v for v in variants if v[0] in labels]


def _task_accepts(task, name):
    """Whether the task's run() takes the keyword `name`."""
    import inspect

    return name in inspect.signature(TASKS[task].run).parameters


def _study_params(
    study,
    task,
    quick,
    seeds,
    device,
    scale,
    steps,
    variants,
    jobs,
    setting,
    data_root,
    cfg_options,
    launcher,
    need_data=True,
):
    """The validated parameters of a new study (run_study's arguments)."""
    if study not in STUDIES:
        raise ValueError(f"unknown study {study!r}; choose from {sorted(STUDIES)}")
    if task not in TASKS:
        raise ValueError(f"task {task!r} is not available; available: {sorted(TASKS)}")
    if task not in STUDY_TASKS.get(study, (task,)):
        raise ValueError(f"task: study {study!r} runs on {list(STUDY_TASKS[study])}, got {task!r}")
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"seeds: expected an integer >= 1, got {seeds!r}")
    if quick and setting not in (None, "quick"):
        raise ValueError(f"setting: --quick is setting 'quick'; got setting {setting!r} too")
    setting = "quick" if quick else (setting or "default")
    if setting not in TASKS[task].SETTINGS:
        raise ValueError(
            f"setting: task {task!r} has settings {sorted(TASKS[task].SETTINGS)}, got {setting!r}"
        )
    _check_jobs(jobs, device, launcher)
    _check_task_options(task, setting, data_root, cfg_options, launcher, need_data)
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device: 'cuda' was asked for but torch.cuda.is_available() is False")
    chosen = select_variants(study, variants, task)
    params = {
        "study": study,
        "task": task,
        "setting": setting,
        "scale": scale,
        "seeds": seeds,
        "device": device,
        "steps": steps,
        "variants": [label for label, _, _ in chosen],
    }
    if data_root is not None:
        params["data_root"] = str(Path(data_root).expanduser().resolve())
    if cfg_options:
        params["cfg_options"] = dict(cfg_options)
    return params


def _check_task_options(task, setting, data_root, cfg_options, launcher, need_data=True):
    """Errors naming the argument for options the task does not take, and
    the task's own check of the data root (need_data=False: a missing one
    is allowed, for a dry run)."""
    for name, value, unset in (
        ("data_root", data_root, None),
        ("cfg_options", cfg_options, None),
        ("launcher", launcher, "none"),
    ):
        if value not in (unset, {}) and not _task_accepts(task, name):
            raise ValueError(
                f"{name}: task {task!r} does not take it (only det does); got {value!r}"
            )
    check = getattr(TASKS[task], "check_data_root", None)
    if check is not None and (data_root is not None or need_data):
        check(setting, data_root)


def run_study(
    study,
    task="sr",
    quick=False,
    seeds=1,
    device="cpu",
    scale=2,
    out_root=None,
    steps=None,
    log=print,
    variants=None,
    jobs=1,
    setting=None,
    data_root=None,
    cfg_options=None,
    launcher="none",
):
    """Train every variant of `study` on `task` for seeds 0..seeds-1 and write
    results.json, table.md and figure.png into a new folder
    out_root/<study>/<task>/<timestamp>[_n] (claimed atomically: two studies
    started in the same second never share it). results.json is rewritten
    as each (variant, seed) finishes ("complete": false until the last), so
    an interrupted study loses only the trainings in flight and
    :func:`resume_study` continues it.

    variants: labels to run (default: all of the study's); jobs: trainings run
    at once in separate processes, each with torch's thread count divided by
    jobs (on a 2-core CPU, jobs=2 runs two 1-thread trainings, which finish
    sooner in total than one 2-thread training after another). setting: one
    of the task's SETTINGS (quick=True is "quick"; default "default").
    data_root, cfg_options (mmengine options applied over the setting's) and
    launcher ("pytorch": every process torchrun started calls this, and all
    train each run together; rank 0 alone writes the study's files): det
    only; they are saved with the study, except the launcher."""
    params = _study_params(
        study,
        task,
        quick,
        seeds,
        device,
        scale,
        steps,
        variants,
        jobs,
        setting,
        data_root,
        cfg_options,
        launcher,
    )
    if variants is None:
        left_out = [v[0] for v in STUDIES[study] if v[0] not in params["variants"]]
        if left_out:
            log(f"{study} on {task}: {left_out} left out (they need an encoder feature it lacks)")
    from ..experiments.launcher import _agree

    out = _agree(
        launcher, {}, lambda: new_folder(Path(out_root or paths.ablations()) / study / task)
    )
    return _execute(out, params, {}, jobs, log, launcher)


def plan_study(
    study,
    task="sr",
    quick=False,
    seeds=1,
    scale=2,
    out_root=None,
    variants=None,
    setting=None,
    data_root=None,
    cfg_options=None,
):
    """What run_study would run, as text, without training or writing: one
    line per (variant, seed) with its config and work dir, and the study's
    cost where the task publishes one (det's coco setting: V100 GPU-hours
    and their source). data_root may be missing; the text says what the
    setting needs."""
    params = _study_params(
        study,
        task,
        quick,
        seeds,
        "cpu",
        scale,
        None,
        variants,
        1,
        setting,
        data_root,
        cfg_options,
        "none",
        need_data=False,
    )
    setting, module = params["setting"], TASKS[task]
    config = module.SETTINGS[setting].get("config") if hasattr(module, "SETTINGS") else None
    root = Path(out_root or paths.ablations()) / study / task / "<timestamp>"
    lines = [f"dry run: study {study!r} on task {task!r}, setting {setting!r}, {seeds} seed(s)"]
    if config:
        lines.append(f"config: {paths.configs() / config}")
    needed = getattr(module, "data_needed", lambda s: None)(setting)
    if needed:
        where = params.get("data_root") or "not given: pass --data-root DIR"
        lines.append(f"data root: {where} (needs {needed})")
    if params.get("cfg_options"):
        lines.append(f"cfg options: {params['cfg_options']}")
    cost = getattr(module, "cost", lambda s: None)(setting)
    labels = params["variants"]
    total = 0.0
    lines.append("runs (variant, seed, work dir[, V100 GPU-hours]):")
    for seed in range(seeds):
        for i, label in enumerate(labels):
            source = evaluated(study, label)
            work_dir = root / "runs" / f"{i:02d}_{label}_seed{seed}"
            what = f"  {label:<22} seed {seed}  "
            if source:
                what += f"evaluates {source[0]}'s model ({source[1]})"
                hours = cost and cost["eval_gpu_hours"]
            else:
                what += str(work_dir)
                hours = cost and cost["train_gpu_hours"] + (
                    cost["evaluations_per_run"] * cost["eval_gpu_hours"]
                )
            if cost:
                what += f"  {hours:.1f}"
                total += hours
            lines.append(what)
    if cost:
        lines.append(
            f"estimate: {total:.0f} V100 GPU-hours for {len(labels) * seeds} run(s) "
            f"(about {total / 8:.0f} h on 8 GPUs); source: {cost['source']}"
        )
    else:
        lines.append(f"estimate: none published for setting {setting!r} (a CPU setting)")
    lines.append("nothing was trained or written")
    return "\n".join(lines)


def resume_study(
    folder, jobs=1, log=print, seeds=None, reevaluate=False, data_root=None, launcher="none"
):
    """Continue the study whose partial results.json is in folder: the
    (variant, seed) trainings it lacks are run, the others kept. seeds: raise
    the study's seed count to this many (more seeds for a difference the
    first ones did not resolve); the study is then incomplete until they
    are run. reevaluate: run every evaluated variant's seeds again from the
    kept trained models, with the current code (a complete study too).
    data_root: the study's data now (det's coco setting; default: where the
    study found it); launcher: as for run_study."""
    path = Path(folder) / "results.json"
    try:
        saved = json.loads(path.read_text())
        params = {k: saved[k] for k in ("study", "task", "setting", "scale", "seeds", "device")}
        params["steps"] = saved.get("steps")
        params["variants"] = [r["label"] for r in saved["rows"]]
        for key in ("data_root", "cfg_options"):
            if saved.get(key) is not None:
                params[key] = saved[key]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(
            f"resume: {path} is missing or damaged ({type(e).__name__}: {e}); nothing to resume"
        ) from None
    if seeds is not None:
        if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < params["seeds"]:
            raise ValueError(
                f"seeds: expected an integer >= the study's {params['seeds']}, got {seeds!r}"
            )
        if seeds > params["seeds"]:
            params["seeds"], saved["complete"] = seeds, False
    if saved.get("complete") and not reevaluate:
        raise ValueError(f"resume: the study in {folder} is complete; nothing to resume")
    if data_root is not None:
        params["data_root"] = str(Path(data_root).expanduser().resolve())
    _check_jobs(jobs, params["device"], launcher)
    _check_task_options(
        params["task"],
        params["setting"],
        params.get("data_root"),
        params.get("cfg_options"),
        launcher,
    )
    select_variants(params["study"], params["variants"], params["task"])  # still has them
    # keyed by label: the study's variants may be listed in another order now
    finished = {
        (r["label"], s["seed"]): {k: v for k, v in s.items() if k != "seed"}
        for r in saved["rows"]
        for s in r["seeds"]
        if not (reevaluate and evaluated(params["study"], r["label"]))
    }
    return _execute(Path(folder), params, finished, jobs, log, launcher)


LAUNCHERS = ("none", "pytorch")


def _check_jobs(jobs, device, launcher="none"):
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs: expected an integer >= 1, got {jobs!r}")
    if jobs > 1 and device == "cuda":
        raise ValueError("jobs: parallel trainings are for CPU; use jobs=1 with device='cuda'")
    if launcher not in LAUNCHERS:
        raise ValueError(f"launcher: expected one of {LAUNCHERS}, got {launcher!r}")
    if jobs > 1 and launcher != "none":
        raise ValueError(
            f"jobs: torchrun's processes train each run together; use jobs=1 with "
            f"launcher={launcher!r}"
        )


def _check_sources(study, labels):
    for label in labels:
        source = evaluated(study, label)
        if source and source[0] not in labels:
            raise ValueError(
                f"variants: {label!r} evaluates the trained models of "
                f"{source[0]!r}; choose {source[0]!r} too"
            )


def sized_channels(task, options, setting):
    """The channels of each slot of the task's model that a variant's sizes
    count: its downsamplers' when it names one, else its upsamplers'."""
    spec = task_of(task)
    if split_options(options)[1] is not None:
        return tuple(spec.downsampler_channels(setting))
    return tuple(spec.upsampler_channels(setting))


def trained_size(task, name, options, setting):
    """(parameters, FLOPs per low-resolution pixel of one module) of the
    upsamplers (or the variant's downsamplers) as they sit in the task's
    trained model at this setting: every slot's module at that slot's
    channels, summed; FLOPs at the first slot's."""
    channels = sized_channels(task, options, setting)
    if not channels:
        raise ValueError(f"task {task!r} takes no downsampler; options: {options!r}")
    modules = [sized_module(name, options, c) for c in channels]
    return sum(count_parameters(m) for m in modules), modules[0].flops_per_pixel()


def _from_rank0(launcher, outcome):
    """Rank 0's outcome on every rank of a distributed study (the others'
    own are dropped: rank 0 read the run's records); outcome itself when
    not distributed."""
    if launcher == "none":
        return outcome
    from mmengine.dist import broadcast_object_list

    box = [outcome]
    broadcast_object_list(box, src=0)
    return box[0]


def _execute(out, params, finished, jobs, log, launcher="none"):
    from ..experiments.launcher import _is_main_rank

    study, task, device = params["study"], params["task"], params["device"]
    writer = _is_main_rank()  # one process writes the study's files and log
    if not writer:
        log = lambda *_: None  # noqa: E731
    chosen = select_variants(study, params["variants"], task)
    labels = [label for label, _, _ in chosen]
    _check_sources(study, labels)
    # finished runs, {(label, seed): result}, by their index in this order
    finished = {(labels.index(label), seed): result for (label, seed), result in finished.items()}
    seeds, metrics = params["seeds"], metrics_of(task)
    threads = max(1, torch.get_num_threads() // jobs) if jobs > 1 else torch.get_num_threads()
    rows = []
    for label, name, options in chosen:
        module = sized_module(name, options, 256)
        params_trained, flops_trained = trained_size(task, name, options, params["setting"])
        rows.append(
            {
                "label": label,
                "upsampler": name,
                "options": options,
                "params_c256_s2": count_parameters(module),
                "flops_per_pixel_c256_s2": module.flops_per_pixel(),
                "params_trained": params_trained,
                "flops_per_pixel_trained": flops_trained,
                "upsampler_channels": list(task_of(task).upsampler_channels(params["setting"])),
                "latency_ms_c64_64px": latency_ms(name, options, device=device),
            }
        )
        if split_options(options)[1] is not None:  # the sizes are the downsampler's
            rows[-1]["sized"] = "downsampler"
            rows[-1]["downsampler_channels"] = list(
                sized_channels(task, options, params["setting"])
            )
        if evaluated(study, label):
            rows[-1]["evaluates"] = dict(zip(("variant", "evaluation"), evaluated(study, label)))
        if training_overrides(study, label):
            rows[-1]["training"] = training_overrides(study, label)
    sources = {
        labels.index(src) for src, _ in filter(None, (evaluated(study, lb) for lb in labels))
    }

    def train_kwargs(i, seed):
        label = labels[i]
        kwargs = dict(
            scale=params["scale"],
            seed=seed,
            setting=params["setting"],
            device=device,
            steps=params["steps"],
            **training_overrides(study, label),
        )
        for key in ("data_root", "cfg_options"):
            if params.get(key) is not None:
                kwargs[key] = params[key]
        if launcher != "none":
            kwargs["launcher"] = launcher
        if task_of(task).keeps_run_folders or task_of(task).saves_models or i in sources:
            kwargs["work_dir"] = out / "runs" / f"{i:02d}_{label}_seed{seed}"
        return kwargs

    # seed-major: an interrupted study has every arm at about the same seeds
    todo = [
        (i, seed) for seed in range(seeds) for i in range(len(chosen)) if (i, seed) not in finished
    ]
    started = time.perf_counter()
    results_by_run = dict(finished)

    def save(complete):
        if not writer:
            return None
        for i, row in enumerate(rows):
            row["seeds"] = [
                {"seed": seed, **results_by_run[i, seed]}
                for seed in range(seeds)
                if (i, seed) in results_by_run
            ]
            for m in metrics:
                values = [s[m] for s in row["seeds"]]
                row[f"{m}_mean"] = statistics.mean(values) if values else None
                row[f"{m}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
        results = {
            **{
                k: params[k]
                for k in ("study", "task", "setting", "scale", "seeds", "device", "steps")
            },
            **{k: params[k] for k in ("data_root", "cfg_options") if k in params},
            "torch": torch.__version__,
            "machine": platform.platform(),
            "jobs": jobs,
            "threads_per_run": threads,
            "wall_seconds": round(time.perf_counter() - started, 1),
            "complete": complete,
            "rows": rows,
            "published_source": paper.source(study, task),
        }
        results.update(task_of(task).results_keys)
        tmp = out / "results.json.tmp"  # a kill mid-write never leaves half a file
        tmp.write_text(json.dumps(results, indent=2) + "\n")
        tmp.replace(out / "results.json")
        return results

    def done(i, seed, result):
        if result is None:
            log(
                f"[{study}/{task}] {labels[i]} seed {seed}: evaluation "
                f"{evaluated(study, labels[i])[1]!r} is not available for {task}; left for "
                "`resume`"
            )
            return
        source = evaluated(study, labels[i])
        if source and "trained_kernels" in result:
            # an evaluation that also scored the trained model's kernels: they
            # belong to the trained variant's seed
            trained = results_by_run.get((labels.index(source[0]), seed))
            kernels = result.pop("trained_kernels")
            if trained is not None:
                trained["kernels"] = kernels
        results_by_run[i, seed] = result
        save(complete=False)
        log(
            f"[{study}/{task}] {labels[i]} seed {seed} ({len(results_by_run)}/"
            f"{len(chosen) * seeds}): "
            + ", ".join(f"{m} {result[m]:.4f}" for m in metrics)
            + f" ({time.perf_counter() - started:.0f} s so far)"
        )

    def job(i, seed):
        """(function, args) of one (variant, seed), or None while an
        evaluated variant's trained model is not there yet."""
        source = evaluated(study, labels[i])
        if source is None:
            _, name, options = chosen[i]
            return _run_one, (task, name, options, train_kwargs(i, seed))
        trained = results_by_run.get((labels.index(source[0]), seed))
        if trained is None:
            return None
        kwargs = dict(
            setting=params["setting"], device=device, **training_overrides(study, labels[i])
        )
        if launcher != "none":
            kwargs["launcher"] = launcher
        return _evaluate_one, (task, source[1], trained, kwargs)

    save(complete=False)
    failures = []

    def next_ready(waiting):
        """The first (variant, seed) of waiting, in seed-major order, whose
        job can start (an evaluation waits for its trained model)."""
        return next(((i, seed) for i, seed in waiting if job(i, seed) is not None), None)

    def failed(i, seed, error):
        """error: the exception, or its "Type: message" from rank 0."""
        failures.append((labels[i], seed))
        why = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        log(f"[{study}/{task}] {labels[i]} seed {seed} failed ({why}); left for `resume`")

    if jobs == 1:
        waiting = list(todo)
        while (item := next_ready(waiting)) is not None:
            waiting.remove(item)
            fn, args = job(*item)
            try:
                outcome = ("ok", fn(*args, None))
            except Exception as e:  # noqa: BLE001  (one failed training must not end the study)
                outcome = ("error", f"{type(e).__name__}: {e}")
            # every rank goes on with rank 0's result, so that all pick the same next run
            kind, value = _from_rank0(launcher, outcome)
            if kind == "ok":
                done(*item, value)
            else:
                failed(*item, value)
    else:
        import multiprocessing
        from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

        # spawn: a forked child would inherit torch's OpenMP pool mid-state;
        # one training per process: no state (mmengine's global registries and
        # message hub, torch's RNG) carries from one run into the next. At most
        # `jobs` in flight, taken in seed-major order as they become ready, so
        # that an interrupted study has its evaluations as far as it got.
        with ProcessPoolExecutor(
            jobs, mp_context=multiprocessing.get_context("spawn"), max_tasks_per_child=1
        ) as pool:
            waiting, running = list(todo), {}
            while True:
                while len(running) < jobs and (item := next_ready(waiting)) is not None:
                    waiting.remove(item)
                    fn, args = job(*item)
                    running[pool.submit(fn, *args, threads)] = item
                if not running:
                    break  # nothing left, or only evaluations whose training failed
                finished_now, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished_now:
                    item = running.pop(future)
                    try:
                        done(*item, future.result())
                    except Exception as e:  # noqa: BLE001
                        failed(*item, e)
    if failures:
        log(
            f"[{study}/{task}] {len(failures)} run(s) failed: {failures}; the study is "
            f"incomplete: python -m carafe_lab.ablations resume {out}"
        )
    complete = all((i, seed) in results_by_run for i in range(len(chosen)) for seed in range(seeds))
    results = save(complete=complete)
    if complete and writer:
        (out / "table.md").write_text(table(results))
        figure(results, out / "figure.png")
    return out


def table(results):
    """The study's table.md (carafe_lab.ablations.tables.study_markdown)."""
    from .tables import study_markdown

    return study_markdown(results)


def figure(results, path):
    """Dot plot of the first metric per variant (mean, error bars: ± one
    sample std over seeds; the seeds as small dots), against the first
    variant (the baseline) as a dashed line. Saved to path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    spec = task_of(results["task"])
    m0 = spec.metrics[0]
    rows = results["rows"]
    fig, ax = plt.subplots(figsize=(6.5, 0.45 * len(rows) + 1.4))
    for i, r in enumerate(rows):
        ax.scatter([s[m0] for s in r["seeds"]], [i] * len(r["seeds"]), s=8, color="0.6", zorder=1)
        ax.errorbar(
            r[f"{m0}_mean"], i, xerr=r[f"{m0}_std"], fmt="o", color="C0", capsize=3, zorder=2
        )
    ax.axvline(
        rows[0][f"{m0}_mean"],
        color="0.3",
        ls="--",
        lw=1,
        label=f"{rows[0]['label']} (baseline) mean",
    )
    ax.set_yticks(range(len(rows)), [r["label"] for r in rows])
    ax.invert_yaxis()
    unit = spec.axis_label(results, m0)
    ax.set(
        xlabel=f"{unit}: mean ± 1 std over {results['seeds']} seed(s), grey: seeds",
        title=f"{results['study']} ({results['task']}, x{results['scale']})",
    )
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
