"""One writer per journal directory: an exclusive ``flock`` on its ``.journal.lock``.

The lock is held for as long as the descriptor is open, and the kernel drops it when the
holder exits or is killed, so a crashed writer never leaves the directory locked. The holder
writes its pid into the file, so whoever finds the directory locked can say by whom
(``journal_holder``); the pid is only read while the lock is held, so a stale pid left by a
dead holder is never reported.
"""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path

from ringex.engine.storage.journal_format import LOCK_NAME, JournalLockedError

_BUSY = (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES)
_PID_WIDTH = 24


class JournalLock:
    """Take the directory's lock now; :class:`JournalLockedError` if another process has it."""

    def __init__(self, directory: Path) -> None:
        self.fd = os.open(directory / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(self.fd)
            if exc.errno in _BUSY:
                holder = journal_holder(directory)
                by = f" (process {describe(holder)})" if holder else ""
                raise JournalLockedError(f"journal {directory} is open by another writer{by}") from exc
            raise
        # Fixed width, so a shorter pid overwrites a longer one whole (no truncate needed).
        os.pwrite(self.fd, f"{os.getpid():<{_PID_WIDTH - 1}}\n".encode(), 0)

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # closing the descriptor drops the flock
            self.fd = -1


def journal_holder(directory: Path) -> int | None:
    """The pid of the process holding ``directory``'s journal lock, or None if nobody does
    (0 if a holder is there but has not written its pid yet)."""
    path = Path(directory) / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in _BUSY:
                raise
            text = os.pread(fd, _PID_WIDTH, 0).decode("ascii", "replace").strip()
            return int(text) if text.isdigit() else 0
        return None  # we got it: nobody holds it (closing the descriptor lets it go)
    finally:
        os.close(fd)


def describe(pid: int) -> str:
    """``pid`` and its command line, for a one-line message."""
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        cmd = ""
    return f"{pid}: {cmd}" if cmd else str(pid)
