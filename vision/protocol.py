"""The paper's class-incremental protocol on cached image features (Section 5.2, Appendix C).

One run = one method, one seed, one mode over the training stream:
- `class_il`: the splits (e.g. 5 x 2 classes) one after another, each for `epochs` epochs, no
  replay and no task boundary given to the model (one 10-way head, no task id).
- `iid`: all classes at once for the same number of example-steps (`epochs` epochs over all
  data, as the paper's code), evaluated at the same points: after each 1/S of the epochs.
After every phase each split's test set is evaluated, which fills the S x S accuracy matrix
that dkvb_nlp's metrics and reports read.

DKVB as in the paper: C=256 codebooks x K=4096 pairs, key dim 14, random projections, values
of size 10 initialised to zero, non-parametric decoder; keys EMA-initialised (decay 0.95) for 10
epochs on a separate unlabelled set, then frozen; values trained with SGD lr 0.3 (no momentum),
label smoothing 0.1, batch 256. Because keys and backbone are frozen, every image is quantised
once and training runs on cached key indices (see value_trainers). The same keys serve both
modes of a seed, so class_il and iid differ only in the order of the data.

`dkvb.values` picks how the values learn, with the text side's rules
(dkvb_nlp/bottleneck/value_rules.py): 'sgd' (the paper's, the default here) or the order-free
'counts', 'ridge' and 'counts+ridge', which add each training example's statistics once and
ignore `epochs` (the 2000-epoch protocol becomes one pass; class_il then ends where iid does).
"""

from __future__ import annotations

import copy
import dataclasses
import io
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Mapping

import numpy as np
import torch

from dkvb_nlp.bottleneck import KeyValueBottleneck
from dkvb_nlp.bottleneck.value_rules import VALUE_RULES, attach_values_rule, back_logits
from dkvb_nlp.engine.bounds import bounded, check_bounds
from dkvb_nlp.metrics import accuracy
from dkvb_nlp.modeling.configuration_dkvb import config_default
from dkvb_nlp.io import atomic_write_bytes
from dkvb_nlp.registry import Registry
from dkvb_nlp.results import make_run

from .heads import FeatureHead
from .splits import class_splits, iid_chunks, parse_split_spec, split_name
from .value_trainers import make_value_trainer

__all__ = ["METHODS", "MODES", "DKVBOptions", "HeadOptions", "ProtocolConfig", "ProtocolData",
           "ShuffledBatches", "prepare_keys", "run_protocol"]

MODES = ("class_il", "iid")


@dataclass
class DKVBOptions:
    """The bottleneck and its training (defaults: the paper's)."""

    num_codebooks: int = 256
    num_keys: int = config_default("num_keys")
    key_dim: int = 14
    lr: float = 0.3
    label_smoothing: float = 0.1
    batch_size: int = 256
    key_init_epochs: int = 10
    key_init_decay: float = 0.95
    key_init_batch_size: int = 256
    value_trainer: str = "auto"  # auto | numba | torch (values 'sgd' only)
    search: str = "auto"
    # How the values learn (dkvb_nlp/bottleneck/value_rules.py): 'sgd' (the paper's gradient
    # steps; lr, label_smoothing, batch_size and value_trainer apply) or the order-free
    # 'counts', 'ridge', 'counts+ridge' (one pass, epochs ignored; the options below apply).
    values: str = "sgd"
    # The order-free rules' options: DKVBConfig's defaults, as on the text side (one source).
    smoothing: float = bounded(config_default("smoothing"), gt=0)  # additive smoothing of the class-by-key counts
    counts_weight: float = bounded(config_default("counts_weight"), gt=0)  # count values' scale beside the readout
    ridge: float = bounded(config_default("ridge"), gt=0)  # lambda of the ridge readout
    ridge_features: int = bounded(config_default("ridge_features"), ge=1)  # M random features (memory M^2 float64)

    def __post_init__(self):
        VALUE_RULES.get(self.values)  # "unknown value rule 'x'; accepted: counts, counts+ridge, ridge, sgd"
        check_bounds(self, "dkvb.")

    @property
    def order_free(self) -> bool:
        """True for a rule built from sums over examples (counts, ridge, counts+ridge)."""
        return VALUE_RULES.get(self.values).order_free


@dataclass
class HeadOptions:
    """The feature-head baselines (defaults: the paper's code: SGD lr 0.001, clip 1)."""

    hidden: int = 128
    optimizer: str = "sgd"
    lr: float = 0.001
    batch_size: int = 256
    label_smoothing: float = 0.1
    grad_clip: float | None = 1.0
    epochs: int | None = None  # None: the protocol's epochs


@dataclass
class ProtocolConfig:
    """What to run: splits, epochs per split, modes, methods, seeds and their options."""

    splits: str = "5x2"
    epochs: int = 2000
    modes: tuple = MODES
    methods: tuple = ("dkvb", "linear", "linear_nobias", "mlp")
    seeds: tuple = (0,)
    # Appendix E.1 on embeddings: after training, test accuracy with Gaussian noise of these
    # standard deviations (in units of the test features' overall std) added to the features.
    noise_levels: tuple = ()
    dkvb: DKVBOptions = field(default_factory=DKVBOptions)
    heads: HeadOptions = field(default_factory=HeadOptions)

    def __post_init__(self):
        if isinstance(self.dkvb, Mapping):
            self.dkvb = _from_mapping(DKVBOptions, self.dkvb, "dkvb")
        if isinstance(self.heads, Mapping):
            self.heads = _from_mapping(HeadOptions, self.heads, "heads")
        for name in ("modes", "methods", "seeds", "noise_levels"):
            value = getattr(self, name)
            setattr(self, name, tuple([value] if isinstance(value, (str, int)) else value))
        for mode in self.modes:
            if mode not in MODES:
                raise ValueError(f"mode {mode!r}; accepted: {', '.join(MODES)}")
        for method in self.methods:
            METHODS.get(method)
        if not isinstance(self.epochs, int) or self.epochs < 1:
            raise ValueError(f"epochs={self.epochs!r} must be an integer >= 1")

    @classmethod
    def from_dict(cls, data: Mapping) -> "ProtocolConfig":
        """Build from a (YAML) mapping; unknown keys are errors that list the accepted ones."""
        return _from_mapping(cls, data, "protocol")

    def to_dict(self) -> dict:
        """Plain dict (for results.json's config)."""
        return dataclasses.asdict(self)


def _from_mapping(cls, data: Mapping, where: str):
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ValueError(f"{where}: unknown option(s) {unknown}; accepted: {', '.join(names)}")
    return cls(**dict(data))


@dataclass
class ProtocolData:
    """Cached features of the target dataset and the unlabelled key-initialisation set."""

    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    key_init_x: np.ndarray
    dataset: str = "dataset"
    key_init_name: str = "key_init"

    def __post_init__(self):
        for name in ("train_x", "test_x", "key_init_x"):
            a = getattr(self, name)
            if a.ndim != 2 or a.shape[1] != self.train_x.shape[1]:
                raise ValueError(f"{name} must be (N, {self.train_x.shape[1]}), got {a.shape}")
        self.num_classes = int(max(self.train_y.max(), self.test_y.max())) + 1


class ShuffledBatches:
    """Re-iterable batches of unlabelled features, reshuffled on every pass (one pass = one epoch)."""

    def __init__(self, x: torch.Tensor, batch_size: int, seed: int):
        self.x, self.batch_size = x, batch_size
        self.generator = torch.Generator().manual_seed(seed)

    def __iter__(self) -> Iterator[torch.Tensor]:
        order = torch.randperm(self.x.shape[0], generator=self.generator)
        return (self.x[b] for b in order.split(self.batch_size))


def prepare_keys(data: ProtocolData, opts: DKVBOptions, seed: int) -> KeyValueBottleneck:
    """A bottleneck with keys EMA-initialised on data.key_init_x (no labels) and frozen."""
    model = KeyValueBottleneck(
        data.train_x.shape[1], opts.num_codebooks, opts.num_keys, data.num_classes,
        split="random_projection", key_dim=opts.key_dim, value_init="zeros", search=opts.search, seed=seed,
    )
    batches = ShuffledBatches(torch.from_numpy(np.ascontiguousarray(data.key_init_x, dtype=np.float32)),
                              opts.key_init_batch_size, seed)
    model.init_keys(batches, epochs=opts.key_init_epochs, decay=opts.key_init_decay)
    return model


# ---------------------------------------------------------------------------------- learners
class DKVBLearner:
    """DKVB trained on cached key indices; counts how often each key is fetched in training.

    With values 'sgd', `fit` runs `epochs` SGD passes. With an order-free rule it adds each
    training row's statistics exactly once, whatever `epochs` and however often a row comes
    back (the iid mode presents all data at every phase): a boolean mask marks the rows already
    learned. The mask is no replay: nothing of an example is kept beyond the rule's sums.
    """

    def __init__(self, keyed: KeyValueBottleneck, train_idx: torch.Tensor, train_y: torch.Tensor,
                 test_idx: torch.Tensor, opts: DKVBOptions, seed: int):
        self.model = copy.deepcopy(keyed)  # fresh zero values per run; keys shared per seed
        self.train_idx, self.train_y, self.test_idx = train_idx, train_y, test_idx
        self.values = opts.values
        self.rule = attach_values_rule(self.model, opts.values, smoothing=opts.smoothing,
                                       counts_weight=opts.counts_weight, ridge=opts.ridge,
                                       ridge_features=opts.ridge_features, seed=seed)
        self.trainer = None if self.rule is not None else \
            make_value_trainer(opts.value_trainer, self.model, opts.lr, opts.label_smoothing)
        self.learned = torch.zeros(train_idx.shape[0], dtype=torch.bool)  # order-free: rows in the sums
        self.new_per_phase: list[int] = []
        self.batch_size = opts.batch_size
        self.generator = torch.Generator().manual_seed(seed)
        self.usage = torch.zeros(keyed.num_codebooks, keyed.num_keys, dtype=torch.long)

    def fit(self, rows: np.ndarray, epochs: int) -> None:
        """`epochs` SGD passes over the training examples `rows`; order-free: their unseen ones, once."""
        r = torch.from_numpy(np.asarray(rows, dtype=np.int64))
        if self.rule is None:
            idx = self.train_idx[r]
            self.trainer.epochs(epochs, idx, self.train_y[r], self.batch_size, self.generator)
            # every pass fetches the same keys, so usage over training = one count x epochs
            self.usage += self.model.usage_counts(idx) * epochs
            return
        r = torch.unique(r)  # a row listed twice in one phase is still one example
        r = r[~self.learned[r]]
        self.new_per_phase.append(int(r.numel()))
        if r.numel() == 0:
            return
        idx = self.train_idx[r]
        self.model.check_indices(idx)
        for start in range(0, r.numel(), 4096):  # blocks bound the readout's feature matrix
            self.rule.partial_fit(idx[start : start + 4096], self.train_y[r[start : start + 4096]], check=False)
        self.learned[r] = True
        self.usage += self.model.usage_counts(idx)

    @torch.no_grad()
    def _logits(self, indices: torch.Tensor) -> torch.Tensor:
        return torch.cat([back_logits(self.model, indices[i : i + 4096]) for i in range(0, indices.shape[0], 4096)])

    @torch.no_grad()
    def predict(self, rows: np.ndarray) -> np.ndarray:
        """Predicted classes of the test examples `rows`."""
        return self._logits(self.test_idx[torch.from_numpy(rows)]).argmax(1).numpy()

    @torch.no_grad()
    def predict_features(self, x: np.ndarray) -> np.ndarray:
        """Predicted classes of arbitrary features (quantised now, e.g. noisy ones)."""
        indices = self.model.quantize(torch.from_numpy(np.ascontiguousarray(x, np.float32)))
        return self._logits(indices).argmax(1).numpy()

    def trainable_parameters(self) -> int:
        """Values: C x K x classes; with a ridge readout also its solved weights, M x classes."""
        return self.model.trainable_parameters() + (self.rule.solved_parameters if self.rule is not None else 0)

    def extra(self) -> dict:
        """Per-key usage summary (Appendix E.3's histogram in numbers); the value rule's sizes."""
        u = self.usage.flatten().double()
        used = u[u > 0]
        out = {"key_usage": {
            "unused_fraction": float((u == 0).double().mean()),
            "median_uses_of_used_keys": float(used.median()) if used.numel() else 0.0,
            "max_uses": float(u.max()),
        }, "values": self.values}
        if self.rule is not None:
            info = {"order_free": True, "examples_learned": int(self.learned.sum()),
                    "new_examples_per_phase": list(self.new_per_phase),
                    "statistics_bytes": sum(t.numel() * t.element_size() for t in self.rule.state_dict().values())}
            if self.rule.readout is not None:
                info["ridge_readout_weights"] = self.rule.solved_parameters
            out["value_rule"] = info
        return out


class HeadLearner:
    """A baseline head over the raw features."""

    def __init__(self, kind: str, data: ProtocolData, opts: HeadOptions, seed: int):
        self.head = FeatureHead(kind, data.train_x.shape[1], data.num_classes, hidden=opts.hidden,
                                optimizer=opts.optimizer, lr=opts.lr, batch_size=opts.batch_size,
                                label_smoothing=opts.label_smoothing, grad_clip=opts.grad_clip, seed=seed)
        self.x = torch.from_numpy(np.ascontiguousarray(data.train_x, dtype=np.float32))
        self.y = torch.from_numpy(data.train_y.astype(np.int64))
        self.test_x = torch.from_numpy(np.ascontiguousarray(data.test_x, dtype=np.float32))

    def fit(self, rows: np.ndarray, epochs: int) -> None:
        """`epochs` passes over the training examples `rows`."""
        r = torch.from_numpy(rows)
        self.head.fit(self.x[r], self.y[r], epochs)

    def predict(self, rows: np.ndarray) -> np.ndarray:
        """Predicted classes of the test examples `rows`."""
        return self.head.predict(self.test_x[torch.from_numpy(rows)])

    def predict_features(self, x: np.ndarray) -> np.ndarray:
        """Predicted classes of arbitrary features."""
        return self.head.predict(torch.from_numpy(np.ascontiguousarray(x, np.float32)))

    def trainable_parameters(self) -> int:
        """Weights (and biases) of the head."""
        return self.head.trainable_parameters()

    def extra(self) -> dict:
        """Nothing beyond the schema."""
        return {}


@dataclass
class _SeedContext:
    data: ProtocolData
    config: ProtocolConfig
    seed: int
    _dkvb: tuple | None = None
    timings: dict = field(default_factory=dict)

    def dkvb_parts(self):
        """Keyed bottleneck and cached indices, built once per seed (both modes share them)."""
        if self._dkvb is None:
            t = time.time()
            keyed = prepare_keys(self.data, self.config.dkvb, self.seed)
            self.timings["key_init_seconds"] = round(time.time() - t, 2)
            t = time.time()
            train_idx = keyed.quantize(torch.from_numpy(np.ascontiguousarray(self.data.train_x, np.float32)))
            test_idx = keyed.quantize(torch.from_numpy(np.ascontiguousarray(self.data.test_x, np.float32)))
            self.timings["quantize_seconds"] = round(time.time() - t, 2)
            self._dkvb = (keyed, train_idx.to(torch.int32), test_idx.to(torch.int32))
        return self._dkvb


LearnerFactory = Callable[[_SeedContext], object]
METHODS: Registry[LearnerFactory] = Registry("method")


@METHODS.register("dkvb")
def _dkvb(ctx: _SeedContext) -> DKVBLearner:
    keyed, train_idx, test_idx = ctx.dkvb_parts()
    return DKVBLearner(keyed, train_idx, torch.from_numpy(ctx.data.train_y.astype(np.int64)), test_idx,
                       ctx.config.dkvb, ctx.seed)


for _kind in ("linear", "linear_nobias", "mlp"):
    METHODS.register(_kind)(lambda ctx, kind=_kind: HeadLearner(kind, ctx.data, ctx.config.heads, ctx.seed))


# ---------------------------------------------------------------------------------- the loop
def _phases(mode: str, splits: list[list[int]], train_y: np.ndarray, epochs: int | None) -> list[tuple[np.ndarray, int]]:
    """(training rows, epochs) per phase: one split at a time, or all data in S checkpoints.

    epochs None (an order-free value rule): one pass per phase; iid shows all data at every
    checkpoint and the learner counts each example once.
    """
    if epochs is None:
        if mode == "class_il":
            return [(np.flatnonzero(np.isin(train_y, classes)), 1) for classes in splits]
        return [(np.arange(train_y.shape[0]), 1) for _ in splits]
    if mode == "class_il":
        return [(np.flatnonzero(np.isin(train_y, classes)), epochs) for classes in splits]
    every = np.arange(train_y.shape[0])
    return [(every, e) for e in iid_chunks(epochs, len(splits))]


def run_stream(learner, phases, test_rows: list[np.ndarray], test_y: np.ndarray,
               progress: Callable[[str], None] | None = None) -> tuple[np.ndarray, float]:
    """Train phase by phase; after each, accuracy on every split's test set. (matrix, train seconds)."""
    s = len(test_rows)
    matrix = np.zeros((len(phases), s))
    seconds = 0.0
    for i, (rows, epochs) in enumerate(phases):
        t = time.time()
        learner.fit(rows, epochs)
        seconds += time.time() - t
        for j, test in enumerate(test_rows):
            matrix[i, j] = accuracy(learner.predict(test), test_y[test])
        if progress:
            progress(f"phase {i + 1}/{len(phases)} ({epochs} epochs on {rows.size} images): "
                     f"acc on seen splits {matrix[i, : i + 1].mean():.4f}, all {matrix[i].mean():.4f}")
    return matrix, seconds


def noise_robustness(learner, data: ProtocolData, levels, seed: int) -> dict:
    """Test accuracy with N(0, (level x std of the test features)^2) added to every feature."""
    scale = float(np.std(data.test_x))
    rng = np.random.default_rng(seed)
    out = {}
    for level in levels:
        noisy = data.test_x + rng.normal(0.0, float(level) * scale, size=data.test_x.shape).astype(np.float32)
        out[str(level)] = accuracy(learner.predict_features(noisy), data.test_y)
    return out


def save_usage(directory, name: str, usage: torch.Tensor) -> Path:
    """Write a (C, K) key-usage count matrix as `<directory>/key_usage_<name>.npy` (atomically)."""
    buf = io.BytesIO()
    np.save(buf, usage.numpy(), allow_pickle=False)
    path = Path(directory) / f"key_usage_{name}.npy"
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_bytes(path, buf.getvalue())


def _method_epochs(config: ProtocolConfig, method: str) -> int | None:
    """Epochs per split of `method`; None for DKVB with an order-free value rule (one pass)."""
    if method == "dkvb":
        return None if config.dkvb.order_free else config.epochs
    return config.heads.epochs if config.heads.epochs is not None else config.epochs


def run_protocol(data: ProtocolData, config: ProtocolConfig,
                 progress: Callable[[str], None] | None = None, artifacts_dir=None) -> list[dict]:
    """Every (seed, mode, method) run of the protocol as dkvb_nlp run records (make_run).

    With `artifacts_dir`, each DKVB run's per-key usage counts (C, K) are saved there as .npy.
    """
    num_splits, _ = parse_split_spec(config.splits, data.num_classes)
    if "iid" in config.modes:  # fail before hours of training, not at the first iid run
        for epochs in {_method_epochs(config, m) for m in config.methods} - {None}:
            iid_chunks(epochs, num_splits)
    runs = []
    for seed in config.seeds:
        splits = class_splits(config.splits, data.num_classes, seed)
        test_rows = [np.flatnonzero(np.isin(data.test_y, classes)) for classes in splits]
        ctx = _SeedContext(data, config, seed)
        for method in config.methods:
            epochs = _method_epochs(config, method)
            for mode in config.modes:
                learner = METHODS.get(method)(ctx)
                say = (lambda msg, m=method, md=mode: progress(f"[seed {seed} {md} {m}] {msg}")) if progress else None
                matrix, seconds = run_stream(learner, _phases(mode, splits, data.train_y, epochs),
                                             test_rows, data.test_y, say)
                scenario = f"class_il_{config.splits}" if mode == "class_il" else "iid"
                extra = learner.extra()
                if artifacts_dir is not None and isinstance(learner, DKVBLearner):
                    name = f"{data.dataset}_{scenario}_{method}_seed{seed}"
                    extra["key_usage"]["counts_file"] = save_usage(artifacts_dir, name, learner.usage).name
                if config.noise_levels:
                    extra["noise_robustness"] = noise_robustness(learner, data, config.noise_levels, seed)
                runs.append(make_run(
                    method, seed, scenario, data.dataset, matrix,
                    train_seconds=seconds, trainable_parameters=learner.trainable_parameters(),
                    task_names=[split_name(c) for c in splits], class_splits=splits,
                    epochs_per_phase=[e for _, e in _phases(mode, splits, data.train_y, epochs)],
                    key_init_dataset=data.key_init_name if method == "dkvb" else None,
                    **(dict(ctx.timings) if method == "dkvb" else {}), **extra,
                ))
    return runs
