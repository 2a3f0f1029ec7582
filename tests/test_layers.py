"""The import drawing: each part of dkvb_nlp imports only parts on its own floor or below.

    dkvb_nlp/__init__.py, __main__.py     the package's face
    runner, vision        the main job and the image side
    report                tables, CSVs, plots of results.json
    strategies            the methods (DKVB exports through modeling)
    modeling              the Hugging Face model
    engine                context, feature cache, loop, checkpoints
    bottleneck, encoders, data, open_world (out-of-scope scores: arrays in, scores out)
    registry, io, faults, metrics, results, progress      (neutral)

Every import counts, also those inside functions; a part may import itself.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FLOORS = [
    {"registry", "io", "faults", "metrics", "results", "progress"},
    {"bottleneck", "encoders", "data", "open_world"},
    {"engine"},
    {"modeling"},
    {"strategies"},
    {"report"},
    {"runner", "vision"},
    {"__init__", "__main__"},  # the package's face: `import dkvb_nlp` registers the model type
]
FLOOR = {part: level for level, parts in enumerate(FLOORS) for part in parts}


def part_of(path: Path) -> str:
    if path.is_relative_to(ROOT / "vision"):
        return "vision"
    rel = path.relative_to(ROOT / "dkvb_nlp")
    return rel.parts[0].removesuffix(".py")


def imported_parts(path: Path, part: str, source: str | None = None) -> set[str]:
    """The dkvb_nlp parts a file imports (absolute `dkvb_nlp.x` or relative)."""
    tree = ast.parse(path.read_text(encoding="utf-8") if source is None else source)
    package = ["dkvb_nlp", "vision"] if part == "vision" else ["dkvb_nlp", *path.relative_to(ROOT / "dkvb_nlp").parent.parts]
    found = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                names = [".".join(base + ([node.module] if node.module else []))]
                if not node.module:
                    names = [".".join(base + [a.name]) for a in node.names]
            elif node.module:
                names = [node.module]
        for name in names:
            bits = name.split(".")
            if bits[0] == "dkvb_nlp" and len(bits) > 1:
                found.add("vision" if bits[1] == "vision" else bits[1])
            elif bits[0] == "dkvb_nlp":
                found.add("__init__")
    return found - {part}


def test_no_import_runs_up_a_floor():
    files = [*sorted((ROOT / "dkvb_nlp").rglob("*.py")), *sorted((ROOT / "vision").rglob("*.py"))]
    upward = []
    for path in files:
        part = part_of(path)
        assert part in FLOOR, f"{path.relative_to(ROOT)}: part {part!r} has no floor in this test's drawing"
        for other in imported_parts(path, part):
            if FLOOR.get(other, 0) > FLOOR[part]:
                upward.append(f"{path.relative_to(ROOT)} ({part}) imports {other}")
    assert upward == []


def test_the_drawing_sees_relative_absolute_and_function_level_imports():
    loop = ROOT / "dkvb_nlp" / "engine" / "loop.py"
    source = "from ..report import make_run\ndef f():\n    import dkvb_nlp.strategies.nmc\n    from . import context\n"
    assert imported_parts(loop, "engine", source) == {"report", "strategies"}
