"""The main job's configuration: YAML presets, overridden by command-line flags, checked early.

    scenario: class_il            # class_il | domain_il | task_type_il | stream_il
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
from ..engine.bounds import Bounds, bounded, check_bounds, check_mapping

EXPORTS = ("none", "final", "every_task")  # RunConfig.export

# Field metadata: this option does not change results (a resumed run may change it; see identity.py).
RESULT_FREE = "result_free"


def _result_free(default=dataclasses.MISSING, **kwargs):
    return dataclasses.field(default=default, metadata={RESULT_FREE: True}, **kwargs)


@dataclasses.dataclass
class RunConfig:
    """Everything `benchmarks/run.py` needs; each field has a documented default."""

    scenario: str = "class_il"
    dataset: str | None = None  # None: the scenario's default (class_il: clinc150, domain_il: dsc, ...)
    methods: list[str] = dataclasses.field(default_factory=lambda: ["dkvb", "finetune"])
    seeds: list[int] = bounded(default_factory=lambda: [0], ge=0, integer=True)  # distinct
    encoder: str = DEFAULT_ENCODER
    max_length: int = bounded(128, ge=1)  # tokens per text
    autocast: str = "auto"  # encoder precision: auto (bf16 where native), bf16, off
    # Texts per encoder batch. Result-free like the feature cache's key: a warm cache ignores it.
    encode_batch_size: int = bounded(64, ge=1, metadata={RESULT_FREE: True})
    output_dir: str = _result_free("runs/latest")
    cache_dir: str | None = _result_free(None)  # feature cache; default $DKVB_CACHE_DIR or ~/.cache/dkvb_nlp
    resume: bool = _result_free(False)
    progress: bool = _result_free(True)
    # Trained models written to <output_dir>/models/<method>_seed<k>/ (methods that can: dkvb,
    # dkvb_joint): 'final' (after the last task), 'every_task' (also task<t>/ after each), 'none'.
    export: str = _result_free("final")
    # Experiment tracker of each (method, seed): none, csv (<output_dir>/logs/<method>_seed<k>/metrics.csv;
    # the default: offline, no package, and every run keeps its losses), tensorboard, wandb, mlflow.
    report_to: str = _result_free("csv")
    max_train_per_class: int | None = bounded(None, ge=1, integer=True)  # cap training examples per class per task
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
        if not self.seeds:
            raise ValueError("seeds is empty; give at least one, e.g. --seeds 0")
        check_bounds(self)  # every declared numeric range, in one place
        repeated = sorted({s for s in self.seeds if self.seeds.count(s) > 1})
        if repeated:
            raise ValueError(f"seeds={self.seeds!r} repeats seed(s) {repeated}; each seed runs once, e.g. --seeds "
                             f"{','.join(str(s) for s in dict.fromkeys(self.seeds))}")
        accepted = scenario_options(self.scenario)
        bad = sorted(set(self.scenario_options) - set(accepted))
        if bad:
            raise ValueError(f"scenario {self.scenario!r} has no option(s) {bad}; accepted: {', '.join(accepted)}")
        check_mapping(self.scenario_options, SCENARIO_BOUNDS, "scenario_options.")
        if self.autocast not in ("auto", "bf16", "off"):
            raise ValueError(f"autocast={self.autocast!r}; accepted: auto, bf16, off")
        if self.export not in EXPORTS:
            raise ValueError(f"export={self.export!r}; accepted: {', '.join(EXPORTS)}")
        from ..engine.tracking import check_report_to

        check_report_to(self.report_to)
        from ..strategies.base import build_options

        for m in dict.fromkeys([*self.methods, *self.method_options]):  # options of methods not run, too
            build_options(STRATEGIES.get(m).Options, self.method_options.get(m), m)
        return self

    def to_dict(self) -> dict:
        """A JSON-able copy (recorded in results.json)."""
        return dataclasses.asdict(self)


FIELDS = {f.name for f in dataclasses.fields(RunConfig)}

# The numeric scenario options (keyword arguments of the scenario builders) and their ranges.
SCENARIO_BOUNDS = {
    "classes_per_task": Bounds(ge=1, integer=True),
    "seed": Bounds(ge=0, integer=True),
    "data_seed": Bounds(ge=0, integer=True),
    "max_train_per_class": Bounds(ge=1, integer=True),
    "validation_fraction": Bounds(gt=0, lt=1),
}

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
    "export": ((str,), "none, final or every_task"),
    "report_to": ((str,), "none, csv, tensorboard, wandb or mlflow"),
    "max_train_per_class": ((int, type(None)), "an integer or null"),
    "scenario_options": ((dict,), "a mapping of scenario options"),
    "method_options": ((dict,), "a mapping {method: {option: value}}"),
}


def _check_types(cfg: RunConfig) -> None:
    if cfg.autocast is False:  # YAML reads a bare `off` (autocast: off, --set autocast=off) as false
        cfg.autocast = "off"
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


def parse_yaml(text: str, where: str):
    """`yaml.safe_load(text)`, or a ValueError naming `where` and the line and column of the error."""
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ValueError(f"{where}: not valid YAML{at}: {problem}") from None


def read_config_file(path: str | Path) -> dict:
    """The mapping a YAML preset holds, or a ValueError naming the file and what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"config file {path} does not exist" + (" (it is a folder)" if path.is_dir() else ""))
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise ValueError(f"config file {path}: not UTF-8 text (byte {err.object[err.start]:#04x} at offset "
                         f"{err.start}); save it as UTF-8") from None
    data = parse_yaml(text, f"config file {path}")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"config file {path}: expected a mapping of options (key: value lines), got a YAML "
                         f"{type(data).__name__}")
    return data


SCENARIO_PREFIX = "scenario_options."


def accepted_keys() -> str:
    """What an override key may be (for error messages)."""
    from ..strategies import STRATEGIES

    fields = ", ".join(sorted(FIELDS - {"method_options", "scenario_options"}))
    return (f"{fields}; {SCENARIO_PREFIX}<option>; or <method>.<option> with a method of "
            f"{', '.join(STRATEGIES.names())}")


def apply_override(cfg: RunConfig, key: str, value: Any) -> None:
    """Set one override (`field`, `scenario_options.<option>` or `<method>.<option>`) on `cfg`."""
    from ..strategies import STRATEGIES

    if key.startswith(SCENARIO_PREFIX):
        cfg.scenario_options = {**cfg.scenario_options, key[len(SCENARIO_PREFIX):]: value}
    elif "." in key:
        method, option = key.split(".", 1)
        if method not in STRATEGIES:
            raise ValueError(f"unknown option {key!r}: {method!r} is not a method; accepted: {accepted_keys()}")
        cfg.method_options.setdefault(method, {})[option] = value
    elif key in FIELDS:
        setattr(cfg, key, value)
    else:
        raise ValueError(f"unknown option {key!r}; accepted: {accepted_keys()}")


def load_config(path: str | Path | None, overrides: Mapping[str, Any] | None = None) -> RunConfig:
    """Read a YAML preset (or the defaults), apply overrides (flags), and check the result.

    Overrides are `field: value`, `scenario_options.<option>: value` (merged into the preset's
    scenario options) or `<method>.<option>: value`.
    """
    data = read_config_file(path) if path is not None else {}
    cfg = config_from_mapping(data, f"config file {path}" if path is not None else "defaults")
    for key, value in (overrides or {}).items():
        apply_override(cfg, key, value)
    return cfg.check()
