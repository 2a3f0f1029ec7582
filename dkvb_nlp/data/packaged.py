"""Datasets shipped inside the package (package-data), readable with no network and no data folder."""

from __future__ import annotations

from pathlib import Path

PACKAGED_DIR = Path(__file__).resolve().parent / "packaged"


def packaged_names() -> list[str]:
    """Names of the datasets shipped with the package."""
    return sorted(p.name for p in PACKAGED_DIR.iterdir() if p.is_dir()) if PACKAGED_DIR.is_dir() else []


def packaged_path(name: str) -> Path:
    """The folder of the packaged dataset `name` (split files plus LICENSE and ATTRIBUTION.md)."""
    path = PACKAGED_DIR / name
    if not path.is_dir():
        raise ValueError(f"no packaged dataset {name!r}; packaged: {', '.join(packaged_names()) or 'none'}")
    return path
