"""An exchange data directory's storage layout: ``journal/`` and ``snapshots/``.

(The engine agent keeps ``engine.json`` and ``output.json`` beside them; a journal archive,
when configured, may be anywhere and is named by the journal directory.)
"""

from __future__ import annotations

from pathlib import Path

from ringex.engine.storage.journal_reader import JournalReader
from ringex.engine.wire import messages as m

_TS_OFFSET = m.NewOrder.offset("timestampNs")  # the Stamp leads every message alike


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


def journal_last_stamp(data_dir: Path | str) -> int:
    """The sequencer time on the last journaled message (0 when the journal holds none):
    a sequencer started on this directory never stamps below it, whatever the wall clock
    says after a restart (docs/risk.md: funding and breaker reopens run from the stamps)."""
    d = journal_dir(data_dir)
    if not d.is_dir():
        return 0
    last = JournalReader(d).last_message()
    if last is None:
        return 0
    return int.from_bytes(last[1][_TS_OFFSET:_TS_OFFSET + 8], "little")
