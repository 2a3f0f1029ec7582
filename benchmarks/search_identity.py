"""Do the faster search backends change anything on the CLINC150 run? Keys, indices and accuracies
under each backend against the AVX2 kernel's, bit for bit, with the search time of each.

    DKVB_DATA_DIR=/work/shared/data python benchmarks/search_identity.py [--backends avx2,avx512,avx512_bf16]
        [--json benchmarks/out/search_identity.json]

Runs the main job (CLINC150 class_il, method dkvb, the preset's defaults, no export) once per
backend in this process, the backend pinned by DKVB_SEARCH, with the feature cache shared (so
the first run may encode; the others read it). Around the run it records a SHA-256 of the keys
after key initialisation and of every split's key-index array (`quantize_cached`), the seconds
spent in key initialisation and indexing, and the accuracy matrix. The first backend is the
reference: every other must give the same keys, the same indices for every split and the same
accuracy matrix, or the script exits 1 naming what differs. Backends this machine cannot run
(a CPU without AVX-512 or AVX-512 BF16) are skipped with the reason.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's dkvb_nlp first


def digest(array) -> str:
    return hashlib.sha256(np.ascontiguousarray(np.asarray(array)).tobytes()).hexdigest()


def run_with(backend: str, out: Path) -> dict:
    """One main-job run with the search pinned to `backend`: hashes, times, accuracy matrix."""
    from dkvb_nlp.bottleneck.module import KeyValueBottleneck
    from dkvb_nlp.runner import main_job
    from dkvb_nlp.runner.config import load_config
    from dkvb_nlp.strategies import dkvb as dkvb_module

    record = {"backend": backend, "keys": None, "indices": {}, "keys_seconds": 0.0, "index_seconds": 0.0}
    init_keys, quantize_cached = KeyValueBottleneck.init_keys, dkvb_module.quantize_cached

    def init_and_hash(self, *args, **kwargs):
        start = time.perf_counter()
        result = init_keys(self, *args, **kwargs)
        record["keys_seconds"] += time.perf_counter() - start
        record["keys"] = digest(self.keys.cpu().numpy())
        return result

    def index_and_hash(bottleneck, feats, *args, desc: str = "indexing", **kwargs):
        start = time.perf_counter()
        out_array = quantize_cached(bottleneck, feats, *args, desc=desc, **kwargs)
        record["index_seconds"] += time.perf_counter() - start
        record["indices"][desc] = digest(out_array)
        return out_array

    os.environ["DKVB_SEARCH"] = backend
    KeyValueBottleneck.init_keys, dkvb_module.quantize_cached = init_and_hash, index_and_hash
    try:
        overrides = {"output_dir": str(out / backend), "methods": ["dkvb"], "progress": False, "export": "none",
                     "report_to": "none"}
        cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "class_il.yaml", overrides)
        main_job.run(cfg, overwrite=True)
    finally:
        KeyValueBottleneck.init_keys, dkvb_module.quantize_cached = init_keys, quantize_cached
        os.environ.pop("DKVB_SEARCH", None)
    result = json.loads((out / backend / "results.json").read_text())["runs"][0]
    record["accuracy_matrix"] = result["accuracy_matrix"]
    record["final_accuracy"] = result["final_accuracy"]
    return record


def unavailable(backend: str) -> str | None:
    from dkvb_nlp.bottleneck.native import bf16_unavailable_reason, load_kernel, unavailable_reason

    if backend in ("avx2", "avx512") and load_kernel(backend) is None:
        return unavailable_reason(backend)
    if backend == "avx512_bf16":
        return bf16_unavailable_reason()
    return None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default="avx2,avx512,avx512_bf16",
                        help="comma-separated search backends; the first is the reference")
    parser.add_argument("--json", help="write the records here")
    args = parser.parse_args(argv)
    from dkvb_nlp.bottleneck.machine import describe
    from dkvb_nlp.bottleneck.search import SEARCHES

    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    for b in backends:
        SEARCHES.get(b)  # a clear error for an unknown name
    print(f"machine: {describe()}")
    records = []
    with tempfile.TemporaryDirectory(prefix="dkvb_search_identity_") as tmp:
        for b in backends:
            why = unavailable(b)
            if why is not None:
                print(f"{b}: skipped ({why})")
                continue
            records.append(run_with(b, Path(tmp)))
    if not records:
        print("no backend could run")
        return 1
    ref = records[0]
    print(f"{'backend':12s} {'keys (s)':>9s} {'index (s)':>9s} {'final acc':>9s}  same as {ref['backend']}")
    failures = []
    for r in records:
        diffs = [what for what in ("keys", "indices", "accuracy_matrix") if r[what] != ref[what]]
        failures += [f"{r['backend']}: {what} differ" for what in diffs]
        same = "reference" if r is ref else ("keys, indices of all " f"{len(r['indices'])} splits, accuracy matrix"
                                              if not diffs else "DIFFERS: " + ", ".join(diffs))
        print(f"{r['backend']:12s} {r['keys_seconds']:9.2f} {r['index_seconds']:9.2f} {100 * r['final_accuracy']:9.2f}  {same}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"machine": describe(), "records": records}, indent=1))
    for f in failures:
        print(f"FAIL {f}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
