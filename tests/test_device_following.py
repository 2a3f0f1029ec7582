"""Nothing hard-codes the CPU: strategies keep their tensors on the run's device (`ctx.device`).

Two guards that run without a GPU:
- behaviour: each method is set up with `ctx.device = meta` (a device that is not the CPU and
  needs no hardware); every tensor it then holds, and the logits it returns where meta tensors
  can compute them, must be on meta. A tensor created without `device=` lands on the CPU and fails.
- source: no explicit CPU (`.cpu()`, `torch.device("cpu")`, `device="cpu"`, `.to("cpu")`) in
  `strategies/` and `engine/` outside an allow-list of places that must be on the host (disk
  writes, hashing, numpy metrics), each with its reason. The checker is tested on a snippet.
"""

from __future__ import annotations

import ast
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value
from torch import nn

from dkvb_nlp.data import build_scenario
from dkvb_nlp.engine.context import RunContext
from dkvb_nlp.engine.feature_cache import CachedFeatures
from dkvb_nlp.strategies import STRATEGIES

PACKAGE = Path(__file__).resolve().parents[1] / "dkvb_nlp"
META = torch.device("meta")

# Attributes that stay on the host by design (never the run's device).
HOST_ATTRIBUTES = {
    "ctx": "the run's context (the data, the cache)",
    "buffer": "a replay buffer is a store of examples on the host; sampled rows move (er, derpp)",
    "_x": "cached pooled features on the host; moved where they are used",
    "_indices": "key-index files on the host (memory-mapped); a block at a time moves",
}

# Methods whose set-up state is checked, with small options (meta tensors hold no data).
SMALL = {"dkvb": {"num_codebooks": 4, "num_keys": 8, "ridge_features": 16}, "ranpac": {"dim": 16},
         "er": {"buffer_size": 4}, "derpp": {"buffer_size": 4}}
FROZEN_FEATURE_METHODS = ("nmc", "ranpac", "linear", "mlp", "joint", "er", "derpp", "ewc", "lwf")
# Logits that meta tensors can compute right after set-up (no data-dependent shapes, no .item()).
META_LOGITS = ("linear", "mlp", "joint", "ewc", "lwf", "er", "derpp", "ranpac")


class FakeCache:
    """The parts of a FeatureCache a strategy reads, with seeded random features (no encoder)."""

    def __init__(self, tmp: Path, dim: int = 24):
        self.encoder = types.SimpleNamespace(config=types.SimpleNamespace(hidden_size=dim))
        self.cache_dir, self.dim, self.max_length, self.autocast = tmp, dim, 32, "off"

    def get(self, texts, pairs=None, pool=None) -> CachedFeatures:
        rng = np.random.default_rng(len(texts))
        lengths = np.array([3 + len(t) % 4 for t in texts])
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        states = rng.standard_normal((int(offsets[-1]), self.dim)).astype(np.float16)
        pooled = np.stack([states[a:b].astype(np.float32).mean(0) for a, b in zip(offsets[:-1], offsets[1:])])
        return CachedFeatures(states, offsets, pooled, "fake")


@pytest.fixture(scope="module")
def stream():
    names = [f"intent{c}" for c in range(6)]
    features = Features({"text": Value("string"), "label": ClassLabel(names=names)})
    rows = {"text": [f"text {i} of intent {c}" for c in range(6) for i in range(4)],
            "label": [c for c in range(6) for _ in range(4)]}
    data = DatasetDict({s: Dataset.from_dict(rows, features=features) for s in ("train", "test")})
    return build_scenario("class_il", dataset=data, classes_per_task=2, seed=0)


def meta_strategy(method: str, stream, tmp_path):
    ctx = RunContext(stream, FakeCache(tmp_path), 0, "fake", progress=False, device=META)
    strategy = STRATEGIES.get(method)(ctx, SMALL.get(method))
    if method == "dkvb":
        strategy._build()  # its setup would initialise keys from data (reading values back)
    else:
        strategy.setup()
    return ctx, strategy


def held_tensors(obj, path: str = "", seen=None):
    """(path, tensor) for every tensor reachable from `obj`'s attributes, lists, dicts and modules."""
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return
    seen.add(id(obj))
    if isinstance(obj, torch.Tensor):
        yield path, obj
    elif isinstance(obj, nn.Module):
        for name, t in [*obj.named_parameters(), *obj.named_buffers()]:
            yield f"{path}.{name}", t
        for name, value in vars(obj).items():  # plain tensor attributes of a module
            if not name.startswith("_") and isinstance(value, torch.Tensor):
                yield f"{path}.{name}", value
    elif isinstance(obj, (list, tuple)):
        for i, item in enumerate(obj):
            yield from held_tensors(item, f"{path}[{i}]", seen)
    elif isinstance(obj, dict):
        for key, item in obj.items():
            yield from held_tensors(item, f"{path}[{key!r}]", seen)


def strategy_tensors(strategy):
    for name, value in vars(strategy).items():
        if name not in HOST_ATTRIBUTES:
            yield from held_tensors(value, name)


def test_the_context_device_defaults_to_the_process_device(stream, tmp_path):
    ctx = RunContext(stream, FakeCache(tmp_path), 0, "fake", progress=False)
    assert ctx.device == torch.device(ctx.process.device)


@pytest.mark.parametrize("method", ["dkvb", *FROZEN_FEATURE_METHODS])
def test_a_strategy_keeps_its_tensors_on_the_run_device(method, stream, tmp_path):
    _, strategy = meta_strategy(method, stream, tmp_path)
    tensors = list(strategy_tensors(strategy))
    assert tensors, f"{method}: found no tensors to check (the walk is broken)"
    on_host = [f"{path} on {t.device}" for path, t in tensors if t.device != META]
    assert not on_host, f"{method}: tensors not on ctx.device: {on_host}"


def test_dkvb_keys_values_and_statistics_follow_the_device(stream, tmp_path):
    _, strategy = meta_strategy("dkvb", stream, tmp_path)
    front = strategy.front
    assert front.keys.device == META and front.value_table.device == META
    rule = front.values_rule
    assert rule.counts.counts.device == META and rule.readout.gram.device == META
    assert rule.readout.projection.device == META


@pytest.mark.parametrize("method", META_LOGITS)
def test_logits_are_computed_on_the_run_device(method, stream, tmp_path):
    ctx, strategy = meta_strategy(method, stream, tmp_path)
    logits = strategy.logits(ctx.split(0, "test"))
    assert logits.device == META
    assert tuple(logits.shape) == (len(ctx.split(0, "test")), stream.classes_per_head[0])


# ---------------------------------------------------------------------- the source check

# (file relative to dkvb_nlp/, enclosing function) -> why it must be on the host
ALLOWED_CPU = {
    ("engine/checkpoint.py", "Checkpoint.save"): "safetensors writes host tensors to disk",
    ("engine/fingerprint.py", "hash_tensors"): "hashing reads the tensor's bytes on the host",
    ("engine/feature_cache.py", "FeatureCache._write_batch"): "encoded states are written to the memory-mapped cache",
    ("engine/open_world_eval.py", "seen_logits"): "the metrics are numpy on the host",
    ("strategies/finetune.py", "FinetuneStrategy.logits"): "logits gathered across processes on the host",
}
SCANNED = ("strategies", "engine")


def explicit_cpu(source: str) -> list[tuple[str, int, str]]:
    """(enclosing function, line, what) for every explicit CPU placement in `source`."""
    found = []

    def is_cpu(node) -> bool:
        return isinstance(node, ast.Constant) and node.value == "cpu"

    def visit(node, scope: list[str]):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            scope = [*scope, node.name]
        if isinstance(node, ast.Call):
            where = ".".join(scope)
            func = node.func
            if isinstance(func, ast.Attribute) and func.attr == "cpu":
                found.append((where, node.lineno, ".cpu()"))
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in ("device", "to") and any(is_cpu(a) for a in node.args):
                found.append((where, node.lineno, f'{name}("cpu")'))
            if any(k.arg == "device" and is_cpu(k.value) for k in node.keywords):
                found.append((where, node.lineno, 'device="cpu"'))
        for child in ast.iter_child_nodes(node):
            visit(child, scope)

    visit(ast.parse(source), [])
    return found


def test_the_checker_finds_every_form_of_explicit_cpu():
    snippet = ('import torch\n'
               'class S:\n'
               '    def learn(self, x):\n'
               '        a = x.cpu()\n'
               '        b = torch.zeros(3, device="cpu")\n'
               '        c = x.to("cpu")\n'
               '        d = torch.device("cpu")\n'
               '        e = x.to(self.device)\n')
    found = explicit_cpu(snippet)
    assert [(w, line) for w, line, _ in found] == [("S.learn", 4), ("S.learn", 5), ("S.learn", 6), ("S.learn", 7)]


def test_no_strategy_or_engine_code_hard_codes_the_cpu():
    offenders, used = [], set()
    for folder in SCANNED:
        for path in sorted((PACKAGE / folder).glob("*.py")):
            rel = path.relative_to(PACKAGE).as_posix()
            for where, line, what in explicit_cpu(path.read_text(encoding="utf-8")):
                if (rel, where) in ALLOWED_CPU:
                    used.add((rel, where))
                else:
                    offenders.append(f"{rel}:{line} in {where or '<module>'}: {what}")
    assert not offenders, ("explicit CPU placement; use ctx.device (or add it to ALLOWED_CPU with the reason "
                           f"it must be on the host): {offenders}")
    assert used == set(ALLOWED_CPU), f"stale ALLOWED_CPU entries: {sorted(set(ALLOWED_CPU) - used)}"
