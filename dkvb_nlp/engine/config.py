"""The main job's configuration: YAML presets, overridden by command-line flags, checked early.

    scenario: class_il            # class_il | domain_il | task_type_il
    dataset: clinc150             # a name, or a folder of <split>.jsonl.gz / .jsonl / .csv / .parquet
    methods: [dkvb, finetune]
    seeds: [0]
    encoder: sentence-transformers/all-MiniLM-L6-v2
    scenario_options: {classes_per_task: 10, max_train_per_class: null}
    dkvb: {epochs: 10, lr: 1.0}   # one mapping per method: its options (see each strategy)

Unknown keys, and unknown options of a method, are errors that list the accepted ones.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Mapping

from ..encoders.resolve import DEFAULT_ENCODER


@dataclasses.dataclass
class RunConfig:
    """Everything `benchmarks/run.py` needs; each field has a documented default."""

    scenario: str = "class_il"
    dataset: str | None = None  # None: the scenario's default (class_il: clinc150, domain_il: dsc, ...)
    methods: list[str] = dataclasses.field(default_factory=lambda: ["dkvb", "finetune"])
    seeds: list[int] = dataclasses.field(default_factory=lambda: [0])
    encoder: str = DEFAULT_ENCODER
    max_length: int = 128  # tokens per text
    autocast: str = "auto"  # encoder precision: auto (bf16 where native), bf16, off
    encode_batch_size: int = 64
    output_dir: str = "runs/latest"
    cache_dir: str | None = None  # feature cache; default $DKVB_CACHE_DIR or ~/.cache/dkvb_nlp
    resume: bool = False
    progress: bool = True
    max_train_per_class: int | None = None  # cap training examples per class per task (quick runs)
    scenario_options: dict = dataclasses.field(default_factory=dict)  # passed to the scenario builder
    method_options: dict = dataclasses.field(default_factory=dict)  # {method: {option: value}}

    def check(self) -> "RunConfig":
        """Validate names and values now, before anything expensive runs."""
        from ..data import SCENARIOS, scenario_options
        from ..strategies import STRATEGIES

        _check_types(self)
        SCENARIOS.get(self.scenario)
        if not self.methods:
            raise ValueError("methods is empty; give at least one, e.g. --methods dkvb")
        for m in self.methods:
            STRATEGIES.get(m)
        if len(set(self.methods)) != len(self.methods):
            raise ValueError(f"methods lists a method twice: {self.methods}")
        unknown = sorted(set(self.method_options) - set(self.methods) - set(STRATEGIES.names()))
        if unknown:
            raise ValueError(f"options given for unknown method(s) {unknown}; accepted: {', '.join(STRATEGIES.names())}")
        if not self.seeds or any(not isinstance(s, int) or isinstance(s, bool) or s < 0 for s in self.seeds):
            raise ValueError(f"seeds={self.seeds!r} must be a non-empty list of integers >= 0")
        accepted = scenario_options(self.scenario)
        bad = sorted(set(self.scenario_options) - set(accepted))
        if bad:
            raise ValueError(f"scenario {self.scenario!r} has no option(s) {bad}; accepted: {', '.join(accepted)}")
        for name in ("max_length", "encode_batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name}={value!r} must be an integer >= 1")
        if self.max_train_per_class is not None and (not isinstance(self.max_train_per_class, int)
                                                     or self.max_train_per_class < 1):
            raise ValueError(f"max_train_per_class={self.max_train_per_class!r} must be an integer >= 1 or null")
        if self.autocast not in ("auto", "bf16", "off"):
            raise ValueError(f"autocast={self.autocast!r}; accepted: auto, bf16, off")
        from ..strategies.base import build_options

        for m in self.methods:
            cls = STRATEGIES.get(m)
            build_options(cls.Options, self.method_options.get(m), m)
        return self

    def to_dict(self) -> dict:
        """A JSON-able copy (recorded in results.json)."""
        return dataclasses.asdict(self)


FIELDS = {f.name for f in dataclasses.fields(RunConfig)}

# What each field accepts, checked before any other validation so that a wrong type is a
# clear ValueError rather than a TypeError from deep inside.
_TYPES = {
    "scenario": ((str,), "a scenario name"),
    "dataset": ((str, type(None)), "a dataset name or folder, or null"),
    "methods": ((list,), "a list of method names"),
    "seeds": ((list,), "a list of integers"),
    "encoder": ((str,), "an encoder name or folder"),
    "max_length": ((int,), "an integer"),
    "autocast": ((str,), "auto, bf16 or off"),
    "encode_batch_size": ((int,), "an integer"),
    "output_dir": ((str,), "a folder"),
    "cache_dir": ((str, type(None)), "a folder or null"),
    "resume": ((bool,), "true or false"),
    "progress": ((bool,), "true or false"),
    "max_train_per_class": ((int, type(None)), "an integer or null"),
    "scenario_options": ((dict,), "a mapping of scenario options"),
    "method_options": ((dict,), "a mapping {method: {option: value}}"),
}


def _check_types(cfg: RunConfig) -> None:
    for name, (types, what) in _TYPES.items():
        value = getattr(cfg, name)
        bad_bool = isinstance(value, bool) and bool not in types
        if bad_bool or not isinstance(value, types):
            raise ValueError(f"{name}={value!r:.80} is not valid; expected {what}")
    if not all(isinstance(m, str) for m in cfg.methods):
        raise ValueError(f"methods={cfg.methods!r:.80} must be a list of method names")
    for method, options in cfg.method_options.items():
        if not isinstance(options, dict):
            raise ValueError(f"options of method {method!r} must be a mapping of option: value, got {options!r:.80}")


def config_from_mapping(data: Mapping[str, Any], where: str = "config") -> RunConfig:
    """A RunConfig from a mapping (a parsed YAML file); method names may be top-level keys."""
    from ..strategies import STRATEGIES

    if not isinstance(data, Mapping):
        raise ValueError(f"{where}: expected a mapping of options, got {type(data).__name__}")
    data = dict(data)
    method_options = data.pop("method_options", None) or {}
    if not isinstance(method_options, Mapping):
        raise ValueError(f"{where}: method_options must be a mapping {{method: {{option: value}}}}, "
                         f"got {method_options!r:.80}")
    method_options = dict(method_options)
    for name in list(data):
        if name in STRATEGIES:
            options = data.pop(name) or {}
            if not isinstance(options, Mapping):
                raise ValueError(f"{where}: {name}: expected a mapping of its options, got {options!r:.80}")
            method_options[name] = dict(options)
    unknown = sorted(set(data) - FIELDS)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; accepted: {', '.join(sorted(FIELDS - {'method_options'}))} "
                         f"or a method name ({', '.join(STRATEGIES.names())}) with its options")
    return RunConfig(**data, method_options=method_options)


def load_config(path: str | Path | None, overrides: Mapping[str, Any] | None = None) -> RunConfig:
    """Read a YAML preset (or the defaults), apply overrides (flags), and check the result."""
    import yaml

    data: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"config file {path} does not exist")
        data = yaml.safe_load(path.read_text()) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a mapping of options, got {type(data).__name__}")
    cfg = config_from_mapping(data, str(path or "defaults"))
    for key, value in (overrides or {}).items():
        if "." in key:  # method.option=value
            method, option = key.split(".", 1)
            cfg.method_options.setdefault(method, {})[option] = value
        elif key in FIELDS:
            setattr(cfg, key, value)
        else:
            raise ValueError(f"unknown option {key!r}")
    return cfg.check()
