"""Go/no-go for an exact nearest-key search that skips tiles of keys it can prove are not nearest.

    DKVB_DATA_DIR=/work/shared/data python benchmarks/search_pruning.py [--queries 20000] [--json out.json]

Question: for DKVB's default codebooks (C=16 codebooks of K=4096 keys of 24 dims, keys from EMA
k-means over CLINC150's token states), how many keys would a pruned exact search still have to
visit? Keys of each codebook are grouped into spatially coherent tiles (a balanced PCA bisection
tree of the keys themselves, leaves of `size` keys; or a balanced k-means assignment); a tile t
with centre c_t and radius r_t = max ||k - c_t|| over its keys cannot hold a key closer to x than

    ball bound:  LB_t(x) = max(0, ||x - c_t|| - r_t)^2
    box bound:   LB_t(x) = sum_d dist(p_d(x), [lo_td, hi_td])^2   (the tile's keys' bounding box
                 in the codebook's PCA basis p; an orthogonal change of basis keeps distances)

Any exact search must visit every tile with LB_t(x) <= d*(x) (the true nearest distance): it
cannot rule them out with this bound even when it knows the nearest key from the start (an
oracle warm start). That fraction is the floor of the work; `greedy` is the fraction visited
by the practical order (tiles by increasing LB, running best, stop when the next LB exceeds it,
no warm start). The register-tiled brute force (the AVX2 kernel) does 1.0 of the work at full
SIMD throughput, so a pruned search needs a floor well below ~25% to win: it pays for the
bound of every tile (256 per query and codebook, about 1/16 of the brute force's dot products
for 16-key tiles), for the sort or the priority order, and for gathers that break the kernel's
6-query x 16-key register tile (queries of one block visit different tiles).

Keys: EMA k-means (`EMAKMeans`, decay 0.8, 2 passes, blocks of 8192 rows: the DKVB defaults)
over the cached MiniLM fp32 token states of CLINC150's 15,000 training texts (the feature cache
entry of the training pool, found by its meta.json: 15,000 texts, no parent pool). Queries:
random token rows of the training pool (what key init and indexing search) and of the test pool.
`pivot` is the triangle-inequality floor with the nearest key as the one pivot (oracle); d1/d2 and
d1/dmed compare the nearest distance with the second nearest and the median key distance.

Measured (benchmarks/results/search_pruning/): every bound leaves 27-94% of the keys to visit even
with the oracle warm start (ball, 16-key tiles: 86% on train rows), so the register-tiled brute
force stays.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dkvb_nlp.bottleneck.index_store import key_init_blocks  # noqa: E402
from dkvb_nlp.bottleneck.key_init import EMAKMeans  # noqa: E402
from dkvb_nlp.engine.feature_cache import CachedFeatures  # noqa: E402
from dkvb_nlp.io import default_cache_dir  # noqa: E402


def find_entry(texts: int, encoder: str | None = None) -> tuple[Path, dict]:
    """The feature-cache pool entry (no parent pool) of `texts` texts, fp32, dim 384."""
    found = []
    for meta_path in sorted(default_cache_dir().glob("*/meta.json")):
        meta = json.loads(meta_path.read_text())
        if meta.get("texts") == texts and "pool" not in meta and meta.get("dim") == 384 \
                and meta.get("precision") == "float32" and (encoder is None or meta.get("encoder") == encoder):
            found.append((meta_path.parent, meta))
    if not found:
        raise SystemExit(f"no fp32 pool entry of {texts} texts in {default_cache_dir()}; run a CLINC150 dkvb run first")
    return found[0]


def open_entry(folder: Path) -> CachedFeatures:
    return CachedFeatures(np.load(folder / "states.npy", mmap_mode="r"), np.load(folder / "offsets.npy"),
                          np.load(folder / "pooled.npy"), folder.name)


def train_keys(feats: CachedFeatures, c: int, k: int, epochs: int, batch_rows: int, decay: float, seed: int):
    km = EMAKMeans(c, k, 384 // c, decay=decay, search="avx2", seed=0)
    for epoch in range(epochs):
        for block in key_init_blocks([feats], "mean_after", batch_rows, seed + epoch):
            km.update(block.reshape(block.shape[0], c, 384 // c))
    return km.keys


def pca_tree(keys: torch.Tensor, size: int) -> list[torch.Tensor]:
    """Balanced bisection of keys (K, d) along each part's first principal axis, down to `size` keys."""
    parts, out = [torch.arange(keys.shape[0])], []
    while parts:
        idx = parts.pop()
        if idx.numel() <= size:
            out.append(idx)
            continue
        x = keys[idx].double()
        x = x - x.mean(0)
        axis = torch.linalg.svd(x, full_matrices=False)[2][0]
        order = idx[torch.argsort(x @ axis)]
        half = order.numel() // 2
        parts += [order[:half], order[half:]]
    return out


def kmeans_tiles(keys: torch.Tensor, size: int, iters: int = 10, seed: int = 0) -> list[torch.Tensor]:
    """K / size tiles from plain Lloyd k-means of the keys (tile sizes vary around `size`; empty ones dropped)."""
    k = keys.shape[0]
    x = keys.double()
    gen = torch.Generator().manual_seed(seed)
    centres = x[torch.randperm(k, generator=gen)[: k // size]]
    for _ in range(iters):
        assign = torch.cdist(x, centres).argmin(1)
        sums = torch.zeros_like(centres).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=centres.shape[0]).double()
        centres = torch.where(counts[:, None] > 0, sums / counts.clamp_min(1)[:, None], centres)
    return [t for t in ((assign == j).nonzero(as_tuple=True)[0] for j in range(centres.shape[0])) if t.numel()]


def bounds(queries: torch.Tensor, keys: torch.Tensor, tiles: list[torch.Tensor], basis: torch.Tensor):
    """Ball and box lower bounds (n, T) of every tile, float64."""
    q = queries.double()
    centres = torch.stack([keys[t].double().mean(0) for t in tiles])
    radii = torch.stack([(keys[t].double() - centres[j]).norm(dim=1).max() for j, t in enumerate(tiles)])
    ball = (torch.cdist(q, centres) - radii).clamp_min(0) ** 2
    qp = q @ basis
    lo = torch.stack([(keys[t].double() @ basis).min(0).values for t in tiles])  # (T, d)
    hi = torch.stack([(keys[t].double() @ basis).max(0).values for t in tiles])
    box = torch.zeros_like(ball)
    for j in range(len(tiles)):  # (n, d) per tile: small
        gap = (lo[j] - qp).clamp_min(0) + (qp - hi[j]).clamp_min(0)
        box[:, j] = (gap * gap).sum(1)
    return ball, box


def greedy_keys(lb: torch.Tensor, tile_min: torch.Tensor, sizes: torch.Tensor) -> torch.Tensor:
    """Keys visited (n,) by: tiles in increasing LB order, running best (the visited tiles' exact
    minimum), stop before the first tile whose LB exceeds the running best. lb, tile_min: (n, T)."""
    order = torch.argsort(lb, dim=1)
    lb_s = torch.gather(lb, 1, order)
    best = torch.cummin(torch.gather(tile_min, 1, order), dim=1).values
    prev = torch.cat([torch.full_like(best[:, :1], float("inf")), best[:, :-1]], 1)  # best before tile j
    visited = torch.cummin((lb_s <= prev).to(torch.int8), dim=1).values.bool()  # until the first stop
    return (visited.double() * sizes.double()[order]).sum(1)


def measure(queries: torch.Tensor, keys: torch.Tensor, size: int, tiling: str) -> dict:
    """Per codebook: fractions of keys an exact search must visit. queries (n, C, d), keys (C, K, d)."""
    c, k, d = keys.shape
    rows = {"floor_ball": [], "floor_box": [], "greedy_ball": [], "greedy_box": [], "tiles": [],
            "floor_pivot": [], "nn_ratio": [], "nn_to_median": []}
    for j in range(c):
        kj = keys[j]
        tiles = pca_tree(kj, size) if tiling == "pca" else kmeans_tiles(kj, size)
        sizes = torch.tensor([t.numel() for t in tiles], dtype=torch.float64)
        kc = kj.double() - kj.double().mean(0)
        basis = torch.linalg.svd(kc, full_matrices=False)[2].T  # (d, d)
        q = queries[:, j]
        ball, box = bounds(q, kj, tiles, basis)
        dist = torch.cdist(q.double(), kj.double()) ** 2  # (n, K)
        dstar = dist.min(1, keepdim=True).values
        tile_min = torch.stack([dist[:, t].min(1).values for t in tiles], 1)
        eps = 1e-9 * (1 + dstar)
        rows["floor_ball"].append(((ball <= dstar + eps).double() @ sizes).mean().item() / k)
        rows["floor_box"].append(((box <= dstar + eps).double() @ sizes).mean().item() / k)
        rows["greedy_ball"].append(greedy_keys(ball, tile_min, sizes).mean().item() / k)
        rows["greedy_box"].append(greedy_keys(box, tile_min, sizes).mean().item() / k)
        rows["tiles"].append(len(tiles))
        # triangle inequality with the nearest key k* as the one pivot (an oracle warm start, as in
        # Elkan's k-means): ||x - k|| >= ||k - k*|| - ||x - k*||, so only keys with ||k - k*|| <= 2 ||x - k*||
        # survive; and how far the nearest key is against the second nearest and the median key
        near = dist.argmin(1)
        kk = torch.cdist(kj.double(), kj.double())  # (K, K)
        rows["floor_pivot"].append((kk[near] <= 2 * dstar.sqrt() + 1e-9).double().mean().item())
        two = dist.topk(2, dim=1, largest=False).values.sqrt()
        rows["nn_ratio"].append((two[:, 0] / two[:, 1]).mean().item())
        rows["nn_to_median"].append((dstar[:, 0].sqrt() / dist.median(1).values.sqrt()).mean().item())
    return {name: {"mean": float(np.mean(v)), "per_codebook": [round(x, 4) for x in v]} for name, v in rows.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--queries", type=int, default=20000, help="random token rows per query set")
    p.add_argument("--codebooks", type=int, default=16)
    p.add_argument("--keys", type=int, default=4096)
    p.add_argument("--sizes", default="8,16,32", help="keys per tile")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    torch.set_num_threads(2)
    train_dir, train_meta = find_entry(15000)
    test_dir, _ = find_entry(4500, train_meta["encoder"])
    train, test = open_entry(train_dir), open_entry(test_dir)
    print(f"train pool {train_dir.name}: {len(train)} texts, {train.states.shape[0]} token rows; "
          f"test pool {test_dir.name}: {len(test)} texts, {test.states.shape[0]} rows")
    start = time.perf_counter()
    c, d = args.codebooks, 384 // args.codebooks
    keys = train_keys(train, c, args.keys, epochs=2, batch_rows=8192, decay=0.8, seed=17).float()
    print(f"keys: EMA k-means, 2 passes, {time.perf_counter() - start:.1f} s")
    gen = np.random.default_rng(0)
    sets = {}
    for name, f in (("train", train), ("test", test)):
        rows = np.sort(gen.choice(f.states.shape[0], min(args.queries, f.states.shape[0]), replace=False))
        sets[name] = torch.from_numpy(np.asarray(f.states[rows], dtype=np.float32)).reshape(-1, c, d)
    result = {"codebooks": c, "keys": args.keys, "key_dim": d, "queries": args.queries, "sets": {}}
    print(f"{'queries':6s} {'tiling':6s} {'size':>4s} {'tiles':>5s}  floor ball  floor box  greedy ball  greedy box"
          "  pivot   d1/d2  d1/dmed   (fractions of keys visited, mean over codebooks)")
    for name, q in sets.items():
        for tiling in ("pca", "kmeans"):
            for size in [int(s) for s in args.sizes.split(",")]:
                if tiling == "kmeans" and size != 16:
                    continue
                r = measure(q, keys, size, tiling)
                result["sets"][f"{name}/{tiling}/{size}"] = r
                print(f"{name:6s} {tiling:6s} {size:4d} {r['tiles']['mean']:5.0f}  {r['floor_ball']['mean']:10.3f} "
                      f"{r['floor_box']['mean']:10.3f} {r['greedy_ball']['mean']:12.3f} "
                      f"{r['greedy_box']['mean']:11.3f} "
                      f"{r['floor_pivot']['mean']:6.3f} "
                      f"{r['nn_ratio']['mean']:7.3f} {r['nn_to_median']['mean']:7.3f}",
                      flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
