"""The main job: run continual-learning methods over a scenario and write results and reports.

    accelerate launch benchmarks/run.py --scenario class_il            # CLINC150 15 x 10, DKVB + fine-tuning
    python benchmarks/run.py --scenario class_il --methods dkvb --seeds 0,1,2
    python benchmarks/run.py --config configs/class_il.yaml --set dkvb.epochs=5 --output-dir runs/clinc

Two CPU processes: `accelerate launch --multi_gpu --num_processes 2 benchmarks/run.py ...`
(accelerate 1.15 starts a single process for `--cpu --num_processes 2`).

Writes to --output-dir: results.json, accuracy_matrix_<method>.csv, PNG plots, summary.txt/.md,
and checkpoints/<method>/seed<k>/ after every task (`--resume` continues from them, only with
the settings and data recorded in run_identity.json). One run at a time per --output-dir: it
is locked (`.lock`, holding the pid) for the run's life.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="YAML preset (configs/*.yaml); flags below override it")
    p.add_argument("--scenario", help="class_il | domain_il | task_type_il")
    p.add_argument("--dataset", help="dataset name or folder (task_type_il: comma-separated list)")
    p.add_argument("--methods", help="comma-separated, e.g. dkvb,finetune")
    p.add_argument("--encoder", help="hub id, local folder, or a packaged offline copy")
    p.add_argument("--seeds", help="comma-separated, e.g. 0,1,2 (seed 0 keeps the canonical task order)")
    p.add_argument("--output-dir")
    p.add_argument("--cache-dir", help="feature cache (default $DKVB_CACHE_DIR or ~/.cache/dkvb_nlp)")
    p.add_argument("--max-train-per-class", type=int, help="cap training examples per class (quick runs)")
    p.add_argument("--max-length", type=int, help="tokens per text")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --output-dir")
    p.add_argument("--overwrite", action="store_true", help="start over even if --output-dir holds a run")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any option, e.g. dkvb.lr=0.5 or scenario_options.classes_per_task=5 (YAML values)")
    return p.parse_args(argv)


def overrides_from(args: argparse.Namespace) -> dict:
    """Flags -> config overrides (only the flags that were given)."""
    from dkvb_nlp.engine.config import parse_yaml

    out: dict = {}
    for flag, key in (("scenario", "scenario"), ("dataset", "dataset"), ("encoder", "encoder"),
                      ("output_dir", "output_dir"), ("cache_dir", "cache_dir"),
                      ("max_train_per_class", "max_train_per_class"), ("max_length", "max_length")):
        if getattr(args, flag) is not None:
            out[key] = getattr(args, flag)
    if args.methods is not None:
        out["methods"] = [m.strip() for m in args.methods.split(",") if m.strip()]
    if args.seeds is not None:
        try:
            out["seeds"] = [int(s) for s in args.seeds.split(",") if s.strip()]
        except ValueError:
            raise ValueError(f"--seeds {args.seeds!r}: give comma-separated integers, e.g. 0,1,2") from None
    if args.resume:
        out["resume"] = True
    if args.no_progress:
        out["progress"] = False
    for item in args.set:
        key, eq, raw = item.partition("=")
        if not eq or not key.strip():
            raise ValueError(f"--set {item!r}: expected KEY=VALUE, e.g. dkvb.lr=0.5")
        out[key.strip()] = parse_yaml(raw, f"--set {item!r}")
    return out


def stream_options(cfg, seed: int) -> dict:
    """The scenario builder's keyword arguments for one seed (the seed also orders the tasks)."""
    from dkvb_nlp.data import dataset_options

    options = {"seed": seed, **cfg.scenario_options}
    if cfg.max_train_per_class is not None:
        options["max_train_per_class"] = cfg.max_train_per_class
    return {**options, **dataset_options(cfg.scenario, cfg.dataset)}


def build_stream(cfg, seed: int):
    """The scenario's task stream for one seed."""
    from dkvb_nlp.data import build_scenario

    return build_scenario(cfg.scenario, **stream_options(cfg, seed))


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        from dkvb_nlp.engine.config import load_config

        cfg = load_config(args.config, overrides_from(args))
        return run(cfg, overwrite=args.overwrite)
    except KeyboardInterrupt:
        print("interrupted; continue with --resume", file=sys.stderr)
        return 130
    except (ValueError, OSError) as err:  # what a user can cause: one line, no traceback
        print(f"error: {one_line(err)}", file=sys.stderr)
        return 2


def one_line(err: BaseException) -> str:
    """The error's message on one line (a YAML or OS message may span several)."""
    return " ".join(str(err).split()) or type(err).__name__


def run(cfg, overwrite: bool = False) -> int:
    from dkvb_nlp.engine.distributed import process_state
    from dkvb_nlp.engine.folder_lock import lock_folder

    process = process_state()
    # One run per folder: a second run on it is refused at once (the OS drops the lock on any exit).
    lock = lock_folder(cfg.output_dir) if process.is_main_process else None
    try:
        return _run(cfg, overwrite, process)
    finally:
        if lock is not None:
            lock.release()


def _run(cfg, overwrite: bool, process) -> int:
    from dkvb_nlp.encoders import load_encoder, load_tokenizer
    from dkvb_nlp.engine.context import RunContext
    from dkvb_nlp.engine.feature_cache import FeatureCache
    from dkvb_nlp.engine.identity import IDENTITY_FILE, check_resume, make_identity, stream_fingerprint, write_identity
    from dkvb_nlp.engine.loop import run_continual
    from dkvb_nlp.faults import crash_point
    from dkvb_nlp.io import atomic_write_json
    from dkvb_nlp.report import make_results, versions, write_report
    from dkvb_nlp.strategies import STRATEGIES

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
    say = process.print
    started = time.perf_counter()
    encoder, tokenizer = load_encoder(cfg.encoder), load_tokenizer(cfg.encoder)
    cache = FeatureCache(encoder, tokenizer, cfg.cache_dir, max_length=cfg.max_length, autocast=cfg.autocast,
                         batch_size=cfg.encode_batch_size, progress=cfg.progress)
    streams = {seed: build_stream(cfg, seed) for seed in cfg.seeds}
    # The run's identity (result-relevant settings, encoder weights, each seed's data), stored
    # before anything is trained; a resume must match it (engine/identity.py).
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
            run_record = run_continual(ctx, strategy, dataset=dataset, checkpoint_dir=ckpt_root / method / f"seed{seed}",
                                       resume=cfg.resume, log=say)
            if process.is_main_process:
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
        write_report(results, out, echo=True)
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


if __name__ == "__main__":
    sys.exit(main())
