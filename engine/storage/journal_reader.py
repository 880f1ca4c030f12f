"""Reading the journal in sequence order, verifying checksums and sequence continuity.

The layout is in :mod:`ringex.engine.storage.journal_format`; the checks are
:func:`~ringex.engine.storage.journal_scan.scan_segment`'s.  Reading never changes the
journal: a torn tail ends the iteration (reported in ``tail_damage``), any other damage
raises :class:`~ringex.engine.storage.journal_format.JournalCorruptError`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from ringex.engine.storage.journal_format import (
    RECORD_HEADER_LENGTH,
    SEGMENT_FIRST_SEQ_OFFSET,
    SEGMENT_HEADER_LENGTH,
    JournalCorruptError,
    Record,
    archived_name,
    is_archived,
    list_archived,
    list_segments,
)
from ringex.engine.storage.journal_retention import archive_dir_of
from ringex.engine.storage.journal_scan import SegmentScan, TailDamage, read_segment, scan_segment


class JournalReader:
    """Reads a journal in sequence order, verifying checksums and sequence continuity.

    The journal is the live directory plus, where the directory names one (or
    ``archive_dir`` is given), its archive of retired segments
    (:mod:`~ringex.engine.storage.journal_retention`).  Read-only: a damaged tail of the
    last segment (a crash not yet recovered, or a writer in the middle of an append) ends
    the iteration quietly and is reported in :attr:`tail_damage`; any other damage raises
    :class:`JournalCorruptError`.  Each segment is read and validated whole before any of
    its records is yielded.
    """

    def __init__(self, directory: Path | str, archive_dir: Path | str | None = None) -> None:
        self.directory = Path(directory)
        self.archive_dir = Path(archive_dir) if archive_dir is not None else archive_dir_of(directory)
        self.tail_damage: TailDamage | None = None

    def segments(self) -> list[tuple[int, Path]]:
        """The journal's segments, archived then live, as ``(first seq, path)`` in order; a
        segment both archived and live (a crash in the middle of archiving) is the live one."""
        live = list_segments(self.directory)
        if self.archive_dir is None:
            return live
        by_first = dict(list_archived(self.archive_dir))
        by_first.update(live)
        return sorted(by_first.items())

    def _read(self, first_seq: int, path: Path) -> bytes:
        try:
            return read_segment(path)
        except FileNotFoundError:
            if self.archive_dir is None or is_archived(path):
                raise
            # Archived since it was listed (the engine retires segments while we read).
            return read_segment(self.archive_dir / archived_name(first_seq))

    def _scans(self, from_seq: int | None) -> Iterator[SegmentScan]:
        segs = self.segments()
        start = 0
        if from_seq is not None:
            # Skip whole segments that end before from_seq (the next one starts at or before it).
            for i in range(len(segs) - 1):
                if segs[i + 1][0] <= from_seq:
                    start = i + 1
        expected: int | None = None
        for i in range(start, len(segs)):
            first, path = segs[i]
            is_last = i == len(segs) - 1
            data = self._read(first, path)
            if is_last and len(data) < SEGMENT_HEADER_LENGTH:
                # A segment being created (or torn while being created): holds no records.
                self.tail_damage = TailDamage(
                    path=path, offset=0, reason="incomplete segment header",
                    dropped_bytes=len(data),
                )
                return
            scan = scan_segment(path, data, is_last=is_last, expected_first=expected)
            if scan.damage is not None:
                self.tail_damage = scan.damage
            expected = scan.next_seq
            yield scan

    def records(self, from_seq: int | None = None, to_seq: int | None = None) -> Iterator[Record]:
        """Records holding messages with ``from_seq <= seq < to_seq`` (either bound optional).

        A record that straddles a bound is cut at message granularity, so the records
        yielded hold exactly the messages asked for.
        """
        for scan in self._scans(from_seq):
            slot = scan.header.slot_size
            view = memoryview(scan.data)
            for e in scan.entries:
                first, count = e.first_seq, e.count
                if from_seq is not None and first + count <= from_seq:
                    continue
                if to_seq is not None and first >= to_seq:
                    return
                start = e.offset + RECORD_HEADER_LENGTH
                lo = 0 if from_seq is None else max(0, from_seq - first)
                hi = count if to_seq is None else min(count, to_seq - first)
                yield Record(first + lo, hi - lo, view[start + lo * slot:start + hi * slot])

    def __iter__(self) -> Iterator[Record]:
        return self.records()

    def iter_messages(
        self, from_seq: int | None = None, to_seq: int | None = None
    ) -> Iterator[tuple[int, memoryview]]:
        """``(seq, slot bytes)`` for every message with ``from_seq <= seq < to_seq``."""
        for rec in self.records(from_seq, to_seq):
            slot = len(rec.payload) // rec.count
            for i in range(rec.count):
                yield rec.first_seq + i, rec.payload[i * slot:(i + 1) * slot]

    def verify(self) -> int:
        """Read and check the whole journal; return the number of messages in it."""
        n = 0
        for scan in self._scans(None):
            n += sum(e.count for e in scan.entries)
        return n

    @property
    def first_seq(self) -> int | None:
        segs = self.segments()
        return segs[0][0] if segs else None

    @property
    def next_seq(self) -> int | None:
        """The sequence the next append must carry; ``None`` for an empty journal."""
        segs = self.segments()
        for _, path in reversed(segs):
            data = read_segment(path)
            if len(data) < SEGMENT_HEADER_LENGTH:
                continue
            return scan_segment(path, data, is_last=True, expected_first=None).next_seq
        return None

    def last_message(self) -> tuple[int, memoryview] | None:
        """``(seq, slot bytes)`` of the last complete message, reading only the newest
        segment (and the one before it when the newest was just rolled and holds no record);
        ``None`` when neither holds one."""
        segs = self.segments()
        for i in range(len(segs) - 1, max(len(segs) - 3, -1), -1):
            first, path = segs[i]
            data = self._read(first, path)
            if len(data) < SEGMENT_HEADER_LENGTH:
                continue  # being created
            scan = scan_segment(path, data, is_last=i == len(segs) - 1, expected_first=None)
            if scan.entries:
                e = scan.entries[-1]
                slot = scan.header.slot_size
                end = e.offset + RECORD_HEADER_LENGTH + e.count * slot
                return e.first_seq + e.count - 1, memoryview(scan.data)[end - slot:end]
        return None

    @property
    def last_seq(self) -> int | None:
        """The sequence of the last complete message; ``None`` when there is none."""
        nxt = self.next_seq
        first = self.first_seq
        if nxt is None or first is None or nxt == first:
            return None
        return nxt - 1


def replay_from(directory: Path | str, seq: int) -> Iterator[Record]:
    """The journal records holding every message with sequence ``>= seq``, a record that
    straddles ``seq`` cut at message granularity.  Raises :class:`JournalCorruptError` if the
    journal (archive included) does not reach back to ``seq`` (it starts after it)."""
    reader = JournalReader(directory)
    first = reader.first_seq
    if first is not None and first > seq:
        segs = reader.segments()
        raise JournalCorruptError(
            segs[0][1], SEGMENT_FIRST_SEQ_OFFSET,
            f"journal starts at seq {first}, after the requested seq {seq}: messages missing",
        )
    return reader.records(from_seq=seq)
