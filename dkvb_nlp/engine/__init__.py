"""Training and evaluation engine; re-exports the continual-learning metrics of `dkvb_nlp.metrics`."""

from ..metrics import (
    SUMMARY_FIELDS,
    accuracy,
    average_incremental_accuracy,
    bwt,
    check_accuracy_matrix,
    final_accuracy,
    forgetting,
    forward_transfer,
    macro_f1,
    summarize,
    unmeasured_rows,
)

__all__ = [
    "SUMMARY_FIELDS",
    "accuracy",
    "average_incremental_accuracy",
    "bwt",
    "check_accuracy_matrix",
    "final_accuracy",
    "forgetting",
    "forward_transfer",
    "macro_f1",
    "summarize",
    "unmeasured_rows",
]
