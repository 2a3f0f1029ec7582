"""Check the main job on this machine's accelerator, and compare its time split with a CPU run.

    python benchmarks/gpu_check.py                    # quick preset on the GPU and on the CPU, side by side
    python benchmarks/gpu_check.py --max-train-per-class 0   # all of CLINC150's training texts
    python benchmarks/gpu_check.py --cpu-only         # no GPU needed: the CPU leg alone

Runs the main job (CLINC150 class_il; `dkvb` and `finetune`; the quick preset's options, 10
training texts per intent unless told otherwise) once per device, each in its own process (the
process's device is fixed when accelerate's state is made; the CPU leg hides the GPUs with
CUDA_VISIBLE_DEVICES=""), each with a fresh feature cache so encoding is timed, not a cache hit.
On the GPU leg it asserts that the encoder and DKVB's keys and value table live on the GPU.
It prints, per device: encode (results.json `timings`), key initialisation and indexing (timed
here around `init_keys` and `quantize_cached`, synchronised), the rest of learning ("train":
the run's train seconds less keys and indexing inside them) and evaluation, per method; then
the accuracies. Without an accelerator it says so and exits 0 (after the CPU leg with --cpu-only).

Expected figures on paper (NOT measured here; no GPU was available when this was written):
all-MiniLM-L6-v2 is 6 layers x 384 wide (22.7M parameters). sbert.net's model table lists its
encoding speed as about 14,200 sentences/s on one V100 (quoted from memory of that table, not
re-checked); an H100 runs bf16 transformer inference several times faster than a V100, so
encoding CLINC150's ~23,700 texts (15,000 train, 3,000 validation, 4,500 test, oos) should take
on the order of 1-2 s there, against minutes on 2 CPU cores. DKVB's learning after encoding
(k-means over token states, nearest-key indexing, count/ridge statistics) is matrix work that
the torch/matmul search backends run on the GPU, expected in seconds. Fine-tuning one epoch of
15,000 texts (forward + backward, about 3x the cost of encoding) is expected around 5-10 s,
bounded by per-step overhead at small batches. Treat these as estimates until this script has
been run on such a GPU and its output recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's dkvb_nlp first

METHODS = ("dkvb", "finetune")


def accelerator() -> str | None:
    """The accelerator this process would run on ('cuda'), or None."""
    import torch

    return "cuda" if torch.cuda.is_available() else None


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def run_leg(device: str, out: Path, max_train_per_class: int | None) -> dict:
    """One main-job run in this process, instrumented; returns its summary (written by the child)."""
    import torch

    from dkvb_nlp.runner import main_job
    from dkvb_nlp.runner.config import load_config
    from dkvb_nlp.strategies import dkvb as dkvb_module
    from dkvb_nlp.bottleneck.module import KeyValueBottleneck

    spent = {"keys": 0.0, "index": 0.0}
    placed: dict[str, str] = {}

    def timed(name, fn):
        def wrapper(*args, **kwargs):
            _sync()
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                _sync()
                spent[name] += time.perf_counter() - start
        return wrapper

    init_keys = KeyValueBottleneck.init_keys

    def init_and_record(self, *args, **kwargs):
        placed["dkvb.keys"] = str(self.keys.device)
        placed["dkvb.value_table"] = str(self.value_table.device)
        return init_keys(self, *args, **kwargs)

    KeyValueBottleneck.init_keys = timed("keys", init_and_record)
    dkvb_module.quantize_cached = timed("index", dkvb_module.quantize_cached)
    from dkvb_nlp.engine import feature_cache

    original_init = feature_cache.FeatureCache.__init__

    def cache_init(self, encoder, *args, **kwargs):
        placed["encoder"] = str(next(encoder.parameters()).device)
        original_init(self, encoder, *args, **kwargs)

    feature_cache.FeatureCache.__init__ = cache_init
    overrides = {"output_dir": str(out / "run"), "cache_dir": str(out / "cache"), "methods": list(METHODS),
                 "progress": False, "export": "none", "report_to": "none",
                 "max_train_per_class": max_train_per_class}
    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "quick.yaml", overrides)
    started = time.perf_counter()
    main_job.run(cfg, overwrite=True)
    total = time.perf_counter() - started
    results = json.loads((out / "run" / "results.json").read_text())
    runs = {r["method"]: r for r in results["runs"]}
    timings = results["config"]["timings"]
    summary = {"device": device, "placed": placed, "total_seconds": total,
               "encode_seconds": sum(v for k, v in timings.items() if k.startswith("encode_seconds")),
               "keys_seconds": spent["keys"], "index_seconds": spent["index"],
               "gpu": torch.cuda.get_device_name() if device == "cuda" else None, "methods": {}}
    for method in METHODS:
        r = runs[method]
        summary["methods"][method] = {"train_seconds": r["train_seconds"], "eval_seconds": r["eval_seconds"],
                                      "final_accuracy": r.get("final_accuracy", r.get("average_accuracy"))}
    if device == "cuda":
        for what in ("encoder", "dkvb.keys", "dkvb.value_table"):
            assert placed.get(what, "").startswith("cuda"), f"{what} is on {placed.get(what)}, not the GPU"
    return summary


def child(device: str, out: Path, max_train_per_class: int | None) -> dict:
    """Run one leg in a fresh process (its own accelerate state); the CPU leg hides the GPUs."""
    env = dict(os.environ)
    if device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    summary_path = out / f"{device}.json"
    cmd = [sys.executable, __file__, "--leg", device, "--out", str(out / device),
           "--max-train-per-class", str(max_train_per_class or 0), "--summary", str(summary_path)]
    subprocess.run(cmd, env=env, check=True)
    return json.loads(summary_path.read_text())


def report(legs: list[dict]) -> None:
    """The time split and accuracies of each leg, side by side, with the speed-up over the first (CPU)."""
    rows = [("encode", lambda s: s["encode_seconds"]), ("keys (dkvb)", lambda s: s["keys_seconds"]),
            ("index (dkvb)", lambda s: s["index_seconds"])]
    for m in METHODS:
        extra = (lambda s: s["keys_seconds"] + s["index_seconds"]) if m == "dkvb" else (lambda s: 0.0)
        rows.append((f"train {m}", lambda s, m=m, extra=extra: s["methods"][m]["train_seconds"] - extra(s)))
        rows.append((f"eval {m}", lambda s, m=m: s["methods"][m]["eval_seconds"]))
    rows.append(("total", lambda s: s["total_seconds"]))
    names = [s["gpu"] or s["device"] for s in legs]
    print(f"{'seconds':<16}" + "".join(f"{n[:22]:>24}" for n in names) + ("   speed-up" if len(legs) > 1 else ""))
    for label, get in rows:
        values = [get(s) for s in legs]
        line = f"{label:<16}" + "".join(f"{v:>24.2f}" for v in values)
        if len(legs) > 1 and values[-1] > 0:
            line += f"   {values[0] / values[-1]:8.1f}x"
        print(line)
    for m in METHODS:
        print(f"final accuracy {m:<9}" + "".join(f"{s['methods'][m]['final_accuracy']!s:>24}" for s in legs))
    for s in legs:
        print(f"placement on {s['device']}: {s['placed']}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cpu-only", action="store_true", help="run the CPU leg alone (no accelerator needed)")
    parser.add_argument("--max-train-per-class", type=int, default=10, help="0: every training text")
    parser.add_argument("--out", type=Path, default=None, help="folder for the runs (default: a temporary one)")
    parser.add_argument("--leg", choices=("cpu", "cuda"), help=argparse.SUPPRESS)
    parser.add_argument("--summary", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    cap = args.max_train_per_class or None
    if args.leg:  # a child: one leg in this process
        summary = run_leg(args.leg, args.out, cap)
        args.summary.write_text(json.dumps(summary, indent=1))
        return 0
    out = args.out or Path(tempfile.mkdtemp(prefix="gpu_check-"))
    device = accelerator()
    if device is None:
        print("gpu_check: no accelerator (CUDA) on this machine; nothing to check on a GPU.")
        if not args.cpu_only:
            print("gpu_check: pass --cpu-only to time the CPU leg alone.")
            return 0
    legs = [child("cpu", out, cap)] if (args.cpu_only or device is None) else \
        [child("cpu", out, cap), child(device, out, cap)]
    report(legs)
    if device is not None and not args.cpu_only:
        print(f"gpu_check: OK, the encoder and DKVB's keys and value table ran on {legs[-1]['placed']['encoder']}")
    print(f"runs in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
