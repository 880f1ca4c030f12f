"""Snapshots of the engine's state: named numpy arrays plus JSON metadata, checksummed.

Recovery is the newest *valid* snapshot plus the journal records from its sequence on
(:mod:`ringex.engine.storage.recovery`).

Sequence convention: a snapshot's ``seq`` is the engine's input cursor when it was taken,
the sequence of the first input message it does **not** reflect (= the number of messages
applied when sequences start at 0).  Replay therefore starts at ``seq`` itself.

On disk
-------
One file per snapshot, ``snapshot-<seq, 20 digits>.snap``; every offset has a name below::

    0    header (SNAPSHOT_HEADER, 64 bytes, little-endian):
           +0   magic            8 bytes, b"RXSNAP\\x00\\x01"
           +8   version          uint32
           +12  header length    uint32 (= 64)
           +16  seq              int64
           +24  manifest offset  uint64 (= 64)
           +32  manifest length  uint64
           +40  data offset      uint64 (multiple of DATA_ALIGNMENT)
           +48  data length      uint64
           +56  content crc      uint32, zlib.crc32 of the manifest, its padding and the
                                 block table, in that order (version 1: of every byte from
                                 the manifest offset to the end of the data)
           +60  header crc       uint32, zlib.crc32 of bytes 0..60
    64   manifest: UTF-8 JSON ``{"meta": ..., "arrays": [{"name", "dtype", "shape",
         "offset", "nbytes"}, ...]}``; ``dtype`` is numpy's array-protocol descriptor
         (structured dtypes included), ``offset`` is relative to the data offset
    ...  zero padding up to the data offset
    data: each array's bytes in C order, each starting at a multiple of DATA_ALIGNMENT,
         zeros between them
    data offset + data length: the block table (version 2 on), one little-endian uint32
         per BLOCK_BYTES of the data (the last block may be shorter), zlib.crc32 of that block

The block table lets a reader name the damaged block, and a writer that recycles an old
snapshot's file rewrite only the blocks that changed (``write_snapshot``'s ``recycle``,
:mod:`~ringex.engine.storage.snapshot_blocks`).

Not pickle: object dtypes are refused.  Files are written to a temporary name in the same
directory, fsynced, renamed into place (``os.replace``), and the directory fsynced, so a
snapshot file either is complete or does not exist under its final name; a damaged one
(media error, manual tampering) fails its checksums and is skipped with a warning.
"""

from __future__ import annotations

import json
import logging
import os
import re
import struct
import zlib
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ringex import crash_points
from ringex.engine.storage import defaults
from ringex.engine.storage.fsync import fsync_directory
from ringex.engine.storage.gentle_unlink import shrink_and_unlink
from ringex.engine.storage.journal_format import list_numbered
from ringex.engine.storage.snapshot_blocks import BLOCK_BYTES, DataBlocks, Piece, pwrite_all
from ringex.ringbuffer.liveness import pid_alive

log = logging.getLogger(__name__)
_CRASH = crash_points.ARMED  # crash points compiled in, armed only by a test

SNAPSHOT_MAGIC = b"RXSNAP\x00\x01"
#: Bump whenever anything in the on-disk layout changes meaning.
VERSION = 2
#: Version 1 (no block table; the content crc covers the data itself) is still read.
READABLE_VERSIONS = (1, 2)
SNAPSHOT_HEADER = struct.Struct("<8sIIqQQQQII")
MAGIC_OFFSET = 0
VERSION_OFFSET = 8
HEADER_LENGTH_OFFSET = 12
SEQ_OFFSET = 16
MANIFEST_OFFSET_OFFSET = 24
MANIFEST_LENGTH_OFFSET = 32
DATA_OFFSET_OFFSET = 40
DATA_LENGTH_OFFSET = 48
CONTENT_CRC_OFFSET = 56
HEADER_CRC_OFFSET = 60
HEADER_LENGTH = SNAPSHOT_HEADER.size
HEADER_CRC_SPAN = HEADER_CRC_OFFSET
_HEADER_BODY = struct.Struct(SNAPSHOT_HEADER.format[:-1])
_CRC = struct.Struct("<I")
assert HEADER_LENGTH == 64 and _HEADER_BODY.size == HEADER_CRC_SPAN

#: Every array's bytes start at a multiple of this (cache-line aligned in the file).
DATA_ALIGNMENT = 4096  # a page: an array can then be written with O_DIRECT (``direct=True``)
SEQ_DIGITS = 20
SNAPSHOT_PREFIX = "snapshot-"
SNAPSHOT_SUFFIX = ".snap"
TEMP_PREFIX = ".snapshot-"
_SNAPSHOT_RE = re.compile(r"^snapshot-(\d{%d})\.snap$" % SEQ_DIGITS)
#: ``.snapshot-<seq>.snap.tmp-<pid>``: the writer's pid, so a loader removes only orphans.
_TEMP_RE = re.compile(r"^\.snapshot-(?:spare-)?\d+\.snap\.tmp-(\d+)$")
#: ``.snapshot-spare-<n>.snap``: a file kept for a recycling write to reuse (``prepare_spares``).
SPARE_PREFIX = ".snapshot-spare-"
_SPARE_RE = re.compile(r"^\.snapshot-spare-(\d+)\.snap$")
_CRC_CHUNK = 16 << 20


class SnapshotError(Exception):
    """Base class of snapshot errors."""


class SnapshotCorruptError(SnapshotError):
    """A snapshot file fails its checks; names the file and the byte offset."""

    def __init__(self, path: Path | str, offset: int, what: str) -> None:
        self.path = Path(path)
        self.offset = offset
        self.what = what
        super().__init__(f"snapshot corrupt: {self.path} at byte offset {offset}: {what}")


@dataclass
class Snapshot:
    seq: int
    arrays: dict[str, np.ndarray]
    meta: dict[str, Any]
    path: Path

    def __iter__(self):  # unpacks as (seq, arrays, meta)
        return iter((self.seq, self.arrays, self.meta))


def snapshot_name(seq: int) -> str:
    return f"{SNAPSHOT_PREFIX}{seq:0{SEQ_DIGITS}d}{SNAPSHOT_SUFFIX}"


def list_snapshots(directory: Path | str) -> list[tuple[int, Path]]:
    """The snapshot files in ``directory`` as ``(seq, path)``, oldest first."""
    return list_numbered(directory, _SNAPSHOT_RE)


def _align(n: int) -> int:
    return (n + DATA_ALIGNMENT - 1) // DATA_ALIGNMENT * DATA_ALIGNMENT


def _descr_to_json(dtype: np.dtype) -> Any:
    return np.lib.format.dtype_to_descr(dtype)


def _json_to_descr(obj: Any) -> Any:
    """Undo JSON's tuple-to-list conversion in an array-protocol descriptor."""
    if isinstance(obj, str):
        return obj
    fields = []
    for f in obj:
        name = f[0] if isinstance(f[0], str) else tuple(f[0])
        item = [name, _json_to_descr(f[1])]
        if len(f) > 2:
            item.append(tuple(f[2]))
        fields.append(tuple(item))
    return fields


def _byte_view(a: np.ndarray) -> memoryview:
    return memoryview(a.reshape(-1).view(np.uint8)) if a.size else memoryview(b"")


# --- writing -----------------------------------------------------------------------------


@dataclass
class _Layout:
    """A snapshot's bytes as they will be on disk, except the data (``data`` writes it).
    The block table (a CRC pass over all the data) and the header that covers it are
    computed when first asked for: checking an old file against the layout needs neither."""

    seq: int
    head: bytes  # the manifest and its padding, at HEADER_LENGTH
    manifest_length: int
    data_offset: int
    data: DataBlocks

    @cached_property
    def table(self) -> np.ndarray:
        """Little-endian uint32 per block."""
        return self.data.checksums()

    @cached_property
    def header(self) -> bytes:
        content_crc = zlib.crc32(self.table.tobytes(), zlib.crc32(self.head))
        body = _HEADER_BODY.pack(
            SNAPSHOT_MAGIC, VERSION, HEADER_LENGTH, self.seq, HEADER_LENGTH, self.manifest_length,
            self.data_offset, self.data.length, content_crc,
        )
        return body + _CRC.pack(zlib.crc32(body))

    @property
    def size(self) -> int:
        return self.data_offset + self.data.length + 4 * self.data.count


def _lay_out(seq: int, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any] | None) -> _Layout:
    entries = []
    pieces: list[Piece] = []
    offset = 0
    for name, array in arrays.items():
        if not isinstance(name, str):
            raise TypeError(f"array names must be str, not {name!r}")
        a = np.asarray(array)
        if a.dtype.hasobject:
            raise TypeError(f"array {name!r}: object dtypes cannot be snapshotted")
        if not a.flags.c_contiguous:
            a = a.copy(order="C")  # (np.ascontiguousarray would turn a 0-d array into 1-d)
        entries.append({
            "name": name,
            "dtype": _descr_to_json(a.dtype),
            "shape": list(a.shape),
            "offset": offset,
            "nbytes": a.nbytes,
        })
        if a.nbytes:
            pieces.append(Piece(offset, _byte_view(a), a.ctypes.data))
        offset = _align(offset + a.nbytes)
    data = DataBlocks(pieces, offset)
    manifest = json.dumps(
        {"meta": dict(meta or {}), "arrays": entries}, sort_keys=True, separators=(",", ":"),
        allow_nan=False,
    ).encode()
    data_offset = _align(HEADER_LENGTH + len(manifest))
    head = manifest + bytes(data_offset - HEADER_LENGTH - len(manifest))
    return _Layout(seq, head, len(manifest), data_offset, data)


def _write_file(path: Path, layout: _Layout, old_table: np.ndarray | None, direct: bool,
                paced: bool = True) -> None:
    """Write ``layout`` into ``path`` and fsync it: a new file whole, or (``old_table``) an
    old snapshot's file, only where its blocks differ."""
    fresh = old_table is None
    blocks = np.arange(layout.data.count) if fresh else np.flatnonzero(layout.table != old_table)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | (os.O_TRUNC if fresh else 0), 0o644)
    try:
        pwrite_all(fd, bytes(HEADER_LENGTH), 0)  # no valid header until the last write
        if fresh:
            _preallocate(fd, layout.size)
        os.ftruncate(fd, layout.size)
        pwrite_all(fd, layout.head, HEADER_LENGTH)
        layout.data.write(fd, str(path), layout.data_offset, blocks, direct, paced)
        pwrite_all(fd, layout.table.tobytes(), layout.data_offset + layout.data.length)
        pwrite_all(fd, layout.header, 0)
        os.fsync(fd)
    finally:
        os.close(fd)


def write_snapshot(
    directory: Path | str,
    seq: int,
    arrays: Mapping[str, np.ndarray],
    meta: Mapping[str, Any] | None = None,
    *,
    keep: int = defaults.SNAPSHOTS_KEPT,
    direct: bool = False,
    recycle: bool = False,
) -> Path:
    """Write a snapshot of ``arrays`` and ``meta`` covering the input messages before
    ``seq``; atomically (temporary name, fsync, rename, directory fsync).  Afterwards only
    the newest ``keep`` snapshots are kept (``keep <= 0``: keep all).  Returns the file's path.

    ``direct``: write the data with O_DIRECT, past the page cache
    (:mod:`~ringex.engine.storage.snapshot_blocks`).  ``recycle``: reuse a file rather than
    create one: the oldest snapshot (the one this write would prune) when ``keep`` exist
    already, else a spare (:func:`prepare_spares`); it is renamed to the temporary name and
    only its blocks whose checksum differs from the new data's are rewritten.  The file's
    bytes are the same whichever way it was written; a recycled file whose old bytes did not
    match its own table fails its checks when read, so it is never loaded wrong."""
    if seq < 0:
        raise ValueError(f"bad seq {seq}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    layout = _lay_out(seq, arrays, meta)
    final = directory / snapshot_name(seq)
    tmp = _temp_path(directory, seq)
    old = _recyclable(directory, seq, keep, layout) if recycle else None
    if old is not None:
        os.replace(old[0], tmp)
    try:
        _write_file(tmp, layout, None if old is None else old[1], direct)
        if _CRASH:
            crash_points.hit("snapshot.before_rename")
        os.replace(tmp, final)
    except BaseException:
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass
        raise
    fsync_directory(directory)
    if _CRASH:
        crash_points.hit("snapshot.after_rename")
    if keep > 0:
        prune_snapshots(directory, keep)
    return final


def prepare_spares(directory: Path | str, arrays: Mapping[str, np.ndarray],
                   meta: Mapping[str, Any] | None = None, *, keep: int = defaults.SNAPSHOTS_KEPT) -> int:
    """Make sure ``keep`` files exist for recycling writes to reuse: while fewer snapshots
    exist, write spares (``.snapshot-spare-<n>.snap``, snapshots of ``arrays`` that recovery
    never reads) to make up the number; returns how many were written.

    Why: a new file costs the file system its blocks' allocation, and on ext4 the journal's
    fdatasync beside it waited 20-25 ms for that (docs/benchmarks.md). The engine calls this
    at start-up, before it accepts orders, so that the first snapshots of a new data
    directory recycle spares like every later one recycles the oldest snapshot."""
    directory = Path(directory)
    if keep < 2:
        return 0  # nothing is recycled with keep 1 (see _recyclable)
    directory.mkdir(parents=True, exist_ok=True)
    layout = _lay_out(0, arrays, meta)
    spares = []
    for n, path in _list_spares(directory):
        if _old_table(path, layout) is None:  # another configuration's, or damaged
            path.unlink(missing_ok=True)
        else:
            spares.append((n, path))
    have = len(list_snapshots(directory)) + len(spares)
    if have >= keep:
        return 0
    used = {n for n, _ in spares}
    made = 0
    n = 0
    while have + made < keep:
        while n in used:
            n += 1
        tmp = directory / f"{SPARE_PREFIX}{n}{SNAPSHOT_SUFFIX}.tmp-{os.getpid()}"
        try:
            _write_file(tmp, layout, None, direct=True, paced=False)  # nothing trades yet
            os.replace(tmp, directory / f"{SPARE_PREFIX}{n}{SNAPSHOT_SUFFIX}")
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        used.add(n)
        made += 1
    fsync_directory(directory)
    return made


def _temp_path(directory: Path, seq: int) -> Path:
    """This process's temporary name for snapshot ``seq`` (``clean_temporaries`` removes it
    once the process is gone)."""
    return directory / f"{TEMP_PREFIX}{seq:0{SEQ_DIGITS}d}{SNAPSHOT_SUFFIX}.tmp-{os.getpid()}"


def _list_spares(directory: Path) -> list[tuple[int, Path]]:
    return list_numbered(directory, _SPARE_RE)


def _preallocate(fd: int, size: int) -> None:
    """Allocate a new file's blocks in one call rather than one direct write at a time."""
    try:
        os.posix_fallocate(fd, 0, size)
    except (OSError, AttributeError):
        pass  # a file system without it: allocated as written


def _recyclable(directory: Path, seq: int, keep: int, layout: _Layout) -> tuple[Path, np.ndarray] | None:
    """The file this write may reuse and its block table: the oldest snapshot when ``keep``
    exist, else a spare; None when there is none or it does not fit (:func:`_old_table`)."""
    snaps = list_snapshots(directory)
    if keep < 2 or any(s == seq for s, _ in snaps):
        return None  # (keep 1: the one snapshot must stay whole while the next is written)
    if len(snaps) >= keep:
        path = snaps[0][1]
    else:
        spares = _list_spares(directory)
        if not spares:
            return None
        path = spares[0][1]
    table = _old_table(path, layout)
    return None if table is None else (path, table)


def _old_table(path: Path, layout: _Layout) -> np.ndarray | None:
    """``path``'s block table, if its data section lies where ``layout``'s does and its
    header, manifest and table pass their checks; else None."""
    data_offset, data_length = layout.data_offset, layout.data.length
    try:
        with open(path, "rb", buffering=0) as f:
            raw = f.read(data_offset)
            if len(raw) < data_offset:
                return None
            version, _seq, _m_off, _m_len, d_off, d_len, content_crc = _checked_header(path, raw)
            if version != VERSION or d_off != data_offset or d_len != data_length:
                return None
            count = layout.data.count
            f.seek(data_offset + data_length)
            table = f.read(4 * count + 1)
    except (OSError, SnapshotCorruptError):
        return None
    if len(table) != 4 * count or zlib.crc32(table, zlib.crc32(raw[HEADER_LENGTH:])) != content_crc:
        return None
    return np.frombuffer(table, dtype="<u4")


def prune_snapshots(directory: Path | str, keep: int = defaults.SNAPSHOTS_KEPT) -> list[Path]:
    """Delete all but the newest ``keep`` snapshot files; returns what was deleted. Each is
    first renamed to a temporary name of this process (no longer a snapshot to recovery; one
    a kill leaves behind is removed at the next start), then deleted gently
    (:func:`~ringex.engine.storage.gentle_unlink.shrink_and_unlink`)."""
    directory = Path(directory)
    snaps = list_snapshots(directory)
    doomed = [(seq, p) for seq, p in snaps[:-keep]] if keep > 0 else []
    going = []
    for seq, p in doomed:
        tmp = _temp_path(directory, seq)
        try:
            os.replace(p, tmp)
        except FileNotFoundError:
            continue
        going.append(tmp)
    if going:
        fsync_directory(directory)
    for tmp in going:
        shrink_and_unlink(tmp)
    return [p for _, p in doomed]


# --- reading -----------------------------------------------------------------------------


def _checked_header(path: Path, raw: bytes | memoryview) -> tuple[int, int, int, int, int, int, int]:
    """The header at the start of ``raw``, checked: ``(version, seq, manifest offset,
    manifest length, data offset, data length, content crc)``; raises
    :class:`SnapshotCorruptError` naming what is wrong."""
    if len(raw) < HEADER_LENGTH:
        raise SnapshotCorruptError(path, len(raw), f"truncated header ({len(raw)} of {HEADER_LENGTH} bytes)")
    (magic, version, hlen, seq, m_off, m_len, d_off, d_len, content_crc, header_crc) = (
        SNAPSHOT_HEADER.unpack_from(raw, 0)
    )
    if magic != SNAPSHOT_MAGIC:
        raise SnapshotCorruptError(path, MAGIC_OFFSET, f"bad magic {magic!r}")
    actual = zlib.crc32(raw[:HEADER_CRC_SPAN])
    if actual != header_crc:
        raise SnapshotCorruptError(
            path, HEADER_CRC_OFFSET,
            f"header checksum mismatch (stored {header_crc:#010x}, computed {actual:#010x})",
        )
    if version not in READABLE_VERSIONS:
        raise SnapshotCorruptError(path, VERSION_OFFSET, f"unsupported snapshot version {version}")
    if hlen != HEADER_LENGTH or m_off != HEADER_LENGTH or d_off < m_off + m_len:
        raise SnapshotCorruptError(path, HEADER_LENGTH_OFFSET, "inconsistent header lengths")
    return version, seq, m_off, m_len, d_off, d_len, content_crc


def read_snapshot(path: Path | str) -> Snapshot:
    """Load and verify one snapshot file; raise :class:`SnapshotCorruptError` if it is bad."""
    path = Path(path)
    with open(path, "rb", buffering=0) as f:
        size = os.fstat(f.fileno()).st_size
        buf = np.empty(size, dtype=np.uint8)
        view = memoryview(buf)
        got = 0
        while got < size:
            n = f.readinto(view[got:])
            if not n:
                break
            got += n
    if got != size:
        raise SnapshotCorruptError(path, got, "file shrank while being read")
    raw = buf.data
    version, seq, m_off, m_len, d_off, d_len, content_crc = _checked_header(path, raw)
    end = d_off + d_len
    expected = end if version == 1 else end + 4 * -(-d_len // BLOCK_BYTES)
    if size != expected:
        raise SnapshotCorruptError(
            path, min(size, expected),
            f"file is {size} bytes, header says {expected}" + (" (truncated)" if size < expected else ""),
        )
    if version == 1:
        crc = 0
        for start in range(m_off, end, _CRC_CHUNK):
            crc = zlib.crc32(raw[start:min(end, start + _CRC_CHUNK)], crc)
    else:
        table = buf[end:size].view("<u4")
        for b in range(len(table)):
            start = d_off + b * BLOCK_BYTES
            stop = min(end, start + BLOCK_BYTES)
            got_crc = zlib.crc32(raw[start:stop])
            if got_crc != table[b]:
                raise SnapshotCorruptError(
                    path, start,
                    f"data block {b} (bytes {start}..{stop}) checksum mismatch "
                    f"(stored {int(table[b]):#010x}, computed {got_crc:#010x})",
                )
        crc = zlib.crc32(raw[end:size], zlib.crc32(raw[m_off:d_off]))
    if crc != content_crc:
        raise SnapshotCorruptError(
            path, m_off,
            f"content checksum mismatch (stored {content_crc:#010x}, computed {crc:#010x})",
        )
    m = _SNAPSHOT_RE.match(path.name)
    if m and int(m.group(1)) != seq:
        raise SnapshotCorruptError(path, SEQ_OFFSET, f"header seq {seq} does not match file name")
    try:
        manifest = json.loads(bytes(raw[m_off:m_off + m_len]))
        meta = manifest["meta"]
        arrays: dict[str, np.ndarray] = {}
        for entry in manifest["arrays"]:
            dtype = np.dtype(_json_to_descr(entry["dtype"]))
            shape = tuple(int(x) for x in entry["shape"])
            nbytes = int(entry["nbytes"])
            off = d_off + int(entry["offset"])
            count = int(np.prod(shape, dtype=np.int64)) if shape else 1
            if dtype.hasobject or count * dtype.itemsize != nbytes or off + nbytes > end:
                raise ValueError(f"array {entry['name']!r}: bad entry")
            if nbytes:
                arr = buf[off:off + nbytes].view(dtype).reshape(shape)
            else:
                arr = np.empty(shape, dtype=dtype)
            arrays[entry["name"]] = arr
    except (ValueError, KeyError, TypeError) as exc:
        raise SnapshotCorruptError(path, m_off, f"bad manifest: {exc}") from exc
    return Snapshot(seq=seq, arrays=arrays, meta=meta, path=path)


def clean_temporaries(directory: Path | str) -> list[Path]:
    """Remove temporary files left by snapshot writers that are no longer running."""
    directory = Path(directory)
    removed = []
    if not directory.is_dir():
        return removed
    for entry in os.scandir(directory):
        m = _TEMP_RE.match(entry.name)
        if not m:
            continue
        pid = int(m.group(1))
        try:
            written_ns = entry.stat().st_mtime_ns  # its writer had started by then
        except FileNotFoundError:
            continue  # its writer finished it (renamed it into place) meanwhile
        if pid != os.getpid() and pid_alive(pid, started_before_ns=written_ns):
            continue  # another process may be writing it right now
        log.info("snapshot: removing leftover temporary file %s", entry.path)
        try:
            os.unlink(entry.path)
            removed.append(Path(entry.path))
        except FileNotFoundError:
            pass
    return removed


def load_latest_snapshot(directory: Path | str, *, clean: bool = True, at_most: int | None = None) -> Snapshot | None:
    """The newest valid snapshot in ``directory`` (unpacks as ``(seq, arrays, meta)``), or
    ``None`` when there is none; with ``at_most``, the newest whose sequence is at most that.
    Damaged snapshots are skipped with a warning; orphaned temporary files are ignored (and,
    with ``clean``, removed: never while an engine may be writing one)."""
    if clean:
        clean_temporaries(directory)
    for seq, path in reversed(list_snapshots(directory)):
        if at_most is not None and seq > at_most:
            continue
        try:
            return read_snapshot(path)
        except SnapshotCorruptError as exc:
            log.warning("snapshot: skipping %s; falling back to an older snapshot", exc)
        except OSError as exc:
            log.warning("snapshot: cannot read %s (%s); falling back to an older snapshot", path, exc)
    return None
