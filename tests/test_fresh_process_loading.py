"""A saved DKVB folder in a fresh Python process, through the transformers Auto classes and `pipeline`.

`model_type: dkvb` is registered with transformers when `dkvb_nlp` is imported
(`dkvb_nlp/modeling/auto.py`). Without that import, transformers (5.x) has no way to find the
classes of an installed package: no entry-point or plugin hook, and `auto_map` in config.json
only names Python files inside the model folder, run with `trust_remote_code=True`. This
project ships no code in model folders and keeps remote code off, so such a process gets
transformers' own "does not recognize this architecture" error, which none of our code can
reword; the xfail below records that target of issue 16 until transformers offers a way."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

LOAD = """
import sys
{prelude}
from transformers import AutoModelForSequenceClassification, pipeline
folder = sys.argv[1]
model = AutoModelForSequenceClassification.from_pretrained(folder)
assert type(model).__name__ == "DKVBForSequenceClassification", type(model)
answer = pipeline("text-classification", model=folder)(["one text"])
assert answer[0]["label"] in ("a", "b"), answer
print("loaded", answer)
"""


@pytest.fixture(scope="module")
def saved(tiny_encoder_dir, tmp_path_factory):
    from dkvb_nlp import DKVBConfig, DKVBForSequenceClassification

    config = DKVBConfig(encoder_name_or_path=str(tiny_encoder_dir("bert")), num_codebooks=4, num_keys=8,
                        id2label={0: "a", 1: "b"}, key_init_batch_rows=64, ridge_features=32)
    model = DKVBForSequenceClassification(config).init_keys(["one text", "another text", "a third one"] * 4)
    model.partial_fit(["one text", "another text"], ["a", "b"])
    folder = tmp_path_factory.mktemp("saved") / "m"
    model.save_pretrained(folder)
    return folder


def fresh_python(code: str, folder, cwd) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run([sys.executable, "-c", code, str(folder)], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=600)


def test_a_fresh_process_that_imports_dkvb_nlp_loads_a_saved_folder(saved, tmp_path):
    """`import dkvb_nlp` alone (no class imported by name) registers the Auto classes."""
    proc = fresh_python(LOAD.format(prelude="import dkvb_nlp"), saved, tmp_path)
    assert proc.returncode == 0 and "loaded" in proc.stdout, proc.stderr[-3000:]


@pytest.mark.xfail(strict=True, raises=AssertionError,
                   reason="transformers finds model_type 'dkvb' only once dkvb_nlp is imported; its error for an "
                          "unknown model type says to update transformers and cannot be reworded from a folder "
                          "that ships no code")
def test_a_fresh_process_without_the_import_loads_or_says_to_import_dkvb_nlp(saved, tmp_path):
    proc = fresh_python(LOAD.format(prelude=""), saved, tmp_path)
    assert "dkvb" in proc.stderr or proc.returncode == 0, proc.stderr[-3000:]  # it did get as far as the config
    assert proc.returncode == 0 or "import dkvb_nlp" in proc.stderr, proc.stderr[-3000:]
