"""DKVB: frozen keys initialised once without labels, values trained from cached key indices.

    setup:  keys <- EMA k-means over unlabelled token states (the key-init corpus), frozen
            indices <- nearest key of every token of every split, computed once
    learn:  ValueSGD epochs over the task's (indices, labels); nothing else is trained

Single head: the label set grows as tasks bring classes (new value columns, zero-initialised),
and the loss covers the classes seen so far. One head per task: a value table per head over
the same keys.
"""

from __future__ import annotations

import dataclasses
from typing import Iterator

import numpy as np
import torch

from ..bottleneck import KeyValueBottleneck, TaskHead, ValueSGD
from ..engine.context import SplitData
from ..faults import crash_point
from .base import STRATEGIES, Strategy

KEY_INIT_CORPORA = ("train",)  # or any dataset name / folder whose train split has texts


@dataclasses.dataclass
class DKVBOptions:
    """Hyperparameters of the DKVB method.

    Defaults from a sweep on CLINC150 class_il, chosen on its validation split
    (`benchmarks/sweep_dkvb.py`, recorded in benchmarks/out/sweep_dkvb_clinc*.json).
    """

    num_codebooks: int = 16  # C; with split='segment' it must divide the hidden size
    num_keys: int = 4096  # K pairs per codebook
    split: str = "segment"  # or 'random_projection' (then key_dim is required)
    key_dim: int | None = None
    pooling: str = "mean_after"  # mean pooling after the bottleneck; 'mean_before', 'cls'
    decoder: str = "non_parametric"  # 'linear', 'mlp'
    value_init: str = "zeros"
    key_init_corpus: str = "train"  # the scenario's training texts (unlabelled), or a dataset name/folder
    key_init_epochs: int = 1
    key_init_batch_rows: int = 8192
    key_init_max_rows: int | None = None  # token vectors per k-means epoch (a random subset); None: all
    ema_decay: float = 0.95
    dead_key_threshold: float | None = None
    lr: float = 30.0  # plain SGD on the values (no momentum, no weight decay); see lr_scale
    # 'length_free': every value row an example fetches takes the example's whole gradient, so
    # lr is the step of an example's own logits whatever its length (robust from intents to
    # reviews); 'none': the exact gradient of mean pooling (lr then depends on text length).
    lr_scale: str = "length_free"
    epochs: int = 10  # per task
    batch_size: int = 128
    label_smoothing: float = 0.0
    decoder_lr: float = 1e-3  # Adam on a parametric decoder's weights

    def check(self) -> None:
        if self.lr_scale not in ("length_free", "none"):
            raise ValueError(f"dkvb.lr_scale={self.lr_scale!r}; accepted: length_free, none")
        for name in ("lr", "decoder_lr"):
            if not getattr(self, name) > 0:
                raise ValueError(f"dkvb.{name}={getattr(self, name)!r} must be > 0")


@STRATEGIES.register("dkvb")
class DKVBStrategy(Strategy):
    """The discrete key-value bottleneck on the frozen encoder's token states."""

    name = "dkvb"
    Options = DKVBOptions

    def __init__(self, ctx, options=None):
        super().__init__(ctx, options)
        self._indices: dict[tuple[int, str], torch.Tensor] = {}
        self.front: KeyValueBottleneck | None = None
        self.heads: list = []
        self.key_init_info: dict = {}

    # ------------------------------------------------------------------ set-up
    def _build(self) -> None:
        o, stream = self.opts, self.ctx.stream
        dim = self.ctx.cache.encoder.config.hidden_size
        first = self._classes_needed(0, 0) if stream.num_heads == 1 else stream.classes_per_head[0]
        self.front = KeyValueBottleneck(
            dim, o.num_codebooks, o.num_keys, num_classes=first, split=o.split, key_dim=o.key_dim,
            pooling=o.pooling, decoder=o.decoder, value_init=o.value_init, seed=self.ctx.seed,
            value_dim=None if o.decoder == "non_parametric" else 2 * max(stream.classes_per_head),
        )
        self.heads = [self.front] + [TaskHead(self.front, n, seed=self.ctx.seed + h)
                                     for h, n in enumerate(stream.classes_per_head[1:], 1)]

    def setup(self, state=None, meta=None) -> None:
        self._build()
        if state is not None:
            self.load_state(state, meta or {})
            return
        o = self.opts
        self.front.init_keys(_Reiterable(lambda: self._key_init_rows()), epochs=o.key_init_epochs,
                             decay=o.ema_decay, dead_key_threshold=o.dead_key_threshold)
        crash_point("dkvb.keys_ready")

    def _key_init_features(self):
        corpus = self.opts.key_init_corpus
        if corpus == "train":
            self.key_init_info = {"key_init_corpus": "train texts of all tasks, without labels"}
            return [self.ctx.split(t, "train").features() for t in range(self.ctx.num_tasks)]
        from ..data import load_text_dataset
        from ..data.schema import TEXT, column_array

        data = load_text_dataset(corpus)
        texts = list(column_array(data["train"], TEXT))
        self.key_init_info = {"key_init_corpus": f"{corpus} (train split, {len(texts)} texts, unlabelled)"}
        return [self.ctx.cache.get(texts)]

    def _key_init_rows(self) -> Iterator[torch.Tensor]:
        """Blocks of `key_init_batch_rows` token vectors, texts visited in a seeded random order.

        Rows are gathered text by text from the memory-mapped cache, so memory stays flat
        whatever the corpus size.
        """
        feats = self._key_init_features()
        gen = np.random.default_rng(self.ctx.seed + 17 + self._epoch_counter())
        owners = np.concatenate([np.full(len(f), i) for i, f in enumerate(feats)])
        positions = np.concatenate([np.arange(len(f)) for f in feats])
        order = gen.permutation(len(owners))
        block, count, total = [], 0, 0
        cap = self.opts.key_init_max_rows
        pooling = self.front.pooling
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
            if count >= self.opts.key_init_batch_rows:
                yield torch.from_numpy(np.concatenate(block))
                block, count = [], 0
            if cap is not None and total >= cap:
                break
        if block:
            yield torch.from_numpy(np.concatenate(block))

    def _epoch_counter(self) -> int:
        self._epochs_seen = getattr(self, "_epochs_seen", -1) + 1
        return self._epochs_seen

    # ------------------------------------------------------------------ indices
    def indices(self, data: SplitData) -> torch.Tensor:
        """Key indices of a split, (N, T, C) int32 with -1 padding (or (N, C)); computed once."""
        key = (data.task_id, data.split)
        if key not in self._indices:
            self._indices[key] = quantize_cached(self.front, data.features())
        return self._indices[key]

    # ------------------------------------------------------------------ learning
    def _classes_needed(self, task_id: int, head: int) -> int:
        seen = self.ctx.seen_classes(task_id, head)
        return max(seen) + 1 if seen else 1

    def learn(self, task_id: int) -> None:
        o = self.opts
        data = self.ctx.split(task_id, "train")
        head = self.heads[data.head]
        if self.ctx.stream.num_heads == 1:
            grow = self._classes_needed(task_id, 0) - head.num_classes
            if grow > 0:
                head.add_classes(grow)
        idx = self.indices(data)
        labels = torch.tensor(data.labels, dtype=torch.long)
        if int(labels.max()) >= head.num_classes:
            raise RuntimeError(f"task {task_id} has label {int(labels.max())} beyond the {head.num_classes} classes")
        dec_params = [p for p in head.decoder.parameters() if p.requires_grad]
        dec_opt = torch.optim.Adam(dec_params, lr=o.decoder_lr) if dec_params else None
        gen = torch.Generator().manual_seed(self.ctx.task_seed(task_id))
        sgd = ValueSGD(head, lr=o.lr, label_smoothing=o.label_smoothing, decoder_optimizer=dec_opt,
                       length_free=o.lr_scale == "length_free")
        for _ in range(o.epochs):
            sgd.epoch(idx, labels, batch_size=o.batch_size, generator=gen)

    @torch.no_grad()
    def logits(self, data: SplitData) -> torch.Tensor:
        head = self.heads[data.head]
        idx = self.indices(data)
        out = [head.decoder(head.pool_values(idx[i : i + 2048])) for i in range(0, idx.shape[0], 2048)]
        logits = torch.cat(out) if out else torch.zeros(0, head.num_classes)
        width = self.ctx.stream.classes_per_head[data.head]
        if logits.shape[1] < width:  # classes not yet added cannot be predicted
            pad = logits.new_full((logits.shape[0], width - logits.shape[1]), float("-inf"))
            logits = torch.cat([logits, pad], 1)
        return logits

    # ------------------------------------------------------------------ checkpoints
    def state(self):
        tensors = {f"front.{k}": v for k, v in self.front.state_dict().items()}
        for h, head in enumerate(self.heads[1:], 1):
            tensors.update({f"head{h}.{k}": v for k, v in head.state_dict().items()})
        return tensors, {"head_classes": [h.num_classes for h in self.heads], **self.key_init_info}

    def load_state(self, state, meta) -> None:
        for head, n in zip(self.heads, meta["head_classes"]):
            if head.num_classes < n:
                head.add_classes(n - head.num_classes)
        self.front.load_state_dict({k[6:]: v for k, v in state.items() if k.startswith("front.")})
        for h, head in enumerate(self.heads[1:], 1):
            prefix = f"head{h}."
            head.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})
        self.key_init_info = {k: v for k, v in meta.items() if k.startswith("key_init")}

    def trainable_parameters(self) -> int:
        # TaskHeads do not register the front, so each parameter is counted once.
        return sum(p.numel() for h in self.heads for p in h.parameters() if p.requires_grad)


class _Reiterable:
    """Calls `make()` for a fresh iterator each time it is iterated (one per k-means epoch)."""

    def __init__(self, make):
        self.make = make

    def __iter__(self):
        return iter(self.make())


@torch.no_grad()
def quantize_cached(bottleneck: KeyValueBottleneck, feats, batch_texts: int = 1024) -> torch.Tensor:
    """Key indices of every text in a feature-cache entry: (N, T_max, C) int32, -1 at padding.

    With pooling before the bottleneck ('mean_before' / 'cls') one vector per text: (N, C).
    """
    n, c = len(feats), bottleneck.num_codebooks
    if bottleneck.pooling == "mean_before":
        rows = torch.from_numpy(np.asarray(feats.pooled, dtype=np.float32))
        return bottleneck.quantize(rows).to(torch.int32)
    if bottleneck.pooling == "cls":
        rows = torch.from_numpy(np.asarray(feats.states[feats.offsets[:-1]], dtype=np.float32))
        return bottleneck.quantize(rows).to(torch.int32)
    lengths = torch.from_numpy(feats.lengths)
    t_max = int(lengths.max()) if n else 0
    out = torch.full((n, t_max, c), -1, dtype=torch.int32)
    for start in range(0, n, batch_texts):
        stop = min(n, start + batch_texts)
        lo, hi = int(feats.offsets[start]), int(feats.offsets[stop])
        rows = torch.from_numpy(np.asarray(feats.states[lo:hi], dtype=np.float32))
        idx = bottleneck.quantize(rows).to(torch.int32)  # (tokens, C), rows of texts start..stop
        mask = torch.arange(t_max)[None, :] < lengths[start:stop, None]
        out[start:stop][mask] = idx
    return out
