"""Following the live journal while its writer appends to it: the shadow engine's input.

:class:`JournalFollower` reads the records after a given sequence from the live journal
directory, a segment at a time, as they are appended, and keeps its place between calls, so
that a process beside the engine (``snapshot_shadow``) sees every message the engine
journals, in order, without touching the engine's rings.

What it may see and how it treats it: the writer's reserved space (zero bytes) after the
last record, and a record the writer is still writing (its magic, written last, not whole
yet: journal_format, "Reserved space"), are where the records end for now, read again by the
next call; a segment the writer has rolled past ends (cut to its last record first), and
the next one starts exactly at the sequence after its last record (anything else is
damage); a segment that retention deletes while it is read stays readable through the open
descriptor. Any other damage (a bad checksum, a sequence gap) raises
:class:`~ringex.engine.storage.journal_format.JournalCorruptError`: the follower never guesses.

Durability: records are read from the page cache, so the last ones may not be on disk yet.
:meth:`JournalFollower.sync` makes everything read so far durable (the segment's earlier
records by the same fdatasync; earlier segments were synced by the writer when it rolled).
"""

from __future__ import annotations

import os
from pathlib import Path

from ringex.engine.storage.fsync import fdatasync
from ringex.engine.storage.journal_format import (
    RECORD_HEADER,
    RECORD_HEADER_LENGTH,
    SEGMENT_HEADER_LENGTH,
    JournalCorruptError,
    Record,
    decode_segment_header,
    list_segments,
)
from ringex.engine.storage.journal_scan import magic_pending, record_at, reserved_from

#: What one read of the file takes at most, and at first: reserved space past the records
#: is read again by each call, so a call that finds nothing new reads little.
READ_BYTES = 8 << 20
FIRST_READ = 64 << 10


class JournalFollower:
    """The records of the live journal in ``directory`` from ``from_seq`` on, as appended
    (``from_seq`` 0: from the first message the journal holds, whatever its sequence)."""

    def __init__(self, directory: Path | str, from_seq: int, slot_size: int) -> None:
        self.directory = Path(directory)
        self.next_seq = from_seq
        self.slot_size = slot_size
        self._fd = -1
        self._path: Path | None = None
        self._first = 0  # the open segment's first sequence
        self._file_pos = 0  # where the next record starts in the file

    def read(self) -> list[Record]:
        """The complete records appended since the last call (possibly none), in order;
        cut at ``from_seq`` where the first record straddles it."""
        out: list[Record] = []
        if self._fd < 0 and not self._open(self.next_seq):
            return out
        while True:
            if self._parse(out):
                return out
            # Nothing new in this segment: has the writer rolled to the next one?
            later = [(first, p) for first, p in list_segments(self.directory) if first > self._first]
            if not later:
                return out
            if self._more_in_file():
                continue  # the last records were appended just before the roll
            if later[0][0] != self.next_seq:
                raise JournalCorruptError(
                    self._path or self.directory, self._file_pos,
                    f"segment ends at seq {self.next_seq} but the next one starts at {later[0][0]}",
                )
            self._close()
            if not self._open(self.next_seq):
                return out

    def sync(self) -> None:
        """Make every record read so far durable (see the module doc)."""
        if self._fd >= 0:
            fdatasync(self._fd)

    def close(self) -> None:
        self._close()

    # ------------------------------------------------------------------ internals

    def _open(self, seq: int) -> bool:
        listed = list_segments(self.directory)
        segs = [(first, p) for first, p in listed if first <= seq]
        if not segs and seq == 0 and listed:
            segs = listed[:1]  # from the beginning: the journal starts where its first segment does
            self.next_seq = listed[0][0]
        if not segs and listed:
            raise JournalCorruptError(
                listed[0][1], 0, f"the journal starts at seq {listed[0][0]}: messages from {seq} are missing")
        if not segs:
            return False
        first, path = segs[-1]
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return False  # retired meanwhile; the caller's next call lists again
        head = os.pread(fd, SEGMENT_HEADER_LENGTH, 0)
        if len(head) < SEGMENT_HEADER_LENGTH:
            os.close(fd)
            return False  # being created: no records yet
        header = decode_segment_header(path, head)
        if header.slot_size != self.slot_size:
            os.close(fd)
            raise JournalCorruptError(path, 0, f"slot size {header.slot_size}, expected {self.slot_size}")
        self._fd, self._path, self._first = fd, path, first
        self._file_pos = SEGMENT_HEADER_LENGTH
        return True

    def _close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
        self._fd, self._path = -1, None

    def _more_in_file(self) -> bool:
        return os.fstat(self._fd).st_size > self._file_pos

    def _parse(self, out: list[Record]) -> int:
        """Append to ``out`` the complete records the file has from our position on; the
        number found. Reads grow from ``FIRST_READ`` while they come back full of records, or
        to the size of a record one of them cut."""
        found = 0
        size = FIRST_READ
        while True:
            chunk = os.pread(self._fd, size, self._file_pos)
            used, n, need = self._records(chunk, out)
            self._file_pos += used
            found += n
            if len(chunk) < size:
                return found  # the end of the file
            if need:
                size = max(size, need)  # a record the read cut: read it whole
            elif n:
                size = min(2 * size, READ_BYTES)
            else:
                return found

    def _records(self, chunk: bytes, out: list[Record]) -> tuple[int, int, int]:
        """The whole records at the front of ``chunk`` appended to ``out``: (bytes used,
        records, bytes a cut record needs from where the records stop, or 0)."""
        view = memoryview(chunk)
        pos = found = 0
        while True:
            if len(chunk) - pos < RECORD_HEADER_LENGTH:
                return pos, found, RECORD_HEADER_LENGTH if not reserved_from(chunk, pos) else 0
            if magic_pending(chunk, pos):
                return pos, found, 0  # reserved space, or a record not written yet
            entry, why = record_at(chunk, pos, self.slot_size)
            if entry is None:
                if why.startswith("incomplete"):
                    length = RECORD_HEADER.unpack_from(chunk, pos)[1]
                    return pos, found, RECORD_HEADER_LENGTH + length
                raise JournalCorruptError(self._path or self.directory, self._file_pos + pos, why)
            end = pos + RECORD_HEADER_LENGTH + entry.length
            first, count = entry.first_seq, entry.count
            if first + count <= self.next_seq:
                pos = end  # before where we start
                continue
            if first > self.next_seq:
                raise JournalCorruptError(
                    self._path or self.directory, self._file_pos + pos,
                    f"sequence gap: expected {self.next_seq}, record starts at {first}",
                )
            skip = self.next_seq - first
            start = pos + RECORD_HEADER_LENGTH + skip * self.slot_size
            out.append(Record(self.next_seq, count - skip, view[start:end]))
            self.next_seq = first + count
            pos = end
            found += 1
