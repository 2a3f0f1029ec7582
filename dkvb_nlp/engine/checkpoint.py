"""Per-task checkpoints of one (method, seed) run: restore exactly, never half-written.

A checkpoint is `state.safetensors` (tensors only: no pickle) and `progress.json` (the rows of
the accuracy matrix so far, timings, the strategy's metadata). Both are written atomically and
progress.json last, so after a kill the folder describes the last *complete* task.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..faults import crash_point
from ..io import atomic_write, atomic_write_json


class Checkpoint:
    """The checkpoint folder of one run (`<output>/checkpoints/<method>/seed<k>`)."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)

    @property
    def progress_path(self) -> Path:
        return self.folder / "progress.json"

    def save(self, tensors: dict[str, torch.Tensor], progress: dict) -> None:
        """Write the strategy's tensors, then the progress that points at them."""
        from safetensors.torch import save

        self.folder.mkdir(parents=True, exist_ok=True)
        name = f"state_task{progress['completed_tasks'] - 1}.safetensors"
        blob = save({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, metadata={"format": "pt"})
        atomic_write(self.folder / name, lambda f: f.write(blob))
        crash_point("checkpoint.state_written")
        atomic_write_json(self.progress_path, {**progress, "state_file": name})
        for old in self.folder.glob("state_task*.safetensors"):  # keep only the newest state
            if old.name != name:
                old.unlink(missing_ok=True)

    def load(self) -> tuple[dict[str, torch.Tensor], dict] | None:
        """(tensors, progress) of the last complete task, or None if there is none."""
        from safetensors.torch import load_file

        if not self.progress_path.is_file():
            return None
        progress = json.loads(self.progress_path.read_text())
        tensors = load_file(str(self.folder / progress["state_file"]))
        return tensors, progress
