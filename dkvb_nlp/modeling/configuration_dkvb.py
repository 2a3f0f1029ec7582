"""DKVBConfig: every hyperparameter of a DKVB text classifier, with a documented default."""

from __future__ import annotations

try:  # transformers >= 5 renamed the base class; 4.x has only the old name
    from transformers import PreTrainedConfig as _BaseConfig
except ImportError:  # pragma: no cover - transformers 4.x
    from transformers import PretrainedConfig as _BaseConfig

import math

from ..bottleneck import DECODERS, KEY_INITS, POOLINGS, SPLITTERS, VALUE_RULES
from ..encoders.resolve import DEFAULT_ENCODER

AUTOCAST = ("auto", "bf16", "off")


class DKVBConfig(_BaseConfig):
    """Configuration of `DKVBForSequenceClassification`.

    Args:
        encoder_name_or_path: the frozen encoder: a hub id, a local folder, or a name with a
            packaged offline copy. Default `sentence-transformers/all-MiniLM-L6-v2`.
        max_seq_length: tokens per text (longer texts are truncated). Default 128.
        autocast: encoder precision, 'auto' (bf16 where the hardware runs it natively), 'bf16'
            or 'off' (fp32). Keys and indices are always computed from the same setting.
        split: 'segment' (hidden-dimension segmentation, default) or 'random_projection'.
        num_codebooks: C codebooks; with 'segment' it must divide the hidden size. Default 16
            (the benchmark's tuned setting, `benchmarks/results/sweep_dkvb_clinc*`).
        num_keys: K key-value pairs per codebook. Default 4096.
        key_dim: head size; derived for 'segment', required for 'random_projection'.
        value_dim: size of a value; None = number of labels (required by 'non_parametric').
        pooling: 'mean_after' (mean pooling after the bottleneck, default), 'mean_before'
            (mask-mean the token states, quantise once) or 'cls'.
        decoder_type: 'non_parametric' (the averaged values are the logits, default), 'linear', 'mlp'.
            (Not `decoder`: transformers reads a config attribute of that name as a sub-model config.)
        decoder_hidden: hidden units of the 'mlp' decoder. Default 128.
        value_init: 'zeros' (default) or 'normal' (N(0, value_init_std)).
        value_init_std: std of 'normal' value init. Default 0.01.
        key_init: key initialisation backend, 'ema' (default) or 'vector_quantize_pytorch'.
        key_init_epochs: EMA k-means passes over the key-init texts. Default 2.
        ema_decay: EMA decay of the key updates. Default 0.8 (the vision paper's code: 0.95,
            which leaves keys too near their random start after a pass over a text dataset).
        dead_key_threshold: EMA count under which a key restarts from a batch sample;
            None = 0.1 x batch rows / K, as the paper's code.
        key_init_batch_rows: vectors per EMA update (at least K is best). Default 8192.
        values: how the values learn (`dkvb_nlp.bottleneck.value_rules`): 'counts+ridge'
            (the default with the non-parametric decoder), 'counts' or 'ridge' learn in closed form from sums over examples with
            `model.partial_fit(texts, labels)` (order-free: any order of examples or tasks gives
            the same model, and the statistics are saved with it); 'sgd' leaves the values to
            gradient training (`ValueSGD`, the HF `Trainer`), as the papers do (the default with
            a 'linear' or 'mlp' decoder).
        smoothing: additive smoothing of the class-by-key counts. Default 0.1.
        counts_weight: scale of the count values beside the ridge readout. Default 0.1.
        ridge: lambda of the ridge readout on the pooled keys. Default 100.
        ridge_features: M random features of the readout (its statistics take M^2 float64:
            134 MB at 4096). Default 4096.
        task_labels: None for one head over `id2label` (labels can be added later), or a
            list of label-name lists, one value table per task (task-incremental, multi-head).
        oos_score / oos_threshold / oos_label: out-of-scope rejection (single head). With a
            threshold set, an input whose score (`MODEL_OOS_SCORES`: 'msp', 'energy',
            'key_distance', 'key_evidence'; higher = more likely out of scope) is above it is
            labelled `oos_label` (default 'oos'), which is then the last entry of `id2label`
            (not a learned class). Set them with `model.calibrate_oos(...)` or `model.set_oos(...)`.
        seed: seeds random projections, value init and key sampling. Default 0.
        id2label / label2id / num_labels: the labels, as in every transformers config.
    """

    model_type = "dkvb"

    def __init__(
        self,
        encoder_name_or_path: str = DEFAULT_ENCODER,
        max_seq_length: int = 128,
        autocast: str = "auto",
        split: str = "segment",
        num_codebooks: int = 16,
        num_keys: int = 4096,
        key_dim: int | None = None,
        value_dim: int | None = None,
        pooling: str = "mean_after",
        decoder_type: str = "non_parametric",
        decoder_hidden: int = 128,
        value_init: str = "zeros",
        value_init_std: float = 0.01,
        key_init: str = "ema",
        key_init_epochs: int = 2,
        ema_decay: float = 0.8,
        dead_key_threshold: float | None = None,
        key_init_batch_rows: int = 8192,
        values: str | None = None,
        smoothing: float = 0.1,
        counts_weight: float = 0.1,
        ridge: float = 100.0,
        ridge_features: int = 4096,
        task_labels: list[list[str]] | None = None,
        oos_score: str | None = None,
        oos_threshold: float | None = None,
        oos_label: str = "oos",
        encoder_hidden_size: int | None = None,
        seed: int = 0,
        **kwargs,
    ):
        if task_labels is not None:
            task_labels = _check_task_labels(task_labels)
            flat = [name for labels in task_labels for name in labels]
            kwargs["id2label"] = {i: name for i, name in enumerate(flat)}
            kwargs["label2id"] = {name: i for i, name in enumerate(flat)}
            kwargs.pop("num_labels", None)
        self.encoder_name_or_path = str(encoder_name_or_path)
        self.max_seq_length = _positive("max_seq_length", max_seq_length)
        self.autocast = _choice("autocast", autocast, AUTOCAST)
        self.split = _choice("split", split, SPLITTERS.names())
        self.num_codebooks = _positive("num_codebooks", num_codebooks)
        self.num_keys = _positive("num_keys", num_keys)
        self.key_dim = None if key_dim is None else _positive("key_dim", key_dim)
        self.value_dim = None if value_dim is None else _positive("value_dim", value_dim)
        self.pooling = _choice("pooling", pooling, POOLINGS.names())
        self.decoder_type = _choice("decoder_type", decoder_type, DECODERS.names())
        self.decoder_hidden = _positive("decoder_hidden", decoder_hidden)
        self.value_init = _choice("value_init", value_init, ("zeros", "normal"))
        self.value_init_std = float(value_init_std)
        self.key_init = _choice("key_init", key_init, KEY_INITS.names())
        self.key_init_epochs = _positive("key_init_epochs", key_init_epochs)
        if not 0.0 < float(ema_decay) < 1.0:
            raise ValueError(f"ema_decay={ema_decay!r} must be in (0, 1)")
        self.ema_decay = float(ema_decay)
        self.dead_key_threshold = dead_key_threshold
        self.key_init_batch_rows = _positive("key_init_batch_rows", key_init_batch_rows)
        if values is None:
            values = "counts+ridge" if decoder_type == "non_parametric" else "sgd"
        self.values = _choice("values", values, VALUE_RULES.names())
        for name, value in (("smoothing", smoothing), ("counts_weight", counts_weight), ("ridge", ridge)):
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value <= 0:
                raise ValueError(f"{name}={value!r} must be a finite number > 0")
        self.smoothing, self.counts_weight, self.ridge = float(smoothing), float(counts_weight), float(ridge)
        self.ridge_features = _positive("ridge_features", ridge_features)
        self.task_labels = task_labels
        self.encoder_hidden_size = encoder_hidden_size
        self.seed = int(seed)
        self.oos_score, self.oos_threshold, self.oos_label = _check_oos(oos_score, oos_threshold, oos_label,
                                                                        task_labels)
        super().__init__(**kwargs)
        if getattr(self, "id2label", None) is None:  # transformers 5 leaves it unset for num_labels=N
            self.id2label = {i: f"LABEL_{i}" for i in range(self.num_labels)}
        if not getattr(self, "label2id", None):
            self.label2id = {name: i for i, name in self.id2label.items()}
        if self.rejects_oos and self.id2label.get(self.num_labels - 1) != self.oos_label:
            raise ValueError(f"oos_threshold is set, so id2label must end with oos_label {self.oos_label!r} "
                             f"(got {self.id2label.get(self.num_labels - 1)!r}); use model.set_oos(...)")

    @property
    def rejects_oos(self) -> bool:
        """Whether out-of-scope inputs are labelled `oos_label` (a threshold is set)."""
        return getattr(self, "oos_threshold", None) is not None

    @property
    def num_classes(self) -> int:
        """Learned classes of the single head: `num_labels` without the out-of-scope label."""
        return self.num_labels - 1 if self.rejects_oos else self.num_labels

    @property
    def head_sizes(self) -> list[int]:
        """Classes per value table: one entry (single head) or one per task."""
        if self.task_labels is None:
            return [self.num_classes]
        return [len(labels) for labels in self.task_labels]


def config_default(name: str):
    """`DKVBConfig`'s default for `name`: the one source of DKVB's hyperparameter defaults, which
    the benchmark's options (`strategies/dkvb.py`) read instead of repeating them."""
    import inspect

    parameter = inspect.signature(DKVBConfig.__init__).parameters.get(name)
    if parameter is None or parameter.default is inspect.Parameter.empty:
        raise KeyError(f"DKVBConfig has no default for {name!r}")
    return parameter.default


def _positive(name: str, value) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name}={value!r} must be an integer >= 1")
    return value


def _choice(name: str, value, accepted) -> str:
    if value not in accepted:
        raise ValueError(f"unknown {name} {value!r}; accepted: {', '.join(accepted)}")
    return value


MODEL_OOS_SCORES = ("msp", "energy", "key_distance", "key_evidence")


def _check_oos(score, threshold, label, task_labels):
    if score is not None and score not in MODEL_OOS_SCORES:
        raise ValueError(f"unknown oos_score {score!r}; accepted: {', '.join(MODEL_OOS_SCORES)}")
    if threshold is not None:
        if not isinstance(threshold, (int, float)) or isinstance(threshold, bool) or not math.isfinite(threshold):
            raise ValueError(f"oos_threshold={threshold!r} must be a finite number (or None: no rejection)")
        if score is None:
            raise ValueError("oos_threshold needs oos_score (which score the threshold applies to)")
        if task_labels is not None:
            raise ValueError("out-of-scope rejection needs a single head (task_labels=None)")
        threshold = float(threshold)
    if not isinstance(label, str) or not label:
        raise ValueError(f"oos_label={label!r} must be a non-empty string")
    return score, threshold, label


def _check_task_labels(task_labels) -> list[list[str]]:
    if not isinstance(task_labels, (list, tuple)) or not task_labels:
        raise ValueError(f"task_labels must be a non-empty list of label-name lists, got {task_labels!r:.80}")
    out, seen = [], {}
    for t, labels in enumerate(task_labels):
        if not isinstance(labels, (list, tuple)) or not labels:
            raise ValueError(f"task_labels[{t}] must be a non-empty list of label names, got {labels!r:.80}")
        for name in labels:
            if name in seen:
                raise ValueError(f"label {name!r} is in task {seen[name]} and task {t}; label names must "
                                 "be unique across tasks (prefix them with the task, e.g. 'rte/entailment')")
            seen[name] = t
        out.append([str(x) for x in labels])
    return out
