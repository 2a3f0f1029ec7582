"""Go/no-go: can indexing the training texts reuse the last key-initialisation pass's assignments?

    DKVB_DATA_DIR=/work/shared/data python benchmarks/key_init_reuse.py [--json out.json]

Key initialisation (EMA k-means, the DKVB defaults: 2 passes, blocks of 8,192 token rows, decay
0.8) assigns every training row to its nearest key in its last pass, and indexing then searches
the same rows again against the final keys. The last pass assigns block b against the keys K_b
of that moment, and the keys move after every block, so an assignment can be reused exactly only
where it is provably still the nearest under the final keys K. With j the key nearest under K_b,
d2 the second-nearest squared distance under K_b and D_b the largest distance any key of the
codebook moved from K_b to K, every other key i has ||x - K_i|| >= sqrt(d2) - D_b, so

    certificate:  ||x - K_j|| < sqrt(d2) - D_b   (then j is the nearest under K; one dot product)

(an implementation would also need the AVX2 kernel's rounding margin; this measures the best
case without it). Printed per position of the block in the last pass and overall: the share of
rows whose nearest key did not change (the most any reuse could save) and the share the
certificate proves. Features: the cached MiniLM token states of CLINC150's 15,000 training texts
(the feature cache entry of a CLINC150 run: run `python benchmarks/run.py --scenario class_il
--methods dkvb` first).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dkvb_nlp.bottleneck.index_store import key_init_blocks  # noqa: E402
from dkvb_nlp.bottleneck.key_init import EMAKMeans  # noqa: E402
from dkvb_nlp.bottleneck.search import SEARCHES  # noqa: E402
from dkvb_nlp.engine.feature_cache import CachedFeatures  # noqa: E402
from dkvb_nlp.io import default_cache_dir  # noqa: E402

C, K, DIM, ROWS, DECAY, EPOCHS, SEED = 16, 4096, 384, 8192, 0.8, 2, 17


def train_features() -> CachedFeatures:
    """The feature-cache pool entry of CLINC150's 15,000 training texts (any precision)."""
    for meta_path in sorted(default_cache_dir().glob("*/meta.json")):
        meta = json.loads(meta_path.read_text())
        if meta.get("texts") == 15000 and "pool" not in meta and meta.get("dim") == DIM:
            folder = meta_path.parent
            return CachedFeatures(np.load(folder / "states.npy", mmap_mode="r"), np.load(folder / "offsets.npy"),
                                  np.load(folder / "pooled.npy"), folder.name)
    raise SystemExit(f"no cache entry of 15,000 texts in {default_cache_dir()}; run a CLINC150 dkvb run first")


def two_nearest(heads: torch.Tensor, keys: torch.Tensor, chunk: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """Index of the nearest key and the second-nearest squared distance: heads (n, C, dk) -> two (n, C)."""
    n = heads.shape[0]
    idx, d2 = torch.empty(n, C, dtype=torch.long), torch.empty(n, C, dtype=torch.float64)
    k64 = keys.double()
    for s in range(0, n, chunk):
        x = heads[s : s + chunk].double().transpose(0, 1)  # (C, b, dk)
        d = torch.cdist(x, k64).square()  # (C, b, K)
        top = d.topk(2, dim=-1, largest=False)
        idx[s : s + chunk], d2[s : s + chunk] = top.indices[..., 0].T, top.values[..., 1].T
    return idx, d2


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    feats = train_features()
    km = EMAKMeans(C, K, DIM // C, decay=DECAY, search="avx2", seed=0)
    last = []
    for epoch in range(EPOCHS):
        for block in key_init_blocks([feats], "mean_after", ROWS, SEED + epoch):
            heads = block.reshape(block.shape[0], C, DIM // C).float()
            if epoch == EPOCHS - 1 and km.keys is not None:
                j, d2 = two_nearest(heads, km.keys)
                last.append((heads, km.keys.clone(), j, d2))
            km.update(heads)
    final = km.keys
    rows = []
    for b, (heads, keys_b, j, d2) in enumerate(last):
        moved = torch.linalg.vector_norm(final.double() - keys_b.double(), dim=-1).amax(-1)  # (C,) D_b
        _, now = SEARCHES.get("avx2")(heads, final)
        chosen = final[torch.arange(C)[None, :], j].double()  # (n, C, dk)
        dist_j = torch.linalg.vector_norm(heads.double() - chosen, dim=-1)
        proved = dist_j < d2.sqrt() - moved[None, :]
        rows.append({"block": b, "rows": heads.shape[0] * C, "unchanged": float((now == j).double().mean()),
                     "certified": float(proved.double().mean()), "max_move": float(moved.max()),
                     "median_move": float(moved.median()), "median_gap": float((d2.sqrt() - dist_j).median())})
    total = sum(r["rows"] for r in rows)
    unchanged = sum(r["unchanged"] * r["rows"] for r in rows) / total
    certified = sum(r["certified"] * r["rows"] for r in rows) / total
    print(f"last key-init pass: {len(rows)} blocks, {total:,} (row, codebook) assignments")
    print(f"{'block':>5s} {'unchanged':>9s} {'certified':>9s} {'max move':>9s} {'median gap':>10s}")
    for r in rows:
        print(f"{r['block']:5d} {100 * r['unchanged']:8.1f}% {100 * r['certified']:8.1f}% {r['max_move']:9.3f} "
              f"{r['median_gap']:10.3f}")
    print(f"overall: nearest key unchanged for {100 * unchanged:.1f}% of assignments; the certificate proves "
          f"{100 * certified:.1f}%")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"blocks": rows, "unchanged": unchanged, "certified": certified},
                                              indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
