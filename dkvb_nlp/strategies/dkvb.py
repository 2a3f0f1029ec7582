"""DKVB: frozen keys initialised once without labels, values trained from cached key indices.

    setup:  keys <- EMA k-means over unlabelled token states (the key-init corpus), frozen
            indices <- nearest key of every token of every split, computed once
    learn:  the value rule (`values`) over the task's (indices, labels); nothing else is trained
            - order-free rules ('counts', 'ridge', 'counts+ridge'): add the task's examples to
              sums (class-by-key counts, a ridge readout's Gram matrix); the model after the
              last task is the model of one pass over all tasks, whatever their order
            - 'sgd': ValueSGD epochs (the papers' rule); the loss covers the classes seen so
              far (`loss_classes: seen`) or the task's own (`task`, the labels trick)

Single head: the label set grows as tasks bring classes (new value columns). One head per
task: a value table (and statistics) per head over the same keys.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from ..bottleneck import LOSS_CLASSES, VALUE_RULES, KeyValueBottleneck, TaskHead, ValueSGD
from ..bottleneck.index_store import Reiterable, key_init_blocks, quantize_cached
from ..bottleneck.packed_state import pack_state, rebuild_values, unpack_state
from ..bottleneck.value_rules import attach_config_rule, back_logits
from ..engine.bounds import bounded
from ..engine.context import SplitData
from ..faults import crash_point
from ..progress import progress_bar
from .base import Strategy
from .dkvb_export import export_model, model_config
from ..modeling.configuration_dkvb import config_default as _D

logger = logging.getLogger(__name__)

# Readout features kept for splits that are scored again (`DKVB._readout_features`), at most this
# many bytes per run: CLINC150's test splits take 74 MB at M = 4096.
FEATURE_KEEP_BYTES = 256 * 1024 * 1024
SCORE_BLOCK = 2048  # examples scored at a time (`logits`); kept features are stored per block
KEY_INIT_CORPORA = ("train",)  # or any dataset name / folder whose train split has texts


@dataclasses.dataclass
class DKVBOptions:
    """Hyperparameters of the DKVB method: the model's, whose defaults are `DKVBConfig`'s (one
    source: `config_default`), then the training-only fields of the benchmark.

    The defaults come from sweeps on CLINC150 class_il, chosen on its validation split
    (`benchmarks/sweep_dkvb.py`, `benchmarks/sweep_values.py`, recorded in benchmarks/results/).
    """

    # -- the model (`DKVBConfig`'s fields; `strategies/dkvb_export.py` maps them back) --
    num_codebooks: int = bounded(_D("num_codebooks"), ge=1)  # C; with split='segment' it must divide the hidden size
    num_keys: int = bounded(_D("num_keys"), ge=1)  # K pairs per codebook
    split: str = _D("split")  # 'segment' or 'random_projection' (then key_dim is required)
    key_dim: int | None = bounded(_D("key_dim"), ge=1, integer=True)
    pooling: str = _D("pooling")  # 'mean_after': mean pooling after the bottleneck; 'mean_before', 'cls'
    decoder: str = _D("decoder_type")  # 'non_parametric', 'linear', 'mlp'
    value_init: str = _D("value_init")
    key_init_epochs: int = bounded(_D("key_init_epochs"), ge=1)  # 2: +0.29 validation points over 1 (sweep_dkvb_clinc_part5)
    key_init_batch_rows: int = bounded(_D("key_init_batch_rows"), ge=1)
    # 0.8, not the vision paper's 0.95: one pass of about 20 updates leaves 0.95's keys 36% their
    # random start; 0.8 gave +0.7 validation points on CLINC150 over 3 seeds (sweep_dkvb_clinc_part4)
    ema_decay: float = bounded(_D("ema_decay"), ge=0, lt=1)
    dead_key_threshold: float | None = bounded(_D("dead_key_threshold"), ge=0, integer=False)
    # How the values learn (bottleneck/value_rules.py): 'counts+ridge' (DKVBConfig's rule for the
    # non-parametric decoder), 'counts', 'ridge' (order-free) or 'sgd' (the papers' gradient
    # steps; the training options below 'lr' apply).
    values: str = "counts+ridge"
    smoothing: float = bounded(_D("smoothing"), gt=0)  # additive smoothing of the class-by-key counts
    counts_weight: float = bounded(_D("counts_weight"), gt=0)  # scale of the count values beside the ridge readout
    ridge: float = bounded(_D("ridge"), gt=0)  # lambda of the ridge readout
    ridge_features: int = bounded(_D("ridge_features"), ge=1)  # M, random features of the pooled keys (M^2 float64)
    # -- training only (how the benchmark trains; not part of a saved model) --
    key_init_corpus: str = "train"  # the scenario's training texts (unlabelled), or a dataset name/folder
    key_init_max_rows: int | None = bounded(None, ge=1, integer=True)  # token vectors per k-means epoch (a random subset); None: all
    loss_classes: str = "seen"  # sgd: softmax over the classes seen so far, or 'task' (labels trick)
    lr: float = bounded(30.0, gt=0)  # plain SGD on the values (no momentum, no weight decay); see lr_scale
    # 'length_free': every value row an example fetches takes the example's whole gradient, so
    # lr is the step of an example's own logits whatever its length (robust from intents to
    # reviews); 'none': the exact gradient of mean pooling (lr then depends on text length).
    lr_scale: str = "length_free"
    epochs: int = bounded(10, ge=1)  # per task
    batch_size: int = bounded(128, ge=1)
    label_smoothing: float = bounded(0.0, ge=0, lt=1)
    decoder_lr: float = bounded(1e-3, gt=0)  # Adam on a parametric decoder's weights

    def check(self) -> None:  # numeric ranges are declared on the fields (engine/bounds.py)
        VALUE_RULES.get(self.values)
        if self.loss_classes not in LOSS_CLASSES:
            raise ValueError(f"dkvb.loss_classes={self.loss_classes!r}; accepted: {', '.join(LOSS_CLASSES)}")
        if self.lr_scale not in ("length_free", "none"):
            raise ValueError(f"dkvb.lr_scale={self.lr_scale!r}; accepted: length_free, none")


class DKVBStrategy(Strategy):
    """The discrete key-value bottleneck on the frozen encoder's token states."""

    name = "dkvb"
    Options = DKVBOptions

    def __init__(self, ctx, options=None):
        super().__init__(ctx, options)
        self._indices: dict[tuple[int, str], torch.Tensor] = {}
        self._features: dict[tuple[int, str], list[torch.Tensor]] = {}  # readout features kept for re-scoring
        self._features_bytes = 0
        self.front: KeyValueBottleneck | None = None
        self.heads: list = []
        self.key_init_info: dict = {}

    # ------------------------------------------------------------------ set-up
    def _build(self) -> None:
        o, stream = self.opts, self.ctx.stream
        dim = self.ctx.cache.encoder.config.hidden_size
        first = self._classes_needed(0, 0) if stream.num_heads == 1 else stream.classes_per_head[0]
        # Built from the DKVBConfig it exports with (strategies/dkvb_export.py): one DKVB, one source.
        config = model_config(o, self.ctx, first)
        self.front = KeyValueBottleneck.from_config(config, dim, first)
        self.heads = [self.front] + [TaskHead(self.front, n, config.value_dim, seed=config.seed + h)
                                     for h, n in enumerate(stream.classes_per_head[1:], 1)]
        for h, head in enumerate(self.heads):
            attach_config_rule(head, config, h)
            # Built on the host (the same seeded values everywhere), then moved: keys, value
            # tables and the order-free rules' statistics live on the run's device. The search
            # follows the keys' device ('auto': the torch/matmul backends on a GPU).
            head.to(self.ctx.device)

    def validate(self) -> None:
        """Build the bottleneck once: impossible shapes (C not dividing the hidden size, K < 1) fail now."""
        self._build()
        self.front = None
        self.heads = []

    def setup(self, state=None, meta=None) -> None:
        self._build()
        self._features.clear()  # kept features belong to the keys they were computed with
        self._features_bytes = 0
        if state is not None:
            self.load_state(state, meta or {})
            return
        o = self.opts
        self.front.init_keys(Reiterable(lambda: self._key_init_rows()), epochs=o.key_init_epochs,
                             decay=o.ema_decay, dead_key_threshold=o.dead_key_threshold, progress=self._bars)
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

        Streamed from the memory-mapped cache (`key_init_blocks`), so memory stays flat
        whatever the corpus size.
        """
        feats = self._key_init_features()
        seed = self.ctx.seed + 17 + self._epoch_counter()
        device = self.ctx.device
        for block in key_init_blocks(feats, self.front.pooling, self.opts.key_init_batch_rows, seed,
                                     self.opts.key_init_max_rows):
            yield block.to(device)

    def _epoch_counter(self) -> int:
        self._epochs_seen = getattr(self, "_epochs_seen", -1) + 1
        return self._epochs_seen

    # ------------------------------------------------------------------ indices
    def indices(self, data: SplitData) -> torch.Tensor:
        """Key indices of a split, (N, T, C) with -1 padding (or (N, C)); computed once.

        The smallest integer dtype that holds them (`index_dtype`: int16 up to 32,767 keys),
        in an anonymous memory-mapped temporary file in the feature cache's folder, so they
        take no anonymous memory whatever the split's size.
        """
        key = (data.task_id, data.split)
        if key not in self._indices:
            self._indices[key] = quantize_cached(self.front, data.features(), folder=self._index_folder(),
                                                 progress=self._bars,
                                                 desc=f"{self.name} indexing task {data.task_id + 1} {data.split}")
        return self._indices[key]

    @property
    def _bars(self) -> bool:
        """Whether this process draws progress bars (the main one, when the run shows them)."""
        return self.ctx.progress and self.ctx.process.is_main_process

    def _index_folder(self) -> Path | None:
        # The cache folder itself, not a subfolder: every entry of a cache folder is a complete
        # cache entry (tests/test_reliability.py), and the index files never appear in it.
        return Path(self.ctx.cache.cache_dir) if self.ctx.cache is not None else None

    # ------------------------------------------------------------------ learning
    def _classes_needed(self, task_id: int, head: int) -> int:
        seen = self.ctx.seen_classes(task_id, head)
        return max(seen) + 1 if seen else 1

    def learn(self, task_id: int) -> None:
        data = self.ctx.split(task_id, "train")
        head = self.heads[data.head]
        if self.ctx.stream.num_heads == 1:
            grow = self._classes_needed(task_id, 0) - head.num_classes
            if grow > 0:
                head.add_classes(grow)
        idx = self.indices(data)
        labels = torch.tensor(data.labels, dtype=torch.long)  # on the host, beside the indices
        if int(labels.max()) >= head.num_classes:
            raise RuntimeError(f"task {task_id} has label {int(labels.max())} beyond the {head.num_classes} classes")
        gen = torch.Generator().manual_seed(self.ctx.task_seed(task_id))
        self._fit(head, idx, labels, gen, task_classes=np.unique(data.labels).tolist())

    def _fit(self, head, idx, labels: torch.Tensor, gen: torch.Generator, task_classes=None) -> None:
        """Teach `head` the examples (idx, labels) with the value rule (idx: a tensor or IndexRows)."""
        o = self.opts
        if head.values_rule is not None:  # order-free: add the examples to the sums, block by block
            if isinstance(idx, torch.Tensor):
                head.check_indices(idx)
            else:
                idx.check(head)
            device = self.ctx.device
            for start in range(0, len(idx), 4096):  # the indices stay on the host; a block at a time moves
                batch = torch.arange(start, min(len(idx), start + 4096))
                head.values_rule.partial_fit(idx[batch].to(device), labels[batch].to(device), check=False)
            return
        dec_params = [p for p in head.decoder.parameters() if p.requires_grad]
        dec_opt = torch.optim.Adam(dec_params, lr=o.decoder_lr) if dec_params else None
        loss_classes = task_classes if o.loss_classes == "task" else None
        sgd = ValueSGD(head, lr=o.lr, label_smoothing=o.label_smoothing, decoder_optimizer=dec_opt,
                       length_free=o.lr_scale == "length_free", loss_classes=loss_classes)
        bar = progress_bar(range(o.epochs), desc=f"{self.name} values", enabled=self._bars, unit="epoch")
        for _ in bar:
            loss = sgd.epoch(idx, labels, batch_size=o.batch_size, generator=gen)
            bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
            self.ctx.log({"train/loss": loss})

    def _readout_features(self, data: SplitData, head, idx) -> list | None:
        """The readout's features of a split's blocks of `SCORE_BLOCK`, kept while they fit the budget.

        A split is scored after every task (the accuracy matrix); its features depend only on
        the frozen keys and the readout's fixed projection, so they are computed once (CLINC150's
        test splits: 74 MB at M = 4096) instead of 15 times. Beyond `FEATURE_KEEP_BYTES` a split
        is scored as before, without keeping anything. None: no readout, nothing to keep.
        """
        rule = getattr(head, "values_rule", None)
        if rule is None or rule.readout is None:
            return None
        key = (data.task_id, data.split)
        if key not in self._features:
            size = idx.shape[0] * rule.readout.num_features * 4  # float32
            if self._features_bytes + size > FEATURE_KEEP_BYTES:
                return None
            device = self.ctx.device
            self._features[key] = [rule.readout_features(idx[i : i + SCORE_BLOCK].to(device))
                                   for i in range(0, idx.shape[0], SCORE_BLOCK)]
            self._features_bytes += size
        return self._features[key]

    @torch.no_grad()
    def logits(self, data: SplitData) -> torch.Tensor:
        head = self.heads[data.head]
        idx = self.indices(data)
        device = self.ctx.device
        feats = self._readout_features(data, head, idx)
        out = [back_logits(head, idx[i : i + SCORE_BLOCK].to(device),
                           features=None if feats is None else feats[i // SCORE_BLOCK])
               for i in range(0, idx.shape[0], SCORE_BLOCK)]
        logits = torch.cat(out) if out else torch.zeros(0, head.num_classes, device=device)
        width = self.ctx.stream.classes_per_head[data.head]
        if logits.shape[1] < width:  # classes not yet added cannot be predicted
            pad = logits.new_full((logits.shape[0], width - logits.shape[1]), float("-inf"))
            logits = torch.cat([logits, pad], 1)
        return logits

    # ------------------------------------------------------------------ checkpoints
    def state(self):
        # Order-free statistics packed (sparse counts, the Gram's lower triangle, no derived value
        # table): a CLINC150 checkpoint is 82 MB instead of 263 MB, rewritten after every task.
        return pack_state(self._flat_state()), {"head_classes": [h.num_classes for h in self.heads], **self.key_init_info}

    def _flat_state(self) -> dict[str, torch.Tensor]:
        """The front's tensors ('front.*', with head 0) and the other heads' ('head<h>.*')."""
        tensors = {f"front.{k}": v for k, v in self.front.state_dict().items()}
        for h, head in enumerate(self.heads[1:], 1):
            tensors.update({f"head{h}.{k}": v for k, v in head.state_dict().items()})
        return tensors

    def load_state(self, state, meta) -> None:
        for head, n in zip(self.heads, meta["head_classes"]):
            if head.num_classes < n:
                head.add_classes(n - head.num_classes)
        state = unpack_state(state, self._flat_state())
        self.front.load_state_dict({k[6:]: v for k, v in state.items() if k.startswith("front.")})
        for h, head in enumerate(self.heads[1:], 1):
            prefix = f"head{h}."
            head.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})
        rebuild_values(*self.heads)
        self.key_init_info = {k: v for k, v in meta.items() if k.startswith("key_init")}

    exportable = True

    def export(self, folder, record=None):
        """The trained DKVB as a `DKVBForSequenceClassification` folder (strategies/dkvb_export.py)."""
        return export_model(self, folder, record)

    def trainable_parameters(self) -> int:
        # TaskHeads do not register the front, so each parameter is counted once; a ridge readout's
        # solved weights (M x classes, derived from its statistics) count as learned parameters too.
        values = sum(p.numel() for h in self.heads for p in h.parameters() if p.requires_grad)
        rules = [h.values_rule for h in self.heads if getattr(h, "values_rule", None) is not None]
        return values + sum(rule.solved_parameters for rule in rules)
