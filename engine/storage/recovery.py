"""Recovery: the newest valid snapshot plus the journal after it reproduces the engine state.

:func:`load_recovery` is the plan, for any snapshot and journal: the newest snapshot that
passes its checks (and, when ``schema`` is given, was written by that message schema; a
snapshot of another schema is not used) and the journal records from its sequence on, or,
with no usable snapshot, the whole journal from ``initial_seq``.  A damaged newest snapshot
falls back to an older one; the journal (with the archive its directory names:
:class:`~ringex.engine.storage.journal_reader.JournalReader`) must reach back to the
sequence replay starts at, or replay raises :class:`~ringex.engine.storage.journal_format.JournalCorruptError`.

A snapshot ahead of the journal (the journal ends before the snapshot's sequence) is refused
with :class:`JournalBehindSnapshotError`. A snapshot is written only after the journal is
synced, so this is a journal tail lost or truncated afterwards (a disk, a restore, a hand),
and every way on is wrong without an operator: from the snapshot, the journal would
continue under sequence numbers whose messages it lost, so no replay could reproduce the
output again; from an older snapshot, messages already answered to clients would be undone.
The error names the missing range and both ways out (restore the segments, or move the
newer snapshots aside to accept the loss).

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
from ringex.engine.storage.snapshot import (
    Snapshot, SnapshotCorruptError, list_snapshots, load_latest_snapshot, read_snapshot,
)
from ringex.engine.wire import messages as m

log = logging.getLogger(__name__)

#: The sequence of the very first input message (the sequencer counts from 1).
FIRST_SEQ = 1


class JournalBehindSnapshotError(RuntimeError):
    """The newest usable snapshot covers messages the journal no longer holds."""


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
    at_most: int | None = None,
    clean: bool = True,
) -> Recovery:
    """Recovery = newest valid snapshot + the journal after it (see the module notes). With
    ``at_most``: the newest snapshot at or before that sequence (a state to replay forward
    from, ``output_replay``); ``clean=False`` leaves snapshot temporaries alone (a running
    engine may be writing one)."""
    snap = load_latest_snapshot(snapshot_dir, clean=clean, at_most=at_most)
    if snap is not None and schema is not None and snap.meta.get("schema") != schema:
        log.warning("recovery: %s was written by schema %s, not %s; not using it",
                    snap.path, snap.meta.get("schema"), schema)
        snap = None
    if snap is not None:
        _check_journal_reaches(snap, Path(journal_dir), Path(snapshot_dir))
    return Recovery(
        snapshot=snap,
        from_seq=snap.seq if snap is not None else initial_seq,
        journal_dir=Path(journal_dir),
    )


def check_journal_reaches_snapshots(data_dir: Path | str) -> None:
    """Before starting anything: raise :class:`JournalBehindSnapshotError` if recovery would
    (the newest *valid* snapshot ahead of the journal). Cheap when all is well: snapshot
    names and the journal's last segment; a snapshot is read only when it is ahead."""
    sdir, jdir = snapshot_dir(data_dir), journal_dir(data_dir)
    next_seq = JournalReader(jdir).next_seq or FIRST_SEQ
    for seq, path in reversed(list_snapshots(sdir)):
        if seq <= next_seq:
            return
        try:
            snap = read_snapshot(path)
        except (SnapshotCorruptError, OSError):
            continue  # recovery skips it too
        _check_journal_reaches(snap, jdir, sdir)


def _check_journal_reaches(snap: Snapshot, journal_dir: Path, snapshot_dir: Path) -> None:
    """Refuse a snapshot the journal stops short of (see the module notes)."""
    # Retention never retires the last segment, so a journal that ever held anything
    # still knows where its next append goes, even with every record retired.
    next_seq = JournalReader(journal_dir).next_seq
    # An empty journal reaches FIRST_SEQ: a snapshot taken before any message (an engine
    # stopped before its first batch) covers nothing the journal could have lost.
    if (FIRST_SEQ if next_seq is None else next_seq) >= snap.seq:
        return
    ends = "holds no segment" if next_seq is None else f"ends at sequence {next_seq - 1}"
    missing_from = FIRST_SEQ if next_seq is None else next_seq
    raise JournalBehindSnapshotError(
        f"{journal_dir}: the journal {ends}, but snapshot {snap.path} covers every message "
        f"before {snap.seq}: messages {missing_from}..{snap.seq - 1} are missing from the journal "
        "(lost or truncated after the snapshot was written). Starting would either journal new "
        "messages under those sequence numbers or undo messages already answered, so the engine "
        "does not start. Restore the missing journal segments; or, to accept losing those "
        f"messages, move every snapshot from {snapshot_dir} whose sequence is above "
        f"{missing_from} somewhere else and start again (recovery then ends at sequence "
        f"{missing_from - 1})."
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
