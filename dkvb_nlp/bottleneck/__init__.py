"""The bottleneck core shared by text and vision: splitters, key init, search, values, decoders."""

from .decoders import DECODERS
from .key_init import KEY_INITS, EMAKMeans
from .module import PAD, KeyValueBottleneck
from .pooling import POOLINGS, masked_mean
from .search import SEARCHES, resolve_search
from .splitters import SPLITTERS
from .task_head import TaskHead
from .ridge_readout import RidgeReadout, pooled_keys
from .value_counts import CountValues
from .value_rules import LOSS_CLASSES, VALUE_RULES, OrderFreeValues, attach_values_rule, back_logits
from .value_sgd import ValueSGD

__all__ = [
    "DECODERS", "KEY_INITS", "EMAKMeans", "PAD", "KeyValueBottleneck", "POOLINGS", "masked_mean",
    "SEARCHES", "resolve_search", "SPLITTERS", "TaskHead", "ValueSGD", "CountValues", "RidgeReadout",
    "pooled_keys", "LOSS_CLASSES", "VALUE_RULES", "OrderFreeValues", "attach_values_rule", "back_logits",
]
