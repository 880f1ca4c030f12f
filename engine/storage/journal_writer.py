"""Appending to the journal: one record per sequenced batch, synced as ``durability`` says.

The layout and the durability rules are in :mod:`ringex.engine.storage.journal_format`.  A
writer repairs the journal's tail when it opens, holds the directory's lock until it closes,
writes its records into space it reserved ahead (``reserve_bytes``: the format's "Reserved
space"), and never leaves a partial record behind on a failed write.
"""

from __future__ import annotations

import errno
import logging
import os
import time
import zlib
from pathlib import Path
from typing import Sequence

from ringex import crash_points
from ringex.engine.storage import defaults
from ringex.engine.storage.fsync import fdatasync, fsync_directory
from ringex.engine.storage.journal_format import (
    DURABILITIES,
    DURABILITY_BATCH,
    DURABILITY_INTERVAL,
    MAX_PAYLOAD_LENGTH,
    MAX_SEQ,
    MAX_SLOT_SIZE,
    RECORD_HEADER_LENGTH,
    RECORD_MAGIC_LENGTH,
    SEGMENT_HEADER_LENGTH,
    TEMP_SUFFIX,
    Buffer,
    JournalCorruptError,
    JournalError,
    JournalSequenceError,
    encode_record_header,
    encode_segment_header,
    list_segments,
    segment_name,
)
from ringex.engine.storage.journal_lock import JournalLock
from ringex.engine.storage.journal_repair import repair_locked

log = logging.getLogger(__name__)
_CRASH = crash_points.ARMED  # crash points compiled in, armed only by a test

_NS_PER_MS = 1_000_000
#: The clock for ``interval`` durability (a module global so tests can substitute it).
_monotonic_ns = time.monotonic_ns


def _buffers(slots: Buffer | Sequence[Buffer]) -> list[memoryview]:
    if isinstance(slots, (list, tuple)):
        views = [memoryview(s) for s in slots]
    else:
        views = [memoryview(slots)]
    for v in views:
        if not v.c_contiguous:
            raise ValueError("journal payload buffers must be C-contiguous")
    return views


class JournalWriter:
    """Appends sequenced batches, one record per batch (see the module notes).

    ``reserve_bytes``: how much of the segment's file to allocate ahead of its records at a
    time (0: the file grows with each record instead).

    Opening repairs (:mod:`~ringex.engine.storage.journal_repair`): a damaged tail of the last segment is truncated (logged), other
    damage raises :class:`JournalCorruptError`.  Appending then continues in the last
    segment.  One writer per directory (an ``flock`` on ``.journal.lock``).

    ``slot_size`` may be left out: it is then taken from the existing journal or from the
    first append (``nbytes // count``).  ``first_seq`` pins the sequence the first append of
    an empty journal must carry (for example a snapshot's sequence).
    """

    def __init__(
        self,
        directory: Path | str,
        segment_bytes: int = defaults.SEGMENT_BYTES,
        durability: str = defaults.DURABILITY,
        *,
        slot_size: int | None = None,
        interval_ms: float = defaults.INTERVAL_MS,
        first_seq: int | None = None,
        reserve_bytes: int = defaults.RESERVE_BYTES,
    ) -> None:
        if durability not in DURABILITIES:
            raise ValueError(f"durability must be one of {DURABILITIES}, not {durability!r}")
        if segment_bytes < SEGMENT_HEADER_LENGTH + RECORD_HEADER_LENGTH:
            raise ValueError(f"segment_bytes {segment_bytes} is too small")
        if slot_size is not None and not 0 < slot_size <= MAX_SLOT_SIZE:
            raise ValueError(f"bad slot size {slot_size}")
        if interval_ms < 0:
            raise ValueError("interval_ms must be >= 0")
        if reserve_bytes < 0:
            raise ValueError("reserve_bytes must be >= 0")
        self.reserve_bytes = int(reserve_bytes)
        self._reserved_end = 0  # the current segment's file is allocated up to here
        self.directory = Path(directory)
        self.segment_bytes = int(segment_bytes)
        self.durability = durability
        self.interval_ns = int(interval_ms * _NS_PER_MS)
        self._sync_each = durability == DURABILITY_BATCH
        self._sync_interval = durability == DURABILITY_INTERVAL
        self._fd = -1
        self._lock: JournalLock | None = None
        self._closed = False
        self._dirty = False
        self._last_sync_ns = _monotonic_ns()
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock = JournalLock(self.directory)
        try:
            self.repair_report, scan = repair_locked(self.directory)
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
                    self._fd = os.open(scan.path, os.O_WRONLY)
                    self._segment_path = scan.path
                    self._segment_size = self._reserved_end = scan.valid_end
                    self._segment_records = len(scan.entries)
                # else: a different slot size starts a new segment on the first append.
        except BaseException:
            self._lock.release()
            raise

    # --- properties ----------------------------------------------------------------------

    @property
    def next_seq(self) -> int | None:
        """The sequence the next append must start with (``None``: any, empty journal)."""
        return self._next_seq

    @property
    def last_seq(self) -> int | None:
        """The sequence of the last message appended (``None`` when there is none)."""
        return self._last_seq

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
        header = encode_record_header(nbytes, first_seq, count, crc)
        total = RECORD_HEADER_LENGTH + nbytes
        if self._fd < 0 or (
            self._segment_records and self._segment_size + total > self.segment_bytes
        ):
            self._roll(first_seq)
        if self._segment_size + total > self._reserved_end:
            self._reserve(total)
        self._write(header, views, total)
        self._segment_size += total
        self._segment_records += 1
        self._next_seq = first_seq + count
        self._last_seq = self._next_seq - 1
        self._dirty = True
        if self._sync_each:
            fdatasync(self._fd)
            self._dirty = False
        elif self._sync_interval:
            now = _monotonic_ns()
            if now - self._last_sync_ns >= self.interval_ns:
                fdatasync(self._fd)
                self._dirty = False
                self._last_sync_ns = now

    def _write(self, header: bytes, views: list[memoryview], total: int) -> None:
        """The record at the segment's end: all but its magic, then the magic (a reader that
        sees the magic sees the whole record)."""
        fd, at = self._fd, self._segment_size
        try:
            if _CRASH:
                _torn_write(fd, at, header, views, total)
                return
            _pwrite_all(fd, [memoryview(header)[RECORD_MAGIC_LENGTH:], *views], at + RECORD_MAGIC_LENGTH)
            _pwrite_all(fd, [memoryview(header)[:RECORD_MAGIC_LENGTH]], at)
        except BaseException:
            # Leave no partial record behind (ENOSPC, EINTR mid-way...): cut back and raise.
            try:
                os.ftruncate(fd, at)
                self._reserved_end = at
            except OSError:
                self._closed = True
                log.error(
                    "journal: could not cut back a partial record in %s; writer closed",
                    self._segment_path,
                )
            raise

    def _reserve(self, need: int) -> None:
        """Allocate the file for the next record, ``need`` bytes, and up to ``reserve_bytes``
        more within the segment's size."""
        if not self.reserve_bytes:
            return  # the write grows the file
        start = self._reserved_end
        end = max(self._segment_size + need, min(start + self.reserve_bytes, self.segment_bytes))
        try:
            os.posix_fallocate(self._fd, start, end - start)
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                raise
            log.warning("journal: %s cannot reserve space (%s); appending by growing the file",
                        self.directory, exc.strerror)
            self.reserve_bytes = 0
            return
        self._reserved_end = end

    def _cut_reserve(self) -> bool:
        """Cut the current segment's file back to its last record (before a roll or a close:
        only a writer's last segment has reserved space); True if it had some."""
        if self._reserved_end <= self._segment_size:
            return False
        os.ftruncate(self._fd, self._segment_size)
        self._reserved_end = self._segment_size
        return True

    def _roll(self, first_seq: int) -> None:
        """Finish the current segment (synced) and start a new one at ``first_seq``."""
        if self._fd >= 0:
            # cut and synced before the next segment exists: a segment with a successor
            # never has reserved space
            if self._cut_reserve() or self._dirty:
                fdatasync(self._fd)
                self._dirty = False
                self._last_sync_ns = _monotonic_ns()
            os.close(self._fd)
            self._fd = -1
        assert self.slot_size is not None
        path = self.directory / segment_name(first_seq)
        if path.exists() and not _holds_no_record(path):
            # Only an empty segment (header only, e.g. of another slot size) may be replaced.
            raise JournalCorruptError(path, 0, "segment file for the next sequence already exists")
        tmp = path.with_name(path.name + TEMP_SUFFIX)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        reserved = SEGMENT_HEADER_LENGTH
        try:
            os.write(fd, encode_segment_header(self.slot_size, first_seq))
            room = min(self.reserve_bytes, self.segment_bytes - SEGMENT_HEADER_LENGTH)
            if room > 0:  # allocated with the segment: its first appends find the space there
                try:
                    os.posix_fallocate(fd, SEGMENT_HEADER_LENGTH, room)
                    reserved += room
                except OSError:
                    pass  # the first append reserves, or says why it cannot
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        fsync_directory(self.directory)
        self._fd = os.open(path, os.O_WRONLY)
        self._segment_path = path
        self._segment_size = SEGMENT_HEADER_LENGTH
        self._reserved_end = reserved
        self._segment_records = 0
        if _CRASH:
            crash_points.hit("journal.segment_created")

    # --- syncing and closing ------------------------------------------------------------

    def fileno(self) -> int:
        """The current segment's file descriptor (-1 before the first append): what a
        snapshot writer syncs so that no snapshot is ahead of a durable journal."""
        return self._fd

    def sync(self) -> None:
        """Make everything appended so far durable."""
        if self._fd >= 0 and self._dirty:
            fdatasync(self._fd)
            self._dirty = False
        self._last_sync_ns = _monotonic_ns()

    def maybe_sync(self) -> bool:
        """For ``interval`` durability, from an idle loop: sync if data is pending and the
        interval has passed.  Returns whether it synced."""
        if self._dirty and self._fd >= 0:
            now = _monotonic_ns()
            if now - self._last_sync_ns >= self.interval_ns:
                fdatasync(self._fd)
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
                self._cut_reserve()  # a closed journal has no reserved space
                if self._dirty:
                    fdatasync(self._fd)
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


def _pwrite_all(fd: int, buffers: list[memoryview], at: int) -> None:
    """Write ``buffers`` back to back at offset ``at``, finishing a short write."""
    total = sum(b.nbytes for b in buffers)
    written = os.pwritev(fd, buffers, at)
    if written != total:  # short write (rare on regular files): finish it
        blob = b"".join(bytes(b) for b in buffers)
        while written < total:
            written += os.pwrite(fd, blob[written:], at + written)


def _holds_no_record(path: Path) -> bool:
    """Whether a segment file has nothing after its header but reserved space."""
    with open(path, "rb", buffering=0) as f:
        head = f.read(SEGMENT_HEADER_LENGTH + RECORD_HEADER_LENGTH)
    return not any(head[SEGMENT_HEADER_LENGTH:])


def _torn_write(fd: int, at: int, header: bytes, views: list[memoryview], total: int) -> None:
    """With a crash point armed: the record in three writes, "journal.mid_record" after the
    first (half of what precedes the magic), the magic last."""
    blob = b"".join([header, *(bytes(v) for v in views)])
    half = max(RECORD_MAGIC_LENGTH + 1, total // 2)
    os.pwrite(fd, blob[RECORD_MAGIC_LENGTH:half], at + RECORD_MAGIC_LENGTH)
    crash_points.hit("journal.mid_record")
    _pwrite_all(fd, [memoryview(blob)[half:]], at + half)
    os.pwrite(fd, blob[:RECORD_MAGIC_LENGTH], at)
