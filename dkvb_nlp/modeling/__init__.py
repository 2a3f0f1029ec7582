"""The Hugging Face face of DKVB: `DKVBConfig` and `DKVBForSequenceClassification`."""

from .auto import register_auto_classes
from .configuration_dkvb import DKVBConfig
from .modeling_dkvb import DKVBForSequenceClassification, DKVBPreTrainedModel

__all__ = ["DKVBConfig", "DKVBForSequenceClassification", "DKVBPreTrainedModel", "register_auto_classes"]
