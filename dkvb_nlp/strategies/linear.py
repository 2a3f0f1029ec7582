"""Linear probe trained sequentially on the frozen encoder's pooled features.

The frozen-feature analogue of sequential fine-tuning: a linear head (Adam, a few epochs per
task, the loss over the classes seen so far), no replay and no regularisation, so in
class-incremental streams the newest classes take over the head.
"""

from __future__ import annotations

from .feature_head import FeatureHeadStrategy, HeadOptions


class LinearProbeStrategy(FeatureHeadStrategy):
    """A linear head on frozen pooled features, trained on each task in turn."""

    name = "linear"
    Options = HeadOptions
