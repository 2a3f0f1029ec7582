"""Declared ranges of numeric options, checked in one place before anything runs.

An option's range is declared beside its default, in the dataclass field's metadata:

    lr: float = bounded(1e-3, gt=0)            # a finite number > 0
    epochs: int = bounded(5, ge=1)              # an integer >= 1
    ema_decay: float = bounded(0.8, ge=0, lt=1) # a number in [0, 1)
    ridge: float | None = bounded(100.0, gt=0)  # None passes when the field allows it

`check_bounds(options, prefix)` reads every field's declared range and raises one ValueError
naming the option, the value and what is accepted ("mlp.lr=0.0 must be > 0 (a finite
number; default 0.001)"). Floats must be finite (no inf, no NaN)
unless a field says `finite=False`. A list value (e.g. `seeds`) is checked element by element.
Options given as plain keyword arguments (the scenario builders) declare theirs in a mapping
and go through `check_value`, the same check.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Mapping

BOUNDS = "bounds"  # the dataclass field metadata key


@dataclass(frozen=True)
class Bounds:
    """An interval (each end open, closed or absent) and whether the value must be finite."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    finite: bool = True
    integer: bool = False  # the value must be an integer (set from the field's type by `bounded`)

    def accepts(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.integer and not isinstance(value, int):
            return False
        if math.isnan(value) or (self.finite and math.isinf(value)):
            return False
        return ((self.ge is None or value >= self.ge) and (self.gt is None or value > self.gt)
                and (self.le is None or value <= self.le) and (self.lt is None or value < self.lt))

    def condition(self) -> str:
        """The interval, e.g. '>= 1', '> 0', 'in [0, 1)' ('' when unbounded)."""
        low, opening = (self.ge, "[") if self.ge is not None else (self.gt, "(")
        top, closing = (self.le, "]") if self.le is not None else (self.lt, ")")
        if low is not None and top is not None:
            return f"in {opening}{low:g}, {top:g}{closing}"
        if low is not None:
            return f"{'>=' if opening == '[' else '>'} {low:g}"
        if top is not None:
            return f"{'<=' if closing == ']' else '<'} {top:g}"
        return ""

    def kind(self) -> str:
        return "an integer" if self.integer else ("a finite number" if self.finite else "a number")


def bounded(default: Any = dataclasses.MISSING, *, ge=None, gt=None, le=None, lt=None, finite: bool = True,
            integer: bool | None = None, default_factory: Any = dataclasses.MISSING, **field_kwargs):
    """A dataclass field with a declared range (see the module docstring).

    `integer` defaults to whether the default is an int (not a bool), so `bounded(5, ge=1)`
    accepts integers only and `bounded(1e-3, gt=0)` any finite number.
    """
    if integer is None:
        sample = default if default is not dataclasses.MISSING else None
        integer = isinstance(sample, int) and not isinstance(sample, bool)
    metadata = {**field_kwargs.pop("metadata", {}), BOUNDS: Bounds(ge, gt, le, lt, finite, integer)}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=metadata, **field_kwargs)
    return dataclasses.field(default=default, metadata=metadata, **field_kwargs)


def field_bounds(options) -> dict[str, Bounds]:
    """{field name: declared Bounds} of a dataclass (class or instance)."""
    return {f.name: f.metadata[BOUNDS] for f in dataclasses.fields(options) if BOUNDS in f.metadata}


def check_value(name: str, value: Any, bounds: Bounds, default: Any = dataclasses.MISSING) -> None:
    """ValueError naming `name`, `value` and the accepted range unless `value` is within `bounds`.

    None passes (whether None is allowed is the type check's business); lists are checked
    element by element.
    """
    if value is None:
        return
    for item in value if isinstance(value, (list, tuple)) else (value,):
        if not bounds.accepts(item):
            shown = f"{name}={value!r:.80}" + (f" (element {item!r})" if item is not value else "")
            hint = "" if default is dataclasses.MISSING else f"; default {default!r}"
            what = f"{bounds.condition()} ({bounds.kind()}{hint})" if bounds.condition() else bounds.kind() + hint
            raise ValueError(f"{shown} must be {what}")


def check_bounds(options, prefix: str = "") -> None:
    """Check every field of the dataclass instance `options` that declares a range."""
    for f in dataclasses.fields(options):
        if BOUNDS in f.metadata:
            default = f.default if f.default is not dataclasses.MISSING else dataclasses.MISSING
            check_value(f"{prefix}{f.name}", getattr(options, f.name), f.metadata[BOUNDS], default)


def check_mapping(values: Mapping[str, Any], bounds: Mapping[str, Bounds], prefix: str = "") -> None:
    """Check the entries of `values` that `bounds` declares a range for (keyword-argument options)."""
    for name, value in values.items():
        if name in bounds:
            check_value(f"{prefix}{name}", value, bounds[name])
