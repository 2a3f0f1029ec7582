"""dkvb-nlp: continual-learning text classifiers with a Discrete Key-Value Bottleneck."""

from .bottleneck import KeyValueBottleneck

__version__ = "0.1.0"
__all__ = ["KeyValueBottleneck", "__version__"]
