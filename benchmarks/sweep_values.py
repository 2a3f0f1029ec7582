"""Sweep of DKVB's value rules on a scenario's validation split: the record behind `dkvb.values`.

    python benchmarks/sweep_values.py --dataset clinc150 --scenario class_il
    python benchmarks/sweep_values.py --dataset r8 --json benchmarks/out/sweep_values_r8.json

Keys are initialised once (the DKVB defaults) and every split indexed once. Then:
- the order-free rules learn every task in the scenario's order once (the statistics do not
  depend on smoothing, counts weight or lambda), and each (smoothing, counts_weight, ridge)
  setting re-derives values and readout from the same statistics: 'counts', 'ridge' and
  'counts+ridge' rows;
- 'sgd' runs task after task with the current options, once with the loss over the classes
  seen so far and once over the task's own classes (the labels trick).
Each row gives the final accuracy (after the last task, over every task) on validation and on
test. Choose on validation.

    python benchmarks/sweep_values.py --compare benchmarks/results/sweep_values/{clinc150,r8,20newsgroups,dsc}.json

reads recorded sweeps (no encoding) and prints, for every setting present in all of them, each
dataset's validation/test accuracy, its shortfall from that dataset's best validation row, and the
mean: the record behind the per-dataset presets.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


SETTING = ("values", "ridge_features", "ridge", "smoothing", "counts_weight", "loss_classes")


def compare(paths: list[Path], top: int = 15) -> list[dict]:
    """Settings present in every recorded sweep, best mean validation accuracy first (printed)."""
    sweeps = {}
    for path in paths:
        record = json.loads(Path(path).read_text())
        sweeps[record["dataset"]] = {tuple(r.get(k) for k in SETTING): r for r in record["rows"]}
    best = {name: max(r["val"] for r in rows.values()) for name, rows in sweeps.items()}
    common = set.intersection(*(set(rows) for rows in sweeps.values()))
    table = []
    for key in common:
        per = {name: rows[key] for name, rows in sweeps.items()}
        table.append({"setting": dict((k, v) for k, v in zip(SETTING, key) if v is not None),
                      "mean_val": sum(r["val"] for r in per.values()) / len(per),
                      "max_shortfall": max(best[n] - r["val"] for n, r in per.items()),
                      "per_dataset": {n: (r["val"], r["test"]) for n, r in per.items()}})
    table.sort(key=lambda row: -row["mean_val"])
    print("best validation per dataset: " + ", ".join(f"{n} {v:.2f}" for n, v in best.items()))
    for row in table[:top]:
        setting = " ".join(f"{k}={v}" for k, v in row["setting"].items())
        cells = "  ".join(f"{n} {v:.2f}/{t:.2f}" for n, (v, t) in row["per_dataset"].items())
        print(f"{setting:70s} mean val {row['mean_val']:.2f}  worst shortfall {row['max_shortfall']:.2f}  "
              f"(val/test) {cells}")
    return table


def main(argv=None):
    if argv is None:
        argv = sys.argv[1:]
    if argv and argv[0] == "--compare":
        compare([Path(a) for a in argv[1:]])
        return
    from dkvb_nlp.data import build_scenario, dataset_options
    from dkvb_nlp.encoders import DEFAULT_ENCODER, load_encoder, load_tokenizer
    from dkvb_nlp.engine.context import RunContext
    from dkvb_nlp.engine.feature_cache import FeatureCache
    from dkvb_nlp.engine.loop import predict
    from dkvb_nlp.metrics import accuracy
    from dkvb_nlp.strategies.dkvb import DKVBStrategy

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scenario", default="class_il")
    p.add_argument("--dataset", default="clinc150", help="a dataset; with task_type_il 'glue' (its default tasks) "
                   "or comma-separated datasets")
    p.add_argument("--smoothing", default="0.01,0.03,0.1,0.3")
    p.add_argument("--counts-weight", default="0.03,0.1,0.3,1")
    p.add_argument("--ridge", default="10,100,1000")
    p.add_argument("--ridge-features", default="4096")
    p.add_argument("--sgd", default="seen,task", help="loss_classes of the sgd rows ('' for none)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-train-per-class", type=int, help="cap on training texts per class and task (as run.py's)")
    p.add_argument("--cache-dir")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    floats = lambda s: [float(x) for x in s.split(",") if x]  # noqa: E731

    options = {} if args.max_train_per_class is None else {"max_train_per_class": args.max_train_per_class}
    # --dataset as run.py reads it; 'glue' names task_type_il's default tasks
    glue_default = args.scenario == "task_type_il" and args.dataset == "glue"
    options.update(dataset_options(args.scenario, None if glue_default else args.dataset))
    stream = build_scenario(args.scenario, **options)
    enc = load_encoder(DEFAULT_ENCODER)
    cache = FeatureCache(enc, load_tokenizer(DEFAULT_ENCODER), args.cache_dir, progress=False)
    ctx = RunContext(stream, cache, args.seed, DEFAULT_ENCODER, progress=False)
    last = stream.num_tasks - 1

    def final(s, split):
        return float(np.mean([accuracy(predict(ctx, s, j, last, split=split), ctx.split(j, split).labels)
                              for j in range(stream.num_tasks)]))

    t0 = time.perf_counter()
    base = DKVBStrategy(ctx, {"values": "sgd"})
    base.setup()
    for t in range(stream.num_tasks):
        for split in ("train", "validation", "test"):
            base.indices(ctx.split(t, split))
    keys_state = base.state()
    print(f"{args.dataset} {args.scenario} seed {args.seed}: keys and indices {time.perf_counter() - t0:.1f}s", flush=True)
    rows = []

    def report(row):
        rows.append(row)
        print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()), flush=True)

    for m in [int(x) for x in args.ridge_features.split(",")]:
        s = DKVBStrategy(ctx, {"values": "counts+ridge", "ridge_features": m})
        s._build()  # the same keys as `base`, loaded below (no second key initialisation)
        s.front.load_state_dict({k[6:]: v for k, v in keys_state[0].items()
                                 if k.startswith("front.") and k[6:] in ("keys", "keys_initialized")}, strict=False)
        s._indices = base._indices
        t1 = time.perf_counter()
        for t in range(stream.num_tasks):
            s.learn(t)
        fit_s = time.perf_counter() - t1
        heads = s.heads
        for lam in floats(args.ridge):
            for h in heads:
                h.values_rule.readout.ridge = lam
                h.values_rule.readout._weight = None
            # ridge alone: zero values
            for h in heads:
                h.value_table.data.zero_()
            report(dict(values="ridge", ridge_features=m, ridge=lam, val=100 * final(s, "validation"),
                        test=100 * final(s, "test"), fit_seconds=fit_s))
            for a, w in itertools.product(floats(args.smoothing), floats(args.counts_weight)):
                for h in heads:
                    h.values_rule.counts.smoothing, h.values_rule.counts.weight = a, w
                    h.values_rule.write_values()
                report(dict(values="counts+ridge", ridge_features=m, ridge=lam, smoothing=a, counts_weight=w,
                            val=100 * final(s, "validation"), test=100 * final(s, "test")))
        # counts alone (the readout's logits left out)
        readouts = [h.values_rule.readout for h in heads]
        for h in heads:
            h.values_rule.readout = None
        for a in floats(args.smoothing):
            for h in heads:
                h.values_rule.counts.smoothing, h.values_rule.counts.weight = a, 1.0
                h.values_rule.write_values()
            report(dict(values="counts", smoothing=a, val=100 * final(s, "validation"), test=100 * final(s, "test")))
        for h, r in zip(heads, readouts):
            h.values_rule.readout = r
    for lc in [x for x in args.sgd.split(",") if x]:
        s = DKVBStrategy(ctx, {"values": "sgd", "loss_classes": lc})
        s.setup(*keys_state)
        s._indices = base._indices
        t1 = time.perf_counter()
        for t in range(stream.num_tasks):
            s.learn(t)
        report(dict(values="sgd", loss_classes=lc, val=100 * final(s, "validation"), test=100 * final(s, "test"),
                    fit_seconds=time.perf_counter() - t1))
    best = max(rows, key=lambda r: r["val"])
    print("best on validation:", best)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"scenario": args.scenario, "dataset": args.dataset, "seed": args.seed,
                                         "rows": rows, "best_on_validation": best}, indent=2))


if __name__ == "__main__":
    main()
