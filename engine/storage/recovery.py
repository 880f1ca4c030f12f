"""Recovery: the newest valid snapshot plus the journal after it reproduces the engine state.

:func:`load_recovery` is the plan, for any snapshot and journal: the newest snapshot that
passes its checks (and, when ``schema`` is given, was written by that message schema; a
snapshot of another schema is not used) and the journal records from its sequence on, or,
with no usable snapshot, the whole journal from ``initial_seq``.  A damaged newest snapshot
falls back to an older one; the journal (with the archive its directory names:
:class:`~ringex.engine.storage.journal_reader.JournalReader`) must reach back to the
sequence replay starts at, or replay raises :class:`~ringex.engine.storage.journal_format.JournalCorruptError`.

:func:`recover_engine` applies it to an exchange data directory: the engine restored from
the snapshot and an iterator that replays the journal after it.  The engine agent recovers
with it on start, ``ringex replay`` when the journal no longer starts at the first message,
and the tests.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from ringex.engine.config import EngineConfig
from ringex.engine.engine import MatchingEngine
from ringex.engine.storage.data_dir import journal_dir, snapshot_dir
from ringex.engine.storage.journal_format import Record
from ringex.engine.storage.journal_reader import JournalReader, replay_from
from ringex.engine.storage.snapshot import Snapshot, load_latest_snapshot
from ringex.engine.wire import messages as m

log = logging.getLogger(__name__)

#: The sequence of the very first input message (the sequencer counts from 1).
FIRST_SEQ = 1


@dataclass
class Recovery:
    """The newest usable snapshot (``None``: start from empty state) and the journal records
    to replay on top of it, from ``from_seq`` on."""

    snapshot: Snapshot | None
    from_seq: int
    journal_dir: Path

    def records(self) -> Iterator[Record]:
        """Journal records holding exactly the messages with sequence ``>= from_seq``."""
        if JournalReader(self.journal_dir).first_seq is None:
            return iter(())
        return replay_from(self.journal_dir, self.from_seq)


def load_recovery(
    snapshot_dir: Path | str,
    journal_dir: Path | str,
    *,
    initial_seq: int = FIRST_SEQ,
    schema: str | None = None,
) -> Recovery:
    """Recovery = newest valid snapshot + the journal after it (see the module notes)."""
    snap = load_latest_snapshot(snapshot_dir)
    if snap is not None and schema is not None and snap.meta.get("schema") != schema:
        log.warning("recovery: %s was written by schema %s, not %s; not using it",
                    snap.path, snap.meta.get("schema"), schema)
        snap = None
    return Recovery(
        snapshot=snap,
        from_seq=snap.seq if snap is not None else initial_seq,
        journal_dir=Path(journal_dir),
    )


def record_slots(rec: Record) -> np.ndarray:
    """A journal record's payload as the (count, SLOT) slot array the engine takes."""
    return np.frombuffer(rec.payload, dtype=np.uint8).reshape(rec.count, m.SLOT_SIZE)


def recover_engine(
    cfg: EngineConfig, data_dir: Path | str
) -> tuple[MatchingEngine, int, int, Iterator[tuple[Record, np.ndarray]]]:
    """State from the newest valid snapshot; returns (engine, next_seq, events_before_replay,
    an iterator that replays the journal after it record by record, yielding each record and
    the events it produced).

    The caller must exhaust the iterator before using the engine.
    """
    plan = load_recovery(snapshot_dir(data_dir), journal_dir(data_dir), schema=m.SCHEMA.fingerprint)
    engine = MatchingEngine(cfg)
    events_total = 0
    if plan.snapshot is not None:
        engine.restore(plan.snapshot.arrays["arena"])
        events_total = int(plan.snapshot.meta["events_total"])
        log.info("engine: restored snapshot %s (next seq %d)", plan.snapshot.path.name, plan.from_seq)

    def replay() -> Iterator[tuple[Record, np.ndarray]]:
        for rec in plan.records():
            yield rec, engine.process(record_slots(rec))

    return engine, plan.from_seq, events_total, replay()
