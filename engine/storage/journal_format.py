"""The engine's input journal: append-only segment files, one record per sequenced batch.

The engine appends every sequenced input batch here before it publishes any output for
that batch (group commit).  Recovery is the newest valid snapshot plus the journal records
after it (see :mod:`ringex.engine.storage.recovery`).

On disk
-------
A journal is a directory of segment files named ``journal-<first seq, 20 digits>.log``, so
that names sort by sequence.  Every offset has a name below.

Segment file::

    0    segment header (SEGMENT_HEADER, 48 bytes, little-endian):
           +0   magic          8 bytes, b"RXJRNL\\x00\\x01"
           +8   version        uint32
           +12  header length  uint32 (= 48)
           +16  slot size      uint32 (bytes per message; every payload is count * slot size)
           +20  flags          uint32 (0)
           +24  first seq      int64  (sequence of the first message of the first record)
           +32  reserved       8 bytes (0)
           +40  reserved       uint32 (0)
           +44  header crc     uint32, zlib.crc32 of bytes 0..44
    48   records, back to back

Record::

    0    record header (RECORD_HEADER, 32 bytes, little-endian):
           +0   magic          uint32, b"RXRC"
           +4   payload length uint32 (= count * slot size)
           +8   first seq      int64, sequence of the record's first message
           +16  count          uint32, number of messages (>= 1), sequences consecutive
           +20  payload crc    uint32, zlib.crc32 of the payload
           +24  flags          uint32 (0)
           +28  header crc     uint32, zlib.crc32 of bytes 0..28
    32   payload: count slots of slot size bytes, exactly as they sat in the ring

The header checksum detects a torn or garbage header; the payload checksum a torn or
corrupted payload.  Sequences are continuous: each record starts where the previous one
ended, each segment starts where the previous segment ended.

Durability and crashes
----------------------
Writes go straight to the file descriptor (``os.writev`` of header + payload, no Python
buffering).  ``durability`` chooses when ``os.fdatasync`` runs: ``"none"`` never (only on
roll and close), ``"batch"`` after every append (group commit of the whole batch),
``"interval"`` when at least ``interval_ms`` passed since the last sync (checked on each
append and by ``JournalWriter.maybe_sync``), or explicitly with ``JournalWriter.sync``.
A segment is synced before the next one is created and new segments appear atomically
(header written to a temporary file, fsynced, renamed, directory fsynced), so after a crash
only the *last* segment can have a damaged tail.

Reserved space
--------------
The writer allocates the last segment's file ahead of its records (``posix_fallocate``,
``RESERVE_BYTES`` at a time, up to the segment size) and writes each record into that space
instead of growing the file: an append that grows a file makes the next ``fdatasync`` commit
the file's new size as well (a file-system journal commit), which on our disk doubles the
sync's median and puts milliseconds into its tail (docs/benchmarks.md, "The journal's
reserved space"). Reserved space reads as zero bytes and holds no data: zero bytes from a
record's place to the end of the file are the end of the segment's records, in any segment.
A record is written in two steps, everything but its magic first, then the magic, so that a
reader of the live segment that sees a record's magic sees the whole record; bytes after the
last record that are not all zero are a torn write (the rules above). The writer cuts the
reserved space off when it rolls to the next segment (before that segment exists) and when
it closes, and a writer opening the journal cuts a crashed writer's: a journal no writer
holds has none, and its files are exactly as described above.

Opening a journal for appending (:class:`~ringex.engine.storage.journal_writer.JournalWriter`, or
:func:`~ringex.engine.storage.journal_repair.repair_journal`) repairs such a
tail: an incomplete record header or payload at the end of the last segment, or a bad
record with nothing valid after it, is truncated away with a warning that names the file,
the offset and what was wrong.  Anything else (a bad record followed by a valid one, damage
in a segment that is not the last, a sequence gap, a bad segment header) raises
:class:`JournalCorruptError` naming the file and the byte offset: it is never applied and
never silently dropped.

Retention
---------
Segments whose messages all precede the oldest kept snapshot leave the directory at run time:
deleted, or moved compressed into an archive directory, ``journal-<first seq>.log.gz``
(:mod:`~ringex.engine.storage.journal_retention`, which states its own crash points).  A
reader reads the archive and the directory as one journal.

Modules
-------
This module is the layout (every offset named), the segment names, header encoding and the
errors.  Beside it: ``journal_scan`` validates a segment's bytes, ``journal_reader`` reads,
``journal_lock`` is the one-writer lock, ``journal_repair`` repairs a torn tail,
``journal_writer`` appends, ``journal_retention`` deletes or archives covered segments.
"""

from __future__ import annotations

import os
import re
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Union

import numpy as np

# --- segment header ----------------------------------------------------------------------
SEGMENT_MAGIC = b"RXJRNL\x00\x01"
#: Bump whenever anything in the on-disk layout changes meaning.
VERSION = 1
SEGMENT_HEADER = struct.Struct("<8sIIIIq8sII")
SEGMENT_MAGIC_OFFSET = 0
SEGMENT_VERSION_OFFSET = 8
SEGMENT_HEADER_LENGTH_OFFSET = 12
SEGMENT_SLOT_SIZE_OFFSET = 16
SEGMENT_FLAGS_OFFSET = 20
SEGMENT_FIRST_SEQ_OFFSET = 24
SEGMENT_RESERVED_OFFSET = 32
SEGMENT_RESERVED2_OFFSET = 40
SEGMENT_HEADER_CRC_OFFSET = 44
SEGMENT_HEADER_LENGTH = SEGMENT_HEADER.size
#: The segment header's checksum covers every byte before the checksum field.
SEGMENT_HEADER_CRC_SPAN = SEGMENT_HEADER_CRC_OFFSET
_SEGMENT_HEADER_BODY = struct.Struct(SEGMENT_HEADER.format[:-1])
_CRC = struct.Struct("<I")

# --- record header -----------------------------------------------------------------------
RECORD_MAGIC = int.from_bytes(b"RXRC", "little")
RECORD_MAGIC_BYTES = b"RXRC"
RECORD_HEADER = struct.Struct("<IIqIIII")
RECORD_MAGIC_OFFSET = 0
RECORD_LENGTH_OFFSET = 4
RECORD_FIRST_SEQ_OFFSET = 8
RECORD_COUNT_OFFSET = 16
RECORD_PAYLOAD_CRC_OFFSET = 20
RECORD_FLAGS_OFFSET = 24
RECORD_HEADER_CRC_OFFSET = 28
RECORD_HEADER_LENGTH = RECORD_HEADER.size
#: A record's magic is written after the rest of the record ("Reserved space").
RECORD_MAGIC_LENGTH = 4
RECORD_HEADER_CRC_SPAN = RECORD_HEADER_CRC_OFFSET
_RECORD_HEADER_BODY = struct.Struct(RECORD_HEADER.format[:-1])

assert SEGMENT_HEADER_LENGTH == 48 and SEGMENT_HEADER_CRC_OFFSET + _CRC.size == SEGMENT_HEADER_LENGTH
assert _SEGMENT_HEADER_BODY.size == SEGMENT_HEADER_CRC_SPAN
assert RECORD_HEADER_LENGTH == 32 and RECORD_HEADER_CRC_OFFSET + _CRC.size == RECORD_HEADER_LENGTH
assert RECORD_MAGIC_OFFSET == 0 and len(RECORD_MAGIC_BYTES) == RECORD_MAGIC_LENGTH
assert _RECORD_HEADER_BODY.size == RECORD_HEADER_CRC_SPAN

# --- limits and names --------------------------------------------------------------------
MAX_PAYLOAD_LENGTH = (1 << 32) - 1
MAX_COUNT = (1 << 32) - 1
MAX_SLOT_SIZE = 1 << 20
MAX_SEQ = (1 << 63) - 1
SEQ_DIGITS = 20
SEGMENT_PREFIX = "journal-"
SEGMENT_SUFFIX = ".log"
#: An archived segment is the segment file gzip-compressed, its name this appended.
ARCHIVE_SUFFIX = ".gz"
TEMP_SUFFIX = ".tmp"
LOCK_NAME = ".journal.lock"
_SEGMENT_RE = re.compile(r"^journal-(\d{%d})\.log$" % SEQ_DIGITS)
_ARCHIVED_RE = re.compile(r"^journal-(\d{%d})\.log\.gz$" % SEQ_DIGITS)

DURABILITY_NONE = "none"
DURABILITY_BATCH = "batch"
DURABILITY_INTERVAL = "interval"
DURABILITIES = (DURABILITY_NONE, DURABILITY_BATCH, DURABILITY_INTERVAL)

Buffer = Union[bytes, bytearray, memoryview, np.ndarray]


class JournalError(Exception):
    """Base class of journal errors."""


class JournalCorruptError(JournalError):
    """The journal is damaged somewhere recovery must not guess: it names file and offset."""

    def __init__(self, path: Path | str, offset: int, what: str) -> None:
        self.path = Path(path)
        self.offset = offset
        self.what = what
        super().__init__(f"journal corrupt: {self.path} at byte offset {offset}: {what}")


class JournalSequenceError(JournalError, ValueError):
    """An append whose first sequence does not continue the journal."""


class JournalLockedError(JournalError):
    """Another writer holds the journal directory."""


class Record(NamedTuple):
    """One journal record: ``count`` messages with sequences ``first_seq ..``; ``payload`` is
    ``count * slot_size`` bytes (a read-only view into the segment's bytes)."""

    first_seq: int
    count: int
    payload: memoryview

    @property
    def next_seq(self) -> int:
        return self.first_seq + self.count


@dataclass(frozen=True)
class SegmentHeader:
    slot_size: int
    first_seq: int


# --- names -------------------------------------------------------------------------------


def segment_name(first_seq: int) -> str:
    return f"{SEGMENT_PREFIX}{first_seq:0{SEQ_DIGITS}d}{SEGMENT_SUFFIX}"


def archived_name(first_seq: int) -> str:
    """The name of a segment's compressed copy in an archive directory."""
    return segment_name(first_seq) + ARCHIVE_SUFFIX


def is_archived(path: Path) -> bool:
    return path.name.endswith(ARCHIVE_SUFFIX)


def named_first_seq(path: Path) -> int | None:
    """The first sequence a segment's (live or archived) file name states, if it is one."""
    m = _SEGMENT_RE.match(path.name) or _ARCHIVED_RE.match(path.name)
    return int(m.group(1)) if m else None


def list_numbered(directory: Path | str, pattern: re.Pattern) -> list[tuple[int, Path]]:
    """The files in ``directory`` whose names ``pattern`` matches, as ``(int(group 1), path)``,
    in order (journal segments, archived segments, snapshots)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    out = []
    for entry in os.scandir(directory):
        m = pattern.match(entry.name)
        if m and entry.is_file():
            out.append((int(m.group(1)), Path(entry.path)))
    out.sort()
    return out


def list_segments(directory: Path | str) -> list[tuple[int, Path]]:
    """The segment files of a journal as ``(first seq from the name, path)``, in order."""
    return list_numbered(directory, _SEGMENT_RE)


def list_archived(archive_dir: Path | str) -> list[tuple[int, Path]]:
    """The archived segments in an archive directory as ``(first seq, path)``, in order."""
    return list_numbered(archive_dir, _ARCHIVED_RE)


# --- headers -----------------------------------------------------------------------------


def encode_segment_header(slot_size: int, first_seq: int) -> bytes:
    body = _SEGMENT_HEADER_BODY.pack(
        SEGMENT_MAGIC, VERSION, SEGMENT_HEADER_LENGTH, slot_size, 0, first_seq, bytes(8), 0
    )
    return body + _CRC.pack(zlib.crc32(body))


def decode_segment_header(path: Path, data: bytes | memoryview) -> SegmentHeader:
    """Parse and check a segment header; raise :class:`JournalCorruptError` if it is bad."""
    if len(data) < SEGMENT_HEADER_LENGTH:
        raise JournalCorruptError(
            path, len(data),
            f"segment header incomplete: {len(data)} of {SEGMENT_HEADER_LENGTH} bytes",
        )
    magic, version, hlen, slot_size, _flags, first_seq, _r1, _r2, crc = (
        SEGMENT_HEADER.unpack_from(data, 0)
    )
    if magic != SEGMENT_MAGIC:
        raise JournalCorruptError(path, SEGMENT_MAGIC_OFFSET, f"bad segment magic {magic!r}")
    actual = zlib.crc32(memoryview(data)[:SEGMENT_HEADER_CRC_SPAN])
    if crc != actual:
        raise JournalCorruptError(
            path, SEGMENT_HEADER_CRC_OFFSET,
            f"segment header checksum mismatch (stored {crc:#010x}, computed {actual:#010x})",
        )
    if version != VERSION:
        raise JournalCorruptError(
            path, SEGMENT_VERSION_OFFSET, f"unsupported journal version {version} (want {VERSION})"
        )
    if hlen != SEGMENT_HEADER_LENGTH:
        raise JournalCorruptError(
            path, SEGMENT_HEADER_LENGTH_OFFSET, f"bad segment header length {hlen}"
        )
    if not 0 < slot_size <= MAX_SLOT_SIZE:
        raise JournalCorruptError(path, SEGMENT_SLOT_SIZE_OFFSET, f"bad slot size {slot_size}")
    if first_seq < 0:
        raise JournalCorruptError(path, SEGMENT_FIRST_SEQ_OFFSET, f"bad first seq {first_seq}")
    return SegmentHeader(slot_size=slot_size, first_seq=first_seq)


def encode_record_header(nbytes: int, first_seq: int, count: int, payload_crc: int) -> bytes:
    body = _RECORD_HEADER_BODY.pack(RECORD_MAGIC, nbytes, first_seq, count, payload_crc, 0)
    return body + _CRC.pack(zlib.crc32(body))
