"""Helpers for the command-line tests: a tiny generated dataset and the main job run in-process."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUN = ROOT / "benchmarks" / "run.py"
LABELS = ("alpha", "bravo", "charlie", "delta")


def tiny_dataset(folder: Path, n: int = 6, words: tuple[str, ...] = LABELS) -> Path:
    """A class_il-ready folder: train/test JSONL, len(words) labels, n texts each."""
    folder.mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        rows = [{"text": f"{w} {split} sentence number {i}", "label": w} for i in range(n) for w in words]
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def run_module():
    """benchmarks/run.py as a module (its `main(argv)` returns the exit code)."""
    spec = importlib.util.spec_from_file_location("dkvb_run_main", RUN)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def base_args(encoder: Path, data: Path, out: Path, cache: Path, *extra) -> list[str]:
    """A run of nearest class mean over two tiny tasks (seconds, most of it loading the encoder)."""
    return ["--scenario", "class_il", "--dataset", str(data), "--encoder", str(encoder), "--methods", "nmc",
            "--seeds", "0", "--output-dir", str(out), "--cache-dir", str(cache), "--no-progress",
            "--max-length", "16", "--set", "scenario_options.classes_per_task=2", *map(str, extra)]
