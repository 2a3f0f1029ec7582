"""DKVBForSequenceClassification: a frozen encoder, a discrete key-value bottleneck, a decoder.

    text -> tokenizer -> frozen encoder -> token states -> frozen keys -> key indices     FRONT
    key indices -> values of head t -> masked mean -> decoder -> logits                  BACK

A `transformers.PreTrainedModel`: the Auto classes, `pipeline("text-classification")` and the
`Trainer` work with it. Only the back learns. `save_pretrained` writes the back (keys, values,
decoder) plus the tokenizer and a reference to the encoder, PEFT-style; `save_encoder=True`
bundles the encoder for a self-contained folder.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput

from ..bottleneck import KeyValueBottleneck, TaskHead, back_logits
from ..bottleneck.value_rules import attach_config_rule
from ..encoders import (ALIASES, EncoderNotFoundError, check_texts, encoder_autocast_dtype, freeze, hidden_size,
                        iter_encoded, load_encoder, load_tokenizer, resolve_encoder)
from ..engine.checkpoint import read_tensors
from ..engine.fingerprint import file_sha256
from ..io import atomic_write_text, replacing_mode
from .configuration_dkvb import MODEL_OOS_SCORES, DKVBConfig, _check_oos
from .oos import NEEDS_STATES, check_score_available, model_scores, with_rejection

logger = logging.getLogger(__name__)

WEIGHTS_NAME = "model.safetensors"
CHECKSUM_SUFFIX = ".sha256"  # model.safetensors.sha256 beside it: "<hex>  model.safetensors" (sha256sum -c reads it)
ENCODER_SUBFOLDER = "encoder"
ENCODER_PREFIX = "encoder."  # state-dict keys of the frozen encoder: never saved with the back


class DKVBPreTrainedModel(PreTrainedModel):
    """Base class tying DKVB models to `DKVBConfig`."""

    config_class = DKVBConfig
    base_model_prefix = "dkvb"
    main_input_name = "input_ids"

    def _init_weights(self, module: nn.Module) -> None:
        # Every DKVB part initialises itself; the encoder arrives pretrained and must stay so.
        return


class DKVBForSequenceClassification(DKVBPreTrainedModel):
    """Text classifier that keeps learning: frozen encoder + keys, trainable values + decoder.

    Args:
        config: a `DKVBConfig`.
        encoder: an already loaded encoder (`AutoModel`); loaded from
            `config.encoder_name_or_path` when None.
        tokenizer: its tokenizer; loaded from the same place when first needed.
    """

    def __init__(self, config: DKVBConfig, encoder: nn.Module | None = None, tokenizer=None):
        super().__init__(config)
        if encoder is None:
            encoder = load_encoder(config.encoder_name_or_path)
        for p in encoder.parameters():
            p.requires_grad_(False)
        self.encoder = encoder.eval()
        dim = hidden_size(encoder)
        if config.encoder_hidden_size not in (None, dim):
            raise ValueError(
                f"encoder {config.encoder_name_or_path!r} has hidden size {dim}, but this model's "
                f"bottleneck was built for {config.encoder_hidden_size}; load the encoder it was trained with")
        config.encoder_hidden_size = dim
        sizes = config.head_sizes
        self.bottleneck = KeyValueBottleneck.from_config(config, dim, sizes[0])
        # Task-incremental use: head 0 is the bottleneck's own table, heads 1.. share its keys.
        self.task_heads = nn.ModuleList(
            TaskHead(self.bottleneck, n, config.value_dim, seed=config.seed + t) for t, n in enumerate(sizes[1:], 1)
        )
        for t, head in enumerate([self.bottleneck, *self.task_heads]):
            self._attach_rule(head, t)
        self._tokenizer = None
        self.post_init()
        # The frozen encoder is never saved with the back (save_pretrained drops it, and Trainer
        # checkpoints go through save_pretrained); naming its keys here tells the Trainer that a
        # checkpoint lacking exactly these keys is complete, so resuming or loading the best
        # checkpoint does not warn about "missing keys". Matched exactly, not as patterns.
        self._keys_to_ignore_on_save = {f"{ENCODER_PREFIX}{k}" for k in self.encoder.state_dict()}
        if tokenizer is not None:
            self._set_tokenizer(tokenizer)

    def _attach_rule(self, head, task_id: int) -> None:
        attach_config_rule(head, self.config, task_id)

    # ------------------------------------------------------------------ parts
    @property
    def tokenizer(self):
        """The encoder's tokenizer (loaded on first use).

        Its pad/bos/eos token ids fill those the config leaves unset, as the `Trainer` would
        (which then has nothing to align, and says nothing).
        """
        if self._tokenizer is None:
            self._set_tokenizer(load_tokenizer(self.config.encoder_name_or_path))
        return self._tokenizer

    def _set_tokenizer(self, tokenizer) -> None:
        self._tokenizer = tokenizer
        for name in ("pad_token_id", "bos_token_id", "eos_token_id"):
            token_id = getattr(tokenizer, name, None)
            if token_id is not None and getattr(self.config, name, None) is None:
                setattr(self.config, name, token_id)

    @property
    def num_heads(self) -> int:
        return 1 + len(self.task_heads)

    def head(self, task_id: int):
        """The trainable back of task `task_id` (its `value_table` and `decoder`)."""
        if not isinstance(task_id, int) or not 0 <= task_id < self.num_heads:
            raise ValueError(f"task_id={task_id!r} out of range; this model has heads 0 to {self.num_heads - 1}")
        return self.bottleneck if task_id == 0 else self.task_heads[task_id - 1]

    def train(self, mode: bool = True):
        """Train mode for the back only: the frozen encoder stays in eval mode (no dropout)."""
        super().train(mode)
        self.encoder.eval()
        return self

    def trainable_parameters(self) -> int:
        """Number of trainable scalars: values and decoder weights."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    # ------------------------------------------------------------------ frozen front
    def _autocast(self):
        dtype = encoder_autocast_dtype(self.config.autocast, self.encoder)
        return torch.autocast(self.device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()

    @torch.no_grad()
    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
               token_type_ids: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Token states (B, T, D) in float32 and the token mask (B, T)."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            inputs["token_type_ids"] = token_type_ids
        with self._autocast():
            states = self.encoder(**inputs).last_hidden_state
        return states.float(), attention_mask.bool()

    @torch.no_grad()
    def quantize(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                 token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Key indices (B, T, C) (or (B, C) for pooling before the bottleneck), -1 at padding."""
        states, mask = self.encode(input_ids, attention_mask, token_type_ids)
        return self.bottleneck.quantize(states, mask)

    def iter_encoded(self, texts: Sequence[str], text_pairs: Sequence[str] | None = None,
                     batch_size: int = 64, **kwargs):
        """Length-sorted batches of token states for raw texts (see `encoders.iter_encoded`)."""
        return iter_encoded(self.encoder, self.tokenizer, texts, text_pairs, max_length=self.config.max_seq_length,
                            batch_size=batch_size, autocast=self.config.autocast, **kwargs)

    @torch.no_grad()
    def init_keys(self, texts: Sequence[str], text_pairs: Sequence[str] | None = None, *,
                  epochs: int | None = None, batch_size: int = 64, progress: bool | None = None,
                  seed: int | None = None) -> "DKVBForSequenceClassification":
        """Initialise the keys by EMA k-means on unlabelled texts, then freeze them for good.

        Texts are encoded in length-sorted batches visited in a seeded random order, and their
        token vectors regrouped into EMA updates of `config.key_init_batch_rows` vectors.
        Each epoch encodes the texts again, so memory stays flat however many texts there are.
        """
        texts = check_texts(texts)
        cfg = self.config
        epochs = cfg.key_init_epochs if epochs is None else epochs
        seed = cfg.seed if seed is None else seed
        model = self

        class Rows:  # re-iterable: bottleneck.init_keys walks it once per epoch
            def __init__(self):
                self.epoch = 0

            def __iter__(self) -> Iterator[torch.Tensor]:
                self.epoch += 1
                batches = model.iter_encoded(texts, text_pairs, batch_size=batch_size, progress=progress,
                                             shuffle_seed=seed + self.epoch)
                rows = (model.bottleneck._valid_rows(b.states, b.mask)[0] for b in batches)
                return regroup_rows(rows, cfg.key_init_batch_rows)

        self.bottleneck.init_keys(Rows(), epochs=epochs, decay=cfg.ema_decay,
                                  dead_key_threshold=cfg.dead_key_threshold, backend=cfg.key_init)
        return self

    # ------------------------------------------------------------------ trainable back
    def logits_from_indices(self, indices: torch.Tensor, task_id=None) -> torch.Tensor:
        """Logits from key indices: head `task_id`; with no task id, all heads side by side."""
        if task_id is None:
            if self.num_heads == 1:
                return self.bottleneck(indices=indices)
            return torch.cat([self._head_logits(t, indices) for t in range(self.num_heads)], dim=1)
        if isinstance(task_id, int):
            return self._head_logits(task_id, indices)
        task_id = torch.as_tensor(task_id, device=indices.device)
        if task_id.dim() == 0:
            return self._head_logits(int(task_id), indices)
        if task_id.shape != indices.shape[:1]:
            raise ValueError(f"task_id of shape {tuple(task_id.shape)} does not match {indices.shape[0]} examples")
        # Mixed tasks in one batch: each example reads its own head; narrower heads are padded
        # with -inf so argmax and softmax stay right.
        width = max(self.config.head_sizes)
        out = indices.new_full((indices.shape[0], width), float("-inf"), dtype=torch.float32)
        for t in task_id.unique().tolist():
            rows = task_id == t
            logits = self._head_logits(int(t), indices[rows])
            out = out.index_put((rows.nonzero(as_tuple=True)[0][:, None],
                                 torch.arange(logits.shape[1], device=out.device)[None, :]), logits)
        return out

    def _head_logits(self, task_id: int, indices: torch.Tensor) -> torch.Tensor:
        return back_logits(self.head(task_id), indices)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        task_id: int | torch.Tensor | None = None,
        indices: torch.Tensor | None = None,
        return_dict: bool | None = None,
        reject_oos: bool | None = None,
        **kwargs,
    ) -> SequenceClassifierOutput:
        """Logits (and a cross-entropy loss when `labels` are given).

        Single head: labels are ids of `config.id2label`. Multi-head: with `task_id` (an int,
        or one per example) labels are ids within that task's labels; without it the logits of
        all heads are concatenated in `config.id2label` order. `indices` (from `quantize`)
        skip the encoder. With an out-of-scope threshold in the config (`calibrate_oos`), an
        evaluation-mode call adds the `oos` column (see `modeling/oos.py`); `reject_oos=False`
        leaves it out, and the loss always reads the learned classes only.
        """
        if reject_oos is None:
            reject_oos = self.config.rejects_oos and not self.training
        elif reject_oos and not self.config.rejects_oos:
            raise ValueError("reject_oos=True but this model has no out-of-scope threshold; use calibrate_oos or set_oos")
        states = mask = None
        if indices is None:
            if input_ids is None:
                raise ValueError("give input_ids (and attention_mask) or precomputed indices=")
            if reject_oos and self.config.oos_score in NEEDS_STATES:
                states, mask = self.encode(input_ids, attention_mask, token_type_ids)
                indices = self.bottleneck.quantize(states, mask)
            else:
                indices = self.quantize(input_ids, attention_mask, token_type_ids)
        logits = self.logits_from_indices(indices, task_id)
        loss = None
        if labels is not None:
            loss = self._loss(logits, labels.to(logits.device).long(), task_id)
        if reject_oos:
            scores = model_scores(self, self.config.oos_score, logits, indices, states, mask)
            logits = with_rejection(logits, scores, self.config.oos_threshold)
        if return_dict is False:
            return (logits,) if loss is None else (loss, logits)
        return SequenceClassifierOutput(loss=loss, logits=logits)

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor, task_id) -> torch.Tensor:
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= logits.shape[1]):
            bad = int(labels.max()) if int(labels.max()) >= logits.shape[1] else int(labels.min())
            raise ValueError(f"label {bad} out of range: these logits have {logits.shape[1]} classes (0 to "
                             f"{logits.shape[1] - 1}); multi-head labels count within their task")
        if task_id is None or isinstance(task_id, int) or torch.as_tensor(task_id).dim() == 0:
            return F.cross_entropy(logits, labels)
        # Mixed tasks: each example's loss over its own head's classes only (no -inf padding).
        task_id = torch.as_tensor(task_id, device=logits.device)
        total = logits.new_zeros(())
        for t in task_id.unique().tolist():
            rows = task_id == t
            n = self.config.head_sizes[int(t)]
            total = total + F.cross_entropy(logits[rows, :n], labels[rows], reduction="sum")
        return total / labels.numel()

    # ------------------------------------------------------------------ learning without gradients
    @torch.no_grad()
    def partial_fit(self, texts: Sequence[str], labels: Sequence, text_pairs: Sequence[str] | None = None, *,
                    task_id: int | None = None, batch_size: int = 64,
                    progress: bool | None = None) -> "DKVBForSequenceClassification":
        """Learn labelled texts with the order-free value rule (`config.values`); no task boundary.

        `labels` are label names (single head: a name not seen before becomes a new class on
        the fly) or ids of `config.id2label` (of head `task_id`'s labels with several heads).
        Calls add up: learning texts in two calls, in any order, or one at a time gives the
        same model as one call with all of them. Keys must be initialised first.
        """
        head = self.head(0 if task_id is None else task_id)
        if head.values_rule is None:
            raise ValueError(f"partial_fit needs an order-free value rule, but config.values={self.config.values!r}; "
                             "use DKVBConfig(values='counts+ridge' | 'counts' | 'ridge'), or train 'sgd' values "
                             "with ValueSGD or the Trainer")
        texts = check_texts(texts)
        labels = list(labels)
        if len(labels) != len(texts):
            raise ValueError(f"{len(labels)} labels for {len(texts)} texts")
        ids = torch.tensor(self._label_ids(labels, task_id), dtype=torch.long)
        if text_pairs is not None and len(text_pairs) != len(texts):
            raise ValueError(f"{len(text_pairs)} text pairs for {len(texts)} texts")
        for batch in self.iter_encoded(texts, text_pairs, batch_size=batch_size, progress=progress):
            indices = self.bottleneck.quantize(batch.states.to(self.device), batch.mask.to(self.device))
            head.values_rule.partial_fit(indices, ids[batch.positions].to(self.device))
        return self

    def _label_ids(self, labels: list, task_id: int | None) -> list[int]:
        """Label names or ids -> ids of the head; new names join a single head on the fly."""
        if not labels:
            raise ValueError("partial_fit got no texts")
        names = [x for x in labels if isinstance(x, str)]
        if names and len(names) != len(labels):
            raise ValueError("give labels as all names or all integer ids, not a mix")
        if names:
            if self.config.rejects_oos and self.config.oos_label in names:
                raise ValueError(f"label {self.config.oos_label!r} is the out-of-scope label, not a class to learn; "
                                 "rename it or clear rejection with set_oos(None, None)")
            if self.num_heads == 1:
                new = [n for n in dict.fromkeys(names) if n not in self.config.label2id]
                if new:
                    self.add_labels(new)
                return [self.config.label2id[n] for n in names]
            task = 0 if task_id is None else task_id
            local = {n: i for i, n in enumerate(self.config.task_labels[task])}
            unknown = sorted({n for n in names if n not in local})
            if unknown:
                raise ValueError(f"labels {unknown[:5]} are not labels of task {task}; add them with add_task")
            return [local[n] for n in names]
        width = self.head(0 if task_id is None else task_id).num_classes
        bad = [x for x in labels if isinstance(x, bool) or not isinstance(x, int) or not 0 <= x < width]
        if bad:
            raise ValueError(f"label {bad[0]!r} outside the head's classes 0 to {width - 1} (or give label names)")
        return [int(x) for x in labels]

    # ------------------------------------------------------------------ growing
    def add_labels(self, names: Sequence[str]) -> "DKVBForSequenceClassification":
        """Single head: add classes later (new logit columns); existing values do not change."""
        if self.num_heads != 1:
            raise ValueError("this model has one head per task; use add_task(labels) to add a task")
        names = self._new_names(names)
        self.bottleneck.add_classes(len(names))
        self._set_labels(self._class_names() + names)
        return self

    def add_task(self, names: Sequence[str]) -> int:
        """Multi-head: add a task with its own value table over the same keys; returns its id."""
        if self.config.rejects_oos:
            raise ValueError("out-of-scope rejection works with a single head; clear it with set_oos(None, None) "
                             "before add_task")
        names = self._new_names(names)
        cfg = self.config
        if cfg.task_labels is None:  # turn the single head into task 0
            cfg.task_labels = [[cfg.id2label[i] for i in range(cfg.num_labels)]]
        device = self.bottleneck.value_table.device
        head = TaskHead(self.bottleneck, len(names), cfg.value_dim, seed=cfg.seed + self.num_heads)
        self._attach_rule(head, self.num_heads)
        self.task_heads.append(head.to(device))
        cfg.task_labels = cfg.task_labels + [names]
        self._set_labels([n for labels in cfg.task_labels for n in labels])
        return self.num_heads - 1

    def _new_names(self, names: Sequence[str]) -> list[str]:
        if isinstance(names, str) or not names:
            raise ValueError(f"give a non-empty list of new label names, got {names!r}")
        names = [str(n) for n in names]
        clash = sorted(set(names) & set(self.config.label2id)) or sorted({n for n in names if names.count(n) > 1})
        if clash:
            raise ValueError(f"labels {clash} already exist or repeat; new label names must be unique")
        return names

    def _class_names(self) -> list[str]:
        return [self.config.id2label[i] for i in range(self.config.num_classes)]

    def _set_labels(self, names: list[str]) -> None:
        """The learned classes' names; the out-of-scope label follows them when rejection is on."""
        if self.config.rejects_oos:
            names = names + [self.config.oos_label]
        self.config.id2label = {i: n for i, n in enumerate(names)}
        self.config.label2id = {n: i for i, n in enumerate(names)}

    # ------------------------------------------------------------------ out of scope
    def set_oos(self, score: str | None, threshold: float | None, label: str | None = None
                ) -> "DKVBForSequenceClassification":
        """Reject inputs whose `score` is above `threshold` as `label` (default: `config.oos_label`);
        `set_oos(None, None)` turns rejection off. Single head only."""
        if self.num_heads != 1 and threshold is not None:
            raise ValueError("out-of-scope rejection works with a single head; this model has one head per task")
        label = self.config.oos_label if label is None else label
        score, threshold, label = _check_oos(score, threshold, label, None)
        classes = self._class_names()
        if threshold is not None and label in classes:
            raise ValueError(f"oos label {label!r} is already a class of this model; pick another label")
        if score is not None:
            check_score_available(self, score)
        self.config.oos_score, self.config.oos_threshold, self.config.oos_label = score, threshold, label
        self._set_labels(classes)
        return self

    @torch.no_grad()
    def _closed_outputs(self, texts, text_pairs, score: str, batch_size: int, progress):
        """Per text, in input order: closed-set predicted class id and the score `score`."""
        if self.num_heads != 1:
            raise ValueError("out-of-scope scores work with a single head; this model has one head per task")
        texts = check_texts(texts)
        preds = torch.empty(len(texts), dtype=torch.long)
        scores = torch.empty(len(texts), dtype=torch.float64)
        for batch in self.iter_encoded(texts, text_pairs, batch_size=batch_size, progress=progress):
            states, mask = batch.states.to(self.device).float(), batch.mask.to(self.device)
            indices = self.bottleneck.quantize(states, mask)
            logits = self.logits_from_indices(indices)
            preds[batch.positions] = logits.argmax(1).cpu()
            scores[batch.positions] = model_scores(self, score, logits, indices, states, mask)
        return preds, scores

    def oos_scores(self, texts: Sequence[str], text_pairs: Sequence[str] | None = None, *, score: str | None = None,
                   batch_size: int = 64, progress: bool | None = None):
        """Out-of-scope scores of texts (numpy, higher = more likely out of scope); `score` defaults
        to `config.oos_score`."""
        score = score or self.config.oos_score
        if score is None:
            raise ValueError(f"no score given and config.oos_score is unset; accepted: {', '.join(MODEL_OOS_SCORES)}")
        _check_oos(score, None, self.config.oos_label, None)
        check_score_available(self, score)
        return self._closed_outputs(texts, text_pairs, score, batch_size, progress)[1].numpy()

    def calibrate_oos(self, texts: Sequence[str], labels: Sequence, oos_texts: Sequence[str], *,
                      score: str = "msp", rule: str = "youden", label: str | None = None,
                      max_accuracy_drop: float = 0.01, tpr: float = 0.95, text_pairs: Sequence[str] | None = None,
                      oos_text_pairs: Sequence[str] | None = None, batch_size: int = 64,
                      progress: bool | None = None) -> dict:
        """Choose and store an out-of-scope threshold from held-out texts.

        `texts`/`labels`: in-scope validation texts and their label names (or ids); `oos_texts`:
        validation texts of no class (rule 'tpr' needs none: pass []). `rule` is
        `dkvb_nlp.open_world.choose_threshold`'s: 'youden' (default), 'tpr' (accept `tpr` of the
        in-scope texts) or 'accuracy' (reject the most while the in-scope accuracy stays within
        `max_accuracy_drop` of the closed-set accuracy). Returns the validation metrics at the
        chosen threshold (`oos_metrics`: AUROC, OOS recall, in-scope accuracy, ...).
        """
        from ..open_world import choose_threshold, oos_metrics

        _check_oos(score, None, self.config.oos_label if label is None else label, None)
        check_score_available(self, score)
        labels = list(labels)
        if len(labels) != len(texts):
            raise ValueError(f"{len(labels)} labels for {len(texts)} in-scope texts")
        names = [x for x in labels if isinstance(x, str)]
        if names:
            unknown = sorted({n for n in names if n not in self._class_names()})
            if unknown:
                raise ValueError(f"labels {unknown[:5]} are not classes of this model")
            ids = [self.config.label2id[n] for n in names]
        else:
            ids = self._label_ids(labels, None)
        preds, s_in = self._closed_outputs(texts, text_pairs, score, batch_size, progress)
        correct = (preds == torch.tensor(ids)).numpy()
        s_out = None
        if len(oos_texts):
            s_out = self._closed_outputs(oos_texts, oos_text_pairs, score, batch_size, progress)[1].numpy()
        elif rule != "tpr":
            raise ValueError(f"rule {rule!r} needs out-of-scope validation texts; give oos_texts or use rule='tpr'")
        threshold = choose_threshold(s_in.numpy(), s_out, rule=rule, tpr=tpr, correct_in_val=correct,
                                     max_accuracy_drop=max_accuracy_drop)
        self.set_oos(score, threshold, label)
        if s_out is None:
            return {"threshold": threshold, "in_scope_accepted": float((s_in.numpy() <= threshold).mean()),
                    "in_scope_accuracy": float((correct & (s_in.numpy() <= threshold)).mean())}
        return oos_metrics(s_in.numpy(), s_out, threshold, correct)

    # ------------------------------------------------------------------ saving and loading
    def save_pretrained(self, save_directory: str | os.PathLike, *, save_encoder: bool = False,
                        state_dict: dict | None = None, is_main_process: bool = True, push_to_hub: bool = False,
                        max_shard_size: int | str | None = None, safe_serialization: bool | None = True,
                        variant: str | None = None, token: str | bool | None = None, **kwargs) -> None:
        """Write config.json, the tokenizer and a small model.safetensors (keys, values, decoder).

        The frozen encoder is not written (its keys are `_keys_to_ignore_on_save`, so `Trainer`
        checkpoints, which come through here, stay small): it is referred to by
        `config.encoder_name_or_path`. `save_encoder=True` also writes it (and its tokenizer) to
        `<save_directory>/encoder` for a self-contained folder.

        `push_to_hub=True` then uploads the folder's new files, as transformers does: `repo_id`
        (default: the folder's name), `token`, `private`, `commit_message`, `commit_description`,
        `create_pr` and `revision` (the branch) go to the hub. The folder is written first, so a
        failed upload (offline, no token) raises and leaves the local copy complete.

        The other arguments of `PreTrainedModel.save_pretrained`: `max_shard_size` is a limit
        (the back is one file, refused rather than sharded when larger); `safe_serialization`
        must stay True and `variant` None (one model.safetensors); `save_peft_format` and
        `save_original_format` have nothing to convert. Any other keyword is a TypeError, and
        the hub's keywords without `push_to_hub=True` too: none is silently dropped.
        """
        from safetensors.torch import save_file

        push = {k: kwargs.pop(k) for k in _PUSH_KEYS if k in kwargs}
        if token is not None:
            push["token"] = token
        for flag in ("save_peft_format", "save_original_format"):  # no adapters, no renamed weights
            kwargs.pop(flag, None)
        if kwargs.pop("distributed_checkpoint", False):
            raise ValueError("distributed_checkpoint=True is not supported: a DKVB model is saved whole, "
                             "from one process")
        if kwargs:
            raise TypeError(f"save_pretrained got keyword arguments it cannot honour: {', '.join(sorted(kwargs))}; "
                            f"accepted: save_encoder, state_dict, is_main_process, push_to_hub (with "
                            f"{', '.join(('token',) + _PUSH_KEYS)}), max_shard_size, safe_serialization=True, "
                            "variant=None, save_peft_format, save_original_format")
        if push and not push_to_hub:
            raise TypeError(f"{', '.join(sorted(push))} only apply when uploading: add push_to_hub=True, "
                            "or leave them out")
        if safe_serialization is False:
            raise ValueError("safe_serialization=False is not supported: DKVB models are saved as safetensors only")
        if variant is not None:
            raise ValueError(f"variant={variant!r} is not supported: a DKVB folder holds one {WEIGHTS_NAME}; "
                             "save variants to separate folders")
        if not is_main_process:
            return
        folder = Path(save_directory)
        if folder.is_file():
            raise ValueError(f"save_directory {folder} is a file; give a folder")
        state = self.state_dict() if state_dict is None else state_dict
        state = {k: v.detach().contiguous().cpu() for k, v in state.items() if not self._is_frozen_front(k)}
        if max_shard_size is not None:
            _check_one_shard(state, max_shard_size)
        folder.mkdir(parents=True, exist_ok=True)
        timestamps = self._get_files_timestamps(folder) if push_to_hub else None
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".model.", suffix=".tmp", delete=False) as tmp:
            pass
        try:  # written to a temporary name, then renamed: a crash never leaves half a file
            save_file(state, tmp.name, metadata={"format": "pt"})
            digest = file_sha256(tmp.name)
            os.chmod(tmp.name, replacing_mode(folder / WEIGHTS_NAME))  # readable as any saved file, not 0600
            os.replace(tmp.name, folder / WEIGHTS_NAME)
        finally:
            if os.path.exists(tmp.name):
                os.unlink(tmp.name)
        atomic_write_text(folder / (WEIGHTS_NAME + CHECKSUM_SUFFIX), f"{digest}  {WEIGHTS_NAME}\n")
        self.config.architectures = [type(self).__name__]
        self.config.save_pretrained(folder)
        self.tokenizer.save_pretrained(folder)
        if save_encoder:
            self.encoder.save_pretrained(folder / ENCODER_SUBFOLDER)
            self.tokenizer.save_pretrained(folder / ENCODER_SUBFOLDER)
        if push_to_hub:
            repo_id = _hub_api().create_repo(push.pop("repo_id", folder.resolve().name), exist_ok=True,
                                             private=push.pop("private", None), token=push.get("token")).repo_id
            self._upload_modified_files(folder, repo_id, timestamps, **push)

    def _is_frozen_front(self, key: str) -> bool:
        """A state-dict key of the frozen encoder (never saved with the back)."""
        return key in self._keys_to_ignore_on_save or key.startswith(ENCODER_PREFIX)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, *model_args,
                        config: DKVBConfig | str | os.PathLike | None = None, encoder: nn.Module | None = None,
                        local_files_only: bool | None = None, revision: str | None = None,
                        cache_dir: str | os.PathLike | None = None, token: str | bool | None = None,
                        force_download: bool = False, subfolder: str = "", dtype=None, torch_dtype=None,
                        device_map=None, trust_remote_code: bool | None = None, attn_implementation: str | None = None,
                        output_loading_info: bool = False, use_safetensors: bool | None = None,
                        weights_only: bool = True, adapter_kwargs: dict | None = None,
                        **kwargs) -> "DKVBForSequenceClassification":
        """Load a folder (or hub repository) written by `save_pretrained`; in eval mode.

        The encoder comes from `encoder=`, else the bundled `encoder/` subfolder, else
        `config.encoder_name_or_path`. Loading reads safetensors only (no pickle).

        The keyword arguments of `PreTrainedModel.from_pretrained`, and what they do here:

        - `revision`: the branch, tag or commit of the DKVB hub repository. A local folder has no
          revisions, so a revision with a local folder is refused (ValueError) rather than loading
          whatever the folder holds; offline, a revision missing from the cache is refused
          (OSError), never replaced by another. The encoder is a repository of its own and loads
          at its default revision.
        - `cache_dir`, `token`, `force_download`, `local_files_only`: used by every hub download
          of the call (the DKVB repository, the encoder, its tokenizer).
        - `subfolder`: the model's folder inside the folder or repository.
        - `dtype` (or its old name `torch_dtype`): the dtype of the frozen encoder, which only
          computes token states: torch.float32, torch.bfloat16, torch.float16, torch.float64 or
          their names, recorded as `config.dtype`; None or 'auto' take `config.dtype` (so a
          model loaded with a dtype and saved reloads with it), else the encoder's own. The
          trainable back keeps its saved dtypes whatever is asked: keys, value tables and decoder
          in float32, the statistics of the order-free value rules in float64. The states are
          cast to float32 before the bottleneck; values and statistics add up many small
          updates, which half precision would round away. (`config.autocast` still governs the
          encoder's autocast.)
        - `device_map`: one device for the whole model: 'cpu', 'cuda', 'cuda:1', an accelerator
          index, a `torch.device`, {'': device}, or 'auto' (the current accelerator if any, else
          the CPU). Splitting the model ('balanced', 'sequential', a dict over modules) is
          refused: the back reads the encoder's output on one device.
        - `trust_remote_code`, `attn_implementation`: passed to the encoder's loading.
        - `config`: a `DKVBConfig` (or a folder holding one) instead of the saved config. Other
          keywords naming config attributes (e.g. `id2label`) override the saved config, as in
          transformers.
        - `output_loading_info=True` returns (model, info) as transformers does; its lists are
          empty, since a mismatch is an error here.
        - `use_safetensors=False` is refused (safetensors only); `weights_only` is accepted
          (nothing is unpickled either way); `adapter_kwargs` must be empty (no adapters).

        Any other keyword is a TypeError naming it: none is silently dropped. (Names starting
        with '_' are transformers' own bookkeeping, such as `_from_auto`, and are accepted.)
        """
        where = f"{cls.__name__}.from_pretrained"
        if model_args:
            raise TypeError(f"{where} takes no positional arguments after the path, got {len(model_args)}; "
                            "give config= and encoder= by name")
        kwargs = {k: v for k, v in kwargs.items() if not k.startswith("_")}  # _from_auto, _from_pipeline, ...
        # None is "not given" for what we cannot honour: the Auto classes of transformers 5.x pass
        # proxies=None on every call
        kwargs = {k: v for k, v in kwargs.items() if not (k in _REFUSED_HINTS and v is None)}
        refused = sorted(k for k in kwargs if k in _REFUSED_HINTS)
        if refused:
            raise TypeError(f"{where} cannot honour {refused[0]}=: {_REFUSED_HINTS[refused[0]]}")
        encoder_dtype = _encoder_dtype(dtype, torch_dtype)
        device = _one_device(device_map)
        if revision is not None and not isinstance(revision, str):
            raise TypeError(f"revision must be a branch, tag or commit name (str), got {revision!r}")
        if use_safetensors is False:
            raise ValueError("use_safetensors=False is not supported: DKVB models load from model.safetensors only")
        if adapter_kwargs:
            raise ValueError(f"adapter_kwargs={adapter_kwargs!r} cannot be honoured: DKVB models have no adapters")
        if encoder is not None and (encoder_dtype != "auto" or attn_implementation is not None):
            given = (f"dtype={encoder_dtype!r}" if encoder_dtype != "auto"
                     else f"attn_implementation={attn_implementation!r}")
            raise ValueError(f"{given} cannot be honoured with encoder=: it applies to the encoder that "
                             "from_pretrained loads, and encoder= gives one already loaded; load that encoder "
                             "as you want it, or leave encoder= out")
        hub = {"token": token} if token is not None else {}  # token=False too: "send none"
        hub.update({name: value for name, value in (("cache_dir", cache_dir), ("force_download", force_download))
                    if value})
        folder = _model_folder(pretrained_model_name_or_path, local_files_only, revision, hub)
        if subfolder:
            folder = folder / subfolder
            if not folder.is_dir():
                raise OSError(f"subfolder={subfolder!r} not found in {pretrained_model_name_or_path!s}")
        if config is None or isinstance(config, (str, os.PathLike)):
            config, kwargs = DKVBConfig.from_pretrained(folder if config is None else config,
                                                        return_unused_kwargs=True, **kwargs)
        elif not isinstance(config, DKVBConfig):
            raise TypeError(f"config must be a DKVBConfig or a folder holding one, got {type(config).__name__}")
        if kwargs:
            raise TypeError(f"{where} cannot honour {', '.join(sorted(kwargs))}: not arguments it knows nor "
                            f"DKVBConfig attributes; accepted: {', '.join(_FROM_PRETRAINED_KEYS)}, and "
                            "DKVBConfig attributes to override")
        weights = folder / WEIGHTS_NAME
        if not weights.is_file():
            raise FileNotFoundError(f"{weights} not found; is {folder} a folder written by save_pretrained?")
        if encoder is None and encoder_dtype == "auto" and getattr(config, "dtype", None) is not None:
            encoder_dtype = _encoder_dtype(config.dtype, None)  # the dtype the model was loaded with when saved
        elif encoder_dtype != "auto":
            config.dtype = encoder_dtype  # recorded, so that a save and a reload keep it
        load = {"dtype": encoder_dtype, "trust_remote_code": bool(trust_remote_code)}
        if attn_implementation is not None:
            load["attn_implementation"] = attn_implementation
        if encoder is None and (folder / ENCODER_SUBFOLDER / "config.json").is_file():
            encoder = _load_frozen_encoder(folder / ENCODER_SUBFOLDER, local_files_only, {}, load)
        if encoder is None:
            encoder = _load_frozen_encoder(config.encoder_name_or_path, local_files_only, hub, load)
        if (folder / "tokenizer_config.json").is_file():
            tokenizer = load_tokenizer(folder)
        elif hub:  # the tokenizer comes from the same place as the encoder, with the same hub settings
            tokenizer = _load_front_tokenizer(config.encoder_name_or_path, local_files_only, hub,
                                              bool(trust_remote_code))
        else:
            tokenizer = None  # loaded on first use
        model = cls(config, encoder=encoder, tokenizer=tokenizer)
        state = _load_checked(weights)
        missing, unexpected = model.load_state_dict(state, strict=False)
        missing = [k for k in missing if not model._is_frozen_front(k)]
        if missing or unexpected:
            raise ValueError(f"{weights} does not match the config: missing {missing[:5]}, unexpected {unexpected[:5]}")
        if device is not None:
            model.to(device)
        model.eval()
        if output_loading_info:
            return model, {"missing_keys": set(), "unexpected_keys": set(), "mismatched_keys": set(), "error_msgs": []}
        return model


def _load_checked(weights: Path) -> dict[str, torch.Tensor]:
    """The tensors of a saved model.safetensors, refused (ValueError naming the file) when its sha256
    differs from the one saved beside it, when it cannot be read, or when a value is NaN or infinite.
    A folder without the checksum file (saved by an older version) loads with a warning."""
    sidecar = weights.with_name(weights.name + CHECKSUM_SUFFIX)
    if sidecar.is_file():
        expected = sidecar.read_text(encoding="utf-8", errors="replace").split()[:1]
        if not expected or file_sha256(weights) != expected[0]:
            raise ValueError(f"{weights} does not match its sha256 in {sidecar.name} (damaged or truncated); "
                             "save the model again or restore the file")
    else:
        logger.warning("%s has no %s beside it (saved by an older version): its bytes are not checked",
                       weights, sidecar.name)
    return read_tensors(weights, str(weights), hint="; the model is damaged")


def regroup_rows(rows: Iterable[torch.Tensor], size: int) -> Iterator[torch.Tensor]:
    """Re-cut a stream of (n_i, D) row blocks into blocks of exactly `size` rows (last: fewer)."""
    buffer, count = [], 0
    for block in rows:
        buffer.append(block)
        count += block.shape[0]
        while count >= size:
            joined = torch.cat(buffer)
            yield joined[:size]
            rest = joined[size:]
            buffer, count = ([rest] if rest.shape[0] else []), rest.shape[0]
    if count:
        yield torch.cat(buffer)


_PUSH_KEYS = ("repo_id", "private", "commit_message", "commit_description", "create_pr", "revision")

_FROM_PRETRAINED_KEYS = (
    "config", "encoder", "revision", "cache_dir", "token", "force_download", "local_files_only", "subfolder",
    "dtype", "torch_dtype", "device_map", "trust_remote_code", "attn_implementation", "output_loading_info",
    "use_safetensors", "weights_only", "adapter_kwargs",
)

# Arguments of PreTrainedModel.from_pretrained that a DKVB model cannot honour, and what to do instead.
_REFUSED_HINTS = {
    "use_auth_token": "it was renamed; give token=",
    "proxies": "the hub client takes its proxy from the HTTP_PROXY / HTTPS_PROXY environment variables",
    "quantization_config": "the frozen encoder is loaded by from_pretrained; quantize it yourself and pass encoder=",
    "variant": "a DKVB folder holds one model.safetensors, no variants",
    "gguf_file": "DKVB models load from model.safetensors only",
    "state_dict": "load the folder, then call load_state_dict",
    "max_memory": "the model is placed on one device (device_map=<device>), so there is nothing to budget",
    "offload_folder": "the model is placed on one device (device_map=<device>), nothing is offloaded",
    "offload_buffers": "the model is placed on one device (device_map=<device>), nothing is offloaded",
    "tp_plan": "DKVB models are not split over devices",
    "tp_size": "DKVB models are not split over devices",
    "distributed_config": "DKVB models are not split over devices",
    "device_mesh": "DKVB models are not split over devices",
}

_FLOAT_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16,
                 "float64": torch.float64}


def _encoder_dtype(dtype, torch_dtype):
    """'auto' or a floating torch dtype for the frozen encoder, from dtype= / torch_dtype=."""
    if dtype is not None and torch_dtype is not None and dtype != torch_dtype:
        raise ValueError(f"dtype={dtype!r} and torch_dtype={torch_dtype!r} disagree; torch_dtype is the old name "
                         "of dtype: give one")
    value = dtype if dtype is not None else torch_dtype
    if value is None or value == "auto":
        return "auto"
    if isinstance(value, str) and value in _FLOAT_DTYPES:
        return _FLOAT_DTYPES[value]
    if isinstance(value, torch.dtype) and value in _FLOAT_DTYPES.values():
        return value
    hint = (" (one dtype per sub-model: a DKVB model has one encoder, and its back keeps its own dtypes)"
            if isinstance(value, dict) else "")
    raise ValueError(f"dtype={value!r} cannot be honoured{hint}; accepted: None or 'auto' (as saved), "
                     f"{', '.join(f'torch.{n}' for n in _FLOAT_DTYPES)} or their names. dtype sets the frozen "
                     "encoder's dtype; the trainable back stays float32/float64")


def _one_device(device_map) -> torch.device | None:
    """The single device a `device_map` names (None: leave the model on the CPU, where it is built)."""
    if device_map is None:
        return None
    accepted = ("accepted: one device for the whole model ('cpu', 'cuda', 'cuda:1', an accelerator index, a "
                "torch.device, {'': device}) or 'auto' (the current accelerator, else the CPU)")
    value = device_map
    if isinstance(value, dict):
        if set(value) != {""}:
            raise ValueError(f"device_map={device_map!r} cannot be honoured: a DKVB model is not split over "
                             f"devices (its back reads the encoder's output on one device); {accepted}")
        value = value[""]
    if value == "auto":
        accelerator = torch.accelerator.current_accelerator() if hasattr(torch, "accelerator") else None
        return accelerator if accelerator is not None else torch.device("cpu")
    if isinstance(value, str) and value in ("balanced", "balanced_low_0", "sequential"):
        raise ValueError(f"device_map={device_map!r} cannot be honoured: it spreads a model over several devices, "
                         "and a DKVB model is not split (its back reads the encoder's output on one device); "
                         f"{accepted}")
    try:
        if isinstance(value, bool):
            raise TypeError
        if isinstance(value, int):
            if value < 0:
                raise ValueError
            kind = torch.accelerator.current_accelerator() if hasattr(torch, "accelerator") else None
            return torch.device(kind.type if kind is not None else "cuda", value)
        device = torch.device(value)
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"device_map={device_map!r} is not a device; {accepted}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device_map={device_map!r}: this machine has no CUDA device; use device_map='cpu'")
    return device


def _check_one_shard(state: dict[str, torch.Tensor], max_shard_size) -> None:
    """max_shard_size as a limit: the back is one file, refused rather than sharded when larger."""
    from transformers.utils.hub import convert_file_size_to_int

    try:
        limit = convert_file_size_to_int(max_shard_size)
    except (ValueError, TypeError, AttributeError):
        raise ValueError(f"max_shard_size={max_shard_size!r} is not a size; give bytes (int) or e.g. '5GB'") from None
    size = sum(v.numel() * v.element_size() for v in state.values())
    if size > limit:
        raise ValueError(f"max_shard_size={max_shard_size!r}: this model's back is {size} bytes, and a DKVB model "
                         f"is saved as one {WEIGHTS_NAME}, not sharded; give a limit of at least {size} bytes")


def _hub_api():
    """The hub client transformers uses (tagged with its name), or a plain one on transformers 4."""
    try:
        from transformers.utils.hub import hf_api
    except ImportError:  # pragma: no cover - transformers 4.x
        from huggingface_hub import HfApi

        return HfApi()
    return hf_api()


def _model_folder(name_or_path: str | os.PathLike, local_files_only: bool | None, revision: str | None,
                  hub: dict) -> Path:
    """A local folder holding a saved DKVB model: the path itself, or a hub download at `revision`."""
    folder = Path(name_or_path).expanduser()
    if folder.is_dir():
        if revision is not None:
            raise ValueError(f"revision={revision!r} cannot be honoured: {str(name_or_path)!r} is a local folder, "
                             "which has no revisions, so this would load whatever the folder holds; leave "
                             "revision out to load the folder, or give the hub id to load that revision")
        return folder
    at = "" if revision is None else f" at revision {revision!r}"
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(str(name_or_path), revision=revision, local_files_only=bool(local_files_only),
                                      **hub))
    except Exception as err:
        raise OSError(f"cannot find a DKVB model at {str(name_or_path)!r}{at}: not a local folder, and the hub "
                      f"gave {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}") from None


def _front_source(name: str | os.PathLike, local_files_only: bool | None, hub: dict) -> str:
    """Where the encoder (and its tokenizer) load from: `resolve_encoder`'s answer, or, when that
    fails and `cache_dir`/`token` are given, the hub id itself (it may be in that cache or behind
    that token, which `resolve_encoder` does not look at)."""
    try:
        return resolve_encoder(name, local_files_only=local_files_only)
    except EncoderNotFoundError:
        if not hub:
            raise
        return ALIASES.get(str(name), str(name))


def _load_frozen_encoder(name: str | os.PathLike, local_files_only: bool | None, hub: dict,
                         load: dict) -> nn.Module:
    """The frozen encoder, loaded with the call's hub settings (`hub`) and dtype/attention (`load`)."""
    from transformers import AutoModel

    source = _front_source(name, local_files_only, hub)
    try:
        model = AutoModel.from_pretrained(source, local_files_only=bool(local_files_only), **hub, **load)
    except OSError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise EncoderNotFoundError(f"cannot load encoder {str(name)!r} from {source!r} "
                                   f"(with {', '.join(sorted(hub)) or 'no hub settings'}): {first}") from err
    return freeze(model)


def _load_front_tokenizer(name: str | os.PathLike, local_files_only: bool | None, hub: dict,
                          trust_remote_code: bool):
    from transformers import AutoTokenizer

    source = _front_source(name, local_files_only, hub)
    return AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code,
                                         local_files_only=bool(local_files_only), **hub)
