"""Repairing a crashed journal's tail before appending (the rules are in
:mod:`ringex.engine.storage.journal_format`, "Durability and crashes").

Only the last segment can be torn: a leftover temporary segment or a last segment shorter
than its header is removed, a damaged tail of the last segment is truncated (each with a
warning naming the file and offset), and the reserved space a crashed writer left (zero
bytes after its last record) is cut without one.  Anything else raises
:class:`~ringex.engine.storage.journal_format.JournalCorruptError`.  Archived segments are
never touched: they are complete copies of segments that were not the last.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from ringex.engine.storage.fsync import fsync_directory
from ringex.engine.storage.journal_format import (
    SEGMENT_FIRST_SEQ_OFFSET,
    SEGMENT_HEADER_LENGTH,
    SEGMENT_PREFIX,
    TEMP_SUFFIX,
    JournalCorruptError,
    decode_segment_header,
    list_segments,
)
from ringex.engine.storage.journal_lock import JournalLock
from ringex.engine.storage.journal_scan import SegmentScan, TailDamage, read_segment, scan_segment

log = logging.getLogger(__name__)


@dataclass
class RepairReport:
    """What a repair found: where the next append goes, and what it repaired."""

    next_seq: int | None
    slot_size: int | None
    repaired: list[TailDamage] = field(default_factory=list)
    removed_files: list[Path] = field(default_factory=list)


def repair_locked(directory: Path) -> tuple[RepairReport, SegmentScan | None]:
    """Repair the journal in ``directory``, whose lock the caller holds; also returns the
    scan of the (repaired) last segment, ``None`` when there is no segment."""
    report = RepairReport(next_seq=None, slot_size=None)
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
        data = read_segment(path)
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
        last_scan = scan_segment(path, data, is_last=True, expected_first=None)
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
    elif last_scan.reserved:
        # A writer that did not close (a crash) left its reserved space: no data, cut quietly
        # (not synced: zeros that came back after a crash would be read as reserved again).
        os.truncate(last_scan.path, last_scan.valid_end)
        last_scan.data = last_scan.data[:last_scan.valid_end]
        last_scan.reserved = 0
    report.next_seq = last_scan.next_seq
    report.slot_size = last_scan.header.slot_size
    return report, last_scan


def repair_journal(directory: Path | str) -> RepairReport:
    """Repair a crashed journal's tail without opening it for appending.  A fresh or missing
    directory is an empty journal."""
    directory = Path(directory)
    if not directory.is_dir():
        return RepairReport(next_seq=None, slot_size=None)
    lock = JournalLock(directory)
    try:
        report, _ = repair_locked(directory)
    finally:
        lock.release()
    return report
