"""One run per output folder: an advisory `fcntl` lock held for the run's life.

`lock_folder(folder)` takes an exclusive, non-blocking `flock` on `<folder>/.lock` and writes
the holder's pid into it. A second run on the same folder is refused at once with a
`FolderBusy` naming that pid. The operating system drops the lock when the holder exits, however
it exits (SIGKILL included), so a killed run never leaves a stale lock behind; the file itself
stays (removing it would let two runs lock two different files). `take_lock` is the one flock
mechanism, also used by the feature cache to build each entry once.
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


def take_lock(handle: IO[str], path: Path, *, wait: str | None = None, unprotected: str = "") -> bool:
    """An exclusive `flock` on the open `handle` of `path`; True once held.

    Another holder: with `wait` (a message, logged first) wait for it; without, BlockingIOError.
    False, after a warning ending in `unprotected`, where no advisory lock can be taken (no fcntl,
    or a filesystem without locks, such as some network filesystems). Closing the handle drops it.
    """
    try:
        import fcntl
    except ImportError:  # not POSIX: no advisory locks; say so rather than pretend
        logger.warning("no fcntl on this platform: %s is not locked%s", path, unprotected)
        return False
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        if err.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            if wait is None:
                raise BlockingIOError(err.errno, err.strerror) from None
            logger.info(wait)
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            return True
        if err.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
            logger.warning("cannot lock %s (%s)%s", path, err.strerror, unprotected)
            return False
        raise
    return True


def lock_folder(folder: str | os.PathLike, what: str = "--output-dir") -> FolderLock:
    """Create `folder` if needed and lock it for this process; FolderBusy if another process holds it."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{what} {folder} is a file, not a folder; give a folder")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    handle = open(path, "a+", encoding="utf-8")  # "a+": never truncates a holder's pid before we hold the lock
    try:
        held = take_lock(handle, path, unprotected=": it is not protected against a second run")
    except BlockingIOError:
        handle.seek(0)
        pid = handle.read().strip() or "unknown"
        handle.close()
        raise FolderBusy(f"{what} {folder} is in use by another run (pid {pid}); wait for it to end, or choose "
                         f"another {what}") from None
    except BaseException:
        handle.close()
        raise
    if not held:
        handle.close()
        return FolderLock(path, None)
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return FolderLock(path, handle)
