"""Deleting a large file without one large file-system transaction.

On ext4 one unlink of a 64 MiB journal segment frees all its blocks in one transaction, and
the engine's next journal fdatasync, which commits it, took 15-19 ms beside it
(docs/benchmarks.md, "Snapshots by a shadow engine"); a 321 MB snapshot file is five times
that. :func:`shrink_and_unlink` truncates the file ``STEP`` bytes at a time with a pause
between, so each commit carries only a little of it, then unlinks what is left. Callers
first rename the file out of the names their readers look at (and fsync the directory), so
that a kill in the middle leaves a file no reader takes for live data, which they delete on
their next pass.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

STEP = 4 << 20
GAP_S = 0.002


def shrink_and_unlink(path: Path) -> None:
    """Truncate ``path`` a ``STEP`` at a time, ``GAP_S`` apart, then unlink it (gone already:
    nothing to do)."""
    try:
        fd = os.open(path, os.O_WRONLY)
    except FileNotFoundError:
        return
    try:
        size = os.fstat(fd).st_size
        while size > 0:
            size = max(0, size - STEP)
            os.ftruncate(fd, size)
            if size:
                time.sleep(GAP_S)
    finally:
        os.close(fd)
    path.unlink(missing_ok=True)
