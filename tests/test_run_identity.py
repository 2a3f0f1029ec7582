"""A run's identity: --resume refuses other result-relevant settings or data, naming each key;
result-free options may change; a finished run is reused only when the identity matches."""

from __future__ import annotations

import json

import pytest

from cli_tools import base_args, run_module, tiny_dataset
from dkvb_nlp.runner.config import load_config
from dkvb_nlp.runner.identity import (IDENTITY_FILE, check_resume, differences, make_identity, merged, settings,
                                      write_identity)


def ident(overrides=None, data=None, encoder_key="e" * 64):
    cfg = load_config(None, {"methods": ["dkvb"], **(overrides or {})})
    kwargs = {"seed": cfg.seeds[0], **cfg.scenario_options}
    return make_identity(cfg, kwargs, encoder_key, data or {s: "d" * 64 for s in cfg.seeds})


def test_settings_are_resolved_and_leave_out_result_free_options():
    s = settings(load_config(None, {"methods": ["dkvb"]}), {"seed": 0})
    assert s["dkvb.lr"] == 30.0 and s["dkvb.num_keys"] == 4096  # defaults, resolved
    assert s["scenario_options.dataset"] == "clinc150" and "scenario_options.seed" not in s
    for free in ("progress", "encode_batch_size", "output_dir", "cache_dir", "resume"):
        assert free not in s
    # A default given explicitly is the same identity as the default left out.
    assert ident({"dkvb.lr": 30.0, "scenario_options.classes_per_task": None}) == ident()


def test_differences_name_each_changed_key_old_and_new():
    old, new = ident(), ident({"dkvb.lr": 0.001, "max_length": 64, "scenario_options.data_seed": 3})
    assert differences(old, new) == ["dkvb.lr: 30.0 -> 0.001", "max_length: 128 -> 64",
                                     "scenario_options.data_seed: 0 -> 3"]
    assert differences(old, ident(encoder_key="f" * 64)) == [
        f"encoder_weights: {'e' * 12} -> {'f' * 12} (other encoder weights or config)"]
    assert differences(old, ident(data={0: "x" * 64})) == [
        f"data (seed0): fingerprint {'d' * 12} -> {'x' * 12} (other texts or labels)"]
    assert differences(old, ident({"progress": False, "encode_batch_size": 8, "output_dir": "elsewhere"})) == []


def test_methods_and_seeds_may_be_added_and_the_stored_identity_grows():
    old = ident()
    new = ident({"methods": ["dkvb", "er"], "seeds": [0, 1], "er.lr": 0.5}, data={0: "d" * 64, 1: "z" * 64})
    assert differences(old, new) == []  # er and seed 1 are new: nothing to compare
    both = merged(old, new)
    assert both["methods"] == ["dkvb", "er"] and both["seeds"] == [0, 1] and both["settings"]["er.lr"] == 0.5
    assert differences(both, ident({"methods": ["er"], "er.lr": 0.1})) == ["er.lr: 0.5 -> 0.1"]
    assert differences(both, ident(data={0: "d" * 64, 1: "y" * 64}, overrides={"seeds": [1]}))[0].startswith(
        "data (seed1)")


def test_check_resume_refuses_in_one_line_and_names_the_folder(tmp_path):
    write_identity(tmp_path, ident())
    with pytest.raises(ValueError) as err:
        check_resume(tmp_path, ident({"dkvb.lr": 0.001, "dkvb.num_keys": 8}))
    message = str(err.value)
    assert "\n" not in message and str(tmp_path) in message
    assert "dkvb.lr: 30.0 -> 0.001" in message and "dkvb.num_keys: 4096 -> 8" in message and "--overwrite" in message
    (tmp_path / IDENTITY_FILE).unlink()
    with pytest.raises(ValueError, match=f"without {IDENTITY_FILE}"):
        check_resume(tmp_path, ident())
    (tmp_path / IDENTITY_FILE).write_text('{"version": 1, "sett')
    with pytest.raises(ValueError, match=f"{IDENTITY_FILE} is damaged"):
        check_resume(tmp_path, ident())


# ------------------------------------------------------------------------------ the main job
@pytest.fixture(scope="module")
def job(tiny_encoder_dir, tmp_path_factory):
    """A finished tiny run: (run(args) -> (rc, stdout, stderr), args of the run, its folder)."""
    module = run_module()
    tmp = tmp_path_factory.mktemp("identity")
    data = tiny_dataset(tmp / "data")
    args = base_args(tiny_encoder_dir("bert"), data, tmp / "out", tmp / "cache")

    def run(argv, capsys):
        rc = module.main(argv)
        captured = capsys.readouterr()
        return rc, captured.out, captured.err

    return run, args, tmp


def test_resume_with_a_changed_setting_or_dataset_is_refused(job, capsys):
    run, args, tmp = job
    assert run(args, capsys)[0] == 0
    first = json.loads((tmp / "out" / "results.json").read_text())
    rc, _, err = run(args + ["--resume", "--max-length", "24"], capsys)
    assert rc == 2 and "max_length: 16 -> 24" in err and "Traceback" not in err
    other = tiny_dataset(tmp / "other", words=("echo", "foxtrot", "golf", "hotel"))
    rc, _, err = run(args + ["--resume", "--dataset", str(other)], capsys)
    assert rc == 2 and "scenario_options.dataset:" in err and "data (seed0): fingerprint" in err
    # Same folder path, other content: only the data fingerprint tells.
    changed = tiny_dataset(tmp / "data", n=5)
    assert changed == tmp / "data"
    rc, _, err = run(args + ["--resume"], capsys)
    assert rc == 2 and "data (seed0): fingerprint" in err and "scenario_options" not in err
    tiny_dataset(tmp / "data")  # back as it was
    # Result-free options may differ; the finished run is reused and the results are unchanged.
    rc, out, err = run(args + ["--resume", "--set", "encode_batch_size=3"], capsys)
    assert rc == 0 and "already finished; reusing" in out, err
    again = json.loads((tmp / "out" / "results.json").read_text())
    assert again["runs"][0]["accuracy_matrix"] == first["runs"][0]["accuracy_matrix"]


def test_resume_of_a_run_without_identity_is_refused(job, capsys):
    run, args, tmp = job
    out = tmp / "old"
    old_args = [a if a != str(tmp / "out") else str(out) for a in args]
    assert run(old_args, capsys)[0] == 0
    (out / IDENTITY_FILE).unlink()  # as an older version left it
    rc, _, err = run(old_args + ["--resume"], capsys)
    assert rc == 2 and f"without {IDENTITY_FILE}" in err and "--overwrite" in err
    rc, _, err = run(old_args + ["--overwrite"], capsys)
    assert rc == 0 and (out / IDENTITY_FILE).is_file()
