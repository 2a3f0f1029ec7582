"""dkvb-nlp: continual-learning text classifiers with a Discrete Key-Value Bottleneck."""

from .bottleneck import KeyValueBottleneck, TaskHead, ValueSGD
from .modeling import DKVBConfig, DKVBForSequenceClassification

__version__ = "0.1.0"
__all__ = ["DKVBConfig", "DKVBForSequenceClassification", "KeyValueBottleneck", "TaskHead", "ValueSGD",
           "__version__"]
