"""The engine's output again: events a subscriber missed, regenerated from the journal.

The output ring is not journaled; its inputs are, and the engine is deterministic, so any
stretch of its output can be made again: restore an engine from a snapshot taken before the
input that caused the first event wanted, replay the journal from there, and keep the events
from that one on. A subscriber that was untethered from the output ring (dead or hung for
half a ring, ``tools/launcher.py``) and rejoined at the head knows where it stopped (its
committed position, and the input and rank within that input of the last event it had) and
where it rejoined: ``replay_output`` gives it the events in between, byte for byte what the
ring carried, in order, so their ring positions are known too.

A snapshot before that input must still exist (``[journal] snapshots_kept``), or the journal
must still start at the first input; otherwise the events cannot be made again and
``replay_output`` returns None. The snapshot is chosen as recovery chooses one
(``recovery.load_recovery``, at or before that input, never cleaning an engine's temporaries).
"""

from __future__ import annotations

import logging
import os
import struct
import time
from pathlib import Path

import numpy as np

from ringex.engine.config import EngineConfig
from ringex.engine.wire import messages as m

log = logging.getLogger(__name__)

__all__ = ["OUTPUT_POSITION", "OutputPosition", "replay_output"]

OUTPUT_POSITION = "output.position"  # in a subscriber's directory (``OutputPosition``)
_POSITION = struct.Struct("<qqqq")  # ring creation time, next position, last event's input seq and rank

_SEQ = m.OrderAccepted.offset("seq")  # the stamp's seq: where every ring message has it
_U64 = struct.Struct("<Q")
_WALK = 8  # OutputPosition.advance looks at this many events from the batch's end one by one


def _event_seqs(events: np.ndarray) -> np.ndarray:
    return events[:, _SEQ:_SEQ + 8].copy().view("<u8")[:, 0].astype(np.int64)


class OutputPosition:
    """Where a subscriber of the output ring has read to, kept in ``OUTPUT_POSITION`` in its
    directory: the ring (its creation time), the next position, and the input (stamp seq) and
    rank within that input of the last event read: what ``replay_output`` needs to make the
    events after it again. Kept in memory at each commit of events and written at most every
    ``WRITE_EVERY_NS`` (and at ``close``): one system call a duty cycle saved, and the file
    may be behind, as a crash may leave it anyway (not synced): the subscriber then gets
    events it had already, which it skips as it skips any it reads again after a restart."""

    WRITE_EVERY_NS = 10_000_000

    def __init__(self, directory: str | Path, ring_created: int) -> None:
        self._fd = os.open(Path(directory) / OUTPUT_POSITION, os.O_RDWR | os.O_CREAT, 0o644)
        self.ring_created = ring_created
        self.position, self.seq, self.rank = -1, 0, -1  # nothing read (on this incarnation of the ring)
        self._written_at = 0
        raw = os.pread(self._fd, _POSITION.size, 0)
        if len(raw) == _POSITION.size:
            ring, pos, seq, rank = _POSITION.unpack(raw)
            if ring == ring_created:
                self.position, self.seq, self.rank = pos, seq, rank

    def advance(self, batch: np.ndarray, position: int) -> None:
        """``batch`` (the slots just committed, in order) ends before ``position``. An input's
        events are contiguous on the ring, so the last event's rank is the run of its input's
        events at the batch's end, after the previous batch's when that run is the whole batch."""
        n = len(batch)
        last = _U64.unpack_from(batch[n - 1], _SEQ)[0]
        # the run of the last input's events, counted from the end: short as a rule, so read
        # event by event, and a numpy pass (a few µs a commit) only for a long one
        run = 1
        while run < n and run < _WALK and _U64.unpack_from(batch[n - 1 - run], _SEQ)[0] == last:
            run += 1
        if run == _WALK and run < n:
            run = int(np.count_nonzero(_event_seqs(batch) == last))
        rank = self.rank + run if run == n and self.seq == last else run - 1
        self.position, self.seq, self.rank = position, last, rank
        now = time.monotonic_ns()
        if now - self._written_at >= self.WRITE_EVERY_NS:
            self._write(now)

    def _write(self, now: int) -> None:
        os.pwrite(self._fd, _POSITION.pack(self.ring_created, self.position, self.seq, self.rank), 0)
        self._written_at = now

    def missed(self, cfg: EngineConfig, data_dir: str | Path, joined: int) -> np.ndarray | None:
        """After a rejoin at ``joined``: the events from where this had read to up to there
        (empty when nothing is missing), or None when they cannot be made again."""
        if self.position < 0 or self.position >= joined:
            return np.zeros((0, m.SLOT_SIZE), np.uint8)
        return replay_output(cfg, data_dir, self.seq, self.rank + 1, joined - self.position)

    def close(self) -> None:
        if self._fd >= 0:
            if self.position >= 0:
                self._write(time.monotonic_ns())
            os.close(self._fd)
            self._fd = -1


def replay_output(cfg: EngineConfig, data_dir: str | Path, seq: int, skip: int, count: int) -> np.ndarray | None:
    """``count`` output events (ring slots) following the first ``skip`` events of input
    ``seq``, as the engine published them; None when no snapshot is old enough and the
    journal does not start at the first input (or the journal ends first)."""
    # the engine, its journal and snapshots: imported here, on this rare path, so that a
    # gateway or publisher that only tracks its position never loads them
    from ringex.engine.engine import MatchingEngine
    from ringex.engine.storage.data_dir import journal_dir, snapshot_dir
    from ringex.engine.storage.journal_reader import JournalReader
    from ringex.engine.storage.recovery import FIRST_SEQ, load_recovery, record_slots

    data_dir = Path(data_dir)
    jdir = journal_dir(data_dir)
    plan = load_recovery(snapshot_dir(data_dir), jdir, schema=m.SCHEMA.fingerprint, at_most=seq, clean=False)
    if plan.snapshot is None:
        first = JournalReader(jdir).first_seq
        if first is None or first > FIRST_SEQ:
            log.error("replay_output: no snapshot at or before input %d, and the journal starts at %s", seq, first)
            return None
    engine = MatchingEngine(cfg)
    if plan.snapshot is not None:
        engine.restore(plan.snapshot.arrays["arena"])
    kept: list[np.ndarray] = []
    have = 0
    to_skip = skip
    for rec in plan.records():
        events = engine.process(record_slots(rec))
        if have == 0 and rec.first_seq + rec.count <= seq:
            continue  # every input of the record is before ``seq``
        seqs = _event_seqs(events)
        keep = seqs >= seq
        if to_skip:
            first_of_seq = np.flatnonzero(seqs == seq)[:to_skip]
            keep[first_of_seq] = False
            to_skip -= len(first_of_seq)
        chosen = events[keep]
        if len(chosen):
            kept.append(chosen.copy())
            have += len(chosen)
        if have >= count:
            return np.concatenate(kept)[:count]
    log.error("replay_output: the journal ends %d events short of the %d wanted", count - have, count)
    return None
