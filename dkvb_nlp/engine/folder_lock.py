"""One run per output folder: an advisory `fcntl` lock held for the run's life.

`lock_folder(folder)` takes an exclusive, non-blocking `flock` on `<folder>/.lock` and writes
the holder's pid into it. A second run on the same folder is refused at once with a
`FolderBusy` naming that pid. The operating system drops the lock when the holder exits, however
it exits (SIGKILL included), so a killed run never leaves a stale lock behind; the file itself
stays (removing it would let two runs lock two different files).
"""

from __future__ import annotations

import errno
import logging
import os
from pathlib import Path
from typing import IO

logger = logging.getLogger(__name__)

LOCK_NAME = ".lock"


class FolderBusy(ValueError):
    """Another process holds the folder's lock."""


class FolderLock:
    """A held lock; `release()` (or the process ending) lets another run in."""

    def __init__(self, path: Path, handle: IO[str] | None):
        self.path, self._handle = path, handle

    def release(self) -> None:
        if self._handle is not None:
            self._handle.close()  # closing the descriptor drops the flock
            self._handle = None

    def __enter__(self) -> "FolderLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def lock_folder(folder: str | os.PathLike, what: str = "--output-dir") -> FolderLock:
    """Create `folder` if needed and lock it for this process; FolderBusy if another process holds it."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{what} {folder} is a file, not a folder; give a folder")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    try:
        import fcntl
    except ImportError:  # not POSIX: no advisory locks; say so rather than pretend
        logger.warning("no fcntl on this platform: %s is not locked against a second run", folder)
        return FolderLock(path, None)
    handle = open(path, "a+", encoding="utf-8")  # "a+": never truncates a holder's pid before we hold the lock
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        if err.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            handle.seek(0)
            pid = handle.read().strip() or "unknown"
            handle.close()
            raise FolderBusy(f"{what} {folder} is in use by another run (pid {pid}); wait for it to end, or choose "
                             f"another {what}") from None
        handle.close()
        if err.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):  # e.g. some network filesystems
            logger.warning("cannot lock %s (%s): it is not protected against a second run", folder, err.strerror)
            return FolderLock(path, None)
        raise
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return FolderLock(path, handle)
