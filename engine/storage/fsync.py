"""Making file-system changes durable: data of a file, entries of a directory.

A rename or unlink is durable only once its directory is fsynced; file data only once the
file is (fdata)synced.  The journal, its retention and the snapshots use these two.
"""

from __future__ import annotations

import os
from pathlib import Path


def fsync_directory(directory: Path | str) -> None:
    """Make the entries of ``directory`` (creations, renames, unlinks) durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fdatasync(fd: int) -> None:
    """Make a file's data durable (``fsync`` where the platform has no ``fdatasync``)."""
    # Looked up on each call (tests count calls by patching os.fdatasync).
    sync = getattr(os, "fdatasync", None) or os.fsync
    sync(fd)
