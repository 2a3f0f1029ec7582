"""The toolkit as a package: its package list, vision as dkvb_nlp.vision, presets by name, the
`dkvb-nlp` command, plugins from outside, and a wheel installed in a fresh environment."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib", reason="Python 3.11+ reads pyproject.toml with tomllib")

from cli_tools import ROOT, base_args, tiny_dataset

from dkvb_nlp.runner.cli import main, run_main
from dkvb_nlp.runner.presets import preset_names, resolve_preset

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
MAPPED = {"dkvb_nlp.vision": "vision", "dkvb_nlp.presets": "configs"}


def test_the_package_list_covers_every_package_folder():
    setup = PYPROJECT["tool"]["setuptools"]
    assert setup["package-dir"] == MAPPED
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "dkvb_nlp").rglob("__init__.py")}
    assert set(setup["packages"]) == found | set(MAPPED)
    for folder in MAPPED.values():
        assert (ROOT / folder / "__init__.py").is_file()


def test_vision_installs_under_dkvb_nlp_only(tmp_path):
    code = "import importlib.util as u; print(u.find_spec('vision') is None, u.find_spec('dkvb_nlp.vision') is not None)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, check=True,
                         env={**os.environ, "PYTHONPATH": ""})
    assert out.stdout.split() == ["True", "True"]


def test_presets_are_found_by_name_or_path(tmp_path):
    assert {"class_il", "quick", "domain_il", "task_type_il"} <= set(preset_names())
    assert resolve_preset("quick").read_text(encoding="utf-8") == (ROOT / "configs" / "quick.yaml").read_text(
        encoding="utf-8")
    assert resolve_preset("quick.yaml").name == "quick.yaml"
    own = tmp_path / "mine.yaml"
    own.write_text("scenario: class_il\n")
    assert resolve_preset(own) == own
    with pytest.raises(ValueError, match="unknown preset; accepted: class_il"):
        resolve_preset("clas_il")
    with pytest.raises(ValueError, match="no such file"):
        resolve_preset(tmp_path / "missing.yaml")


def test_the_command_names_its_subcommands(capsys):
    assert main(["frob"]) == 2
    assert "unknown command 'frob'; accepted: run, report, presets" in capsys.readouterr().err
    assert main(["presets"]) == 0
    assert "class_il " in capsys.readouterr().out
    assert main([]) == 2 and "dkvb-nlp run" in capsys.readouterr().out


def test_python_dash_m_runs_the_command():
    out = subprocess.run([sys.executable, "-m", "dkvb_nlp", "presets"], capture_output=True, text=True, check=True)
    assert "quick " in out.stdout


PLUGIN = textwrap.dedent('''
    """A user's strategy, defined outside the package: nearest class mean under another name."""
    from dkvb_nlp.strategies.nmc import NMCStrategy


    class MyMethod(NMCStrategy):
        name = "my_method"
''')


def test_a_strategy_from_outside_runs_through_the_cli(tmp_path, tiny_encoder_dir, monkeypatch, capsys):
    (tmp_path / "my_plugin_methods.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    data = tiny_dataset(tmp_path / "data")
    args = base_args(tiny_encoder_dir("bert"), data, tmp_path / "out", tmp_path / "cache")
    args[args.index("--methods") + 1] = "my_method"
    assert run_main(args) == 2
    assert "unknown method 'my_method'" in capsys.readouterr().err
    assert run_main([*args, "--plugin", "my_plugin_methods"]) == 0
    assert (tmp_path / "out" / "accuracy_matrix_my_method.csv").is_file()
    assert run_main([*args[:-2], "--plugin", "no_such_plugin_module"]) == 2
    assert "--plugin 'no_such_plugin_module': no module of that name" in capsys.readouterr().err


@pytest.mark.slow
def test_a_wheel_installed_without_the_checkout_runs_the_main_job(tmp_path, tiny_encoder_dir):
    """`pip install` of the built wheel (no checkout on the path): the command, presets and vision work.

    The fresh environment reuses this one's dependencies through a .pth line (installing torch
    again would take minutes), but not its editable dkvb_nlp: a line-added folder's .pth files
    are not run, so only the wheel provides dkvb_nlp."""
    import shutil

    dist, venv, source = tmp_path / "dist", tmp_path / "venv", tmp_path / "source"
    # Built from a copy: setuptools writes build/ and *.egg-info into the folder it builds.
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".venv", ".git", "build", "dist", "runs", "*.egg-info",
                                                                "__pycache__", ".pytest_cache", ".hypothesis"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(dist)], check=True, capture_output=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    Path(site, "zz_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    wheel = next(dist.glob("dkvb_nlp-*.whl"))
    subprocess.run([str(py), "-m", "pip", "install", "--no-deps", "-q", str(wheel)], check=True, capture_output=True)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    where = subprocess.run([str(py), "-c", "import dkvb_nlp, dkvb_nlp.vision.protocol; print(dkvb_nlp.__file__)"],
                           capture_output=True, text=True, check=True, cwd=tmp_path, env=env).stdout
    assert where.startswith(site)
    data = tiny_dataset(tmp_path / "data")
    args = base_args(tiny_encoder_dir("bert"), data, tmp_path / "out", tmp_path / "cache")
    args[args.index("--methods") + 1] = "nmc,dkvb"
    done = subprocess.run([str(venv / "bin" / "dkvb-nlp"), "run", "--config", "quick", *args,
                           "--max-train-per-class", "6", "--set", "dkvb.num_keys=8", "--set", "dkvb.num_codebooks=4"],
                          capture_output=True, text=True, cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "out" / "results.json").is_file()
    answer = subprocess.run([str(py), "-c", "import dkvb_nlp; from transformers import pipeline; "
                             f"print(pipeline('text-classification', model={str(tmp_path / 'out' / 'models' / 'dkvb_seed0')!r})"
                             "('alpha test sentence number 1')[0]['label'])"],
                            capture_output=True, text=True, cwd=tmp_path, env=env)
    assert answer.returncode == 0, answer.stderr[-2000:]
    assert answer.stdout.split()[-1] in ("alpha", "bravo", "charlie", "delta")
