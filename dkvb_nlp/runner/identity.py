"""A run's identity: every setting that changes results, and what the data was, stored with the run.

`--resume` continues a run only with the settings it was started with. The identity is a flat
mapping `{key: value}` of every result-relevant setting, resolved to its value (a default given
explicitly equals the default left out):

    scenario, encoder, max_length, autocast       the run's own fields (RunConfig)
    encoder_weights                               sha256 of the encoder's weights and config
    scenario_options.<option>                     every option of the scenario builder, resolved
    <method>.<option>                             every option of every method run, resolved

plus one data fingerprint per seed (sha256 of each task's texts, pairs and labels, in order).
Options whose field metadata marks them `RESULT_FREE` (progress bars, encode batch size,
cache and output folders, ...) are left out, so they may change between a run and its resume.

It is written to `<output-dir>/run_identity.json` before anything is trained. On `--resume` the
stored identity is compared with the new one: any difference is refused with one line naming
each differing key (`dkvb.lr: 1.0 -> 0.001`). Methods and seeds are the runs to do, not a
setting: a resume may add or leave out methods and seeds; the options of a method (and the data
of a seed) are compared wherever both identities have them, and the stored identity grows by
the new ones.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ..io import atomic_write_json
from .config import RESULT_FREE, RunConfig

IDENTITY_FILE = "run_identity.json"
VERSION = 1

# RunConfig fields that are not settings of their own in the identity: the runs to do (methods,
# seeds), and what is folded into the resolved scenario options (dataset, max_train_per_class)
# or the per-method options.
_NOT_SETTINGS = {"methods", "seeds", "dataset", "max_train_per_class", "scenario_options", "method_options"}


def result_relevant(options) -> dict[str, Any]:
    """{field: value} of a dataclass instance, without the fields marked RESULT_FREE."""
    return {f.name: getattr(options, f.name) for f in dataclasses.fields(options)
            if not f.metadata.get(RESULT_FREE, False)}


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))  # tuples -> lists, as they come back from the file


def resolved_scenario_options(scenario: str, given: Mapping[str, Any]) -> dict[str, Any]:
    """Every option of the scenario builder (but the seed): its default, overridden by `given`."""
    from ..data import SCENARIOS

    params = inspect.signature(SCENARIOS.get(scenario)).parameters
    out = {name: (p.default if p.default is not inspect.Parameter.empty else None)
           for name, p in params.items() if name != "seed"}
    out.update({k: v for k, v in given.items() if k != "seed"})
    return out


def settings(cfg: RunConfig, scenario_kwargs: Mapping[str, Any], encoder_key: str | None = None) -> dict[str, Any]:
    """The flat result-relevant settings of `cfg` (see the module docstring).

    `scenario_kwargs`: the keyword arguments the run passes to the scenario builder (dataset,
    caps and the scenario options, any seed), so the identity describes what is really built.
    """
    from ..strategies import STRATEGIES
    from ..strategies.base import build_options

    out: dict[str, Any] = {k: v for k, v in result_relevant(cfg).items() if k not in _NOT_SETTINGS}
    if encoder_key is not None:
        out["encoder_weights"] = encoder_key
    for name, value in resolved_scenario_options(cfg.scenario, scenario_kwargs).items():
        out[f"scenario_options.{name}"] = value
    for method in cfg.methods:
        opts = build_options(STRATEGIES.get(method).Options, cfg.method_options.get(method), method)
        for name, value in result_relevant(opts).items():
            out[f"{method}.{name}"] = value
    return _jsonable(out)


def stream_fingerprint(stream) -> str:
    """sha256 of a task stream's data: per task its name, head and labels, each split's texts, pairs and labels."""
    from ..data import LABEL_ID
    from ..data.schema import TEXT, TEXT_PAIR, column_array

    h = hashlib.sha256(json.dumps({"scenario": stream.scenario, "heads": [list(x) for x in stream.heads],
                                   "task_id_at_test": stream.task_id_at_test}).encode())
    for task in stream:
        h.update(json.dumps([task.name, task.head, list(task.label_names)]).encode())
        for split, ds in sorted(task.splits().items()):
            h.update(f"|{split}:{len(ds)}|".encode())
            for column in (TEXT, TEXT_PAIR):
                if column in ds.column_names:
                    for text in column_array(ds, column):
                        h.update(str(text).encode("utf-8"))
                        h.update(b"\x00")
                h.update(b"\x01")
            h.update(np.asarray(column_array(ds, LABEL_ID), dtype=np.int64).tobytes())
    return h.hexdigest()


def make_identity(cfg: RunConfig, scenario_kwargs: Mapping[str, Any], encoder_key: str | None,
                  data: Mapping[int, str]) -> dict:
    """The identity record of a run: settings, methods, seeds and each seed's data fingerprint."""
    return {"version": VERSION, "methods": list(cfg.methods), "seeds": list(cfg.seeds),
            "settings": settings(cfg, scenario_kwargs, encoder_key),
            "data": {f"seed{s}": fp for s, fp in data.items()}}


def differences(old: Mapping, new: Mapping) -> list[str]:
    """'key: old -> new' for every result-relevant difference between two identities."""
    shared = set(old.get("methods", [])) & set(new.get("methods", []))
    every = set(old.get("methods", [])) | set(new.get("methods", []))
    out = []
    a, b = old.get("settings", {}), new.get("settings", {})
    missing = "(not recorded)"
    for key in sorted(set(a) | set(b)):
        method = key.split(".", 1)[0] if not key.startswith("scenario_options.") and "." in key else None
        if method is not None and method in every and method not in shared:
            continue  # a method only one of the two runs has: nothing to compare
        va, vb = a.get(key, missing), b.get(key, missing)
        if va != vb and key == "encoder_weights":
            out.append(f"encoder_weights: {str(va)[:12]} -> {str(vb)[:12]} (other encoder weights or config)")
        elif va != vb:
            out.append(f"{key}: {_show(va)} -> {_show(vb)}")
    da, db = old.get("data", {}), new.get("data", {})
    for seed in sorted(set(da) & set(db)):
        if da[seed] != db[seed]:
            out.append(f"data ({seed}): fingerprint {da[seed][:12]} -> {db[seed][:12]} (other texts or labels)")
    return out


def _show(value: Any) -> str:
    text = value if value == "(not recorded)" else json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


def merged(old: Mapping, new: Mapping) -> dict:
    """The stored identity after a matching resume: old's methods, seeds and data plus the new ones."""
    return {"version": VERSION,
            "methods": list(dict.fromkeys([*old.get("methods", []), *new["methods"]])),
            "seeds": list(dict.fromkeys([*old.get("seeds", []), *new["seeds"]])),
            "settings": {**old.get("settings", {}), **new["settings"]},
            "data": {**old.get("data", {}), **new["data"]}}


def read_identity(folder: str | Path) -> dict | None:
    """The identity stored in `folder`, None if there is none; a ValueError naming the file if unreadable."""
    path = Path(folder) / IDENTITY_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path} is damaged ({err}); start over with --overwrite or choose another --output-dir") \
            from None
    if not isinstance(data, dict) or not isinstance(data.get("settings"), dict):
        raise ValueError(f"{path} is not a run identity; start over with --overwrite or choose another --output-dir")
    return data


def write_identity(folder: str | Path, identity: Mapping) -> Path:
    """Store `identity` in `folder` (atomically)."""
    return atomic_write_json(Path(folder) / IDENTITY_FILE, dict(identity))


def check_resume(folder: str | Path, new: Mapping) -> dict:
    """The identity to store for a resume of the run in `folder` with identity `new`.

    Raises a ValueError (one line) naming each differing key when the stored run was made with
    other result-relevant settings or data, or when the folder holds a run without an identity.
    """
    folder = Path(folder)
    old = read_identity(folder)
    if old is None:
        raise ValueError(f"--resume: {folder} holds a run without {IDENTITY_FILE} (written by an older version), so "
                         "its settings cannot be checked; start over with --overwrite or choose another --output-dir")
    if old.get("version") != VERSION:
        raise ValueError(f"--resume: {folder / IDENTITY_FILE} has version {old.get('version')!r}, this code writes "
                         f"{VERSION}; start over with --overwrite or choose another --output-dir")
    diff = differences(old, new)
    if diff:
        raise ValueError(f"--resume: the run in {folder} was made with other settings: {'; '.join(diff)}. Resume "
                         "with the same settings, start over with --overwrite, or choose another --output-dir")
    return merged(old, new)
