"""An exchange data directory's storage layout: ``journal/`` and ``snapshots/``.

(The engine agent keeps ``engine.json`` and ``output.json`` beside them; a journal archive,
when configured, may be anywhere and is named by the journal directory.)
"""

from __future__ import annotations

from pathlib import Path

from ringex.engine.storage.journal_reader import JournalReader


def journal_dir(data_dir: Path | str) -> Path:
    return Path(data_dir) / "journal"


def snapshot_dir(data_dir: Path | str) -> Path:
    return Path(data_dir) / "snapshots"


def journal_last_seq(data_dir: Path | str) -> int:
    """The last journaled sequence number in a data directory (0 when none)."""
    d = journal_dir(data_dir)
    if not d.is_dir():
        return 0
    # From where the next append goes, not from the messages the journal holds: once
    # retention has retired every full segment, the live journal may hold none.
    nxt = JournalReader(d).next_seq
    return 0 if nxt is None else nxt - 1
