"""Out-of-scope (OOS) scores, their metrics and a threshold rule.

Every score maps a batch of inputs to one number per example; **higher means more likely out of
scope**. They are plain functions over arrays (numpy or torch), so this part imports nothing of
the model: the caller hands over logits, token segments and keys, key indices and counts, or
pooled features.

    msp            1 - max softmax probability of the logits (Hendrycks & Gimpel, 2017)
    energy         -T logsumexp(logits / T) (Liu et al., 2020)
    oos_class      p(oos) - max in-scope probability, for logits with a learned out-of-scope class
                   at column `oos_index` (CLINC150's oos_train texts learned as a class)
    key_distance   mean over valid tokens and codebooks of the L2 distance of each token segment
                   to its nearest key (DKVB; the per-example form of `shift_score`)
    key_evidence   how little class evidence the fetched keys carry: -mean log(1 + total count)
                   of the fetched (codebook, key) pairs ('log_count'), or the fraction of them
                   whose counts are zero for every class ('unseen')
    mahalanobis    min over classes of the Mahalanobis distance of the pooled feature to the class
                   mean, shared covariance fitted on in-scope training features (Lee et al., 2018)
    knn            distance to the k-th nearest L2-normalised in-scope training feature
                   (Sun et al., 2022; k = 10)

`score(name, **inputs)` calls a registered score with the inputs it takes (others are ignored),
so a caller can offer everything it has and loop over `SCORES`.

Metrics treat OOS as the positive class of the score: `auroc` is P(score_out > score_in) (ties
count one half); `fpr_at_95_tpr` is the fraction of OOS texts *accepted* (score <= t) at the
threshold t that accepts 95% of in-scope texts (the convention of the OOD literature, e.g.
Sun et al. 2022). `choose_threshold` picks t on validation scores; an input is rejected as OOS
when its score is > t.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from ..registry import Registry

ScoreFn = Callable[..., np.ndarray]
SCORES: Registry[ScoreFn] = Registry("out-of-scope score")

# Rows of a distance block (rows x keys, or rows x bank) computed at once.
BLOCK_ROWS = 4096


# ---------------------------------------------------------------------- input checks
def _as_tensor(x: Any, name: str, dims: tuple[int, ...], floating: bool = True, masked: bool = False) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    if t.dim() not in dims:
        raise ValueError(f"{name} must have {' or '.join(str(d) for d in dims)} dimensions, got shape {tuple(t.shape)}")
    if t.numel() == 0 or t.shape[0] == 0:
        raise ValueError(f"{name} is empty (shape {tuple(t.shape)})")
    if floating:
        t = t.float() if t.dtype != torch.float64 else t
        finite = torch.isfinite(t)
        if masked:  # -inf marks a masked logit (a class not yet seen); each row needs a finite one
            if torch.isnan(t).any() or (t == float("inf")).any() or not finite.any(dim=-1).all():
                raise ValueError(f"{name} contains NaN, +inf or a row with no finite value")
        elif not finite.all():
            raise ValueError(f"{name} contains NaN or infinite values")
    return t.detach().cpu()


def _as_scores(x: Any, name: str) -> np.ndarray:
    a = np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x, dtype=np.float64)
    if a.ndim != 1:
        raise ValueError(f"{name} must be a 1-d array of scores, got shape {a.shape}")
    if a.size == 0:
        raise ValueError(f"{name} is empty")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return a


def _check_mask(mask: Any, lead: tuple[int, ...], name: str = "mask") -> torch.Tensor | None:
    if mask is None:
        return None
    m = torch.as_tensor(np.asarray(mask) if not isinstance(mask, torch.Tensor) else mask).detach().cpu().bool()
    if tuple(m.shape) != lead:
        raise ValueError(f"{name} of shape {tuple(m.shape)} does not match the inputs' leading shape {lead}")
    if not m.any(dim=-1).all():
        raise ValueError(f"every example needs at least one valid token in {name}")
    return m


# ---------------------------------------------------------------------- logit scores
@SCORES.register("msp")
def msp(logits: Any) -> np.ndarray:
    """1 - maximum softmax probability of logits (B, classes); -inf marks a masked class."""
    z = _as_tensor(logits, "logits", (2,), masked=True)
    return (1.0 - torch.softmax(z.double(), dim=1).max(dim=1).values).numpy()


@SCORES.register("energy")
def energy(logits: Any, temperature: float = 1.0) -> np.ndarray:
    """Energy -T logsumexp(logits / T) of logits (B, classes); T > 0; -inf marks a masked class."""
    if not isinstance(temperature, (int, float)) or isinstance(temperature, bool) or not temperature > 0:
        raise ValueError(f"temperature={temperature!r} must be a number > 0")
    z = _as_tensor(logits, "logits", (2,), masked=True).double()
    return (-temperature * torch.logsumexp(z / temperature, dim=1)).numpy()


@SCORES.register("oos_class")
def oos_class(logits: Any, oos_index: int) -> np.ndarray:
    """p(oos) - max in-scope probability of logits (B, classes) whose column `oos_index` is a learned
    out-of-scope class (softmax over every finite column; -inf marks a masked class). In [-1, 1]:
    above 0 exactly where the out-of-scope class is the most probable."""
    z = _as_tensor(logits, "logits", (2,), masked=True)
    if (not isinstance(oos_index, (int, np.integer)) or isinstance(oos_index, bool)
            or not 0 <= oos_index < z.shape[1]):
        raise ValueError(f"oos_index={oos_index!r} must be a column of the {z.shape[1]} logits")
    if not torch.isfinite(z[:, oos_index]).all():
        raise ValueError(f"the out-of-scope column {oos_index} of the logits is masked (-inf)")
    p = torch.softmax(z.double(), dim=1)
    p_oos = p[:, oos_index].clone()
    p[:, oos_index] = -1.0
    return (p_oos - p.max(dim=1).values).numpy()


# ---------------------------------------------------------------------- DKVB scores
@SCORES.register("key_distance")
@torch.no_grad()
def key_distance(segments: Any, keys: Any, mask: Any = None, block_rows: int = BLOCK_ROWS) -> np.ndarray:
    """Mean L2 distance of each token segment to its nearest key, over valid tokens and codebooks.

    segments: (B, T, C, dk) token segments (the bottleneck's `heads` of token states) or
    (B, C, dk) for one vector per example; keys: (C, K, dk); mask: (B, T), True at real tokens.
    Distances are computed `block_rows` token rows at a time (a (C, rows, K) block).
    """
    x = _as_tensor(segments, "segments", (3, 4))
    k = _as_tensor(keys, "keys", (3,))
    if x.dim() == 3:
        x = x.unsqueeze(1)
        if mask is not None:
            raise ValueError("mask is for token segments (B, T, C, dk); (B, C, dk) has no token axis")
    b, t, c, dk = x.shape
    if tuple(k.shape[::2]) != (c, dk):
        raise ValueError(f"keys of shape {tuple(k.shape)} do not match segments with {c} codebooks of size {dk}")
    m = _check_mask(mask, (b, t))
    if not isinstance(block_rows, int) or block_rows < 1:
        raise ValueError(f"block_rows={block_rows!r} must be an integer >= 1")
    rows = x.reshape(b * t, c, dk)
    keep = torch.ones(b * t, dtype=torch.bool) if m is None else m.reshape(-1)
    k = k.to(rows.dtype)
    key_sq = (k * k).sum(-1).unsqueeze(1)  # (C, 1, K)
    keys_t = k.transpose(1, 2)  # (C, dk, K)
    nearest = torch.zeros(b * t, dtype=torch.float64)
    where = keep.nonzero(as_tuple=True)[0]
    for start in range(0, where.numel(), block_rows):
        idx = where[start : start + block_rows]
        h = rows[idx].transpose(0, 1)  # (C, n, dk)
        d = torch.baddbmm(key_sq, h, keys_t, alpha=-2.0).min(dim=-1).values + (h * h).sum(-1)
        nearest[idx] = d.clamp_min(0).sqrt().mean(dim=0).double()  # mean over codebooks, (n,)
    nearest = nearest.reshape(b, t)
    valid = keep.reshape(b, t).double()
    return ((nearest * valid).sum(1) / valid.sum(1)).numpy()


KEY_EVIDENCE_KINDS = ("log_count", "unseen")


@SCORES.register("key_evidence")
@torch.no_grad()
def key_evidence(indices: Any, counts: Any, num_keys: int | None = None, kind: str = "log_count") -> np.ndarray:
    """How little class evidence the fetched keys carry.

    indices: key indices (B, [T,] C), -1 at padding (the bottleneck's `quantize`); counts: the
    (C*K, classes) count table (`values_rule.counts.counts`), row c*K + k for key k of codebook c;
    num_keys: K (default: rows / C). kind 'log_count': -mean over fetched pairs of
    log(1 + total count); 'unseen': fraction of fetched pairs whose counts are all zero.
    """
    if kind not in KEY_EVIDENCE_KINDS:
        raise ValueError(f"unknown key_evidence kind {kind!r}; accepted: {', '.join(KEY_EVIDENCE_KINDS)}")
    idx = torch.as_tensor(np.asarray(indices) if not isinstance(indices, torch.Tensor) else indices).detach().cpu()
    if idx.dim() not in (2, 3) or idx.numel() == 0:
        raise ValueError(f"indices must be a non-empty (B, C) or (B, T, C) array, got shape {tuple(idx.shape)}")
    if idx.is_floating_point():
        raise ValueError(f"indices must be integers, got {idx.dtype}")
    n = _as_tensor(counts, "counts", (2,)).double()
    if idx.dim() == 2:
        idx = idx.unsqueeze(1)
    b, _, c = idx.shape
    if num_keys is None:
        if n.shape[0] % c:
            raise ValueError(f"counts has {n.shape[0]} rows, not a multiple of the {c} codebooks")
        num_keys = n.shape[0] // c
    if n.shape[0] != c * num_keys:
        raise ValueError(f"counts has {n.shape[0]} rows, but {c} codebooks x {num_keys} keys need {c * num_keys}")
    valid = idx >= 0
    if int(idx.max()) >= num_keys:
        raise ValueError(f"key index {int(idx.max())} out of range for {num_keys} keys")
    if not valid.all(dim=2).any(dim=1).all():
        raise ValueError("every example needs at least one valid token (indices not -1)")
    total = n.sum(1)  # (C*K,)
    rows = idx.clamp_min(0) + torch.arange(c) * num_keys
    evidence = total[rows]  # (B, T, C)
    per = (evidence == 0).double() if kind == "unseen" else -torch.log1p(evidence)
    v = valid.double()
    return ((per * v).sum((1, 2)) / v.sum((1, 2))).numpy()


# ---------------------------------------------------------------------- feature scores
@dataclass
class MahalanobisFit:
    """Class means (classes, D) and the shared precision matrix (D, D) of in-scope features."""

    means: torch.Tensor
    precision: torch.Tensor


def fit_mahalanobis(features: Any, labels: Any, shrinkage: float = 1e-6) -> MahalanobisFit:
    """Class means and shared (tied) covariance of in-scope training features (N, D).

    The covariance gets `shrinkage` x its mean diagonal added before inversion (stability).
    """
    x = _as_tensor(features, "features", (2,)).double()
    y = torch.as_tensor(np.asarray(labels) if not isinstance(labels, torch.Tensor) else labels).detach().cpu()
    if y.dim() != 1 or y.shape[0] != x.shape[0]:
        raise ValueError(f"labels of shape {tuple(y.shape)} do not match {x.shape[0]} features")
    if y.is_floating_point():
        raise ValueError(f"labels must be integer class ids, got {y.dtype}")
    if shrinkage < 0:
        raise ValueError(f"shrinkage={shrinkage!r} must be >= 0")
    classes, inverse = torch.unique(y, return_inverse=True)
    sums = torch.zeros(len(classes), x.shape[1], dtype=x.dtype).index_add_(0, inverse, x)
    means = sums / torch.bincount(inverse, minlength=len(classes)).unsqueeze(1).to(x.dtype)
    centred = x - means[inverse]
    cov = centred.T @ centred / x.shape[0]
    cov += torch.eye(cov.shape[0], dtype=cov.dtype) * (shrinkage * cov.diagonal().mean().clamp_min(1e-12))
    return MahalanobisFit(means=means, precision=torch.linalg.pinv(cov, hermitian=True))


@SCORES.register("mahalanobis")
@torch.no_grad()
def mahalanobis(features: Any, fit: MahalanobisFit, block_rows: int = BLOCK_ROWS) -> np.ndarray:
    """Squared Mahalanobis distance of pooled features (B, D) to the nearest class mean."""
    if not isinstance(fit, MahalanobisFit):
        raise ValueError("fit must be a MahalanobisFit (from fit_mahalanobis on in-scope train features)")
    x = _as_tensor(features, "features", (2,)).double()
    if x.shape[1] != fit.means.shape[1]:
        raise ValueError(f"features of size {x.shape[1]} do not match the fit's {fit.means.shape[1]}")
    p, mu = fit.precision, fit.means
    mu_p = mu @ p  # (classes, D)
    mu_term = (mu_p * mu).sum(1)  # (classes,)
    out = []
    for start in range(0, x.shape[0], block_rows):
        xb = x[start : start + block_rows]
        d = ((xb @ p) * xb).sum(1, keepdim=True) - 2 * xb @ mu_p.T + mu_term
        out.append(d.min(dim=1).values.clamp_min(0))
    return torch.cat(out).numpy()


def knn_bank(features: Any) -> torch.Tensor:
    """The L2-normalised in-scope training features (N, D) that `knn` compares with."""
    x = _as_tensor(features, "features", (2,))
    return torch.nn.functional.normalize(x.float(), dim=1)


@SCORES.register("knn")
@torch.no_grad()
def knn(features: Any, bank: Any, k: int = 10, block_rows: int = BLOCK_ROWS) -> np.ndarray:
    """Distance of each L2-normalised feature (B, D) to its k-th nearest row of `bank` (`knn_bank`)."""
    x = torch.nn.functional.normalize(_as_tensor(features, "features", (2,)).float(), dim=1)
    z = _as_tensor(bank, "bank", (2,)).float()
    if x.shape[1] != z.shape[1]:
        raise ValueError(f"features of size {x.shape[1]} do not match the bank's {z.shape[1]}")
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= z.shape[0]:
        raise ValueError(f"k={k!r} must be an integer from 1 to the bank's {z.shape[0]} rows")
    out = []
    for start in range(0, x.shape[0], block_rows):
        sim = x[start : start + block_rows] @ z.T
        kth = sim.topk(k, dim=1).values[:, -1]
        out.append((2 - 2 * kth.double()).clamp_min(0).sqrt())
    return torch.cat(out).numpy()


def score(name: str, **inputs: Any) -> np.ndarray:
    """Score `name` on the inputs it takes (extra keyword inputs are ignored).

    E.g. score("energy", logits=z, temperature=2.0, features=f) uses logits and temperature.
    """
    fn = SCORES.get(name)
    params = inspect.signature(fn).parameters
    missing = [p for p, spec in params.items() if spec.default is inspect.Parameter.empty and p not in inputs]
    if missing:
        raise ValueError(f"score {name!r} needs {', '.join(missing)}")
    return fn(**{p: v for p, v in inputs.items() if p in params})


# ---------------------------------------------------------------------- metrics
def _pair(scores_in: Any, scores_out: Any) -> tuple[np.ndarray, np.ndarray]:
    return _as_scores(scores_in, "scores_in"), _as_scores(scores_out, "scores_out")


def auroc(scores_in: Any, scores_out: Any) -> float:
    """Area under the ROC curve with OOS positive: P(score_out > score_in), ties count 1/2."""
    a, b = _pair(scores_in, scores_out)
    both = np.concatenate([a, b])
    order = np.argsort(both, kind="mergesort")
    ranks = np.empty(both.size, dtype=np.float64)
    sorted_vals = both[order]
    # Average ranks (1-based) over ties.
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_vals)) + 1]
    ends = np.r_[starts[1:], both.size]
    avg = (starts + ends + 1) / 2.0
    ranks[order] = np.repeat(avg, ends - starts)
    rank_sum_out = ranks[a.size :].sum()
    return float((rank_sum_out - b.size * (b.size + 1) / 2.0) / (a.size * b.size))


def _threshold_at_tpr(a: np.ndarray, tpr: float) -> float:
    """The smallest t with at least a fraction `tpr` of in-scope scores <= t."""
    if not 0 < tpr <= 1:
        raise ValueError(f"tpr={tpr!r} must lie in (0, 1]")
    s = np.sort(a)
    return float(s[max(0, math.ceil(tpr * s.size - 1e-9) - 1)])


def fpr_at_95_tpr(scores_in: Any, scores_out: Any, tpr: float = 0.95) -> float:
    """Fraction of OOS scores accepted (<= t) where t accepts `tpr` of in-scope scores."""
    a, b = _pair(scores_in, scores_out)
    return float(np.mean(b <= _threshold_at_tpr(a, tpr)))


THRESHOLD_RULES = ("youden", "tpr", "accuracy")


def choose_threshold(scores_in_val: Any, scores_out_val: Any = None, rule: str = "youden",
                     tpr: float = 0.95, correct_in_val: Any = None, max_accuracy_drop: float = 0.01) -> float:
    """A rejection threshold t (reject as OOS when score > t) from validation scores.

    rule 'youden' (default): maximise in-scope acceptance rate + OOS rejection rate,
    mean(in <= t) + mean(out > t), over t among the validation scores (ties: the largest such t,
    which rejects fewest in-scope texts); needs `scores_out_val`.
    rule 'tpr': the smallest t that accepts a fraction `tpr` of in-scope validation scores
    (needs no OOS texts; `scores_out_val` is ignored).
    rule 'accuracy': the smallest t (most OOS rejected) at which the in-scope validation accuracy,
    counting a rejected in-scope text as wrong, stays within `max_accuracy_drop` (a fraction) of
    the closed-set validation accuracy; needs `correct_in_val` (per in-scope validation text,
    whether its closed-set prediction is right) and `scores_out_val`.
    """
    if rule not in THRESHOLD_RULES:
        raise ValueError(f"unknown threshold rule {rule!r}; accepted: {', '.join(THRESHOLD_RULES)}")
    a = _as_scores(scores_in_val, "scores_in_val")
    if rule == "tpr":
        return _threshold_at_tpr(a, tpr)
    if scores_out_val is None:
        raise ValueError(f"rule {rule!r} needs scores_out_val (OOS validation scores); or use rule='tpr'")
    b = _as_scores(scores_out_val, "scores_out_val")
    if rule == "accuracy":
        return _threshold_in_accuracy_budget(a, b, correct_in_val, max_accuracy_drop)
    cand = np.unique(np.concatenate([a, b]))
    accept_in = np.searchsorted(np.sort(a), cand, side="right") / a.size
    reject_out = 1.0 - np.searchsorted(np.sort(b), cand, side="right") / b.size
    j = accept_in + reject_out
    best = np.flatnonzero(j >= j.max() - 1e-12)[-1]
    return float(cand[best])


def _threshold_in_accuracy_budget(a: np.ndarray, b: np.ndarray, correct_in_val, max_drop: float) -> float:
    if correct_in_val is None:
        raise ValueError("rule 'accuracy' needs correct_in_val (whether each in-scope validation prediction is right)")
    c = np.asarray(correct_in_val, dtype=bool)
    if c.shape != a.shape:
        raise ValueError(f"correct_in_val of shape {c.shape} does not match {a.size} in-scope validation scores")
    if not (isinstance(max_drop, (int, float)) and 0 <= max_drop < 1):
        raise ValueError(f"max_accuracy_drop={max_drop!r} must be a fraction in [0, 1)")
    cand = np.unique(np.concatenate([a, b]))  # ascending: smaller t rejects more
    order = np.argsort(a, kind="stable")
    right_sorted = np.cumsum(c[order])  # right answers among the k smallest in-scope scores
    accepted = np.searchsorted(a[order], cand, side="right")
    accuracy = np.where(accepted > 0, right_sorted[np.maximum(accepted - 1, 0)], 0) / a.size
    ok = np.flatnonzero(accuracy >= c.mean() - max_drop - 1e-12)
    return float(cand[ok[0]]) if ok.size else float(cand[-1])


def oos_metrics(scores_in: Any, scores_out: Any, threshold: float, correct_in: Any = None) -> dict:
    """AUROC, FPR@95TPR, OOS recall (out > t) and in-scope acceptance / accuracy at `threshold`.

    `correct_in`: per in-scope example, whether the closed-set prediction is right; in-scope
    accuracy then counts a rejected in-scope text as wrong.
    """
    a, b = _pair(scores_in, scores_out)
    out = {"auroc": auroc(a, b), "fpr_at_95_tpr": fpr_at_95_tpr(a, b), "threshold": float(threshold),
           "oos_recall": float(np.mean(b > threshold)), "in_scope_accepted": float(np.mean(a <= threshold))}
    if correct_in is not None:
        c = np.asarray(correct_in, dtype=bool)
        if c.shape != a.shape:
            raise ValueError(f"correct_in of shape {c.shape} does not match {a.size} in-scope scores")
        out["in_scope_accuracy"] = float(np.mean(c & (a <= threshold)))
    return out
