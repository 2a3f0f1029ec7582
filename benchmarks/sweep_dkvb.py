"""A small sweep of DKVB's hyperparameters on a scenario; the record behind the defaults.

    python benchmarks/sweep_dkvb.py --json benchmarks/out/sweep_dkvb_clinc.json

Keys are initialised once per (num_codebooks, num_keys, key_init_epochs) and shared by the
training settings that follow; each row is a full class-incremental run (--seed, default 0:
it seeds key sampling and the order of training examples; the task order stays), evaluated
on the test sets of all tasks. Validation accuracy (CLINC150's own validation split) is
reported too: choose defaults on it, not on test.
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


def main(argv=None):
    from dkvb_nlp.data import build_scenario
    from dkvb_nlp.encoders import DEFAULT_ENCODER, load_encoder, load_tokenizer
    from dkvb_nlp.engine.context import RunContext
    from dkvb_nlp.engine.feature_cache import FeatureCache
    from dkvb_nlp.engine.loop import predict
    from dkvb_nlp.metrics import accuracy
    from dkvb_nlp.strategies.dkvb import DKVBStrategy

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scenario", default="class_il")
    p.add_argument("--dataset", default="clinc150")
    p.add_argument("--codebooks", default="32")
    p.add_argument("--keys", default="1024,4096")
    p.add_argument("--key-init-epochs", default="1,3")
    p.add_argument("--lr", default="0.3,1,3")
    p.add_argument("--epochs", default="5,10")
    p.add_argument("--batch-size", default="32")
    p.add_argument("--label-smoothing", default="0")
    p.add_argument("--key-init-max-rows", default="0", help="0: all token vectors per k-means epoch")
    p.add_argument("--key-init-batch-rows", default="8192", help="token vectors per EMA k-means update")
    p.add_argument("--ema-decay", default="0.95", help="EMA k-means decay")
    p.add_argument("--max-train-per-class", type=int)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache-dir")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    ints = lambda s: [int(x) for x in s.split(",")]  # noqa: E731
    floats = lambda s: [float(x) for x in s.split(",")]  # noqa: E731

    opts = {"dataset": args.dataset}
    if args.max_train_per_class:
        opts["max_train_per_class"] = args.max_train_per_class
    stream = build_scenario(args.scenario, **opts)
    enc = load_encoder(DEFAULT_ENCODER)
    cache = FeatureCache(enc, load_tokenizer(DEFAULT_ENCODER), args.cache_dir, progress=False)
    ctx = RunContext(stream, cache, args.seed, DEFAULT_ENCODER, progress=False)
    rows = []
    print(f"seed {args.seed}")
    print(f"{'C':>4} {'K':>5} {'kie':>3} {'rows':>6} {'kib':>5} {'decay':>5} {'lr':>5} {'ep':>3} {'bs':>4} {'ls':>4} {'val':>6} {'final':>6} {'init s':>7} {'train s':>7}")
    for c, k, kie, kmr, kib, decay in itertools.product(
            ints(args.codebooks), ints(args.keys), ints(args.key_init_epochs), ints(args.key_init_max_rows),
            ints(args.key_init_batch_rows), floats(args.ema_decay)):
        kinit = {"num_codebooks": c, "num_keys": k, "key_init_epochs": kie, "key_init_max_rows": kmr or None,
                 "key_init_batch_rows": kib, "ema_decay": decay}
        base = DKVBStrategy(ctx, kinit)
        t0 = time.perf_counter()
        base.setup()
        for t in range(stream.num_tasks):  # index every split once, outside the timings below
            for split in ("train", "validation", "test"):
                base.indices(ctx.split(t, split))
        init_s = time.perf_counter() - t0
        state = base.state()
        for lr, ep, bs, ls in itertools.product(floats(args.lr), ints(args.epochs), ints(args.batch_size),
                                                floats(args.label_smoothing)):
            s = DKVBStrategy(ctx, {**kinit, "lr": lr, "epochs": ep, "batch_size": bs, "label_smoothing": ls})
            s.setup(*state)
            s._indices = base._indices
            t1 = time.perf_counter()
            for t in range(stream.num_tasks):
                s.learn(t)
            train_s = time.perf_counter() - t1
            last = stream.num_tasks - 1
            final = np.mean([accuracy(predict(ctx, s, j, last), ctx.split(j, "test").labels)
                             for j in range(stream.num_tasks)])
            val = np.mean([accuracy(predict(ctx, s, j, last, split="validation"), ctx.split(j, "validation").labels)
                           for j in range(stream.num_tasks)])
            row = dict(num_codebooks=c, num_keys=k, key_init_epochs=kie, key_init_max_rows=kmr or None,
                       key_init_batch_rows=kib, ema_decay=decay, lr=lr, epochs=ep, batch_size=bs,
                       label_smoothing=ls, validation_accuracy=float(val), final_accuracy=float(final),
                       key_init_and_index_seconds=init_s, train_seconds=train_s)
            rows.append(row)
            print(f"{c:4d} {k:5d} {kie:3d} {kmr:6d} {kib:5d} {decay:5g} {lr:5g} {ep:3d} {bs:4d} {ls:4g} {100 * val:6.2f} {100 * final:6.2f} "
                  f"{init_s:7.1f} {train_s:7.1f}", flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"scenario": args.scenario, "dataset": args.dataset, "seed": args.seed, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
