"""Encode each split once with the frozen encoder and keep the token states on disk.

A cache entry holds, for N texts: the token states without padding as one memory-mapped
(total tokens, D) float16 array, the row offsets of each text, and the mean-pooled states
(N, D) float32 that frozen-feature baselines read. Entries are keyed by the encoder's weights,
the texts, the max length and the precision, written under a temporary name and renamed, and
checked against a sha256 on load: a corrupt entry is rebuilt, never trusted.

A run asks for each task's texts with the split they come from as their pool: the split is
encoded once, in one length-sorted pass, and each task's entry is cut from it, so tasks, seeds
and class orders share one encoding of each split.

Under `accelerate launch` with several processes each process encodes a share of the texts
straight into the shared memory-mapped file (rows do not overlap), so nothing is gathered in
memory; a single process needs no launcher.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import weakref
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from ..encoders import check_texts, iter_encoded
from ..encoders.encode import tokenize
from ..encoders.load import encoder_autocast_dtype
from ..faults import crash_point
from ..io import atomic_write_json, default_cache_dir
from .distributed import process_state
from .fingerprint import encoder_fingerprint, file_sha256, hash_json, hash_texts
from .folder_lock import take_lock

logger = logging.getLogger(__name__)

CACHE_VERSION = 1
FILES = ("states.npy", "offsets.npy", "pooled.npy")
LOCKS = ".locks"  # one lock file per entry key: two jobs never build one entry at once


@dataclass
class CachedFeatures:
    """Token states of N texts (memory-mapped) and their mean-pooled vectors."""

    states: np.ndarray  # (total tokens, D) float16, memory-mapped
    offsets: np.ndarray  # (N + 1,) int64
    pooled: np.ndarray  # (N, D) float32
    key: str

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        """Tokens per text."""
        return np.diff(self.offsets)

    def rows(self, positions: Sequence[int] | None = None) -> torch.Tensor:
        """Token rows (n tokens, D) float32 of the given texts (all by default), concatenated."""
        if positions is None:
            return torch.from_numpy(np.asarray(self.states, dtype=np.float32))
        parts = [self.states[self.offsets[i] : self.offsets[i + 1]] for i in positions]
        return torch.from_numpy(np.concatenate(parts).astype(np.float32))

    def padded(self, positions: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """States (b, T, D) float32 and mask (b, T) of the given texts, padded to their longest."""
        lengths = self.lengths[list(positions)]
        t = int(lengths.max()) if len(lengths) else 0
        out = torch.zeros(len(positions), t, self.states.shape[1])
        mask = torch.zeros(len(positions), t, dtype=torch.bool)
        for j, i in enumerate(positions):
            n = int(lengths[j])
            out[j, :n] = torch.from_numpy(np.asarray(self.states[self.offsets[i] : self.offsets[i] + n], dtype=np.float32))
            mask[j, :n] = True
        return out, mask


class FeatureCache:
    """Encodes texts once per (encoder weights, texts, max length, precision); reuses them after.

    Args:
        encoder, tokenizer: the frozen encoder and its tokenizer.
        cache_dir: where entries live (default `default_cache_dir()`).
        max_length: tokens per text.
        autocast: encoder precision setting ('auto', 'bf16', 'off'); part of the key.
        batch_size: texts per encoder batch.
        progress: show progress bars.
    """

    def __init__(self, encoder: nn.Module, tokenizer, cache_dir: str | os.PathLike | None = None, *,
                 max_length: int = 128, autocast: str = "auto", batch_size: int = 64, progress: bool = True):
        self.encoder, self.tokenizer = encoder, tokenizer
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.max_length, self.autocast, self.batch_size, self.progress = max_length, autocast, batch_size, progress
        # what the encoder pass runs in: the autocast dtype iter_encoded uses, else the weights' own
        dtype = encoder_autocast_dtype(autocast, encoder) or next(encoder.parameters()).dtype
        self.precision = str(dtype).replace("torch.", "")
        self.encoder_key = encoder_fingerprint(encoder)
        self.hits = self.misses = 0

    def key(self, texts: Sequence[str], pairs: Sequence[str] | None = None) -> str:
        """The cache key of these texts under this encoder and settings."""
        return hash_json({"v": CACHE_VERSION, "encoder": self.encoder_key, "texts": hash_texts(texts, pairs),
                          "max_length": self.max_length, "precision": self.precision})[:32]

    def get(self, texts: Sequence[str], pairs: Sequence[str] | None = None, *,
            pool: "TextPool | None" = None) -> CachedFeatures:
        """The cached features of `texts` (encoding them first if needed).

        `pool`: a larger set these texts are drawn from, such as a dataset split whose tasks
        each take a part (`TextPool`). The pool's distinct texts are then encoded once, as one
        entry, in one length-sorted pass (the tightest batches), and this entry is cut from
        it. Every task, seed and class order drawn from the same pool shares that one encoding.
        The cut entry's key names the pool: a text's float bits depend on the batch it was
        padded in, so the same texts encoded on their own are a separate entry.
        """
        texts = check_texts(texts)
        if pairs is not None:
            pairs = check_texts(pairs, "text_pairs")
        if pool is None:
            return self._entry(self.key(texts, pairs), lambda final, state: self._build(texts, pairs, final, state))
        if (pairs is None) != (pool.pairs is None):
            raise ValueError("texts and their pool must both have text pairs or both have none")
        source = pool.entries.get(self)
        if source is None:  # the pool's own entry, loaded (and checksummed) once per cache and pool
            source = pool.entries[self] = self.get(pool.texts, pool.pairs)
        key = hash_json({"v": CACHE_VERSION, "pool": source.key, "texts": hash_texts(texts, pairs)})[:32]
        return self._entry(key, lambda final, state: self._cut(source, pool.rows(texts, pairs), final, state))

    def _entry(self, key: str, build) -> CachedFeatures:
        """Load entry `key`, or `build(final, state)` it first (every process takes part).

        Two jobs sharing a cache folder (two runs, a run and a sweep) never build one entry at
        once: the main process holds the entry's lock (`.locks/<key>`) while it looks and builds,
        so the second job waits, then loads what the first one wrote.
        """
        state = process_state()
        with self._entry_lock(key, state):
            return self._entry_locked(key, build, state)

    @contextmanager
    def _entry_lock(self, key: str, state):
        if not state.is_main_process:
            yield
            return
        folder = self.cache_dir / LOCKS
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / key, "a+", encoding="utf-8") as handle:
            take_lock(handle, folder / key, wait=f"feature cache entry {key} is being built by another process; "
                      "waiting for it", unprotected=": two jobs sharing this cache folder may build one entry at once")
            yield  # closing the file drops the lock

    def _entry_locked(self, key: str, build, state) -> CachedFeatures:
        final = self.cache_dir / key
        entry = self._load(final) if state.is_main_process else None
        state.wait_for_everyone()
        if entry is None and not state.is_main_process:
            entry = self._load(final, verify=False) if (final / "meta.json").is_file() else None
        if entry is not None:
            self.hits += 1
            return entry
        self.misses += 1
        build(final, state)
        state.wait_for_everyone()
        entry = self._load(final, verify=False)
        if entry is None:
            raise RuntimeError(f"feature cache entry {final} was not written")
        return entry

    # ------------------------------------------------------------------ internals
    def _load(self, folder: Path, verify: bool = True) -> CachedFeatures | None:
        meta_path = folder / "meta.json"
        if not meta_path.is_file():
            return None
        try:
            meta = json.loads(meta_path.read_text())
            if verify:
                for name in FILES:
                    if file_sha256(folder / name) != meta["sha256"][name]:
                        raise ValueError(f"{name} does not match its checksum")
            states = np.load(folder / "states.npy", mmap_mode="r")
            offsets = np.load(folder / "offsets.npy")
            pooled = np.load(folder / "pooled.npy", mmap_mode="r")
            if offsets[-1] != states.shape[0] or len(offsets) - 1 != pooled.shape[0]:
                raise ValueError("array shapes disagree")
        except Exception as err:  # any damage: rebuild rather than trust it
            logger.warning("feature cache entry %s is damaged (%s); rebuilding it", folder, err)
            shutil.rmtree(folder, ignore_errors=True)
            return None
        return CachedFeatures(states, offsets, pooled, folder.name)

    def _build(self, texts: list[str], pairs: list[str] | None, final: Path, state) -> None:
        building = final.with_name(final.name + ".building")
        enc = tokenize(self.tokenizer, texts, pairs, self.max_length)
        lengths = np.array([len(ids) for ids in enc["input_ids"]], dtype=np.int64)
        offsets = np.zeros(len(texts) + 1, dtype=np.int64)
        offsets[1:] = np.cumsum(lengths)
        dim = _hidden(self.encoder)
        if state.is_main_process:
            _start_entry(building, offsets, dim)
        state.wait_for_everyone()
        # Texts sorted by length, then dealt out in contiguous shares of about equal token
        # counts: each process encodes its own length range, so its batches stay tightly
        # padded, and both finish at about the same time.
        order = np.argsort(-lengths, kind="stable")
        cum = np.cumsum(lengths[order])
        bounds = np.searchsorted(cum, cum[-1] * np.arange(1, state.num_processes) / state.num_processes)
        mine = np.split(order, bounds)[state.process_index].tolist()
        states = np.load(building / "states.npy", mmap_mode="r+")
        pooled = np.load(building / "pooled.npy", mmap_mode="r+")
        if mine:
            sub_texts = [texts[i] for i in mine]
            sub_pairs = [pairs[i] for i in mine] if pairs is not None else None
            sub_enc = {k: [v[i] for i in mine] for k, v in enc.items()}  # tokenised once, above
            batches = iter_encoded(self.encoder, self.tokenizer, sub_texts, sub_pairs, max_length=self.max_length,
                                   batch_size=self.batch_size, autocast=self.autocast, encoding=sub_enc,
                                   progress=self.progress and state.is_main_process and len(texts) > 2000)
            mine_ids = np.asarray(mine)
            for batch in batches:
                self._write_batch(batch, mine_ids[batch.positions.numpy()], texts, offsets, states, pooled)
                crash_point("cache.batch_written")
        states.flush()
        pooled.flush()
        del states, pooled
        state.wait_for_everyone()
        if state.is_main_process:
            self._publish(building, final, {"texts": len(texts), "tokens": int(offsets[-1]), "dim": dim})

    def _publish(self, building: Path, final: Path, meta: dict) -> None:
        """Checksum the files of a built entry, write its meta.json, and move it into place."""
        meta = {"version": CACHE_VERSION, **meta, "max_length": self.max_length, "precision": self.precision,
                "encoder": self.encoder_key, "sha256": {name: file_sha256(building / name) for name in FILES}}
        atomic_write_json(building / "meta.json", meta)
        shutil.rmtree(final, ignore_errors=True)
        crash_point("cache.before_rename")
        os.replace(building, final)

    def _cut(self, source: CachedFeatures, rows: np.ndarray, final: Path, state, block_texts: int = 4096) -> None:
        """Write the entry of texts `rows` of `source`, in that order (main process; the others wait)."""
        if not state.is_main_process:
            return
        building = final.with_name(final.name + ".building")
        lengths = source.lengths[rows]
        offsets = np.zeros(len(rows) + 1, dtype=np.int64)
        offsets[1:] = np.cumsum(lengths)
        dim = source.states.shape[1]
        states, pooled = _start_entry(building, offsets, dim)
        for lo in range(0, len(rows), block_texts):  # one block of token rows in memory at a time
            part = rows[lo : lo + block_texts]
            n = lengths[lo : lo + block_texts]
            ends = np.cumsum(n)
            tokens = np.repeat(source.offsets[part] - (ends - n), n) + np.arange(int(ends[-1]) if len(n) else 0)
            states[offsets[lo] : offsets[lo] + len(tokens)] = source.states[tokens]
            pooled[lo : lo + len(part)] = source.pooled[part]
            crash_point("cache.batch_written")
        states.flush()
        pooled.flush()
        del states, pooled
        self._publish(building, final, {"texts": len(rows), "tokens": int(offsets[-1]), "dim": dim,
                                        "pool": source.key})

    @staticmethod
    def _write_batch(batch, text_ids: np.ndarray, texts, offsets, states, pooled) -> None:
        """Store one encoded batch: its tokens' rows in one scatter, its pooled vectors, after checks."""
        # The encoder's device (a GPU) computes the pooled vectors; only the results come to
        # the host, where they are written to the memory-mapped files (no-ops on the CPU).
        mask = batch.mask.to(batch.states.device)
        pooled_rows = ((batch.states * mask.unsqueeze(-1)).sum(1) / mask.sum(1).clamp_min(1).unsqueeze(-1)).cpu()
        # (tokens, D) float16, each text's tokens together, texts in batch order
        rows16 = batch.states[mask].to(torch.float16).cpu().numpy()
        mask = mask.cpu()
        counts = mask.sum(1)
        expected = offsets[text_ids + 1] - offsets[text_ids]
        if not np.array_equal(counts.numpy(), expected):
            j = int(np.flatnonzero(counts.numpy() != expected)[0])
            raise RuntimeError(f"text {text_ids[j]}: {int(counts[j])} token states, expected {expected[j]}")
        ends = np.cumsum(expected)  # each text's end row within this batch's rows
        if not np.isfinite(rows16).all():  # NaN/inf from the encoder, or beyond float16's range
            bad = int(np.flatnonzero(~np.isfinite(rows16).all(1))[0])
            j = int(np.searchsorted(ends, bad, side="right"))
            i = int(text_ids[j])
            raise ValueError(f"the encoder produced non-finite token states (NaN or infinite, or beyond float16's "
                             f"range of +-65504) for text {i} ({texts[i][:60]!r}); nothing was cached. Check the "
                             "encoder's weights, or set autocast: off if reduced precision overflows")
        # Destination rows: text j's tokens go to offsets[i_j] .. offsets[i_j + 1].
        starts = offsets[text_ids]
        dest = np.repeat(starts - (ends - expected), expected) + np.arange(len(rows16))
        states[dest] = rows16
        pooled[text_ids] = pooled_rows.numpy()


class TextPool:
    """A set of texts (with pairs, or none) that several `FeatureCache.get` calls draw from.

    Holds the pool's distinct (text, pair) items in sorted order, so the same set gives the
    same pool whatever the order or repeats it was given in.
    """

    def __init__(self, texts: Sequence[str], pairs: Sequence[str] | None = None):
        texts = check_texts(texts, "pool texts")
        if pairs is None:
            self.texts, self.pairs = sorted(set(texts)), None
            items = self.texts
        else:
            pairs = check_texts(pairs, "pool text_pairs")
            if len(pairs) != len(texts):
                raise ValueError(f"{len(pairs)} pool text_pairs for {len(texts)} pool texts; give one pair per text")
            items = sorted(set(zip(texts, pairs)))
            self.texts, self.pairs = [t for t, _ in items], [p for _, p in items]
        self._row = {item: i for i, item in enumerate(items)}
        self.entries: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # the pool's own entry, per cache

    def __len__(self) -> int:
        return len(self.texts)

    def rows(self, texts: Sequence[str], pairs: Sequence[str] | None = None) -> np.ndarray:
        """The row of each text (and pair) in the pool: a ValueError names the first one it lacks."""
        wanted = zip(texts, pairs) if pairs is not None else texts
        rows = np.empty(len(texts), dtype=np.int64)
        for j, item in enumerate(wanted):
            i = self._row.get(item)
            if i is None:
                raise ValueError(f"text {j} ({item!r:.80}) is not in the pool it is said to be drawn from")
            rows[j] = i
        return rows


def _start_entry(building: Path, offsets: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """A fresh `.building` folder: offsets saved, states and pooled as writable memory maps."""
    shutil.rmtree(building, ignore_errors=True)  # left over by a killed run
    building.mkdir(parents=True)
    np.save(building / "offsets.npy", offsets)
    states = np.lib.format.open_memmap(building / "states.npy", mode="w+", dtype=np.float16,
                                       shape=(int(offsets[-1]), dim))
    pooled = np.lib.format.open_memmap(building / "pooled.npy", mode="w+", dtype=np.float32,
                                       shape=(len(offsets) - 1, dim))
    return states, pooled


def _hidden(encoder: nn.Module) -> int:
    from ..encoders import hidden_size

    return hidden_size(encoder)
