"""Out-of-scope rejection for `DKVBForSequenceClassification`: its scores and the `oos` column.

A model whose config has an `oos_threshold` labels an input `config.oos_label` when the input's
score (`config.oos_score`, higher = more likely out of scope) is above the threshold. The scores
here are the ones the model computes from its own outputs, with nothing stored beyond what it
learns anyway (the feature-bank scores of `dkvb_nlp.open_world`, Mahalanobis and kNN, would keep
training features: they stay in the benchmark):

    msp           1 - max softmax probability of the closed-set logits
    energy        -logsumexp of the closed-set logits
    key_distance  mean distance of the token segments to their nearest keys (needs the states)
    key_evidence  -mean log(1 + training count) of the fetched keys (needs a rule with counts)

The rejection is an extra last logit column, so `pipeline("text-classification")` and the
`Trainer` see an ordinary classifier whose last label is `oos`: an accepted input keeps its
closed-set logits exactly (its `oos` column is -inf, probability 0); a rejected one gets 0 in the
`oos` column and -inf elsewhere (probability 1 for `oos`). `forward(..., reject_oos=False)` and
`model.oos_scores(texts)` give the raw logits and scores.
"""

from __future__ import annotations

import numpy as np
import torch

from ..open_world import scores as S
from .configuration_dkvb import MODEL_OOS_SCORES

NEEDS_STATES = ("key_distance",)


def _counts(model):
    return getattr(getattr(model.bottleneck.values_rule, "counts", None), "counts", None)


def check_score_available(model, name: str) -> None:
    """Fail early, with the reason, where this model cannot compute score `name`."""
    if name == "key_evidence" and _counts(model) is None:
        raise ValueError(f"oos_score 'key_evidence' needs count statistics: config.values={model.config.values!r} "
                         "keeps none; use 'counts' or 'counts+ridge', or another score")


def model_scores(model, name: str, logits: torch.Tensor, indices: torch.Tensor,
                 states: torch.Tensor | None = None, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Score `name` (one per example, float64) from a batch's closed-set logits, key indices and,
    for 'key_distance', its token states (B, T, D) and mask (B, T); dispatched by
    `open_world.score`, which hands each registered score the inputs it takes."""
    if name not in MODEL_OOS_SCORES:
        raise ValueError(f"unknown oos_score {name!r}; accepted: {', '.join(MODEL_OOS_SCORES)}")
    check_score_available(model, name)
    bn = model.bottleneck
    inputs = {"logits": logits.detach().float(), "indices": indices.cpu(), "counts": _counts(model),
              "num_keys": bn.num_keys}
    if name in NEEDS_STATES:
        if states is None:
            raise ValueError(f"oos_score {name!r} needs the token states: call the model with input_ids, "
                             "not precomputed indices=")
        b, t, d = states.shape
        inputs.update(segments=bn.heads(states.reshape(b * t, d).float()).reshape(b, t, bn.num_codebooks, -1),
                      keys=bn.keys.float(), mask=mask)
    return torch.as_tensor(np.asarray(S.score(name, **inputs)), dtype=torch.float64)


def with_rejection(logits: torch.Tensor, scores: torch.Tensor, threshold: float) -> torch.Tensor:
    """Logits (B, n) -> (B, n + 1): rows whose score is > threshold become certain `oos` (last column)."""
    rejected = (scores.to(logits.device) > threshold).unsqueeze(1)
    minus_inf = torch.tensor(float("-inf"), dtype=logits.dtype, device=logits.device)
    closed = torch.where(rejected, minus_inf, logits)
    oos = torch.where(rejected, torch.zeros((), dtype=logits.dtype, device=logits.device), minus_inf)
    return torch.cat([closed, oos], dim=1)
