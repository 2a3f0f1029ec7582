"""The process group of a run: one process, or several under `accelerate launch`."""

from __future__ import annotations

import torch


def process_state():
    """The shared `accelerate.PartialState`.

    Without GPUs, accelerate forms a multi-process CPU group (gloo) only when asked with
    `cpu=True`; otherwise every process launched by `accelerate launch --multi_gpu
    --num_processes 2` would believe it is alone and all of them would do all the work.
    """
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())
