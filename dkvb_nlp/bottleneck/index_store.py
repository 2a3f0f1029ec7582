"""Key indices of cached features: computed once, stored compactly, read in blocks.

Shared by the DKVB strategies, the benchmarks (speed.py, sweeps) and anything else that turns
a split's cached token states into key indices: `quantize_cached` writes them (the smallest
integer dtype, `index_dtype`, in an anonymous memory-mapped file, `index_array`), `IndexRows`
reads rows across several splits' index tensors, and `key_init_blocks` streams the token
vectors that initialise the keys.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch

from .module import KeyValueBottleneck

logger = logging.getLogger(__name__)


class Reiterable:
    """Calls `make()` for a fresh iterator each time it is iterated (one per k-means epoch)."""

    def __init__(self, make):
        self.make = make

    def __iter__(self):
        return iter(self.make())


def key_init_blocks(feats: Sequence, pooling: str, batch_rows: int, seed: int,
                    max_rows: int | None = None) -> Iterator[torch.Tensor]:
    """Blocks of at least `batch_rows` float32 vectors from feature-cache entries, for key init.

    Texts of all entries are visited in the order of a permutation seeded by `seed` and
    gathered one by one from the memory-mapped token states: whole texts per block, one
    block in memory at a time. `pooling` picks the vectors as the bottleneck quantises them
    ('mean_after': every token; 'mean_before': the pooled vector; 'cls': the first token).
    `max_rows` stops after that many vectors (None: all).
    """
    gen = np.random.default_rng(seed)
    owners = np.concatenate([np.full(len(f), i) for i, f in enumerate(feats)])
    positions = np.concatenate([np.arange(len(f)) for f in feats])
    order = gen.permutation(len(owners))
    block, count, total = [], 0, 0
    for j in order:
        f, p = feats[owners[j]], positions[j]
        if pooling == "mean_after":
            rows = f.states[f.offsets[p] : f.offsets[p + 1]]
        elif pooling == "mean_before":
            rows = f.pooled[p : p + 1]
        else:  # cls: the first token state
            rows = f.states[f.offsets[p] : f.offsets[p] + 1]
        block.append(np.asarray(rows, dtype=np.float32))
        count += len(rows)
        total += len(rows)
        if count >= batch_rows:
            yield torch.from_numpy(np.concatenate(block))
            block, count = [], 0
        if max_rows is not None and total >= max_rows:
            break
    if block:
        yield torch.from_numpy(np.concatenate(block))


def index_dtype(num_keys: int) -> np.dtype:
    """The smallest integer dtype holding key indices 0..K-1 and the padding -1."""
    return np.dtype(np.int16) if num_keys <= np.iinfo(np.int16).max else np.dtype(np.int32)


def index_array(shape: tuple[int, ...], dtype, folder: str | os.PathLike | None = None) -> np.ndarray:
    """An uninitialised array; memory-mapped to a temporary file in `folder` when given.

    The file is anonymous (`tempfile.TemporaryFile`: O_TMPFILE, or unlinked as soon as it is
    created), so it lives exactly as long as the mapping and nothing is left behind if the
    process dies. Its pages are file-backed: the kernel writes them back and reclaims them
    under pressure, so they count as reclaimable, not as anonymous memory. Without a
    folder (or if the folder cannot hold the file) the array is an ordinary in-memory one.
    """
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if folder is None or nbytes == 0:  # an empty file cannot be mapped
        return np.empty(shape, dtype)
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder, prefix=".indices-") as f:
            f.truncate(nbytes)  # sparse: blocks are allocated as rows are written
            return np.memmap(f, dtype=dtype, mode="r+", shape=shape)  # the mapping keeps the file open
    except OSError as err:
        logger.warning("cannot memory-map key indices in %s (%s); keeping them in memory", folder, err)
        return np.empty(shape, dtype)


@torch.no_grad()
def quantize_cached(bottleneck: KeyValueBottleneck, feats, batch_texts: int = 1024,
                    folder: str | os.PathLike | None = None, dtype=None, progress: bool = False,
                    desc: str = "indexing") -> torch.Tensor:
    """Key indices of every text in a feature-cache entry: (N, T_max, C), -1 at padding.

    With pooling before the bottleneck ('mean_before' / 'cls') one vector per text: (N, C).
    `dtype` defaults to `index_dtype(K)` (int16 up to 32,767 keys). With `folder` the result
    lives in a memory-mapped temporary file there (`index_array`), else in memory. Either way
    it is filled block by block (`batch_texts` texts, or the bottleneck's `chunk_size` pooled
    vectors), so at most one block of float32 states is in memory at a time. The index
    values do not depend on the folder, dtype or memory size. `progress` shows a bar of the blocks.
    Each block is searched on the bottleneck's device (its keys'), and its indices come back to
    the host: the index files live on the host whatever the device.
    """
    from ..progress import progress_bar

    device = bottleneck.keys.device

    n, c = len(feats), bottleneck.num_codebooks
    dtype = index_dtype(bottleneck.num_keys) if dtype is None else np.dtype(dtype)
    if bottleneck.pooling in ("mean_before", "cls"):
        out = index_array((n, c), dtype, folder)
        step = bottleneck.chunk_size  # quantize() searches in chunks of this size: the same chunks
        for start in progress_bar(range(0, n, step), desc=desc, enabled=progress, unit="block"):
            stop = min(n, start + step)
            if bottleneck.pooling == "mean_before":
                rows = feats.pooled[start:stop]
            else:
                rows = feats.states[feats.offsets[start:stop]]
            rows = torch.from_numpy(np.array(rows, dtype=np.float32)).to(device)
            out[start:stop] = bottleneck.quantize(rows).cpu().numpy()
        return torch.from_numpy(out)
    lengths = np.asarray(feats.lengths)
    t_max = int(lengths.max()) if n else 0
    out = index_array((n, t_max, c), dtype, folder)
    positions = np.arange(t_max)
    for start in progress_bar(range(0, n, batch_texts), desc=desc, enabled=progress, unit="block"):
        stop = min(n, start + batch_texts)
        lo, hi = int(feats.offsets[start]), int(feats.offsets[stop])
        rows = torch.from_numpy(np.asarray(feats.states[lo:hi], dtype=np.float32)).to(device)
        idx = bottleneck.quantize(rows).cpu().numpy()  # (tokens, C), rows of texts start..stop
        block = np.full((stop - start, t_max, c), -1, dtype=dtype)
        block[positions[None, :] < lengths[start:stop, None]] = idx
        out[start:stop] = block
    return torch.from_numpy(out)


class IndexRows:
    """Index tensors of several splits seen as one (N, [T,] C) set, gathered batch by batch.

    Equal, batch for batch, to the parts concatenated along N (token axes padded with -1 to
    the longest part) and converted to int64, without concatenating the parts: they stay where
    they are (memory-mapped), and only a batch is converted to int64.
    """

    def __init__(self, parts: Sequence[torch.Tensor]):
        if not parts:
            raise ValueError("IndexRows needs at least one index tensor")
        dims = {p.dim() for p in parts}
        if len(dims) != 1:
            raise ValueError("index tensors mix (N, C) and (N, T, C)")
        self.parts = list(parts)
        sizes = torch.tensor([p.shape[0] for p in parts], dtype=torch.long)
        self.starts = torch.cat([torch.zeros(1, dtype=torch.long), sizes.cumsum(0)])
        tail = list(parts[0].shape[1:])
        if len(tail) == 2:
            tail[0] = max(p.shape[1] for p in parts)
        self.tail = tuple(tail)

    def __len__(self) -> int:
        return int(self.starts[-1])

    def __getitem__(self, batch: torch.Tensor) -> torch.Tensor:
        """Rows `batch` (a 1-D long tensor of positions in the union) as int64."""
        if len(self.parts) == 1 and self.parts[0].shape[1:] == self.tail:
            return self.parts[0][batch].long()
        out = torch.full((batch.numel(), *self.tail), -1, dtype=torch.long)
        owner = torch.searchsorted(self.starts[1:], batch, right=True)
        for p, part in enumerate(self.parts):
            sel = (owner == p).nonzero(as_tuple=True)[0]
            if sel.numel():
                rows = part[batch[sel] - self.starts[p]]
                if rows.dim() == 3:
                    out[sel, : rows.shape[1]] = rows.long()
                else:
                    out[sel] = rows.long()
        return out

    def check(self, head, block: int = 4096) -> None:
        """The index range check of `ValueSGD.epoch` for `head`, part by part, block by block."""
        for part in self.parts:
            for start in range(0, part.shape[0], block):
                head.check_indices(part[start : start + block])
