"""The engine's input journal: append-only segment files, one record per sequenced batch.

The engine appends every sequenced input batch here before it publishes any output for
that batch (group commit).  Recovery is the newest valid snapshot plus the journal records
after it (see :mod:`ringex.engine.storage.snapshot`).

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
append and by :meth:`JournalWriter.maybe_sync`), or explicitly with :meth:`JournalWriter.sync`.
A segment is synced before the next one is created and new segments appear atomically
(header written to a temporary file, fsynced, renamed, directory fsynced), so after a crash
only the *last* segment can have a damaged tail.

Opening a journal for appending (:class:`JournalWriter`, or :func:`recover`) repairs such a
tail: an incomplete record header or payload at the end of the last segment, or a bad
record with nothing valid after it, is truncated away with a warning that names the file,
the offset and what was wrong.  Anything else (a bad record followed by a valid one, damage
in a segment that is not the last, a sequence gap, a bad segment header) raises
:class:`JournalCorruptError` naming the file and the byte offset: it is never applied and
never silently dropped.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import re
import struct
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, NamedTuple, Sequence, Union

import numpy as np

log = logging.getLogger(__name__)

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
RECORD_HEADER_CRC_SPAN = RECORD_HEADER_CRC_OFFSET
_RECORD_HEADER_BODY = struct.Struct(RECORD_HEADER.format[:-1])

assert SEGMENT_HEADER_LENGTH == 48 and SEGMENT_HEADER_CRC_OFFSET + _CRC.size == SEGMENT_HEADER_LENGTH
assert _SEGMENT_HEADER_BODY.size == SEGMENT_HEADER_CRC_SPAN
assert RECORD_HEADER_LENGTH == 32 and RECORD_HEADER_CRC_OFFSET + _CRC.size == RECORD_HEADER_LENGTH
assert _RECORD_HEADER_BODY.size == RECORD_HEADER_CRC_SPAN

# --- limits and names --------------------------------------------------------------------
MAX_PAYLOAD_LENGTH = (1 << 32) - 1
MAX_COUNT = (1 << 32) - 1
MAX_SLOT_SIZE = 1 << 20
MAX_SEQ = (1 << 63) - 1
SEQ_DIGITS = 20
DEFAULT_SEGMENT_BYTES = 64 << 20
DEFAULT_INTERVAL_MS = 10.0
SEGMENT_PREFIX = "journal-"
SEGMENT_SUFFIX = ".log"
TEMP_SUFFIX = ".tmp"
LOCK_NAME = ".journal.lock"
_SEGMENT_RE = re.compile(r"^journal-(\d{%d})\.log$" % SEQ_DIGITS)

DURABILITY_NONE = "none"
DURABILITY_BATCH = "batch"
DURABILITY_INTERVAL = "interval"
DURABILITIES = (DURABILITY_NONE, DURABILITY_BATCH, DURABILITY_INTERVAL)

_NS_PER_MS = 1_000_000
#: The clock for ``interval`` durability (a module global so tests can substitute it).
_monotonic_ns = time.monotonic_ns

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
class _Entry:
    offset: int
    first_seq: int
    count: int
    length: int


@dataclass
class _Scan:
    """A validated segment: its header, its records, where valid data ends, tail damage."""

    path: Path
    data: bytes
    header: SegmentHeader
    entries: list[_Entry]
    valid_end: int
    damage: TailDamage | None = None

    @property
    def next_seq(self) -> int:
        if self.entries:
            last = self.entries[-1]
            return last.first_seq + last.count
        return self.header.first_seq


# --- helpers -----------------------------------------------------------------------------


def segment_name(first_seq: int) -> str:
    return f"{SEGMENT_PREFIX}{first_seq:0{SEQ_DIGITS}d}{SEGMENT_SUFFIX}"


def list_segments(directory: Path | str) -> list[tuple[int, Path]]:
    """The segment files of a journal as ``(first seq from the name, path)``, in order."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    out = []
    for entry in os.scandir(directory):
        m = _SEGMENT_RE.match(entry.name)
        if m and entry.is_file():
            out.append((int(m.group(1)), Path(entry.path)))
    out.sort()
    return out


def fsync_directory(directory: Path | str) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fdatasync(fd: int) -> None:
    # Looked up on each call (tests count calls by patching os.fdatasync).
    sync = getattr(os, "fdatasync", None) or os.fsync
    sync(fd)


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


def _record_at(data: bytes, offset: int, slot_size: int) -> tuple[_Entry | None, str]:
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
    return _Entry(offset=offset, first_seq=first_seq, count=count, length=length), ""


def _find_valid_record_after(data: bytes, offset: int, slot_size: int) -> int | None:
    """The offset of the first complete, checksum-valid record after ``offset``, if any."""
    pos = offset + 1
    while True:
        pos = data.find(RECORD_MAGIC_BYTES, pos)
        if pos < 0:
            return None
        entry, _ = _record_at(data, pos, slot_size)
        if entry is not None:
            return pos
        pos += 1


def _scan_segment(path: Path, data: bytes, *, is_last: bool, expected_first: int | None) -> _Scan:
    """Validate one segment.  A damaged tail of the last segment becomes ``damage``; any
    other damage raises :class:`JournalCorruptError`."""
    header = decode_segment_header(path, data)
    name_match = _SEGMENT_RE.match(path.name)
    if name_match and int(name_match.group(1)) != header.first_seq:
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
    entries: list[_Entry] = []
    offset = SEGMENT_HEADER_LENGTH
    next_seq = header.first_seq
    end = len(data)
    damage = None
    while offset < end:
        entry, what = _record_at(data, offset, slot_size)
        if entry is None:
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
    return _Scan(
        path=path, data=data, header=header, entries=entries, valid_end=offset, damage=damage
    )


def _read_file(path: Path) -> bytes:
    with open(path, "rb", buffering=0) as f:
        return f.read()


def _buffers(slots: Buffer | Sequence[Buffer]) -> list[memoryview]:
    if isinstance(slots, (list, tuple)):
        views = [memoryview(s) for s in slots]
    else:
        views = [memoryview(slots)]
    for v in views:
        if not v.c_contiguous:
            raise ValueError("journal payload buffers must be C-contiguous")
    return views


# --- reading -----------------------------------------------------------------------------


class JournalReader:
    """Reads a journal in sequence order, verifying checksums and sequence continuity.

    Read-only: a damaged tail of the last segment (a crash not yet recovered, or a writer in
    the middle of an append) ends the iteration quietly and is reported in
    :attr:`tail_damage`; any other damage raises :class:`JournalCorruptError`.  Each segment
    is read and validated whole before any of its records is yielded.
    """

    def __init__(self, directory: Path | str) -> None:
        self.directory = Path(directory)
        self.tail_damage: TailDamage | None = None

    def segments(self) -> list[tuple[int, Path]]:
        return list_segments(self.directory)

    def _scans(self, from_seq: int | None) -> Iterator[_Scan]:
        segs = self.segments()
        start = 0
        if from_seq is not None:
            # Skip whole segments that end before from_seq (the next one starts at or before it).
            for i in range(len(segs) - 1):
                if segs[i + 1][0] <= from_seq:
                    start = i + 1
        expected: int | None = None
        for i in range(start, len(segs)):
            _, path = segs[i]
            is_last = i == len(segs) - 1
            data = _read_file(path)
            if is_last and len(data) < SEGMENT_HEADER_LENGTH:
                # A segment being created (or torn while being created): holds no records.
                self.tail_damage = TailDamage(
                    path=path, offset=0, reason="incomplete segment header",
                    dropped_bytes=len(data),
                )
                return
            scan = _scan_segment(path, data, is_last=is_last, expected_first=expected)
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
            data = _read_file(path)
            if len(data) < SEGMENT_HEADER_LENGTH:
                continue
            return _scan_segment(path, data, is_last=True, expected_first=None).next_seq
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
    journal does not reach back to ``seq`` (it starts after it)."""
    reader = JournalReader(directory)
    first = reader.first_seq
    if first is not None and first > seq:
        segs = reader.segments()
        raise JournalCorruptError(
            segs[0][1], SEGMENT_FIRST_SEQ_OFFSET,
            f"journal starts at seq {first}, after the requested seq {seq}: messages missing",
        )
    return reader.records(from_seq=seq)


# --- recovery ----------------------------------------------------------------------------


@dataclass
class RecoveryReport:
    """What :func:`recover` found: where the next append goes, and what it repaired."""

    next_seq: int | None
    slot_size: int | None
    repaired: list[TailDamage] = field(default_factory=list)
    removed_files: list[Path] = field(default_factory=list)


def _recover_locked(directory: Path) -> tuple[RecoveryReport, _Scan | None]:
    report = RecoveryReport(next_seq=None, slot_size=None)
    for entry in os.scandir(directory):
        if entry.name.startswith(SEGMENT_PREFIX) and entry.name.endswith(TEMP_SUFFIX):
            log.warning("journal: removing leftover temporary file %s", entry.path)
            os.unlink(entry.path)
            report.removed_files.append(Path(entry.path))
    changed_dir = bool(report.removed_files)
    segs = list_segments(directory)
    last_scan = None
    while segs:
        _, path = segs[-1]
        data = _read_file(path)
        if len(data) < SEGMENT_HEADER_LENGTH:
            # Torn creation of a new segment: it cannot hold a record.
            log.warning(
                "journal: %s at byte offset 0: incomplete segment header (%d of %d bytes); "
                "removing the file", path, len(data), SEGMENT_HEADER_LENGTH,
            )
            os.unlink(path)
            report.removed_files.append(path)
            report.repaired.append(TailDamage(path, 0, "incomplete segment header", len(data)))
            changed_dir = True
            segs.pop()
            continue
        last_scan = _scan_segment(path, data, is_last=True, expected_first=None)
        break
    if changed_dir:
        fsync_directory(directory)
    # Headers of the earlier segments must be sound and in order (their records are checked
    # when they are read).
    prev = None
    for first, path in segs[:-1]:
        with open(path, "rb", buffering=0) as f:
            decode_segment_header(path, f.read(SEGMENT_HEADER_LENGTH))
        if prev is not None and first <= prev:
            raise JournalCorruptError(path, SEGMENT_FIRST_SEQ_OFFSET, "segments out of order")
        prev = first
    if last_scan is None:
        return report, None
    if last_scan.damage is not None:
        d = last_scan.damage
        log.warning(
            "journal: torn tail in %s at byte offset %d: %s; truncating %d bytes "
            "(the record was never acknowledged and is not applied)",
            d.path, d.offset, d.reason, d.dropped_bytes,
        )
        fd = os.open(d.path, os.O_WRONLY)
        try:
            os.ftruncate(fd, d.offset)
            os.fsync(fd)
        finally:
            os.close(fd)
        report.repaired.append(d)
        last_scan.data = last_scan.data[:d.offset]
    report.next_seq = last_scan.next_seq
    report.slot_size = last_scan.header.slot_size
    return report, last_scan


class _DirLock:
    def __init__(self, directory: Path) -> None:
        self.fd = os.open(directory / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(self.fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise JournalLockedError(f"journal {directory} is open by another writer") from exc
            raise

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # closing the descriptor drops the flock
            self.fd = -1


def recover(directory: Path | str) -> RecoveryReport:
    """Repair a crashed journal's tail (see the module notes) without opening it for
    appending.  A fresh or missing directory is an empty journal."""
    directory = Path(directory)
    if not directory.is_dir():
        return RecoveryReport(next_seq=None, slot_size=None)
    lock = _DirLock(directory)
    try:
        report, _ = _recover_locked(directory)
    finally:
        lock.release()
    return report


# --- writing -----------------------------------------------------------------------------


class JournalWriter:
    """Appends sequenced batches, one record per batch (see the module notes).

    Opening recovers: a damaged tail of the last segment is truncated (logged), other
    damage raises :class:`JournalCorruptError`.  Appending then continues in the last
    segment.  One writer per directory (an ``flock`` on ``.journal.lock``).

    ``slot_size`` may be left out: it is then taken from the existing journal or from the
    first append (``nbytes // count``).  ``first_seq`` pins the sequence the first append of
    an empty journal must carry (for example a snapshot's sequence).
    """

    def __init__(
        self,
        directory: Path | str,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        durability: str = DURABILITY_BATCH,
        *,
        slot_size: int | None = None,
        interval_ms: float = DEFAULT_INTERVAL_MS,
        first_seq: int | None = None,
    ) -> None:
        if durability not in DURABILITIES:
            raise ValueError(f"durability must be one of {DURABILITIES}, not {durability!r}")
        if segment_bytes < SEGMENT_HEADER_LENGTH + RECORD_HEADER_LENGTH:
            raise ValueError(f"segment_bytes {segment_bytes} is too small")
        if slot_size is not None and not 0 < slot_size <= MAX_SLOT_SIZE:
            raise ValueError(f"bad slot size {slot_size}")
        if interval_ms < 0:
            raise ValueError("interval_ms must be >= 0")
        self.directory = Path(directory)
        self.segment_bytes = int(segment_bytes)
        self.durability = durability
        self.interval_ns = int(interval_ms * _NS_PER_MS)
        self._sync_each = durability == DURABILITY_BATCH
        self._sync_interval = durability == DURABILITY_INTERVAL
        self._fd = -1
        self._lock: _DirLock | None = None
        self._closed = False
        self._dirty = False
        self._last_sync_ns = _monotonic_ns()
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock = _DirLock(self.directory)
        try:
            self.recovery, scan = _recover_locked(self.directory)
            self._segment_path: Path | None = None
            self._segment_size = 0
            self._segment_records = 0
            self._next_seq: int | None = first_seq
            self._last_seq: int | None = None
            self.slot_size: int | None = slot_size
            if scan is not None:
                if first_seq is not None and scan.next_seq != first_seq:
                    raise JournalSequenceError(
                        f"journal {self.directory} continues at seq {scan.next_seq}, "
                        f"not at the requested first_seq {first_seq}"
                    )
                self._next_seq = scan.next_seq
                segs = list_segments(self.directory)
                if segs and segs[0][0] < scan.next_seq:
                    self._last_seq = scan.next_seq - 1
                if slot_size is None:
                    self.slot_size = scan.header.slot_size
                if self.slot_size == scan.header.slot_size:
                    self._fd = os.open(scan.path, os.O_WRONLY | os.O_APPEND)
                    self._segment_path = scan.path
                    self._segment_size = scan.valid_end
                    self._segment_records = len(scan.entries)
                # else: a different slot size starts a new segment on the first append.
        except BaseException:
            self._lock.release()
            raise

    @classmethod
    def open_existing(cls, directory: Path | str, **kwargs) -> "JournalWriter":
        """Open (and recover) a journal for appending; the same as the constructor."""
        return cls(directory, **kwargs)

    # --- properties ----------------------------------------------------------------------

    @property
    def next_seq(self) -> int | None:
        """The sequence the next append must start with (``None``: any, empty journal)."""
        return self._next_seq

    @property
    def last_seq(self) -> int | None:
        """The sequence of the last message appended (``None`` when there is none)."""
        return self._last_seq

    @property
    def segment_path(self) -> Path | None:
        return self._segment_path

    # --- appending -----------------------------------------------------------------------

    def append(self, first_seq: int, slots: Buffer | Sequence[Buffer], count: int) -> None:
        """Append one batch: ``count`` messages with sequences ``first_seq ..``, whose slot
        bytes are ``slots`` (one buffer, or a list of buffers written back to back, e.g. the
        two halves of a batch that wraps around a ring).  Durable on return under
        ``durability="batch"``."""
        if self._closed:
            raise JournalError("journal writer is closed")
        if count <= 0:
            if count == 0:
                return
            raise ValueError(f"count must be >= 0, not {count}")
        if self._next_seq is not None and first_seq != self._next_seq:
            raise JournalSequenceError(
                f"non-contiguous append: batch starts at seq {first_seq}, "
                f"journal expects {self._next_seq}"
            )
        if first_seq < 0 or first_seq + count > MAX_SEQ:
            raise JournalSequenceError(f"bad sequence {first_seq}")
        views = _buffers(slots)
        nbytes = 0
        crc = 0
        for v in views:
            nbytes += v.nbytes
            crc = zlib.crc32(v, crc)
        slot_size = self.slot_size
        if slot_size is None:
            if nbytes % count or not 0 < nbytes // count <= MAX_SLOT_SIZE:
                raise ValueError(f"{nbytes} payload bytes do not divide into {count} slots")
            slot_size = self.slot_size = nbytes // count
        if nbytes != count * slot_size:
            raise ValueError(
                f"payload is {nbytes} bytes, expected count {count} * slot size {slot_size}"
            )
        if nbytes > MAX_PAYLOAD_LENGTH:
            raise ValueError(f"batch of {nbytes} bytes is too large for one record")
        body = _RECORD_HEADER_BODY.pack(RECORD_MAGIC, nbytes, first_seq, count, crc, 0)
        header = body + _CRC.pack(zlib.crc32(body))
        total = RECORD_HEADER_LENGTH + nbytes
        if self._fd < 0 or (
            self._segment_records and self._segment_size + total > self.segment_bytes
        ):
            self._roll(first_seq)
        self._write(header, views, total)
        self._segment_size += total
        self._segment_records += 1
        self._next_seq = first_seq + count
        self._last_seq = self._next_seq - 1
        self._dirty = True
        if self._sync_each:
            _fdatasync(self._fd)
            self._dirty = False
        elif self._sync_interval:
            now = _monotonic_ns()
            if now - self._last_sync_ns >= self.interval_ns:
                _fdatasync(self._fd)
                self._dirty = False
                self._last_sync_ns = now

    def _write(self, header: bytes, views: list[memoryview], total: int) -> None:
        fd = self._fd
        try:
            written = os.writev(fd, [header, *views])
            if written != total:  # short write (rare on regular files): finish it
                blob = b"".join([header, *(bytes(v) for v in views)])
                while written < total:
                    written += os.write(fd, blob[written:])
        except BaseException:
            # Leave no partial record behind (ENOSPC, EINTR mid-way...): cut back and raise.
            try:
                os.ftruncate(fd, self._segment_size)
            except OSError:
                self._closed = True
                log.error(
                    "journal: could not cut back a partial record in %s; writer closed",
                    self._segment_path,
                )
            raise

    def _roll(self, first_seq: int) -> None:
        """Finish the current segment (synced) and start a new one at ``first_seq``."""
        if self._fd >= 0:
            if self._dirty:
                _fdatasync(self._fd)
                self._dirty = False
                self._last_sync_ns = _monotonic_ns()
            os.close(self._fd)
            self._fd = -1
        assert self.slot_size is not None
        path = self.directory / segment_name(first_seq)
        if path.exists() and path.stat().st_size != SEGMENT_HEADER_LENGTH:
            # Only an empty segment (header only, e.g. of another slot size) may be replaced.
            raise JournalCorruptError(path, 0, "segment file for the next sequence already exists")
        tmp = path.with_name(path.name + TEMP_SUFFIX)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, encode_segment_header(self.slot_size, first_seq))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        fsync_directory(self.directory)
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        self._segment_path = path
        self._segment_size = SEGMENT_HEADER_LENGTH
        self._segment_records = 0

    # --- syncing and closing ------------------------------------------------------------

    def sync(self) -> None:
        """Make everything appended so far durable."""
        if self._fd >= 0 and self._dirty:
            _fdatasync(self._fd)
            self._dirty = False
        self._last_sync_ns = _monotonic_ns()

    def maybe_sync(self) -> bool:
        """For ``interval`` durability, from an idle loop: sync if data is pending and the
        interval has passed.  Returns whether it synced."""
        if self._dirty and self._fd >= 0:
            now = _monotonic_ns()
            if now - self._last_sync_ns >= self.interval_ns:
                _fdatasync(self._fd)
                self._dirty = False
                self._last_sync_ns = now
                return True
        return False

    @property
    def pending_sync(self) -> bool:
        """Whether appended data is not yet known durable."""
        return self._dirty

    def close(self) -> None:
        if self._closed and self._fd < 0:
            if self._lock is not None:
                self._lock.release()
            return
        try:
            if self._fd >= 0:
                if self._dirty:
                    _fdatasync(self._fd)
                    self._dirty = False
                os.close(self._fd)
                self._fd = -1
        finally:
            self._closed = True
            if self._lock is not None:
                self._lock.release()

    def __enter__(self) -> "JournalWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:  # pragma: no cover - best effort
        try:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1
            if self._lock is not None:
                self._lock.release()
        except Exception:
            pass


# --- maintenance -------------------------------------------------------------------------


def prune_before(directory: Path | str, seq: int) -> list[Path]:
    """Delete whole segments whose messages all have sequence ``< seq`` (for example once a
    snapshot covers them).  The last segment is never deleted.  Returns what was deleted."""
    segs = list_segments(directory)
    deleted = []
    for i in range(len(segs) - 1):
        next_first = segs[i + 1][0]
        if next_first <= seq:
            segs[i][1].unlink()
            deleted.append(segs[i][1])
        else:
            break
    if deleted:
        fsync_directory(directory)
    return deleted
