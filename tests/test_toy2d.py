"""The paper's 2-D motivating experiment, end to end: DKVB keeps all stages, probes forget."""

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "toy2d.py"


def load_toy2d():
    spec = importlib.util.spec_from_file_location("toy2d", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_toy2d_dkvb_remembers_earlier_stages(tmp_path):
    out = tmp_path / "toy2d.png"
    results = load_toy2d().main(["--seed", "0", "--out", str(out)])
    assert results["DKVB 1 x 400 keys"] > 0.9
    assert results["DKVB 20 x 20, random proj."] > 0.9
    assert results["linear probe"] < 0.6 and results["MLP (32 hidden)"] < 0.6
    assert out.stat().st_size > 10_000
