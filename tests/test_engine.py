"""The main job end to end: outputs, resume after a real SIGKILL, two processes, config errors, cache."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
RUN = ROOT / "benchmarks" / "run.py"
GROUPS = [["alarm", "balance", "bill_due"], ["calories", "car_rental", "cancel"], ["change_speed", "confirm_reservation",
                                                                                  "credit_limit"]]

pytestmark = pytest.mark.slow


def write_config(path: Path, **extra) -> Path:
    cfg = {"scenario": "class_il", "dataset": "clinc150", "methods": ["dkvb", "finetune"], "seeds": [0],
           "max_train_per_class": 6, "progress": False,
           "scenario_options": {"class_groups": GROUPS},
           "dkvb": {"num_keys": 64, "epochs": 3, "key_init_epochs": 1, "key_init_batch_rows": 256},
           "finetune": {"epochs": 1, "batch_size": 8, "eval_batch_size": 64}}
    cfg.update(extra)
    import yaml

    path.write_text(yaml.safe_dump(cfg))
    return path


def run_job(args, env=None, check=True, launcher=None) -> subprocess.CompletedProcess:
    cmd = (launcher or [sys.executable]) + [str(RUN), *map(str, args)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})}, cwd=ROOT)
    if check and proc.returncode != 0:
        raise AssertionError(f"{cmd} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def matrices(out: Path) -> dict:
    results = json.loads((out / "results.json").read_text())
    return {r["method"]: np.array(r["accuracy_matrix"]) for r in results["runs"]}


def test_run_writes_every_output_on_real_data(tmp_path):
    cfg = write_config(tmp_path / "c.yaml")
    out = tmp_path / "out"
    proc = run_job(["--config", cfg, "--output-dir", out, "--cache-dir", tmp_path / "cache"])
    assert "final acc" in proc.stdout  # the printed table
    results = json.loads((out / "results.json").read_text())
    assert set(results) >= {"runs", "config", "versions"}
    assert [r["method"] for r in results["runs"]] == ["dkvb", "finetune"]
    for r in results["runs"]:
        for field in ("method", "seed", "scenario", "dataset", "accuracy_matrix", "final_accuracy",
                      "average_incremental_accuracy", "bwt", "forgetting", "macro_f1_matrix", "train_seconds",
                      "trainable_parameters"):
            assert field in r, field
        a = np.array(r["accuracy_matrix"])
        assert a.shape == (3, 3) and np.isclose(r["final_accuracy"], a[-1].mean())
        assert np.array(r["macro_f1_matrix"]).shape == (3, 3)
    dkvb = results["runs"][0]
    assert dkvb["accuracy_matrix"][0][0] > 0.8  # three easy intents after task 1
    assert results["config"]["task_names"] and results["config"]["feature_cache"]["misses"] >= 6
    for method in ("dkvb", "finetune"):
        rows = list(csv.reader((out / f"accuracy_matrix_{method}.csv").open()))
        assert len(rows) == 4 and len(rows[0]) == 4  # header row/column + 3 x 3
        assert (out / f"accuracy_heatmap_{method}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "accuracy_curves.png").is_file() and (out / "summary.md").is_file()
    assert (out / "checkpoints" / "dkvb" / "seed0" / "progress.json").is_file()
    # A second run with the same cache encodes nothing.
    run_job(["--config", cfg, "--output-dir", tmp_path / "again", "--cache-dir", tmp_path / "cache", "--methods", "dkvb"])
    again = json.loads((tmp_path / "again" / "results.json").read_text())
    assert again["config"]["feature_cache"]["misses"] == 0
    assert again["runs"][0]["accuracy_matrix"] == dkvb["accuracy_matrix"]


def test_sigkill_mid_run_then_resume_gives_the_same_results(tiny_encoder_dir, tmp_path):
    encoder = tiny_encoder_dir("bert")
    cfg = write_config(tmp_path / "c.yaml", encoder=str(encoder), max_train_per_class=10,
                       dkvb={"num_codebooks": 4, "num_keys": 32, "epochs": 2, "key_init_batch_rows": 128})
    common = ["--config", cfg, "--cache-dir", tmp_path / "cache"]
    run_job(common + ["--output-dir", tmp_path / "full"])
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, str(RUN), *map(str, common), "--output-dir", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    progress = out / "checkpoints" / "finetune" / "seed0" / "progress.json"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and not progress.is_file():
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)  # mid-run: after finetune's first task, before its last
    proc.wait()
    assert not (out / "results.json").exists()
    done = json.loads(progress.read_text())["completed_tasks"]
    assert 1 <= done < 3
    refused = run_job(common + ["--output-dir", out], check=False)
    assert refused.returncode == 2 and "--resume" in refused.stderr  # nothing is overwritten silently
    resumed = run_job(common + ["--output-dir", out, "--resume"])
    assert "already finished" in resumed.stdout and "resumed after task" in resumed.stdout
    full, after = matrices(tmp_path / "full"), matrices(out)
    assert full.keys() == after.keys()
    for method in full:
        np.testing.assert_array_equal(after[method], full[method], err_msg=method)


def test_two_processes_match_one(tiny_encoder_dir, tmp_path):
    accelerate = Path(sys.executable).with_name("accelerate")
    if not accelerate.exists():
        pytest.skip("the accelerate launcher is not installed beside this python")
    encoder = tiny_encoder_dir("bert")
    cfg = write_config(tmp_path / "c.yaml", encoder=str(encoder), max_train_per_class=10,
                       dkvb={"num_codebooks": 4, "num_keys": 32, "epochs": 2, "key_init_batch_rows": 128})
    run_job(["--config", cfg, "--cache-dir", tmp_path / "cache1", "--output-dir", tmp_path / "one"])
    env = {"OMP_NUM_THREADS": "1"}
    run_job(["--config", cfg, "--cache-dir", tmp_path / "cache2", "--output-dir", tmp_path / "two"], env=env,
            launcher=[str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                      "--mixed_precision", "no", "--dynamo_backend", "no"])
    two = json.loads((tmp_path / "two" / "results.json").read_text())
    assert two["config"]["processes"] == 2
    one, both = matrices(tmp_path / "one"), matrices(tmp_path / "two")
    # DKVB trains from the same cached indices in each process: equal to the last digit (the
    # features were encoded by two processes, each its share, into one cache).
    np.testing.assert_allclose(both["dkvb"], one["dkvb"], atol=1e-12)
    # Fine-tuning splits each batch over the processes (DDP): the same updates up to float
    # reassociation, so the same accuracy within a few test examples per cell.
    np.testing.assert_allclose(both["finetune"], one["finetune"], atol=0.1)


@pytest.mark.parametrize("args, message", [
    (["--methods", "dkvb,magic"], "unknown method 'magic'; accepted:"),
    (["--scenario", "online_il"], "unknown scenario 'online_il'; accepted: class_il, domain_il, stream_il, task_type_il"),
    (["--set", "dkvb.learning_rate=3"], "method 'dkvb' has no option(s) ['learning_rate']; accepted:"),
    (["--set", "dkvb.epochs=two"], "dkvb.epochs='two' must be an integer (default 10)"),
    (["--set", "colour=blue"], "unknown option 'colour'"),
    (["--seeds", "0,x"], "--seeds '0,x': give comma-separated integers"),
    (["--dataset", "no_such_data"], "no_such_data"),
    (["--set", "dkvb.num_codebooks=5"], "num_codebooks=5 does not divide hidden size 384; use one of 1, 2, 3, 4, 6"),
    (["--set", "dkvb.num_keys=0"], "dkvb.num_keys=0 must be >= 1 (an integer"),
    (["--set", "scenario_options.oos_train=true"], "oos_train=True needs oos=True"),
])
def test_bad_options_give_one_clear_error(args, message, tmp_path):
    proc = run_job(["--output-dir", tmp_path / "o", "--cache-dir", tmp_path / "c", "--max-train-per-class", "2", *args],
                   check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "c").exists() or not any((tmp_path / "c").iterdir()), "it encoded before failing"


def test_unknown_config_key_is_rejected(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("scenario: class_il\nepochs: 3\n")
    proc = run_job(["--config", cfg, "--output-dir", tmp_path / "o"], check=False)
    assert proc.returncode == 2 and "unknown key(s) ['epochs']" in proc.stderr


def test_task_type_il_seeds_share_one_label_and_one_table_row(tiny_encoder_dir, tmp_path):
    """Seeds reorder task_type_il's datasets; the runs must still aggregate as one method."""
    folders = []
    for name, words in (("sent", ("good", "bad")), ("topic", ("sport", "money"))):
        folder = tmp_path / name
        folder.mkdir()
        for split in ("train", "test"):
            rows = [{"text": f"{w} text number {i}", "label": w} for i in range(8) for w in words]
            (folder / f"{split}.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
        folders.append(str(folder))
    out = tmp_path / "out"
    proc = run_job(["--scenario", "task_type_il", "--dataset", ",".join(folders), "--methods", "nmc",
                    "--seeds", "0,1", "--encoder", tiny_encoder_dir("bert"), "--output-dir", out,
                    "--cache-dir", tmp_path / "cache", "--no-progress"])
    runs = json.loads((out / "results.json").read_text())["runs"]
    assert [r["seed"] for r in runs] == [0, 1] and runs[0]["task_names"] != runs[1]["task_names"]
    assert runs[0]["dataset"] == runs[1]["dataset"] == ",".join(sorted(folders))
    rows = [line for line in (out / "summary.md").read_text().splitlines() if "nmc" in line]
    assert len(rows) == 1 and re.search(r"\|\s*2\s*\|", rows[0]), proc.stdout[-2000:]  # one row, 2 seeds
