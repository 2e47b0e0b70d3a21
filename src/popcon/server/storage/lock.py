"""One writer per database: the lock a writer takes before it opens the database.

An exclusive ``flock`` on ``<database>.lock`` beside the (resolved) database file, holding the
holder's pid as text. The system drops it when the holder's process ends, however it ends
(SIGKILL too), so it never goes stale. Readers never take it, and SQLite does not know of it.
"""

from __future__ import annotations

import errno
import fcntl
import os
import time
from pathlib import Path
from typing import Union

#: How long a refused writer waits for the holder's pid to appear in a lock just taken.
_PID_WAIT = 0.1


class DatabaseInUse(OSError):
    """Another writer holds the database's :class:`WriterLock`; ``pid`` is its process (None
    when the lock file does not say)."""

    def __init__(self, path: Union[str, os.PathLike[str]], pid: int | None) -> None:
        holder = f"pid {pid}" if pid is not None else "pid unknown"
        reason = f"in use by another collector ({holder}); one writer per database"
        super().__init__(errno.EBUSY, reason, os.fspath(path))
        self.pid = pid

    def __str__(self) -> str:
        return f"{self.filename}: {self.strerror}"


class WriterLock:
    """What makes a writer the one writer of its database: an exclusive ``flock`` on
    ``<database>.lock`` beside the (resolved) database file, which holds the holder's pid as
    text. The system drops the lock when the holder's process ends, however it ends (SIGKILL
    too), so it never goes stale; a second lock on it, from any process, is refused. Readers
    never take it, and SQLite does not know of it."""

    def __init__(self, database: Union[str, os.PathLike[str]]) -> None:
        self.database = database
        real = Path(os.path.realpath(database))
        self.path = real.with_name(real.name + ".lock")
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock and write this process's pid into it. Raises :class:`DatabaseInUse`
        when another writer holds it, ``OSError`` when the lock file cannot be made."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        except BlockingIOError:  # flock: another open file holds it
            pid = _holder_pid(fd)
            os.close(fd)
            raise DatabaseInUse(self.database, pid) from None
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def release(self) -> None:
        """Empty the lock file and drop the lock (the file stays: removing it would let two
        writers lock two different files)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.ftruncate(fd, 0)
        except OSError:  # the lock goes with the descriptor all the same
            pass
        finally:
            os.close(fd)


def _holder_pid(fd: int) -> int | None:
    """The pid written in a lock file held by another process; it writes it just after
    taking the lock, so an empty file is read again for a moment."""
    deadline = time.monotonic() + _PID_WAIT
    while True:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        if text.isdigit():
            return int(text)
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.01)
