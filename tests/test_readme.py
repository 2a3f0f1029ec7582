"""The README's Python examples (```python blocks) run as written. A ```py block needs a run's
output folder first; the test named beside it runs its equivalent."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


@pytest.mark.parametrize("code", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_readme_example_runs(code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # examples may write files (save_pretrained)
    exec(compile(code, str(README), "exec"), {})


def test_readme_has_examples():
    assert BLOCKS
