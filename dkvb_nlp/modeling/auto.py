"""Register DKVB with the transformers Auto classes (AutoConfig, AutoModelForSequenceClassification)."""

from __future__ import annotations

from transformers import AutoConfig, AutoModelForSequenceClassification

from .configuration_dkvb import DKVBConfig
from .modeling_dkvb import DKVBForSequenceClassification


def register_auto_classes() -> None:
    """Make `model_type: dkvb` loadable through the Auto classes (safe to call twice)."""
    try:
        AutoConfig.register(DKVBConfig.model_type, DKVBConfig)
    except ValueError:  # already registered
        pass
    try:
        AutoModelForSequenceClassification.register(DKVBConfig, DKVBForSequenceClassification)
    except ValueError:
        pass


register_auto_classes()
