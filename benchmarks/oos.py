"""CLINC150 out-of-scope detection: every score of `dkvb_nlp.open_world` on one DKVB model.

    python benchmarks/oos.py                      # writes benchmarks/results/clinc_oos/
    python benchmarks/oos.py --max-train-per-class 20 --out /tmp/oos_quick

The model is `DKVBForSequenceClassification(DKVBConfig(...))` with the default config (frozen
all-MiniLM-L6-v2, 16 x 4096 keys, 'counts+ridge' values), its keys initialised on the in-scope
train texts and its values learned by `partial_fit` on them (OOS texts are never learned). Each
split is encoded once: key init reuses the train token states (the same length-sorted batches in
the same seeded order as `model.init_keys`, so the keys are those `init_keys` gives), and every
score reads the same token states, key indices, logits and pooled mean features.

Each score's threshold is chosen on in-scope validation + oos_validation (`choose_threshold`,
rule 'youden' by default; `--rule tpr` for 95% in-scope TPR on validation), then applied to test +
oos_test. In-scope accuracy counts an in-scope text rejected as OOS as wrong.
"""

from __future__ import annotations

import argparse
import json
import random
import shlex
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dkvb_nlp.data import load_text_dataset  # noqa: E402
from dkvb_nlp.modeling import DKVBConfig, DKVBForSequenceClassification  # noqa: E402
from dkvb_nlp.modeling.modeling_dkvb import regroup_rows  # noqa: E402
from dkvb_nlp.open_world import scores as S  # noqa: E402


def cap_per_class(texts, labels, n):
    if n is None:
        return texts, labels
    seen = defaultdict(int)
    keep = []
    for i, y in enumerate(labels):
        if seen[y] < n:
            seen[y] += 1
            keep.append(i)
    return [texts[i] for i in keep], [labels[i] for i in keep]


def encode(model, texts, batch_size):
    """Length-sorted batches (positions, states, mask), in iter_encoded's unshuffled order."""
    return [(b.positions, b.states.float(), b.mask) for b in model.iter_encoded(texts, batch_size=batch_size)]


def init_keys_from(model, batches, seed):
    """model.init_keys on already encoded batches: same batches, same seeded order per epoch."""
    cfg = model.config
    bottleneck = model.bottleneck

    class Rows:
        def __init__(self):
            self.epoch = 0

        def __iter__(self):
            self.epoch += 1
            order = list(batches)
            random.Random(seed + self.epoch).shuffle(order)
            rows = (bottleneck._valid_rows(s, m)[0] for _, s, m in order)
            return regroup_rows(rows, cfg.key_init_batch_rows)

    bottleneck.init_keys(Rows(), epochs=cfg.key_init_epochs, decay=cfg.ema_decay,
                         dead_key_threshold=cfg.dead_key_threshold, backend=cfg.key_init)


@torch.no_grad()
def split_outputs(model, batches, n):
    """Per text, in input order: key indices (list of (T, C)), pooled mean features, key distances."""
    bn = model.bottleneck
    keys = bn.keys.float()
    indices = [None] * n
    feats = torch.zeros(n, bn.dim)
    kdist = np.zeros(n)
    for pos, states, mask in batches:
        idx = bn.quantize(states, mask)
        lengths = mask.sum(1)
        for j, p in enumerate(pos.tolist()):
            indices[p] = idx[j, : int(lengths[j])]
        m = mask.unsqueeze(-1).float()
        feats[pos] = (states * m).sum(1) / m.sum(1)
        b, t, d = states.shape
        segments = bn.heads(states.reshape(b * t, d)).reshape(b, t, bn.num_codebooks, -1)
        kdist[pos.numpy()] = S.key_distance(segments, keys, mask)
    return indices, feats, kdist


def padded(indices, start, stop):
    part = indices[start:stop]
    t = max(x.shape[0] for x in part)
    out = torch.full((len(part), t, part[0].shape[1]), -1, dtype=torch.long)
    for j, x in enumerate(part):
        out[j, : x.shape[0]] = x
    return out


@torch.no_grad()
def logits_and_evidence(model, indices, block=512):
    counts = model.bottleneck.values_rule.counts.counts
    logits, ev_log, ev_unseen = [], [], []
    for start in range(0, len(indices), block):
        idx = padded(indices, start, start + block)
        logits.append(model.logits_from_indices(idx).float())
        ev_log.append(S.key_evidence(idx, counts, model.config.num_keys, kind="log_count"))
        ev_unseen.append(S.key_evidence(idx, counts, model.config.num_keys, kind="unseen"))
    return torch.cat(logits), np.concatenate(ev_log), np.concatenate(ev_unseen)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--max-train-per-class", type=int, default=None,
                    help="cap in-scope train texts per class (key init and values); default: all")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--rule", choices=S.THRESHOLD_RULES, default="youden")
    ap.add_argument("--knn-k", type=int, default=10)
    ap.add_argument("--temperature", type=float, default=1.0, help="energy score temperature")
    ap.add_argument("--max-eval", type=int, default=None, help="first N texts of each evaluation split (smoke runs)")
    ap.add_argument("--out", default="benchmarks/results/clinc_oos")
    ap.add_argument("--save-scores", action="store_true", help="also write scores.npz (every score of every text)")
    args = ap.parse_args(argv)
    t0 = time.time()
    torch.manual_seed(0)

    data = load_text_dataset("clinc150")
    train_texts, train_labels = cap_per_class(list(data["train"]["text"]), list(data["train"]["label"]),
                                              args.max_train_per_class)
    names = sorted(set(train_labels))
    config = DKVBConfig(id2label=dict(enumerate(names)))
    model = DKVBForSequenceClassification(config).eval()
    label2id = {n: i for i, n in enumerate(names)}

    splits = {"train": train_texts}
    for name in ("validation", "test", "oos_validation", "oos_test"):
        splits[name] = list(data[name]["text"])[: args.max_eval]
    encoded = {}
    for name, texts in splits.items():
        t = time.time()
        encoded[name] = encode(model, texts, args.batch_size)
        print(f"encoded {name}: {len(texts)} texts in {time.time() - t:.0f} s", flush=True)

    t = time.time()
    init_keys_from(model, encoded["train"], config.seed)
    print(f"keys initialised in {time.time() - t:.0f} s", flush=True)

    out = {name: split_outputs(model, encoded[name], len(splits[name])) for name in splits}
    del encoded

    t = time.time()
    train_ids = torch.tensor([label2id[y] for y in train_labels])
    rule = model.bottleneck.values_rule
    train_idx = out["train"][0]
    for start in range(0, len(train_idx), 1024):
        rule.partial_fit(padded(train_idx, start, start + 1024), train_ids[start : start + 1024])
    print(f"values learned in {time.time() - t:.0f} s", flush=True)

    train_feats = out["train"][1]
    maha_fit = S.fit_mahalanobis(train_feats, train_ids)
    bank = S.knn_bank(train_feats)
    scores, logits = {}, {}
    for name in ("validation", "test", "oos_validation", "oos_test"):
        indices, feats, kdist = out[name]
        z, ev_log, ev_unseen = logits_and_evidence(model, indices)
        logits[name] = z
        scores[name] = {
            "msp": S.msp(z),
            f"energy(T={args.temperature:g})": S.energy(z, args.temperature),
            "key_distance": kdist,
            "key_evidence(log_count)": ev_log,
            "key_evidence(unseen)": ev_unseen,
            "mahalanobis": S.mahalanobis(feats, maha_fit),
            f"knn(k={args.knn_k})": S.knn(feats, bank, k=args.knn_k),
        }

    test_ids = np.array([label2id[y] for y in data["test"]["label"][: len(splits["test"])]])
    correct = logits["test"].argmax(1).numpy() == test_ids
    closed = float(correct.mean())
    val_ids = np.array([label2id[y] for y in data["validation"]["label"][: len(splits["validation"])]])
    correct_val = logits["validation"].argmax(1).numpy() == val_ids
    closed_val = float(correct_val.mean())
    rows = []
    for score_name in scores["test"]:
        thr = S.choose_threshold(scores["validation"][score_name], scores["oos_validation"][score_name],
                                 rule=args.rule, correct_in_val=correct_val)
        m = S.oos_metrics(scores["test"][score_name], scores["oos_test"][score_name], thr, correct)
        rows.append({"score": score_name, **m})

    lines = [f"CLINC150 out-of-scope detection, DKVB default config ({config.encoder_name_or_path}, "
             f"{config.num_codebooks} x {config.num_keys} keys, values={config.values}), "
             f"train {len(train_texts)} in-scope texts"
             + (f" (capped at {args.max_train_per_class} per class)" if args.max_train_per_class else ""),
             f"test: {len(splits['test'])} in-scope + {len(splits['oos_test'])} oos; thresholds chosen on "
             f"validation ({len(splits['validation'])}) + oos_validation ({len(splits['oos_validation'])}), "
             f"rule '{args.rule}'; reject as OOS when score > threshold",
             f"closed-set accuracy (in-scope test, no rejection): {100 * closed:.2f}  (validation {100 * closed_val:.2f})",
             "",
             f"{'score':26s} {'AUROC':>7s} {'FPR@95TPR':>10s} {'OOS recall':>11s} {'in-scope acc':>13s} {'accepted':>9s}"]
    for r in rows:
        lines.append(f"{r['score']:26s} {100 * r['auroc']:7.2f} {100 * r['fpr_at_95_tpr']:10.2f} "
                     f"{100 * r['oos_recall']:11.2f} {100 * r['in_scope_accuracy']:13.2f} "
                     f"{100 * r['in_scope_accepted']:9.2f}")
    lines.append("")
    lines.append(f"total time {time.time() - t0:.0f} s")
    text = "\n".join(lines)
    print(text)

    dest = Path(args.out)
    dest.mkdir(parents=True, exist_ok=True)
    if args.save_scores:  # every score per text, for trying combinations without re-encoding
        np.savez_compressed(dest / "scores.npz", correct_test=correct, correct_validation=correct_val,
                            **{f"{split}/{name}": np.asarray(v) for split, d in scores.items() for name, v in d.items()})
    (dest / "summary.txt").write_text(text + "\n")
    (dest / "results.json").write_text(json.dumps({
        "dataset": "clinc150", "encoder": config.encoder_name_or_path, "num_codebooks": config.num_codebooks,
        "num_keys": config.num_keys, "values": config.values, "train_texts": len(train_texts),
        "max_train_per_class": args.max_train_per_class, "rule": args.rule, "knn_k": args.knn_k,
        "temperature": args.temperature, "closed_set_accuracy": closed, "closed_set_accuracy_validation": closed_val,
        "rows": rows, "seconds": time.time() - t0}, indent=2) + "\n")
    command = "python benchmarks/oos.py" + "".join(" " + shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    (dest / "COMMAND").write_text(command + "\n")
    return rows


if __name__ == "__main__":
    main()
