"""Checksums on everything saved: checkpoints and saved models carry a sha256; damage is refused
naming the file (a checkpoint falls back to the previous task's); loaded values are finite."""

from __future__ import annotations

import contextlib
import json
from types import SimpleNamespace

import pytest
import torch

from cli_tools import base_args, run_module, tiny_dataset
from dkvb_nlp.engine.checkpoint import Checkpoint, CheckpointError
from dkvb_nlp.engine.fingerprint import file_sha256


def save_tasks(folder, n: int) -> Checkpoint:
    ckpt = Checkpoint(folder)
    for t in range(n):
        ckpt.save({"w": torch.full((3, 4), float(t)), "n": torch.tensor([t])},
                  {"completed_tasks": t + 1, "accuracy_rows": [[0.5]] * (t + 1), "strategy": {"task": t}})
    return ckpt


def damage(path, at: int = 100, length: int = 16) -> None:
    data = bytearray(path.read_bytes())
    data[at:at + length] = bytes(255 - b for b in data[at:at + length])
    path.write_bytes(bytes(data))


def test_a_checkpoint_records_its_sha256_and_keeps_the_two_newest_tasks(tmp_path):
    ckpt = save_tasks(tmp_path, 3)
    progress = json.loads(ckpt.progress_path.read_text())
    assert progress["state_file"] == "state_task2.safetensors"
    assert progress["state_sha256"] == file_sha256(tmp_path / "state_task2.safetensors")
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "progress.json", "progress_task1.json", "progress_task2.json", "state_task1.safetensors",
        "state_task2.safetensors"]
    tensors, progress = ckpt.load()
    assert progress["completed_tasks"] == 3 and torch.equal(tensors["w"], torch.full((3, 4), 2.0))
    assert Checkpoint(tmp_path / "none").load() is None


@pytest.mark.parametrize("harm", ["flip", "truncate", "delete"])
def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_task_saying_so(tmp_path, harm):
    ckpt = save_tasks(tmp_path, 2)
    state = tmp_path / "state_task1.safetensors"
    if harm == "flip":
        damage(state)
    elif harm == "truncate":
        state.write_bytes(state.read_bytes()[:50])
    else:
        state.unlink()
    said = []
    tensors, progress = ckpt.load(log=said.append)
    assert progress["completed_tasks"] == 1 and torch.equal(tensors["w"], torch.zeros(3, 4))
    assert len(said) == 1 and str(state) in said[0] and "falling back to the checkpoint after task 1" in said[0]


def test_with_no_good_checkpoint_left_loading_fails_naming_the_file(tmp_path):
    ckpt = save_tasks(tmp_path, 2)
    for t in (0, 1):
        path = tmp_path / f"state_task{t}.safetensors"
        path.write_bytes(path.read_bytes()[:40])  # truncated
    with pytest.raises(CheckpointError) as err:
        ckpt.load()
    message = str(err.value)
    assert "\n" not in message and str(tmp_path / "state_task1.safetensors") in message
    assert "does not match its sha256" in message and "--overwrite" in message


def test_unreadable_or_non_finite_tensors_are_refused_even_with_a_matching_sha256(tmp_path):
    ckpt = save_tasks(tmp_path, 1)
    state = tmp_path / "state_task0.safetensors"
    progress = json.loads(ckpt.progress_path.read_text())

    def rewrite(blob: bytes) -> None:  # as if damaged before its checksum was taken
        state.write_bytes(blob)
        for name in ("progress.json", "progress_task0.json"):
            (tmp_path / name).write_text(json.dumps({**progress, "state_sha256": file_sha256(state)}))

    rewrite(b"\x10\x00\x00\x00\x00\x00\x00\x00{not a header}")
    with pytest.raises(CheckpointError, match="cannot be read"):
        ckpt.load()
    from safetensors.torch import save

    rewrite(save({"w": torch.tensor([1.0, float("nan")])}))
    with pytest.raises(CheckpointError, match=r"tensor 'w' holds NaN or infinite values"):
        ckpt.load()


def test_a_truncated_progress_file_falls_back_to_its_per_task_copy(tmp_path):
    ckpt = save_tasks(tmp_path, 2)
    ckpt.progress_path.write_text('{"completed_tasks": 2, "accur')
    said = []
    _, progress = ckpt.load(log=said.append)
    assert progress["completed_tasks"] == 2 and "progress.json is damaged" in said[0]


def test_a_checkpoint_that_does_not_fit_the_strategy_is_one_clear_error(tmp_path):
    from dkvb_nlp.engine.loop import run_continual

    save_tasks(tmp_path, 1)

    class Strategy:  # what a changed num_keys does: load_state_dict of other shapes
        name = "dkvb"

        def setup(self, tensors=None, meta=None):
            raise RuntimeError("Error(s) in loading state_dict for KeyValueBottleneck:\n\tsize mismatch for keys")

    ctx = SimpleNamespace(stream=None, num_tasks=2, seed=0, reporting_to=lambda report: contextlib.nullcontext())
    with pytest.raises(CheckpointError) as err:
        run_continual(ctx, Strategy(), dataset="x", checkpoint_dir=tmp_path, resume=True, log=lambda _: None)
    message = str(err.value)
    assert "\n" not in message and str(tmp_path / "state_task0.safetensors") in message
    assert "does not fit dkvb" in message and "size mismatch" in message


# ------------------------------------------------------------------------------ the main job
def test_the_main_job_falls_back_from_a_damaged_checkpoint_and_refuses_when_none_is_good(
        tiny_encoder_dir, tmp_path, capsys):
    main = run_module().main
    out = tmp_path / "out"
    args = base_args(tiny_encoder_dir("bert"), tiny_dataset(tmp_path / "data"), out, tmp_path / "cache")
    assert main(args) == 0
    expected = json.loads((out / "results.json").read_text())["runs"][0]["accuracy_matrix"]
    seed_dir = out / "checkpoints" / "nmc" / "seed0"
    (out / "runs" / "nmc_seed0.json").unlink()  # as if killed after the last checkpoint
    damage(seed_dir / "state_task1.safetensors")
    capsys.readouterr()
    assert main(args + ["--resume"]) == 0
    said = capsys.readouterr().out
    assert "does not match its sha256" in said and "falling back to the checkpoint after task 1" in said
    assert json.loads((out / "results.json").read_text())["runs"][0]["accuracy_matrix"] == expected

    (out / "runs" / "nmc_seed0.json").unlink()
    for t in (0, 1):
        path = seed_dir / f"state_task{t}.safetensors"
        path.write_bytes(path.read_bytes()[:30])
    assert main(args + ["--resume"]) == 2
    err = capsys.readouterr().err
    assert f"state_task1.safetensors does not match its sha256" in err and "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error:")]  # progress bars may precede it
    assert len(errors) == 1 and "state_task1.safetensors does not match its sha256" in errors[0]


# ------------------------------------------------------------------------------ saved models
@pytest.fixture
def saved(tiny_encoder_dir, tmp_path):
    from dkvb_nlp import DKVBConfig, DKVBForSequenceClassification

    config = DKVBConfig(encoder_name_or_path=str(tiny_encoder_dir("bert")), num_codebooks=4, num_keys=8,
                        id2label={0: "a", 1: "b"}, key_init_batch_rows=64, ridge_features=32)
    model = DKVBForSequenceClassification(config).init_keys(["one text", "another text", "a third one"] * 4)
    model.partial_fit(["one text", "another text"], ["a", "b"])
    model.save_pretrained(tmp_path / "m")
    return tmp_path / "m"


def test_a_saved_model_carries_its_sha256_and_loads(saved):
    from dkvb_nlp import DKVBForSequenceClassification

    digest, name = (saved / "model.safetensors.sha256").read_text().split()
    assert name == "model.safetensors" and digest == file_sha256(saved / "model.safetensors")
    assert DKVBForSequenceClassification.from_pretrained(saved).config.num_labels == 2


def test_a_damaged_saved_model_is_refused_naming_the_file(saved):
    from dkvb_nlp import DKVBForSequenceClassification

    damage(saved / "model.safetensors", at=200)
    with pytest.raises(ValueError, match=r"model\.safetensors does not match its sha256 in model\.safetensors\.sha256"):
        DKVBForSequenceClassification.from_pretrained(saved)


def test_a_saved_model_with_nan_values_is_refused_even_without_a_checksum(saved, caplog):
    from safetensors.torch import load_file, save_file

    from dkvb_nlp import DKVBForSequenceClassification

    weights = saved / "model.safetensors"
    state = load_file(str(weights))
    name = next(k for k, v in state.items() if v.is_floating_point() and v.numel())
    state[name] = state[name].clone().view(-1).index_fill_(0, torch.tensor([0]), float("nan")).view(state[name].shape)
    save_file(state, str(weights), metadata={"format": "pt"})
    (saved / "model.safetensors.sha256").unlink()  # as an older version saved it
    with pytest.raises(ValueError, match=f"tensor '{name}' holds NaN or infinite values"):
        DKVBForSequenceClassification.from_pretrained(saved)
    assert "has no model.safetensors.sha256 beside it" in caplog.text
