"""Reliability: a real SIGKILL at every crash point resumes to the same results; same seed, same
matrix; non-finite encoder output, duplicated class labels and untrusted files are refused."""

from __future__ import annotations

import json
import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from dkvb_nlp.faults import CRASH_POINTS, ENV

ROOT = Path(__file__).resolve().parents[1]
RUN = ROOT / "benchmarks" / "run.py"
GROUPS = [["alarm", "balance", "bill_due"], ["calories", "car_rental", "cancel"],
          ["change_speed", "confirm_reservation", "credit_limit"]]
METHODS = ["dkvb", "er", "finetune"]  # cached indices, a random replay buffer, a trained encoder


def job(encoder: Path, tmp: Path, name: str, *extra, env=None, check=True) -> subprocess.CompletedProcess:
    cfg = tmp / "c.yaml"
    if not cfg.exists():
        cfg.write_text(yaml.safe_dump({
            "scenario": "class_il", "dataset": "clinc150", "encoder": str(encoder), "methods": METHODS, "seeds": [0],
            "max_train_per_class": 10, "progress": False, "encode_batch_size": 8,
            "scenario_options": {"class_groups": GROUPS},
            "dkvb": {"num_codebooks": 4, "num_keys": 32, "epochs": 2, "key_init_batch_rows": 128},
            "er": {"epochs": 2}, "finetune": {"epochs": 1, "batch_size": 8, "eval_batch_size": 64}}))
    cmd = [sys.executable, str(RUN), "--config", str(cfg), "--output-dir", str(tmp / name), *map(str, extra)]
    base = {k: v for k, v in os.environ.items() if k != ENV}
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**base, **(env or {})}, cwd=ROOT)
    if check and proc.returncode != 0:
        raise AssertionError(f"{cmd} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def matrices(out: Path) -> dict:
    results = json.loads((out / "results.json").read_text())
    return {r["method"]: r["accuracy_matrix"] for r in results["runs"]}


@pytest.fixture(scope="module")
def reference(tiny_encoder_dir, tmp_path_factory):
    """One uninterrupted run (cold cache): the accuracy matrices every other run must equal."""
    tmp = tmp_path_factory.mktemp("reference")
    encoder = tiny_encoder_dir("bert")
    job(encoder, tmp, "full", "--cache-dir", tmp / "cache")
    return encoder, matrices(tmp / "full")


@pytest.mark.slow
def test_same_seed_gives_the_same_accuracy_matrices(reference, tmp_path):
    encoder, expected = reference
    job(encoder, tmp_path, "again", "--cache-dir", tmp_path / "fresh-cache")  # re-encoded from scratch
    assert matrices(tmp_path / "again") == expected


# (point, hit): the hit count puts the kill mid-run (the 2nd batch of an entry, the 2nd task, ...).
KILLS = [("cache.batch_written", 2), ("cache.before_rename", 3), ("atomic.before_replace", 4),
         ("atomic.before_replace", 9), ("dkvb.keys_ready", 1), ("task.learned", 2),
         ("checkpoint.state_written", 2), ("run.method_done", 2)]


def test_every_crash_point_is_exercised():
    assert {p for p, _ in KILLS} == set(CRASH_POINTS)


@pytest.mark.slow
@pytest.mark.parametrize("point, hit", KILLS, ids=[f"{p}:{h}" for p, h in KILLS])
def test_sigkill_at_any_point_resumes_to_the_same_results(reference, tmp_path, point, hit):
    encoder, expected = reference
    cache = tmp_path / "cache"
    killed = job(encoder, tmp_path, "run", "--cache-dir", cache, env={ENV: f"{point}:{hit}"}, check=False)
    assert killed.returncode == -9, f"the run was not killed at {point}:{hit} (rc {killed.returncode})"
    assert not (tmp_path / "run" / "results.json").exists()
    resumed = job(encoder, tmp_path, "run", "--cache-dir", cache, "--resume")
    assert matrices(tmp_path / "run") == expected
    assert not list(cache.glob("*.building")), "a half-built cache entry was left behind"
    for entry in cache.iterdir():  # every entry that survived is complete and checksummed
        if entry.name == ".locks":  # the entries' build locks
            continue
        assert (entry / "meta.json").is_file(), entry
    assert "Traceback" not in resumed.stderr


def test_non_finite_encoder_output_is_refused_and_nothing_is_cached(tiny_encoder_dir, tmp_path):
    import torch
    from transformers import AutoModel, AutoTokenizer

    from dkvb_nlp.engine.feature_cache import FeatureCache

    source = tiny_encoder_dir("bert")
    broken = tmp_path / "broken-encoder"
    model = AutoModel.from_pretrained(source)
    tokenizer = AutoTokenizer.from_pretrained(source)
    alarm = tokenizer("set an alarm", add_special_tokens=False)["input_ids"][-1]
    with torch.no_grad():
        model.embeddings.word_embeddings.weight[alarm] = float("nan")  # one poisoned token
    model.save_pretrained(broken)
    tokenizer.save_pretrained(broken)
    cache = FeatureCache(AutoModel.from_pretrained(broken), tokenizer, tmp_path / "cache", progress=False)
    with pytest.raises(ValueError, match=r"non-finite token states .* for text 1 \('please set an alarm'\)"):
        cache.get(["what is my balance", "please set an alarm", "pay the bill"])
    assert not [p for p in (tmp_path / "cache").glob("*") if not p.name.endswith(".building") and p.name != ".locks"]
    assert cache.get(["what is my balance", "pay the bill"]).pooled.shape == (2, model.config.hidden_size)

    # The main job: one clear message and exit code 2, no traceback.
    proc = job(broken, tmp_path, "out", "--cache-dir", tmp_path / "cache2", "--methods", "linear", check=False)
    assert proc.returncode == 2 and "non-finite token states" in proc.stderr and "Traceback" not in proc.stderr


def test_a_label_in_two_class_incremental_tasks_is_refused(tmp_path):
    from dkvb_nlp.data import build_scenario

    with pytest.raises(ValueError, match="'balance'"):
        build_scenario("class_il", class_groups=[["alarm", "balance"], ["balance", "bill_due"]])
    proc = subprocess.run([sys.executable, str(RUN), "--scenario", "class_il", "--output-dir", str(tmp_path / "o"),
                           "--set", "scenario_options.class_groups=[[alarm, balance], [balance, bill_due]]"],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2 and "'balance'" in proc.stderr and "Traceback" not in proc.stderr


# ---------------------------------------------------------------------------- untrusted files
SOURCES = sorted(p for d in ("dkvb_nlp", "vision", "benchmarks") for p in (ROOT / d).rglob("*.py"))


@pytest.mark.parametrize("pattern, why", [
    (r"^\s*(import|from)\s+(pickle|dill|cloudpickle|joblib)\b", "no pickle of code anywhere"),
    (r"allow_pickle\s*=\s*True", "numpy arrays load without pickle"),
    (r"trust_remote_code\s*=\s*True", "remote code stays off unless the user asks"),
    (r"\.from_pretrained\([^)]*use_safetensors\s*=\s*False", "weights through safetensors"),
])
def test_no_source_file_opens_the_door_to_untrusted_code(pattern, why):
    offenders = [f"{p.relative_to(ROOT)}:{i}" for p in SOURCES
                 for i, line in enumerate(p.read_text().splitlines(), 1) if re.search(pattern, line)]
    assert not offenders, f"{why}: {offenders}"


def test_every_torch_load_is_weights_only():
    calls = [(p, m) for p in SOURCES for m in re.finditer(r"torch\.load\((.*?)\)\s*$", p.read_text(), re.M)]
    assert calls, "expected the vision backbone loader to use torch.load"
    bad = [f"{p.relative_to(ROOT)}: {m.group(0)}" for p, m in calls if "weights_only=True" not in m.group(1)]
    assert not bad, bad


class _Payload:
    """Unpickling this writes a marker file: proof that a pickle was executed."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "pwned"))


def test_a_pickled_encoder_checkpoint_is_never_executed(tiny_encoder_dir, tmp_path):
    from dkvb_nlp.encoders import load_encoder

    folder = tmp_path / "evil-encoder"
    folder.mkdir()
    source = tiny_encoder_dir("bert")
    (folder / "config.json").write_text((source / "config.json").read_text())
    marker = tmp_path / "marker"
    (folder / "pytorch_model.bin").write_bytes(pickle.dumps({"weight": _Payload(marker)}))
    with pytest.raises(Exception):
        load_encoder(folder)
    assert not marker.exists(), "a pickle in an encoder folder was executed"


def test_remote_code_in_an_encoder_folder_is_not_run(tmp_path):
    from dkvb_nlp.encoders import load_encoder

    folder = tmp_path / "custom-encoder"
    folder.mkdir()
    marker = tmp_path / "marker"
    (folder / "config.json").write_text(json.dumps({"model_type": "evil-bert", "auto_map": {
        "AutoConfig": "modeling_evil.EvilConfig", "AutoModel": "modeling_evil.EvilModel"}}))
    (folder / "modeling_evil.py").write_text(f"open({str(marker)!r}, 'w').write('pwned')\n")
    with pytest.raises(Exception, match="trust_remote_code"):
        load_encoder(folder)
    assert not marker.exists(), "code shipped in an encoder folder was imported"


def test_dkvb_weights_load_only_from_safetensors(tmp_path):
    from dkvb_nlp import DKVBConfig, DKVBForSequenceClassification

    folder = tmp_path / "model"
    folder.mkdir()
    DKVBConfig(num_codebooks=4, num_keys=8, id2label={0: "a", 1: "b"}).save_pretrained(folder)
    marker = tmp_path / "marker"
    (folder / "pytorch_model.bin").write_bytes(pickle.dumps({"bottleneck.value_table": _Payload(marker)}))
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        DKVBForSequenceClassification.from_pretrained(folder)
    assert not marker.exists()
