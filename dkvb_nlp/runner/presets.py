"""Presets: the YAML files of the repository's `configs/`, installed as `dkvb_nlp.presets`.

`--config class_il` finds the packaged preset `class_il.yaml`; `--config path/to/file.yaml`
reads that file. A name that is neither gets an error listing the presets.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def preset_names() -> list[str]:
    """The packaged presets' names (file names without .yaml), sorted."""
    folder = resources.files("dkvb_nlp.presets")
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def resolve_preset(spec: str | Path) -> Path:
    """The YAML file a `--config` value means: an existing path, else a packaged preset's name."""
    path = Path(spec)
    if path.is_file():
        return path
    name = path.name[:-5] if path.name.endswith(".yaml") else path.name
    if str(path.parent) in ("", ".") and name in preset_names():
        with resources.as_file(resources.files("dkvb_nlp.presets") / f"{name}.yaml") as found:
            return Path(found)
    if path.suffix in (".yaml", ".yml") or len(path.parts) > 1:
        raise ValueError(f"--config {str(spec)!r}: no such file (and no preset of that name); presets: "
                         f"{', '.join(preset_names())}")
    raise ValueError(f"--config {str(spec)!r}: unknown preset; accepted: {', '.join(preset_names())} "
                     "(or a path to a YAML file)")
