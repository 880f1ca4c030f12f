"""Which rings belong to a data directory: what lets a restart resume a crashed run's rings.

A run that dies whole (every process killed: the launcher and the children that would have
followed it) leaves its rings in shared memory with what was in flight: orders a gateway had
published and counted as received but the sequencer had not taken yet, events the engine had
published that a gateway had not stored. Re-creating the rings would drop them, silently
(the client's numbers are counted, nothing answers those orders). So the launcher resumes a
ring left by a dead run instead, but only when it is this data directory's: the launcher
records each ring's name and creation time (its identity everywhere: the session stores,
the output positions) in ``<data_dir>/rings.json`` once it has them, and a stale ring whose
creation time is the one recorded is this directory's, with the journal, stores and
positions that match it. Any other stale ring (another directory's, another layout, a record
lost) is reclaimed and created afresh, as before.

The file is written whole (a temporary, then a rename): a crash leaves the old record or
the new one. A launcher holds ``<data_dir>/launcher.lock`` (``flock``) for its life, so two
launchers never resume the same rings; the lock goes with the process, however it ends.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path

__all__ = ["RINGS_FILE", "LOCK_FILE", "recorded", "record", "hold_launcher_lock"]

RINGS_FILE = "rings.json"
LOCK_FILE = "launcher.lock"


def recorded(data_dir: Path) -> dict[str, int]:
    """Ring name -> creation time (ns), as the last launcher on ``data_dir`` recorded them
    (empty when none did or the record cannot be read)."""
    try:
        data = json.loads((data_dir / RINGS_FILE).read_text())
        return {str(k): int(v) for k, v in data.items()}
    except (OSError, ValueError, AttributeError, TypeError):
        return {}


def record(data_dir: Path, rings: dict[str, int]) -> None:
    """Record ``rings`` (name -> creation time) as ``data_dir``'s, replacing the last record."""
    tmp = data_dir / (RINGS_FILE + ".tmp")
    tmp.write_text(json.dumps(rings, sort_keys=True))
    os.replace(tmp, data_dir / RINGS_FILE)


def hold_launcher_lock(data_dir: Path) -> int | None:
    """Take ``data_dir``'s launcher lock (exclusive, not waiting): its descriptor, to keep
    open for the launcher's life; None when another live launcher holds it."""
    fd = os.open(data_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    return fd
