"""Training the values from cached key indices: the core's ValueSGD, or the same SGD as one compiled loop.

The vision protocol runs 2000 epochs per split at 256 codebooks: ~120M example-steps, each
touching 256 value rows. `ValueSGD.epoch` pays a few torch dispatches per step and scatters in
a generic kernel: measured on one core here, 1.9 ms a step at C=256 (15 min per run) and 0.65 ms
at C=64; the `numba` trainer takes 1.2 ms and 0.21 ms (memory-bound at C=256). It runs the
identical update (same shuffles from the same torch generator, same batch maths: mean over
codebooks, label-smoothed cross-entropy averaged over the batch, plain SGD on the fetched rows)
as a single compiled loop, gathering and scattering codebook by codebook (one K x dv table at a
time, instead of C scattered rows per example). It is tested against ValueSGD. It covers the paper's
setting only: one vector per image (indices (N, C)) and the non-parametric decoder; anything
else goes through ValueSGD.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from dkvb_nlp.bottleneck import KeyValueBottleneck, ValueSGD
from dkvb_nlp.registry import Registry

__all__ = ["VALUE_TRAINERS", "NumbaValueSGD", "TorchValueSGD", "make_value_trainer", "numba_available"]

VALUE_TRAINERS: Registry[type] = Registry("value trainer")

# Epochs of permutations drawn per compiled call: bounds memory (epochs x N int64).
PERMUTATION_CHUNK = 64


def numba_available() -> bool:
    """True when numba can be imported."""
    try:
        import numba  # noqa: F401
    except ImportError:
        return False
    return True


@VALUE_TRAINERS.register("torch")
class TorchValueSGD:
    """The core's ValueSGD, epoch after epoch."""

    def __init__(self, bottleneck: KeyValueBottleneck, lr: float, label_smoothing: float = 0.0):
        self.sgd = ValueSGD(bottleneck, lr=lr, label_smoothing=label_smoothing)

    def epochs(self, n: int, indices: torch.Tensor, labels: torch.Tensor, batch_size: int = 256,
               generator: torch.Generator | None = None) -> list[float]:
        """n shuffled passes; the mean loss of each."""
        return [self.sgd.epoch(indices, labels, batch_size, generator) for _ in range(n)]


_KERNEL = None


def _kernel():
    """Compile (once per process; numba caches to disk) the multi-epoch SGD loop."""
    global _KERNEL
    if _KERNEL is not None:
        return _KERNEL
    import numba

    @numba.njit(cache=True, nogil=True, fastmath=False)
    def sgd_epochs(table, idx, labels, perms, batch_size, lr, smoothing, losses):
        """Plain SGD epochs on the value table, in place; fills the mean loss of each epoch."""
        # table (C, K, dv) float32, updated in place; idx (N, C) int32; labels (N,) int64;
        # perms (E, N) int64: the example order of each epoch; losses (E,) float64 out.
        c_books, _, dv = table.shape
        n = idx.shape[0]
        rows = np.empty((c_books, batch_size), np.int32)  # batch key indices, codebook-major
        pooled = np.empty((batch_size, dv), np.float32)
        src = np.empty((batch_size, dv), np.float32)
        logp = np.empty(dv, np.float32)
        inv_c = np.float32(c_books)
        coef = np.float32(-lr / c_books)
        off = np.float32(smoothing / dv)
        on = np.float32(1.0 - smoothing)
        for e in range(perms.shape[0]):
            total = 0.0
            for start in range(0, n, batch_size):
                b = min(batch_size, n - start)
                for i in range(b):
                    ex = perms[e, start + i]
                    for c in range(c_books):
                        rows[c, i] = idx[ex, c]
                pooled[:b] = 0.0
                for c in range(c_books):  # gather: one codebook's table at a time
                    for i in range(b):
                        k = rows[c, i]
                        for d in range(dv):
                            pooled[i, d] += table[c, k, d]
                fb = np.float32(b)
                batch_loss = 0.0
                for i in range(b):  # label-smoothed cross-entropy and its gradient, as ValueSGD
                    y = labels[perms[e, start + i]]
                    m = pooled[i, 0] / inv_c
                    for d in range(1, dv):
                        m = max(m, pooled[i, d] / inv_c)
                    s = np.float32(0.0)
                    for d in range(dv):
                        s += np.exp(pooled[i, d] / inv_c - m)
                    lse = m + np.log(s)
                    for d in range(dv):
                        logp[d] = pooled[i, d] / inv_c - lse
                        t = off + (on if d == y else np.float32(0.0))
                        batch_loss -= t * logp[d]
                        src[i, d] = ((np.exp(logp[d]) - t) / fb) * coef
                total += batch_loss  # = mean batch loss x b
                for c in range(c_books):  # scatter: the same rows, the same order
                    for i in range(b):
                        k = rows[c, i]
                        for d in range(dv):
                            table[c, k, d] += src[i, d]
            losses[e] = total / n

    _KERNEL = sgd_epochs
    return _KERNEL


@VALUE_TRAINERS.register("numba")
class NumbaValueSGD:
    """ValueSGD's shuffled epochs for (N, C) indices and the non-parametric decoder, compiled."""

    def __init__(self, bottleneck: KeyValueBottleneck, lr: float, label_smoothing: float = 0.0):
        if not numba_available():
            raise ImportError("value trainer 'numba' needs numba (pip install numba); use 'torch'")
        if bottleneck.config["decoder"] != "non_parametric":
            raise ValueError(f"value trainer 'numba' supports decoder='non_parametric' only, got "
                             f"{bottleneck.config['decoder']!r}; use 'torch'")
        if bottleneck.value_table.dtype != torch.float32 or bottleneck.value_table.device.type != "cpu":
            raise ValueError("value trainer 'numba' needs a float32 CPU value table; use 'torch'")
        if not lr > 0:
            raise ValueError(f"lr={lr} must be > 0")
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing={label_smoothing} must be in [0, 1)")
        self.model, self.lr, self.label_smoothing = bottleneck, float(lr), float(label_smoothing)

    def epochs(self, n: int, indices: torch.Tensor, labels: torch.Tensor, batch_size: int = 256,
               generator: torch.Generator | None = None) -> list[float]:
        """n shuffled passes (orders drawn as ValueSGD.epoch draws them); the mean loss of each."""
        model = self.model
        if indices.dim() != 2:
            raise ValueError(f"value trainer 'numba' takes indices (N, C), got {tuple(indices.shape)}; use 'torch'")
        if indices.shape[0] != labels.shape[0] or indices.shape[0] == 0:
            raise ValueError(f"{indices.shape[0]} index rows for {labels.shape[0]} labels (need >= 1)")
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be >= 1")
        model.check_indices(indices)
        if int(labels.min()) < 0 or int(labels.max()) >= model.num_classes:
            raise ValueError(f"labels must be in [0, {model.num_classes}), got {int(labels.min())}..{int(labels.max())}")
        kernel = _kernel()
        table = model.value_table.data.view(model.num_codebooks, model.num_keys, model.value_dim).numpy()
        idx = np.ascontiguousarray(indices.to(torch.int32).numpy())
        y = np.ascontiguousarray(labels.to(torch.int64).numpy())
        losses: list[float] = []
        done = 0
        while done < n:
            chunk = min(PERMUTATION_CHUNK, n - done)
            perms = torch.stack([torch.randperm(idx.shape[0], generator=generator) for _ in range(chunk)]).numpy()
            out = np.empty(chunk, np.float64)
            kernel(table, idx, y, perms, int(batch_size), self.lr, self.label_smoothing, out)
            losses.extend(out.tolist())
            done += chunk
        return losses


def make_value_trainer(name: str, bottleneck: KeyValueBottleneck, lr: float,
                       label_smoothing: float = 0.0):
    """The value trainer `name` ('auto': numba when installed and applicable, else torch)."""
    if name == "auto":
        name = "numba" if numba_available() and bottleneck.config["decoder"] == "non_parametric" else "torch"
    factory: Callable = VALUE_TRAINERS.get(name)
    return factory(bottleneck, lr=lr, label_smoothing=label_smoothing)
