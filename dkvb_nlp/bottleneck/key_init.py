"""Key initialisation without labels: EMA k-means (VQ-VAE, the paper's Appendix C).

Two interchangeable backends behind one interface (`update(heads)` per batch, `keys` after):
- `ema`: our implementation; the nearest-key assignment uses the pluggable search (faiss on
  CPU), the statistics are scatter-adds.
- `vector_quantize_pytorch`: the EMA codebook of vector-quantize-pytorch, which the paper
  used; kept for parity and as a reference in tests (much slower: dense cdist + one-hot).
"""

from __future__ import annotations

import warnings

import torch

from ..registry import Registry
from .search import resolve_search

KEY_INITS: Registry[type] = Registry("key_init backend")


def default_dead_key_threshold(batch_vectors: int, num_keys: int) -> float:
    """The paper's scaling: a key is dead when its EMA count is under 0.1 x batch / keys."""
    return 0.1 * batch_vectors / num_keys


def sample_rows(heads: torch.Tensor, num: int, gen: torch.Generator) -> torch.Tensor:
    """`num` rows of heads (n, C, dk) per codebook, without replacement when n allows: (C, num, dk)."""
    n, c, _ = heads.shape
    if n >= num:
        rows = torch.rand(c, n, generator=gen).argsort(dim=1)[:, :num]
    else:  # fewer vectors than keys: duplicates now, dead-key restarts spread them later
        warnings.warn(f"key init: the first batch has {n} vectors for {num} keys, so keys start as "
                      "duplicates until dead-key restarts spread them; a first batch of at least "
                      f"{num} vectors avoids this", stacklevel=3)
        rows = torch.randint(n, (c, num), generator=gen)
    return heads[rows.to(heads.device), torch.arange(c, device=heads.device)[:, None]]


@KEY_INITS.register("ema")
class EMAKMeans:
    """VQ-VAE EMA k-means over batches of heads (n, C, dk), C codebooks of K keys."""

    def __init__(self, num_codebooks: int, num_keys: int, key_dim: int, decay: float = 0.95,
                 dead_key_threshold: float | None = None, eps: float = 1e-5,
                 reset_cluster_size: float = 1.0, search: str = "auto", seed: int = 0):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay={decay} must be in [0, 1)")
        self.c, self.k, self.dk = num_codebooks, num_keys, key_dim
        self.decay, self.eps, self.reset = decay, eps, reset_cluster_size
        self.threshold = dead_key_threshold
        self.search_name = search
        self.gen = torch.Generator().manual_seed(seed)
        self.keys: torch.Tensor | None = None
        self.restarts = 0

    def _start(self, heads: torch.Tensor) -> None:
        self.keys = sample_rows(heads, self.k, self.gen).clone()
        self.embed_avg = self.keys.clone()
        self.cluster_size = torch.ones(self.c, self.k, dtype=heads.dtype, device=heads.device)
        self.search = resolve_search(self.search_name, heads.device)

    @torch.no_grad()
    def update(self, heads: torch.Tensor) -> None:
        """One EMA step on a batch of heads (n, C, dk)."""
        heads = heads.float()
        if self.keys is None:
            self._start(heads)
        n = heads.shape[0]
        _, idx = self.search(heads, self.keys)
        flat = (idx.to(heads.device) + torch.arange(self.c, device=heads.device) * self.k).reshape(-1)
        counts = torch.bincount(flat, minlength=self.c * self.k).view(self.c, self.k).to(heads.dtype)
        sums = torch.zeros(self.c * self.k, self.dk, dtype=heads.dtype, device=heads.device)
        sums.index_add_(0, flat, heads.reshape(-1, self.dk))
        self.cluster_size.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        self.embed_avg.mul_(self.decay).add_(sums.view(self.c, self.k, self.dk), alpha=1 - self.decay)
        total = self.cluster_size.sum(-1, keepdim=True)
        smoothed = (self.cluster_size + self.eps) / (total + self.k * self.eps) * total  # Laplace
        self.keys = self.embed_avg / smoothed.unsqueeze(-1)
        self._restart_dead(heads, n)

    def _restart_dead(self, heads: torch.Tensor, n: int) -> None:
        threshold = self.threshold if self.threshold is not None else default_dead_key_threshold(n, self.k)
        dead_c, dead_k = (self.cluster_size < threshold).nonzero(as_tuple=True)
        if dead_c.numel() == 0:
            return
        rows = torch.randint(n, (dead_c.numel(),), generator=self.gen).to(heads.device)
        samples = heads[rows, dead_c]
        self.keys[dead_c, dead_k] = samples
        self.embed_avg[dead_c, dead_k] = samples * self.reset
        self.cluster_size[dead_c, dead_k] = self.reset
        self.restarts += dead_c.numel()


@KEY_INITS.register("vector_quantize_pytorch")
class VQPytorchKMeans:
    """vector-quantize-pytorch's EMA codebook (the paper's implementation) behind our interface."""

    def __init__(self, num_codebooks: int, num_keys: int, key_dim: int, decay: float = 0.95,
                 dead_key_threshold: float | None = None, eps: float = 1e-5,
                 reset_cluster_size: float = 1.0, search: str = "auto", seed: int = 0):
        self.c, self.k, self.dk = num_codebooks, num_keys, key_dim
        self.decay, self.eps, self.threshold, self.reset = decay, eps, dead_key_threshold, reset_cluster_size
        self.seed = seed
        self.codebook = None

    @torch.no_grad()
    def update(self, heads: torch.Tensor) -> None:
        """One EMA step on a batch of heads (n, C, dk)."""
        if self.codebook is None:
            from vector_quantize_pytorch.vector_quantize_pytorch import Codebook

            torch.manual_seed(self.seed)  # its first-batch sampling uses the global generator
            threshold = self.threshold
            if threshold is None:
                threshold = default_dead_key_threshold(heads.shape[0], self.k)
            # kmeans_iters=1: keys start at random batch samples (one Lloyd pass is the
            # library's minimum); then the same EMA + Laplace + dead-code restarts as ours.
            self.codebook = Codebook(
                dim=self.dk, codebook_size=self.k, num_codebooks=self.c, kmeans_init=True,
                kmeans_iters=1, decay=self.decay, eps=self.eps, threshold_ema_dead_code=threshold,
                reset_cluster_size=self.reset,
            ).to(heads.device)
            self.codebook.train()
        self.codebook(heads.float().transpose(0, 1).unsqueeze(1))  # (C, 1, n, dk)

    @property
    def keys(self) -> torch.Tensor | None:
        return None if self.codebook is None else self.codebook.embed.detach().clone()
