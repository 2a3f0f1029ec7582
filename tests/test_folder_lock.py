"""One run per output folder: a second run on a locked folder is refused at once, naming the pid."""

from __future__ import annotations

import os

import pytest

from cli_tools import base_args, run_module, tiny_dataset
from dkvb_nlp.engine.folder_lock import FolderBusy, lock_folder


def test_a_held_folder_refuses_a_second_lock_and_frees_on_release(tmp_path):
    first = lock_folder(tmp_path / "out")
    assert (tmp_path / "out" / ".lock").read_text().strip() == str(os.getpid())
    with pytest.raises(FolderBusy, match=rf"--output-dir {tmp_path / 'out'} is in use by another run \(pid {os.getpid()}\)"):
        lock_folder(tmp_path / "out")
    first.release()
    with lock_folder(tmp_path / "out"):  # free again once released
        pass


def test_a_file_is_not_a_folder(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(ValueError, match="is a file, not a folder"):
        lock_folder(tmp_path / "f")


def test_the_main_job_refuses_a_folder_another_run_holds(tiny_encoder_dir, tmp_path, capsys):
    main = run_module().main
    out = tmp_path / "out"
    args = base_args(tiny_encoder_dir("bert"), tiny_dataset(tmp_path / "data"), out, tmp_path / "cache")
    with lock_folder(out):  # as if another run were writing there
        assert main(args) == 2
        err = capsys.readouterr().err
        assert "is in use by another run" in err and "Traceback" not in err
        assert not (out / "results.json").exists()
    assert main(args) == 0 and (out / "results.json").is_file()  # the lock is dropped with its holder
