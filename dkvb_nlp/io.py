"""Atomic file writes: the final name holds either the old content or the complete new one.

Each write goes to a temporary file in the target's directory (same filesystem, so the rename
is atomic), is flushed and fsynced, then `os.replace`d onto the final name; the directory is
fsynced too so the rename survives a crash. On any error the temporary file is removed and an
existing file under the final name is left untouched.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Callable

from .faults import crash_point

__all__ = ["atomic_write", "atomic_write_bytes", "atomic_write_json", "atomic_write_text", "default_cache_dir"]


def default_cache_dir() -> Path:
    """Where caches live: `$DKVB_CACHE_DIR`, else ~/.cache/dkvb_nlp."""
    return Path(os.environ.get("DKVB_CACHE_DIR", Path.home() / ".cache" / "dkvb_nlp"))


# Temporary files are dot-files with this suffix, so a crash leaves something recognisable.
TEMP_SUFFIX = ".tmp"


@functools.lru_cache(maxsize=1)
def _umask() -> int:
    # There is no read-only umask query; set-and-restore once and remember the answer.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def replacing_mode(path) -> int:
    """The mode a file written under a temporary name should get before it replaces `path`:
    temporary files are 0600; keep the old file's mode, or what a plain open() would give."""
    path = Path(path)
    return path.stat().st_mode & 0o7777 if path.exists() else 0o666 & ~_umask()


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # e.g. Windows cannot open directories; the rename is still atomic there
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path, write: Callable[[IO[bytes]], Any]) -> Path:
    """Call write(f) on a binary temp file next to path, then atomically move it onto path."""
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        raise FileNotFoundError(f"cannot write {path}: directory {directory} does not exist")
    if path.is_dir():
        raise IsADirectoryError(f"cannot write {path}: it is a directory")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, replacing_mode(path))
        crash_point("atomic.before_replace")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(directory)
    return path


def atomic_write_bytes(path, data: bytes) -> Path:
    """Atomically replace path's content with data."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"data must be bytes-like; got {type(data).__name__}")
    return atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path, text: str, encoding: str = "utf-8") -> Path:
    """Atomically replace path's content with text (no newline translation)."""
    if not isinstance(text, str):
        raise TypeError(f"text must be str; got {type(text).__name__}")
    return atomic_write_bytes(path, text.encode(encoding))


def atomic_write_json(path, obj: Any, *, indent: int | None = 2, **dumps_kwargs) -> Path:
    """Atomically write obj as JSON (serialised fully first, so a bad value never reaches the disk)."""
    text = json.dumps(obj, indent=indent, **dumps_kwargs)
    return atomic_write_text(path, text + "\n")
