"""The paper's motivating experiment (DKVB paper, section 5.1, Figure 2).

8 Gaussian classes in 2-D arrive in 4 stages of 2 classes (100 samples per class); each stage
gets 1000 full-batch gradient steps of plain SGD on its own data only. A linear probe and a
1-hidden-layer MLP (32 units) forget earlier stages; DKVB, whose frozen keys make every update
local, keeps them. Prints each model's final accuracy over all 8 classes and writes the
decision-boundary figure.

    python benchmarks/toy2d.py [--seed 0] [--out benchmarks/out/toy2d.png]
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from dkvb_nlp import KeyValueBottleneck
from dkvb_nlp.bottleneck.value_sgd import ValueSGD

CLASSES, STAGES, PER_CLASS, STEPS = 8, 4, 100, 1000
DOMAIN = 4.0  # inputs live in [-DOMAIN, DOMAIN]^2


def make_data(gen: torch.Generator):
    """8 spatially separated Gaussian blobs on a ring; returns x (800, 2), y (800,)."""
    angles = torch.arange(CLASSES) * (2 * math.pi / CLASSES)
    centres = 2.5 * torch.stack([angles.cos(), angles.sin()], 1)
    y = torch.arange(CLASSES).repeat_interleave(PER_CLASS)
    x = centres[y] + 0.35 * torch.randn(len(y), 2, generator=gen)
    return x, y


class Probe:
    """A linear probe or an MLP trained with full-batch SGD on cross-entropy."""

    def __init__(self, hidden: int | None, lr: float, seed: int):
        torch.manual_seed(seed)
        self.net = nn.Linear(2, CLASSES) if hidden is None else nn.Sequential(
            nn.Linear(2, hidden), nn.ReLU(), nn.Linear(hidden, CLASSES))
        self.opt = torch.optim.SGD(self.net.parameters(), lr=lr)

    def train_stage(self, x, y):
        for _ in range(STEPS):
            self.opt.zero_grad()
            F.cross_entropy(self.net(x), y).backward()
            self.opt.step()

    @torch.no_grad()
    def predict(self, x):
        return self.net(x).argmax(1)


class DKVB:
    """A bottleneck on the raw 2-D input, trained from cached key indices with ValueSGD."""

    def __init__(self, codebooks: int, keys: int, split: str, lr: float, seed: int):
        gen = torch.Generator().manual_seed(seed)
        self.model = KeyValueBottleneck(2, codebooks, keys, num_classes=CLASSES, split=split,
                                        key_dim=2 if split == "random_projection" else None, seed=seed)
        # Keys from random points of the domain, not from the task's data.
        domain = (torch.rand(20000, 2, generator=gen) * 2 - 1) * DOMAIN
        self.model.init_keys([domain[i : i + 2000] for i in range(0, len(domain), 2000)], epochs=5)
        self.sgd = ValueSGD(self.model, lr=lr)

    def train_stage(self, x, y):
        indices = self.model.quantize(x)  # the frozen front runs once per stage
        for _ in range(STEPS):
            self.sgd.step(indices, y)

    @torch.no_grad()
    def predict(self, x):
        return self.model(x).argmax(1)


def build(seed: int) -> dict:
    """The four models of Figure 2."""
    return {
        "linear probe": Probe(None, lr=0.1, seed=seed),
        "MLP (32 hidden)": Probe(32, lr=0.1, seed=seed),
        "DKVB 1 x 400 keys": DKVB(1, 400, "segment", lr=1.0, seed=seed),
        "DKVB 20 x 20, random proj.": DKVB(20, 20, "random_projection", lr=20.0, seed=seed),
    }


def plot(models: dict, x, y, out: Path) -> None:
    """Decision regions of each model after the last stage, with all training points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    cmap = ListedColormap(plt.get_cmap("tab10").colors[:CLASSES])

    grid = torch.linspace(-DOMAIN, DOMAIN, 200)
    gx, gy = torch.meshgrid(grid, grid, indexing="xy")
    points = torch.stack([gx.reshape(-1), gy.reshape(-1)], 1)
    fig, axes = plt.subplots(1, len(models), figsize=(4 * len(models), 4))
    for ax, (name, model) in zip(axes, models.items()):
        regions = model.predict(points).reshape(gx.shape)
        ax.contourf(gx, gy, regions, levels=torch.arange(CLASSES + 1) - 0.5, cmap=cmap, alpha=0.35)
        ax.scatter(x[:, 0], x[:, 1], c=y, cmap=cmap, vmin=-0.5, vmax=CLASSES - 0.5, s=4)
        acc = (model.predict(x) == y).float().mean().item()
        ax.set_title(f"{name}\nfinal accuracy {acc:.0%}", fontsize=10)
        ax.set_xticks([]), ax.set_yticks([])
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=90)
    tmp.replace(out)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "out" / "toy2d.png")
    parser.add_argument("--no-plot", action="store_true")
    args = parser.parse_args(argv)

    gen = torch.Generator().manual_seed(args.seed)
    x, y = make_data(gen)
    models = build(args.seed)
    for stage in range(STAGES):
        in_stage = (y >= 2 * stage) & (y < 2 * stage + 2)
        for model in models.values():
            model.train_stage(x[in_stage], y[in_stage])
    results = {name: (m.predict(x) == y).float().mean().item() for name, m in models.items()}
    print(f"{'model':30s} final accuracy over all {CLASSES} classes")
    for name, acc in results.items():
        print(f"{name:30s} {acc:6.1%}")
    dkvb = models["DKVB 1 x 400 keys"].model
    pruned = dkvb.prune(dkvb.usage_counts(dkvb.quantize(x)))
    same = torch.equal(pruned(x).argmax(1), dkvb(x).argmax(1))
    print(f"pruning the 400-key DKVB to the keys the data uses: {pruned.num_keys} keys, "
          f"same predictions on the data: {same}")
    if not args.no_plot:
        plot(models, x, y, args.out)
        print(f"wrote {args.out}")
    return results


if __name__ == "__main__":
    main()
