"""An MLP head (one hidden layer of 128 ReLU units) on frozen pooled features, trained sequentially."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from .feature_head import FeatureHeadStrategy, HeadOptions


@dataclasses.dataclass
class MLPOptions(HeadOptions):
    """Training of the MLP head (Adam; defaults tuned on CLINC150 class_il validation)."""

    method: ClassVar[str] = "mlp"


class MLPStrategy(FeatureHeadStrategy):
    """Linear(D, 128) + ReLU + Linear(128, classes) on frozen pooled features, task after task."""

    name = "mlp"
    Options = MLPOptions
    hidden = 128
