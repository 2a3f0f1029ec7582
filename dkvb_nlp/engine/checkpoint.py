"""Per-task checkpoints of one (method, seed) run: restore exactly, never half-written, never damaged.

After task t a checkpoint is `state_task<t>.safetensors` (tensors only: no pickle) and
`progress_task<t>.json` (the rows of the accuracy matrix so far, timings, the strategy's
metadata, the state file's name and its sha256), then `progress.json`, a copy of the newest
progress that `--resume` starts from. Every file is written atomically and the progress last,
so after a kill the folder describes the last *complete* task. The two newest tasks' files are
kept: when the newest state is damaged (its sha256 differs, it is truncated, or it holds a
non-finite value) the previous task's checkpoint is used instead, saying so; with no good
checkpoint left, loading fails with a `CheckpointError` naming the file.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Callable

import torch

from ..faults import crash_point
from ..io import atomic_write, atomic_write_json
from .fingerprint import file_sha256

logger = logging.getLogger(__name__)

KEEP = 2  # tasks whose checkpoints are kept: the newest and the one to fall back to


class CheckpointError(ValueError):
    """A checkpoint that cannot be trusted (damaged, truncated, or not this run's)."""


def read_tensors(path: Path, where: str, error: type[ValueError] = ValueError, hint: str = "") -> dict[str, torch.Tensor]:
    """The tensors of the safetensors file `path`; `error` ("<where> cannot be read (...)" or
    "<where>: tensor 'x' holds NaN or infinite values<hint>") when it is unreadable or not finite.
    Shared by checkpoints and saved models."""
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(path))
    except Exception as err:  # safetensors raises its own SafetensorError
        raise error(f"{where} cannot be read ({type(err).__name__}: {' '.join(str(err).split())})") from None
    for name, t in tensors.items():
        if (t.is_floating_point() or t.is_complex()) and not bool(torch.isfinite(t).all()):
            raise error(f"{where}: tensor {name!r} holds NaN or infinite values{hint}")
    return tensors


class Checkpoint:
    """The checkpoint folder of one run (`<output>/checkpoints/<method>/seed<k>`)."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)

    @property
    def progress_path(self) -> Path:
        return self.folder / "progress.json"

    def save(self, tensors: dict[str, torch.Tensor], progress: dict) -> None:
        """Write the strategy's tensors, then the progress that points at them (with their sha256)."""
        from safetensors.torch import save

        self.folder.mkdir(parents=True, exist_ok=True)
        task = progress["completed_tasks"] - 1
        name = f"state_task{task}.safetensors"
        blob = save({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, metadata={"format": "pt"})
        atomic_write(self.folder / name, lambda f: f.write(blob))
        crash_point("checkpoint.state_written")
        record = {**progress, "state_file": name, "state_sha256": file_sha256(self.folder / name)}
        atomic_write_json(self.folder / f"progress_task{task}.json", record)
        atomic_write_json(self.progress_path, record)
        for old in self.folder.glob("*_task*.*"):  # keep the newest KEEP tasks
            number = _task_number(old.name)
            if number is not None and number <= task - KEEP:
                old.unlink(missing_ok=True)

    def load(self, log: Callable[[str], None] | None = None) -> tuple[dict[str, torch.Tensor], dict] | None:
        """(tensors, progress) of the newest good checkpoint, or None if the folder holds none.

        A damaged newest checkpoint falls back to the previous task's (reported through `log`,
        or the logger); CheckpointError when checkpoints exist but none is good.
        """
        candidates = [self.progress_path] if self.progress_path.is_file() else []
        candidates += sorted(self.folder.glob("progress_task*.json"), key=lambda p: -(_task_number(p.name) or 0))
        if not candidates:
            return None
        problems: list[str] = []
        for path in candidates:
            try:
                tensors, progress = self._load_one(path)
            except CheckpointError as err:
                problems.append(str(err))
                continue
            if problems:
                message = (f"{problems[0]}; falling back to the checkpoint after task {progress['completed_tasks']} "
                           f"({self.folder / progress['state_file']})")
                (log or logger.warning)(message)
            return tensors, progress
        raise CheckpointError(f"{problems[0]}; no earlier good checkpoint in {self.folder}: start over with "
                              "--overwrite (or delete that folder to redo this method and seed)")

    def _load_one(self, progress_path: Path) -> tuple[dict[str, torch.Tensor], dict]:
        try:
            progress = json.loads(progress_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise CheckpointError(f"checkpoint progress {progress_path} is damaged "
                                  f"({' '.join(str(err).split())})") from None
        if not isinstance(progress, dict) or not {"state_file", "completed_tasks"} <= set(progress):
            raise CheckpointError(f"checkpoint progress {progress_path} is not a checkpoint record")
        state = self.folder / str(progress["state_file"])
        if "state_sha256" not in progress:
            raise CheckpointError(f"checkpoint {state} carries no sha256 (written by an older version)")
        if not state.is_file():
            raise CheckpointError(f"checkpoint {state} is missing")
        if file_sha256(state) != progress["state_sha256"]:
            raise CheckpointError(f"checkpoint {state} does not match its sha256 (damaged or truncated)")
        return read_tensors(state, f"checkpoint {state}", CheckpointError), progress


def _task_number(name: str) -> int | None:
    match = re.search(r"_task(\d+)\.", name)
    return int(match.group(1)) if match else None
