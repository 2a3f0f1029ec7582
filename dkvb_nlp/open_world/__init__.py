"""Open world: out-of-scope scores over a DKVB model's outputs, their metrics and thresholds."""

from .scores import (
    SCORES,
    MahalanobisFit,
    auroc,
    choose_threshold,
    energy,
    fit_mahalanobis,
    fpr_at_95_tpr,
    key_distance,
    key_evidence,
    knn,
    knn_bank,
    mahalanobis,
    msp,
    oos_class,
    oos_metrics,
    score,
)

__all__ = ["SCORES", "MahalanobisFit", "auroc", "choose_threshold", "energy", "fit_mahalanobis", "fpr_at_95_tpr",
           "key_distance", "key_evidence", "knn", "knn_bank", "mahalanobis", "msp", "oos_class",
           "oos_metrics", "score"]
