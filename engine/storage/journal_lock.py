"""One writer per journal directory: an exclusive ``flock`` on its ``.journal.lock``.

The lock is held for as long as the descriptor is open, and the kernel drops it when the
holder exits or is killed, so a crashed writer never leaves the directory locked.
"""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path

from ringex.engine.storage.journal_format import LOCK_NAME, JournalLockedError


class JournalLock:
    """Take the directory's lock now; :class:`JournalLockedError` if another process has it."""

    def __init__(self, directory: Path) -> None:
        self.fd = os.open(directory / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(self.fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise JournalLockedError(f"journal {directory} is open by another writer") from exc
            raise

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # closing the descriptor drops the flock
            self.fd = -1
