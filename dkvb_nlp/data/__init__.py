"""Text datasets: named (packaged, local or hub) or any folder of split files, in one column layout."""

from .catalog import DATA_DIR_ENV, DATASETS, SOURCES, DatasetSpec, data_roots, dataset_names, load_text_dataset
from .local import FILE_FORMATS, load_local_folder
from .packaged import packaged_path
from .schema import LABEL_ID, label_names, normalize_text_dataset

__all__ = ["DATASETS", "DATA_DIR_ENV", "DatasetSpec", "FILE_FORMATS", "LABEL_ID", "SOURCES", "data_roots",
           "dataset_names", "label_names", "load_local_folder", "load_text_dataset", "normalize_text_dataset",
           "packaged_path"]
