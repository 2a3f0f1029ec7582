"""Text datasets and continual-learning scenarios.

>>> from dkvb_nlp.data import build_scenario, load_text_dataset
>>> clinc = load_text_dataset("clinc150")                  # packaged; no data folder needed
>>> stream = build_scenario("class_il", dataset="clinc150", max_train_per_class=5)
>>> len(stream), stream.num_heads, stream.classes_per_head
(15, 1, (150,))
"""

from .catalog import DATA_DIR_ENV, DATASETS, SOURCES, DatasetSpec, data_roots, dataset_names, load_text_dataset
from .local import FILE_FORMATS, load_local_folder
from .packaged import packaged_path
from .scenarios import SCENARIOS, build_scenario, class_il, dataset_options, domain_il, scenario_options, task_type_il
from .schema import LABEL_ID, label_names, normalize_text_dataset
from .splits import resolve_splits
from .stream import Task, TaskStream, validate_stream
from .stream_il import stream_il  # registers the 'stream_il' scenario

__all__ = ["DATASETS", "DATA_DIR_ENV", "DatasetSpec", "FILE_FORMATS", "LABEL_ID", "SCENARIOS", "SOURCES", "Task",
           "TaskStream", "build_scenario", "class_il", "data_roots", "dataset_options", "dataset_names", "domain_il", "label_names",
           "load_local_folder", "load_text_dataset", "normalize_text_dataset", "packaged_path", "resolve_splits",
           "scenario_options", "stream_il", "task_type_il", "validate_stream"]
