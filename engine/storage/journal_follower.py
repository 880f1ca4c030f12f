"""Following the live journal while its writer appends to it: the shadow engine's input.

:class:`JournalFollower` reads the records after a given sequence from the live journal
directory, a segment at a time, as they are appended, and keeps its place between calls, so
that a process beside the engine (``snapshot_shadow``) sees every message the engine
journals, in order, without touching the engine's rings.

What it may see and how it treats it: a record the writer is still appending is shorter
than its header says ("incomplete"), so it is left for the next call; a segment the writer
has rolled past ends, and the next one starts exactly at the sequence after its last record
(anything else is damage); a segment that retention deletes while it is read stays readable
through the open descriptor. Any other damage (a bad checksum, a sequence gap) raises
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
    RECORD_HEADER_LENGTH,
    SEGMENT_HEADER_LENGTH,
    JournalCorruptError,
    Record,
    decode_segment_header,
    list_segments,
)
from ringex.engine.storage.journal_scan import record_at

#: What one :meth:`JournalFollower.read` takes from the file at most.
READ_BYTES = 8 << 20


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
        self._file_pos = 0  # where the next read of the file starts
        self._buf = b""  # bytes read and not yet consumed (an incomplete record at most)

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
            if later[0][0] != self.next_seq or self._buf:
                raise JournalCorruptError(
                    self._path or self.directory, self._file_pos - len(self._buf),
                    f"segment ends at seq {self.next_seq} ({len(self._buf)} bytes left over) but "
                    f"the next one starts at {later[0][0]}",
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
        self._file_pos, self._buf = SEGMENT_HEADER_LENGTH, b""
        return True

    def _close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
        self._fd, self._path, self._buf = -1, None, b""

    def _more_in_file(self) -> bool:
        return os.fstat(self._fd).st_size > self._file_pos

    def _parse(self, out: list[Record]) -> int:
        """Read what the file has beyond our position, append the complete records to
        ``out``; the number of records found."""
        chunk = os.pread(self._fd, READ_BYTES, self._file_pos)
        if chunk:
            self._file_pos += len(chunk)
            self._buf = self._buf + chunk if self._buf else chunk
        buf = self._buf
        view = memoryview(buf)
        pos = 0
        found = 0
        while len(buf) - pos >= RECORD_HEADER_LENGTH:
            entry, why = record_at(buf, pos, self.slot_size)
            if entry is None:
                if why.startswith("incomplete"):
                    break
                raise JournalCorruptError(self._path or self.directory, self._file_pos - len(buf) + pos, why)
            end = pos + RECORD_HEADER_LENGTH + entry.length
            first, count = entry.first_seq, entry.count
            if first + count <= self.next_seq:
                pos = end  # before where we start
                continue
            if first > self.next_seq:
                raise JournalCorruptError(
                    self._path or self.directory, self._file_pos - len(buf) + pos,
                    f"sequence gap: expected {self.next_seq}, record starts at {first}",
                )
            skip = self.next_seq - first
            start = pos + RECORD_HEADER_LENGTH + skip * self.slot_size
            out.append(Record(self.next_seq, count - skip, view[start:end]))
            self.next_seq = first + count
            pos = end
            found += 1
        self._buf = buf[pos:]
        return found
