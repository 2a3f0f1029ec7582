"""KeyValueBottleneck: frozen keys in front, trainable values behind, joined by key indices.

    features (B, D) or token states (B, T, D) [+ mask]
      -> pooling.pre (mean_before / cls) -> splitter -> heads (N, C, dk)
      -> nearest frozen key per codebook -> indices (B, [T,] C), -1 at padding     FROZEN FRONT
    ------------------------------------------------------------------------------------------
    indices -> flat value table (C*K, dv) -> mean over the bag of valid (token, codebook)
      -> decoder -> logits                                                         TRAINABLE BACK

After `init_keys` the front is a pure function of the input, so `quantize` can run once and
training can use `forward(indices=...)` only.
"""

from __future__ import annotations

from typing import Any, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from .decoders import DECODERS
from .key_init import KEY_INITS
from .pooling import POOLINGS
from .search import resolve_search, SEARCHES
from .splitters import SPLITTERS
from .value_rules import back_logits

VALUE_INITS = ("zeros", "normal")
PAD = -1  # index of padding positions in (B, T, C) index tensors


def _check_positive(**kwargs: Any) -> None:
    for name, value in kwargs.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name}={value!r} must be an integer >= 1")


class KeyValueBottleneck(nn.Module):
    """Discrete key-value bottleneck: C codebooks of K frozen keys, each with a trainable value.

    Args:
        dim: feature size D of the encoder output.
        num_codebooks: C, the number of heads / codebooks.
        num_keys: K, key-value pairs per codebook.
        num_classes: classes to predict (required by every decoder).
        value_dim: size of a value; defaults to num_classes (required for non_parametric).
        split: 'segment' (D cut into C chunks) or 'random_projection' (C seeded D->key_dim maps).
        key_dim: head size; derived for 'segment', required for 'random_projection'.
        pooling: 'mean_after' (default), 'mean_before' or 'cls'.
        decoder: 'non_parametric' (default), 'linear' or 'mlp'.
        decoder_hidden: hidden units of the 'mlp' decoder.
        value_init: 'zeros' (default) or 'normal' (N(0, value_init_std)).
        search: nearest-key backend: 'auto' (the fastest exact one here, measured once; on x86-64 CPUs
            our fused AVX2 kernel or one of its AVX-512 variants; $DKVB_SEARCH pins it), 'avx2',
            'avx512', 'avx512_bf16', 'faiss', 'matmul' or 'torch'.
        sparse: value-table gradients as sparse rows (for torch.optim.SGD / SparseAdam).
        chunk_size: rows quantised at a time (bounds memory).
        seed: seeds the random projections, value init and key sampling.
    """

    def __init__(
        self,
        dim: int,
        num_codebooks: int,
        num_keys: int,
        num_classes: int | None = None,
        value_dim: int | None = None,
        *,
        split: str = "segment",
        key_dim: int | None = None,
        pooling: str = "mean_after",
        decoder: str = "non_parametric",
        decoder_hidden: int = 128,
        value_init: str = "zeros",
        value_init_std: float = 0.01,
        search: str = "auto",
        sparse: bool = False,
        chunk_size: int = 16384,
        seed: int = 0,
    ):
        super().__init__()
        _check_positive(dim=dim, num_codebooks=num_codebooks, num_keys=num_keys, chunk_size=chunk_size)
        if num_classes is None and value_dim is None:
            raise ValueError("give num_classes (and value_dim for a parametric decoder)")
        if num_classes is None:
            num_classes = value_dim
        if value_dim is None:
            value_dim = num_classes
        _check_positive(num_classes=num_classes, value_dim=value_dim)
        if value_init not in VALUE_INITS:
            raise ValueError(f"unknown value_init {value_init!r}; accepted: {', '.join(VALUE_INITS)}")
        POOLINGS.get(pooling)  # validate names early, with the accepted choices in the error
        if search != "auto":
            SEARCHES.get(search)
        self.splitter = SPLITTERS.get(split)(dim, num_codebooks, key_dim, seed)
        self.decoder = DECODERS.get(decoder)(value_dim, num_classes, decoder_hidden)
        self._config = dict(
            dim=dim, num_codebooks=num_codebooks, num_keys=num_keys, num_classes=num_classes,
            value_dim=value_dim, split=split, key_dim=self.splitter.key_dim, pooling=pooling,
            decoder=decoder, decoder_hidden=decoder_hidden, value_init=value_init,
            value_init_std=value_init_std, search=search, sparse=sparse, chunk_size=chunk_size,
            seed=seed,
        )
        self.dim, self.num_codebooks, self.num_keys = dim, num_codebooks, num_keys
        self.key_dim = self.splitter.key_dim
        self.pooling, self.search, self.sparse, self.chunk_size = pooling, search, sparse, chunk_size
        self.register_buffer("keys", torch.zeros(num_codebooks, num_keys, self.key_dim))
        self.register_buffer("keys_initialized", torch.tensor(False))
        # Offsets that turn a per-codebook key index into a row of the flat value table.
        self.register_buffer("row_offset", torch.arange(num_codebooks) * num_keys, persistent=False)
        # The value table is stored flat, (C*K, dv), so embedding_bag can give sparse row grads;
        # `values` is its (C, K, dv) view.
        self.value_table = nn.Parameter(self._new_values(num_codebooks * num_keys, value_dim, seed))
        # An order-free value rule's statistics (value_rules.attach_values_rule), or None (SGD).
        self.values_rule = None

    @classmethod
    def from_config(cls, config, dim: int, num_classes: int | None = None, **overrides) -> "KeyValueBottleneck":
        """The bottleneck a `DKVBConfig` describes, over token states of size `dim`.

        The one construction path of a DKVB: the Hugging Face model, the benchmark's `dkvb`
        strategy and `export` all build their bottleneck here, from the same config. The config
        is read by attribute (num_codebooks, num_keys, value_dim, split, key_dim, pooling,
        decoder_type, decoder_hidden, value_init, value_init_std, seed, and head_sizes[0] when
        num_classes is not given); `overrides` replace keyword arguments (e.g. search=...).
        """
        if num_classes is None:
            num_classes = config.head_sizes[0]
        kwargs = dict(value_dim=config.value_dim, split=config.split, key_dim=config.key_dim, pooling=config.pooling,
                      decoder=config.decoder_type, decoder_hidden=config.decoder_hidden,
                      value_init=config.value_init, value_init_std=config.value_init_std, seed=config.seed)
        return cls(dim, config.num_codebooks, config.num_keys, num_classes=num_classes, **{**kwargs, **overrides})

    # ------------------------------------------------------------------ configuration
    @property
    def config(self) -> dict:
        """Constructor arguments that rebuild this module (with its current sizes)."""
        return dict(self._config)

    @property
    def num_classes(self) -> int:
        return self.decoder.num_classes

    @property
    def value_dim(self) -> int:
        return self.value_table.shape[1]

    @property
    def values(self) -> torch.Tensor:
        """The value table as (C, K, value_dim) (a view of the flat parameter)."""
        return self.value_table.view(self.num_codebooks, self.num_keys, -1)

    def _new_values(self, rows: int, cols: int, seed: int) -> torch.Tensor:
        if self._config["value_init"] == "zeros":
            return torch.zeros(rows, cols)
        gen = torch.Generator().manual_seed(seed + 1)
        return torch.randn(rows, cols, generator=gen) * self._config["value_init_std"]

    def __repr__(self) -> str:
        c = self._config
        return (f"KeyValueBottleneck(dim={c['dim']}, codebooks={c['num_codebooks']}, keys={c['num_keys']}, "
                f"key_dim={c['key_dim']}, value_dim={self.value_dim}, classes={self.num_classes}, "
                f"split={c['split']}, pooling={c['pooling']}, decoder={c['decoder']})")

    # ------------------------------------------------------------------ input checks
    def _check_features(self, x: torch.Tensor, mask: torch.Tensor | None) -> None:
        if not isinstance(x, torch.Tensor) or x.dim() not in (2, 3):
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"features must be (B, D) or (B, T, D), got {shape}")
        if x.shape[-1] != self.dim:
            raise ValueError(f"feature size {x.shape[-1]} does not match the bottleneck's dim={self.dim}")
        if not x.is_floating_point():
            raise ValueError(f"features must be floating point, got {x.dtype}")
        if mask is not None:
            if x.dim() != 3 or tuple(mask.shape) != tuple(x.shape[:2]):
                raise ValueError(f"mask of shape {tuple(mask.shape)} does not match features {tuple(x.shape)}; "
                                 "expected (B, T) for token states (B, T, D)")
        if not torch.isfinite(x).all():
            raise ValueError("features contain NaN or infinite values")

    def _require_keys(self) -> None:
        if not bool(self.keys_initialized):
            raise RuntimeError("keys are not initialised; call init_keys(batches) first")

    # ------------------------------------------------------------------ frozen front
    def _valid_rows(self, x: torch.Tensor, mask: torch.Tensor | None):
        """Flatten (x, mask) after the pooling's pre-step to valid rows (N, D) and their places."""
        x, mask = POOLINGS.get(self.pooling)(x, mask)
        lead = x.shape[:-1]
        flat = x.reshape(-1, self.dim)
        if mask is None:
            return flat, lead, None
        keep = mask.reshape(-1).bool()
        return flat[keep], lead, keep

    def heads(self, x: torch.Tensor) -> torch.Tensor:
        """Split rows (N, D) into heads (N, C, key_dim)."""
        return self.splitter(x)

    @torch.no_grad()
    def _nearest(self, rows: torch.Tensor):
        """Squared distance and index of the nearest key for each row (N, D): two (N, C)."""
        search = resolve_search(self.search, rows.device)
        keys = self.keys.float()
        dists, index = [], []
        for start in range(0, rows.shape[0], self.chunk_size):
            d, i = search(self.heads(rows[start : start + self.chunk_size].float()), keys)
            dists.append(d.to(rows.device))
            index.append(i.to(rows.device))
        if not index:
            empty = rows.new_zeros(0, self.num_codebooks)
            return empty, empty.long()
        return torch.cat(dists), torch.cat(index)

    @torch.no_grad()
    def quantize(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Key indices (B, [T,] C), int64, for features (B, D) or token states (B, T, D).

        Token positions masked out get -1. With pooling 'mean_before' / 'cls' the token axis
        is pooled first, so the result is (B, C).
        """
        self._check_features(x, mask)
        self._require_keys()
        rows, lead, keep = self._valid_rows(x, mask)
        _, index = self._nearest(rows)
        if keep is None:
            return index.reshape(*lead, self.num_codebooks)
        out = torch.full((keep.numel(), self.num_codebooks), PAD, dtype=torch.long, device=x.device)
        out[keep] = index
        return out.reshape(*lead, self.num_codebooks)

    @torch.no_grad()
    def shift_score(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> float:
        """Mean L2 distance from each head to its nearest key: grows under input shift."""
        self._check_features(x, mask)
        self._require_keys()
        rows, _, _ = self._valid_rows(x, mask)
        dists, _ = self._nearest(rows)
        return float(dists.clamp_min(0).sqrt().mean()) if dists.numel() else float("nan")

    @torch.no_grad()
    def init_keys(
        self,
        batches: Iterable,
        epochs: int = 1,
        decay: float = 0.95,
        dead_key_threshold: float | None = None,
        backend: str = "ema",
        progress: bool = False,
    ) -> "KeyValueBottleneck":
        """Initialise the keys without labels by EMA k-means over `batches`, then freeze them.

        `batches` yields feature tensors (B, D) / (B, T, D) or (features, mask) pairs; it is
        iterated `epochs` times (so pass a list or a DataLoader when epochs > 1).
        """
        if bool(self.keys_initialized):
            raise RuntimeError("keys are already initialised and frozen; build a new bottleneck to re-initialise")
        _check_positive(epochs=epochs)
        if epochs > 1 and iter(batches) is batches:
            raise ValueError("epochs > 1 needs a re-iterable `batches` (a list or DataLoader), not an iterator")
        kmeans = KEY_INITS.get(backend)(
            self.num_codebooks, self.num_keys, self.key_dim, decay=decay,
            dead_key_threshold=dead_key_threshold, search=self.search, seed=self._config["seed"],
        )
        for epoch in range(epochs):
            from ..progress import progress_bar

            for batch in progress_bar(batches, desc=f"key init epoch {epoch + 1}/{epochs}", enabled=progress,
                                      unit="block"):
                x, mask = batch if isinstance(batch, (tuple, list)) else (batch, None)
                self._check_features(x, mask)
                rows, _, _ = self._valid_rows(x, mask)
                if rows.shape[0] == 0:
                    continue
                kmeans.update(self.heads(rows.float()))
        if kmeans.keys is None:
            raise ValueError("init_keys received no feature vectors")
        self.keys.copy_(kmeans.keys.to(self.keys))
        self.keys_initialized.fill_(True)
        return self

    # ------------------------------------------------------------------ trainable back
    def check_indices(self, indices: torch.Tensor) -> None:
        """Raise a clear error unless indices are (B, [T,] C) integers in [-1, K)."""
        if not isinstance(indices, torch.Tensor) or indices.dim() not in (2, 3) \
                or indices.shape[-1] != self.num_codebooks:
            shape = tuple(indices.shape) if isinstance(indices, torch.Tensor) else type(indices).__name__
            raise ValueError(f"indices must be (B, C) or (B, T, C) with C={self.num_codebooks}, got {shape}")
        if indices.dtype not in (torch.int64, torch.int32, torch.int16):
            raise ValueError(f"indices must be int64/int32/int16, got {indices.dtype}")
        if indices.numel() == 0:
            return
        low = PAD if indices.dim() == 3 else 0  # padding exists only for token positions
        hi, lo = int(indices.max()), int(indices.min())
        if hi >= self.num_keys or lo < low:
            accepted = f"{low} (padding) to" if low < 0 else "0 to"
            raise ValueError(f"index {hi if hi >= self.num_keys else lo} out of range: accepted "
                             f"{accepted} {self.num_keys - 1} for indices of shape {tuple(indices.shape)}")

    def _bags(self, indices: torch.Tensor, check: bool = True):
        """Flat value-table rows and embedding_bag offsets (None: fixed-size 2-D bags)."""
        if check:
            self.check_indices(indices)
        indices = indices.long()
        rows = indices + self.row_offset
        if indices.dim() == 2:  # one vector per example: every bag holds exactly C rows
            return rows, None
        b = indices.shape[0]
        rows = rows.reshape(b, -1)
        valid = indices.reshape(b, -1) >= 0
        counts = valid.sum(1)
        offsets = torch.zeros(b, dtype=torch.long, device=indices.device)
        offsets[1:] = counts.cumsum(0)[:-1]
        return rows[valid], offsets

    def pool_values(self, indices: torch.Tensor, check: bool = True,
                    table: torch.Tensor | None = None) -> torch.Tensor:
        """Mean of the fetched values over codebooks and valid tokens: (B, value_dim).

        `table` swaps in another (C*K, dv) value table over the same keys (a task head).
        """
        table = self.value_table if table is None else table
        rows, offsets = self._bags(indices, check)
        if offsets is None:  # fixed bags: a sum then one scale is cheaper than mode="mean"
            summed = F.embedding_bag(rows, table, mode="sum", sparse=self.sparse)
            return summed / self.num_codebooks
        return F.embedding_bag(rows, table, offsets, mode="mean", sparse=self.sparse)

    def forward(
        self,
        x: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        *,
        indices: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Class logits (B, num_classes) from features (+ mask) or from precomputed indices."""
        if indices is None:
            if x is None:
                raise ValueError("give features x (and an optional mask) or indices=")
            indices = self.quantize(x, mask)
        elif x is not None:
            raise ValueError("give either features x or indices=, not both")
        return back_logits(self, indices)

    # ------------------------------------------------------------------ growth
    def add_classes(self, n: int) -> "KeyValueBottleneck":
        """Add n classes (new logit columns) without changing any existing value or weight.

        Parameters are replaced, so rebuild optimisers afterwards.
        """
        _check_positive(n=n)
        if self.decoder.grows_values:
            old = self.value_table.data
            extra = self._new_values(old.shape[0], n, self._config["seed"] + old.shape[1]).to(old)
            self.value_table = nn.Parameter(torch.cat([old, extra], dim=1))
            self._config["value_dim"] = self.value_table.shape[1]
        self.decoder.add_classes(n)
        if self.values_rule is not None:
            self.values_rule.add_classes(n)
        self._config["num_classes"] = self.decoder.num_classes
        return self

    # ------------------------------------------------------------------ inspection
    def usage_counts(self, indices: torch.Tensor | Iterable[torch.Tensor]) -> torch.Tensor:
        """How often each key was selected: (C, K) int64, over one index tensor or many."""
        if isinstance(indices, torch.Tensor):
            indices = [indices]
        counts = torch.zeros(self.num_codebooks * self.num_keys, dtype=torch.long)
        for idx in indices:
            rows, _ = self._bags(idx)
            counts += torch.bincount(rows.reshape(-1).cpu(), minlength=counts.numel())
        return counts.view(self.num_codebooks, self.num_keys)

    @torch.no_grad()
    def prune(self, usage: torch.Tensor) -> "KeyValueBottleneck":
        """A smaller bottleneck keeping only the key-value pairs with usage > 0.

        Every input whose nearest keys were all counted as used gets the same prediction.
        Codebooks keep K' = max used keys; shorter ones are padded with unreachable keys.
        """
        self._require_keys()
        if tuple(usage.shape) != (self.num_codebooks, self.num_keys):
            raise ValueError(f"usage must be (C, K) = ({self.num_codebooks}, {self.num_keys}), got {tuple(usage.shape)}")
        used = usage > 0
        kept = int(used.sum(1).max())
        if kept == 0:
            raise ValueError("no key was used; count usage on the data you want to keep")
        cfg = self.config
        cfg["num_keys"] = kept
        small = type(self)(**cfg).to(self.keys.device)
        small.decoder.load_state_dict(self.decoder.state_dict())
        # Far enough that no finite input of sensible scale picks a padding key.
        far = float(self.keys.abs().max()) * 1e3 + 1e3
        keys = torch.full_like(small.keys, far)
        values = torch.zeros_like(small.values)
        for c in range(self.num_codebooks):
            ids = used[c].nonzero(as_tuple=True)[0].to(self.keys.device)
            keys[c, : ids.numel()] = self.keys[c, ids]
            values[c, : ids.numel()] = self.values[c, ids]
        small.keys.copy_(keys)
        small.value_table.data.copy_(values.view(-1, values.shape[-1]))
        small.keys_initialized.fill_(True)
        return small

    def trainable_parameters(self) -> int:
        """Number of trainable scalars (values and decoder weights)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)
