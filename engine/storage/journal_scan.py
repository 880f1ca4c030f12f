"""Validating a journal segment's bytes: its header, each record, sequence continuity.

:func:`scan_segment` takes a segment's whole bytes and returns the records it holds and
where valid data ends (zero bytes from there to the end of the file are the writer's
reserved space, not damage: journal_format, "Reserved space").  Damage at the end of the
*last* segment (a torn write) is reported as :class:`TailDamage`, for the caller to repair
(the writer) or stop at (a reader); any other damage raises
:class:`~ringex.engine.storage.journal_format.JournalCorruptError` naming the file and the
byte offset.  The layout is in :mod:`ringex.engine.storage.journal_format`.
"""

from __future__ import annotations

import gzip
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ringex.engine.storage.journal_format import (
    RECORD_HEADER,
    RECORD_HEADER_CRC_SPAN,
    RECORD_HEADER_LENGTH,
    RECORD_MAGIC,
    RECORD_MAGIC_BYTES,
    RECORD_MAGIC_LENGTH,
    SEGMENT_FIRST_SEQ_OFFSET,
    SEGMENT_HEADER_LENGTH,
    JournalCorruptError,
    SegmentHeader,
    decode_segment_header,
    is_archived,
    named_first_seq,
)


@dataclass(frozen=True)
class TailDamage:
    """What was wrong at the end of the last segment (a torn write)."""

    path: Path
    offset: int
    reason: str
    dropped_bytes: int

    def __str__(self) -> str:
        return (
            f"{self.path} at byte offset {self.offset}: {self.reason} "
            f"({self.dropped_bytes} bytes dropped)"
        )


@dataclass
class RecordEntry:
    """Where one valid record sits in its segment."""

    offset: int
    first_seq: int
    count: int
    length: int


@dataclass
class SegmentScan:
    """A validated segment: its header, its records, where valid data ends, tail damage."""

    path: Path
    data: bytes
    header: SegmentHeader
    entries: list[RecordEntry]
    valid_end: int
    damage: TailDamage | None = None
    #: Zero bytes after ``valid_end`` to the end of the file: the writer's reserved space.
    reserved: int = 0

    @property
    def next_seq(self) -> int:
        if self.entries:
            last = self.entries[-1]
            return last.first_seq + last.count
        return self.header.first_seq


def read_segment(path: Path) -> bytes:
    """A segment's bytes: the file's, or an archived segment's decompressed."""
    with open(path, "rb", buffering=0) as f:
        data = f.read()
    if not is_archived(path):
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as exc:  # gzip reports bad data as these
        raise JournalCorruptError(path, 0, f"archived segment does not decompress: {exc}") from exc


def reserved_from(data: bytes | memoryview, offset: int) -> bool:
    """Whether every byte of ``data`` from ``offset`` on is zero: reserved space, where the
    segment's records end."""
    return not np.frombuffer(data, np.uint8)[offset:].any()


def magic_pending(data: bytes | memoryview, offset: int) -> bool:
    """Whether the record place at ``offset`` has no whole magic yet, every byte of it zero
    or the magic's own: the writer has not finished the record there (it writes the magic
    last), for a reader of the live segment to wait on."""
    got = bytes(data[offset:offset + RECORD_MAGIC_LENGTH])
    return got != RECORD_MAGIC_BYTES and all(b in (0, m) for b, m in zip(got, RECORD_MAGIC_BYTES))


def record_at(data: bytes, offset: int, slot_size: int) -> tuple[RecordEntry | None, str]:
    """Try to read one record at ``offset``: ``(entry, "")`` or ``(None, what is wrong)``.

    Checks header magic and checksum, the payload's length and checksum; sequence continuity
    is the caller's job.
    """
    end = len(data)
    if end - offset < RECORD_HEADER_LENGTH:
        return None, (
            f"incomplete record header ({end - offset} of {RECORD_HEADER_LENGTH} bytes)"
        )
    magic, length, first_seq, count, pcrc, _flags, hcrc = RECORD_HEADER.unpack_from(data, offset)
    if magic != RECORD_MAGIC:
        return None, f"bad record magic {magic:#010x}"
    actual = zlib.crc32(memoryview(data)[offset:offset + RECORD_HEADER_CRC_SPAN])
    if hcrc != actual:
        return None, f"record header checksum mismatch (stored {hcrc:#010x}, computed {actual:#010x})"
    if count < 1 or length != count * slot_size:
        return None, f"record length {length} does not match count {count} * slot size {slot_size}"
    start = offset + RECORD_HEADER_LENGTH
    if end - start < length:
        return None, f"incomplete record payload ({end - start} of {length} bytes)"
    actual = zlib.crc32(memoryview(data)[start:start + length])
    if pcrc != actual:
        return None, (
            f"record payload checksum mismatch (stored {pcrc:#010x}, computed {actual:#010x})"
        )
    return RecordEntry(offset=offset, first_seq=first_seq, count=count, length=length), ""


def _find_valid_record_after(data: bytes, offset: int, slot_size: int) -> int | None:
    """The offset of the first complete, checksum-valid record after ``offset``, if any."""
    pos = offset + 1
    while True:
        pos = data.find(RECORD_MAGIC_BYTES, pos)
        if pos < 0:
            return None
        entry, _ = record_at(data, pos, slot_size)
        if entry is not None:
            return pos
        pos += 1


def scan_segment(
    path: Path, data: bytes, *, is_last: bool, expected_first: int | None
) -> SegmentScan:
    """Validate one segment.  A damaged tail of the last segment becomes ``damage``; any
    other damage raises :class:`JournalCorruptError`."""
    header = decode_segment_header(path, data)
    named = named_first_seq(path)
    if named is not None and named != header.first_seq:
        raise JournalCorruptError(
            path, SEGMENT_FIRST_SEQ_OFFSET,
            f"segment header first seq {header.first_seq} does not match its file name",
        )
    if expected_first is not None and header.first_seq != expected_first:
        raise JournalCorruptError(
            path, SEGMENT_FIRST_SEQ_OFFSET,
            f"sequence gap: previous segment ends before seq {expected_first}, "
            f"this one starts at {header.first_seq}",
        )
    slot_size = header.slot_size
    entries: list[RecordEntry] = []
    offset = SEGMENT_HEADER_LENGTH
    next_seq = header.first_seq
    end = len(data)
    damage = None
    while offset < end:
        entry, what = record_at(data, offset, slot_size)
        if entry is None:
            if reserved_from(data, offset):
                return SegmentScan(path=path, data=data, header=header, entries=entries, valid_end=offset,
                                   reserved=end - offset)
            if not is_last:
                raise JournalCorruptError(path, offset, what + " (in a segment that is not the last)")
            later = _find_valid_record_after(data, offset, slot_size)
            if later is not None:
                raise JournalCorruptError(
                    path, offset, f"{what}, followed by a valid record at offset {later}"
                )
            damage = TailDamage(path=path, offset=offset, reason=what, dropped_bytes=end - offset)
            break
        if entry.first_seq != next_seq:
            raise JournalCorruptError(
                path, offset,
                f"sequence gap: record starts at seq {entry.first_seq}, expected {next_seq}",
            )
        entries.append(entry)
        next_seq += entry.count
        offset += RECORD_HEADER_LENGTH + entry.length
    return SegmentScan(
        path=path, data=data, header=header, entries=entries, valid_end=offset, damage=damage
    )
