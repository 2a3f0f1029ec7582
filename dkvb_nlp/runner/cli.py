"""The `dkvb-nlp` command (also `python -m dkvb_nlp`, and `benchmarks/run.py` for `run`).

    dkvb-nlp run --scenario class_il                      # CLINC150 15 x 10, DKVB + fine-tuning
    dkvb-nlp run --config quick                           # a packaged preset, by name
    dkvb-nlp run --config my.yaml --set dkvb.ridge=10 --output-dir runs/mine
    dkvb-nlp run --plugin my_methods --methods my_method  # a strategy defined outside the package
    dkvb-nlp report runs/mine                             # rewrite tables and plots from results.json
    dkvb-nlp presets                                      # list the packaged presets

With accelerate: `accelerate launch -m dkvb_nlp run ...` (or `accelerate launch benchmarks/run.py`); pass
`--num_processes`, `--num_machines`, `--mixed_precision`, `--dynamo_backend` (or run `accelerate config`), or
accelerate warns about the defaults it filled in. `-q` prints only warnings and the final table, `-v` more;
every line also goes to <output-dir>/run.log.
Errors a user can cause print one line (`error: ...`) and exit with status 2.
"""

from __future__ import annotations

import argparse
import sys

RUN_EPILOG = """\
Writes to --output-dir: results.json, accuracy_matrix_<method>.csv, PNG plots, summary.txt/.md,
report.html (the table and plots on one page), run.log (every line the run printed, with times),
logs/<method>_seed<k>/ (the --report-to tracker: losses, accuracy rows, timings, configuration),
checkpoints/<method>/seed<k>/ after every task (`--resume` continues from them, only with the
settings and data recorded in run_identity.json) and, for DKVB, the trained model in models/. One run at a time per --output-dir: it is locked (`.lock`, holding the pid) for the
run's life. Two CPU processes: `accelerate launch --multi_gpu --num_processes 2 -m dkvb_nlp run ...`.
"""


def add_run_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The main job's flags (shared by `dkvb-nlp run` and benchmarks/run.py)."""
    p.add_argument("--config", help="a packaged preset's name (e.g. class_il, quick; `dkvb-nlp presets` lists "
                                    "them) or a YAML file; flags below override it")
    p.add_argument("--scenario", help="class_il | domain_il | task_type_il | stream_il")
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
    p.add_argument("--no-progress", action="store_true", help="no progress bars (none either when stderr is not a "
                                                                "terminal)")
    p.add_argument("-v", "--verbose", action="count", default=0,
                   help="also debug lines, and third-party progress bars and notices")
    p.add_argument("-q", "--quiet", action="count", default=0,
                   help="only warnings, errors and the final table; no progress bars (run.log keeps every line)")
    p.add_argument("--report-to", metavar="TRACKER",
                   help="experiment tracker of each method and seed: none, csv (default: "
                        "<output-dir>/logs/<method>_seed<k>/metrics.csv), tensorboard, wandb, mlflow")
    p.add_argument("--export", choices=("none", "final", "every_task"),
                   help="trained DKVB models to <output-dir>/models/<method>_seed<k>/ (default final)")
    p.add_argument("--plugin", action="append", default=[], metavar="MODULE",
                   help="import MODULE first (it registers its strategies or datasets); repeatable")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any option, e.g. dkvb.lr=0.5 or scenario_options.classes_per_task=5 (YAML values)")
    return p


def parse_run_args(argv=None, prog: str | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=prog, description="Run continual-learning methods over a scenario.",
                                epilog=RUN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    return add_run_arguments(p).parse_args(argv)


def overrides_from(args: argparse.Namespace) -> dict:
    """Flags -> config overrides (only the flags that were given)."""
    from .config import parse_yaml

    out: dict = {}
    for flag, key in (("scenario", "scenario"), ("dataset", "dataset"), ("encoder", "encoder"),
                      ("output_dir", "output_dir"), ("cache_dir", "cache_dir"),
                      ("max_train_per_class", "max_train_per_class"), ("max_length", "max_length"),
                      ("export", "export"), ("report_to", "report_to")):
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
    if args.no_progress or args.quiet:
        out["progress"] = False
    for item in args.set:
        key, eq, raw = item.partition("=")
        if not eq or not key.strip():
            raise ValueError(f"--set {item!r}: expected KEY=VALUE, e.g. dkvb.lr=0.5")
        out[key.strip()] = parse_yaml(raw, f"--set {item!r}")
    return out


def run_main(argv=None, prog: str | None = None) -> int:
    """`dkvb-nlp run ...`: the exit code (0, 2 for a user's error, 130 when interrupted)."""
    args = parse_run_args(argv, prog)

    def job() -> int:
        from ..engine.distributed import process_state
        from .config import load_config
        from .logs import console, verbosity_from
        from .main_job import run
        from .plugins import load_plugins
        from .presets import resolve_preset

        verbosity = verbosity_from(args.verbose, args.quiet)
        with console(verbosity, main_process=process_state().is_main_process):
            load_plugins(args.plugin)
            config = resolve_preset(args.config) if args.config is not None else None
            return run(load_config(config, overrides_from(args)), overwrite=args.overwrite, verbosity=verbosity)

    return _guarded(job, "interrupted; continue with --resume")


def report_main(argv=None, prog: str | None = None) -> int:
    """`dkvb-nlp report DIR`: tables, CSVs and plots rewritten from DIR/results.json."""
    p = argparse.ArgumentParser(prog=prog, description=report_main.__doc__)
    p.add_argument("folder", help="a run's --output-dir (holding results.json)")
    p.add_argument("--output-dir", help="write the report there instead of FOLDER")
    args = p.parse_args(argv)

    def job() -> int:
        from pathlib import Path

        from ..report import read_results, write_report

        source = Path(args.folder)
        path = source / "results.json" if source.is_dir() else source
        if not path.is_file():
            raise ValueError(f"{args.folder!r} holds no results.json (give a run's --output-dir)")
        out = Path(args.output_dir) if args.output_dir else path.parent
        write_report(read_results(path), out, echo=True)
        print(f"wrote the report to {out} (one page: {out / 'report.html'})")
        return 0

    return _guarded(job)


def presets_main(argv=None, prog: str | None = None) -> int:
    """`dkvb-nlp presets`: the packaged presets, one per line, with their first comment line."""
    argparse.ArgumentParser(prog=prog, description=presets_main.__doc__).parse_args(argv)
    from importlib import resources

    from .presets import preset_names

    for name in preset_names():
        text = (resources.files("dkvb_nlp.presets") / f"{name}.yaml").read_text(encoding="utf-8")
        first = next((line.lstrip("# ").strip() for line in text.splitlines() if line.startswith("#")), "")
        print(f"{name:32s} {first}")
    return 0


COMMANDS = {"run": run_main, "report": report_main, "presets": presets_main}


def main(argv=None) -> int:
    """`dkvb-nlp COMMAND ...`"""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"error: unknown command {command!r}; accepted: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    return COMMANDS[command](rest, prog=f"dkvb-nlp {command}")


def one_line(err: BaseException) -> str:
    """The error's message on one line (a YAML or OS message may span several)."""
    return " ".join(str(err).split()) or type(err).__name__


def _guarded(job, interrupted: str = "interrupted") -> int:
    try:
        return job()
    except KeyboardInterrupt:
        print(interrupted, file=sys.stderr)
        return 130
    except (ValueError, OSError) as err:  # what a user can cause: one line, no traceback
        print(f"error: {one_line(err)}", file=sys.stderr)
        return 2
