"""The main job: run continual-learning methods over a scenario, write results and reports.

`run(cfg)` takes a checked `RunConfig` (presets + flags, `runner.config.load_config`). It
encodes every split once into the feature cache, runs each (method, seed) through
`engine.loop.run_continual` with per-task checkpoints (`--resume` continues them, only with the
settings and data recorded in run_identity.json), and writes results.json, the accuracy CSVs,
the plots and the summary tables to `cfg.output_dir`. One run at a time per folder: it is
locked (`.lock`, holding the pid) for the run's life. The command line is `runner/cli.py`.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from .logs import ALWAYS, NORMAL, run_log

logger = logging.getLogger(__name__)


def stream_options(cfg, seed: int) -> dict:
    """The scenario builder's keyword arguments for one seed (the seed also orders the tasks)."""
    from ..data import dataset_options

    options = {"seed": seed, **cfg.scenario_options}
    if cfg.max_train_per_class is not None:
        options["max_train_per_class"] = cfg.max_train_per_class
    return {**options, **dataset_options(cfg.scenario, cfg.dataset)}


def build_stream(cfg, seed: int):
    """The scenario's task stream for one seed."""
    from ..data import build_scenario

    return build_scenario(cfg.scenario, **stream_options(cfg, seed))


def run(cfg, overwrite: bool = False, verbosity: int = NORMAL) -> int:
    """Run the job `cfg` describes; its lines go to the `dkvb_nlp` logger and to <output_dir>/run.log."""
    from ..engine.distributed import process_state
    from ..engine.folder_lock import lock_folder

    process = process_state()
    # One run per folder: a second run on it is refused at once (the OS drops the lock on any exit).
    lock = lock_folder(cfg.output_dir) if process.is_main_process else None
    try:
        with run_log(cfg.output_dir, verbosity, enabled=process.is_main_process):
            logger.debug("run in %s, resume=%s, overwrite=%s, %d process(es)", cfg.output_dir, cfg.resume, overwrite,
                         process.num_processes)
            return _run(cfg, overwrite, process)
    finally:
        if lock is not None:
            lock.release()


def _run(cfg, overwrite: bool, process) -> int:
    from ..encoders import load_encoder, load_tokenizer
    from ..engine.context import RunContext
    from ..engine.feature_cache import FeatureCache
    from .identity import IDENTITY_FILE, check_resume, make_identity, stream_fingerprint, write_identity
    from ..engine.loop import run_continual
    from ..engine.tracking import LOGS_DIR, open_tracked_run
    from ..faults import crash_point
    from ..io import atomic_write_json
    from ..report import make_results, versions, write_report
    from ..strategies import STRATEGIES

    out = Path(cfg.output_dir)
    done_dir, ckpt_root = out / "runs", out / "checkpoints"
    holds_run = done_dir.exists() or ckpt_root.exists()
    if process.is_main_process and not cfg.resume and holds_run:
        if not overwrite:
            raise ValueError(f"{out} already holds a run; pass --resume to continue it, --overwrite to start over, "
                             "or choose another --output-dir")
        import shutil

        shutil.rmtree(done_dir, ignore_errors=True)
        shutil.rmtree(ckpt_root, ignore_errors=True)
        (out / IDENTITY_FILE).unlink(missing_ok=True)
    process.wait_for_everyone()
    say = logger.info  # the console shows it on the main process only (runner/logs.py)
    started = time.perf_counter()
    # The encoder on the process's device (its GPU under accelerate, else the CPU): encoding runs
    # there, under autocast where the device has a fast reduced precision (encoders/load.py).
    encoder, tokenizer = load_encoder(cfg.encoder).to(process.device), load_tokenizer(cfg.encoder)
    cache = FeatureCache(encoder, tokenizer, cfg.cache_dir, max_length=cfg.max_length, autocast=cfg.autocast,
                         batch_size=cfg.encode_batch_size, progress=cfg.progress)
    streams = {seed: build_stream(cfg, seed) for seed in cfg.seeds}
    # The run's identity (result-relevant settings, encoder weights, each seed's data), stored
    # before anything is trained; a resume must match it (runner/identity.py).
    identity = make_identity(cfg, stream_options(cfg, cfg.seeds[0]), cache.encoder_key,
                             {seed: stream_fingerprint(stream) for seed, stream in streams.items()})
    if cfg.resume and holds_run:
        identity = check_resume(out, identity)
    if process.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        write_identity(out, identity)
    process.wait_for_everyone()
    runs, timings = [], {}
    for seed, stream in streams.items():
        # One label for every seed: task_type_il's seeds reorder the datasets, the label must not.
        dataset = str(stream.options.get("dataset") or ",".join(sorted(stream.options.get("datasets", []))))
        say(stream.summary() if seed == cfg.seeds[0] else f"seed {seed}: task order {[t.name for t in stream]}")
        ctx = RunContext(stream, cache, seed, cfg.encoder, process=process, progress=cfg.progress,
                         max_length=cfg.max_length)
        if seed == cfg.seeds[0]:  # fail on impossible shapes now, not after minutes of encoding
            for method in cfg.methods:
                STRATEGIES.get(method)(ctx, cfg.method_options.get(method)).validate()
        t0 = time.perf_counter()
        if any(STRATEGIES.get(m).uses_features for m in cfg.methods):
            for t in range(stream.num_tasks):  # encode once; every method and seed reuses it
                ctx.split(t, "train").features()
                ctx.split(t, "test").features()
        timings[f"encode_seconds_seed{seed}"] = time.perf_counter() - t0
        for method in cfg.methods:
            done = done_dir / f"{method}_seed{seed}.json"
            record = _finished(done, say) if cfg.resume else None
            if record is not None:  # the identity matched, so this finished run is this run's
                runs.append(record)
                say(f"[{method} seed {seed}] already finished; reusing {done}")
                continue
            strategy = STRATEGIES.get(method)(ctx, cfg.method_options.get(method))
            exporting = cfg.export != "none" and strategy.exportable
            model_dir = out / "models" / f"{method}_seed{seed}"
            every_task = (lambda t: strategy.export(model_dir / f"task{t}")) \
                if exporting and cfg.export == "every_task" else None
            tracker = open_tracked_run(cfg.report_to, out / LOGS_DIR, f"{method}_seed{seed}",
                                       {**cfg.to_dict(), "method": method, "seed": seed,
                                        "method_options": _jsonable(strategy.opts)},
                                       group=out.resolve().name, main_process=process.is_main_process)
            try:
                run_record = run_continual(ctx, strategy, dataset=dataset,
                                           checkpoint_dir=ckpt_root / method / f"seed{seed}", resume=cfg.resume,
                                           log=say, after_task=every_task, tracker=tracker)
            finally:
                tracker.close()
            if process.is_main_process:
                if exporting:
                    t_export = time.perf_counter()
                    strategy.export(model_dir, run_record)
                    timings[f"export_seconds_{method}_seed{seed}"] = time.perf_counter() - t_export
                    say(f"[{method} seed {seed}] model saved to {model_dir} in "
                        f"{timings[f'export_seconds_{method}_seed{seed}']:.1f}s (loads with pipeline('text-classification'))")
                done_dir.mkdir(parents=True, exist_ok=True)
                atomic_write_json(done, run_record)
                crash_point("run.method_done")
            runs.append(run_record)
            process.wait_for_everyone()
    timings["total_seconds"] = time.perf_counter() - started
    first = streams[cfg.seeds[0]]
    config = {**cfg.to_dict(), "task_names": [t.name for t in first], "stream": first.options,
              "timings": timings, "feature_cache": {"dir": str(cache.cache_dir), "hits": cache.hits,
                                                    "misses": cache.misses, "precision": cache.precision},
              "processes": process.num_processes}
    results = make_results(runs, config=config, versions_=versions())
    if process.is_main_process:
        from ..report import format_table

        write_report(results, out, echo=False)
        logger.info("%s", format_table(results, "text").rstrip("\n"), extra=ALWAYS)  # shown even with -q
        say(f"wrote {out}/results.json and the reports in {timings['total_seconds']:.0f}s")
    process.wait_for_everyone()
    return 0


def _finished(path: Path, say) -> dict | None:
    """A finished (method, seed) record, or None when there is none or it is damaged (then it is redone)."""
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        say(f"{path} is damaged ({' '.join(str(err).split())}); redoing it from its checkpoints")
        return None
    return record if isinstance(record, dict) and "accuracy_matrix" in record else None


def _jsonable(opts) -> dict:
    """A strategy's options as a dict (the tracker's configuration of the run)."""
    import dataclasses

    return dataclasses.asdict(opts) if dataclasses.is_dataclass(opts) else {}
