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
           +56  content crc      uint32, zlib.crc32 of every byte from the manifest offset
                                 to the end of the data
           +60  header crc       uint32, zlib.crc32 of bytes 0..60
    64   manifest: UTF-8 JSON ``{"meta": ..., "arrays": [{"name", "dtype", "shape",
         "offset", "nbytes"}, ...]}``; ``dtype`` is numpy's array-protocol descriptor
         (structured dtypes included), ``offset`` is relative to the data offset
    ...  zero padding up to the data offset
    data: each array's bytes in C order, each starting at a multiple of DATA_ALIGNMENT

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
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ringex import crash_points
from ringex.engine.storage import defaults
from ringex.engine.storage.fsync import fsync_directory
from ringex.ringbuffer.liveness import pid_alive

log = logging.getLogger(__name__)
_CRASH = crash_points.ARMED  # crash points compiled in, armed only by a test

SNAPSHOT_MAGIC = b"RXSNAP\x00\x01"
#: Bump whenever anything in the on-disk layout changes meaning.
VERSION = 1
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
_TEMP_RE = re.compile(r"^\.snapshot-\d+\.snap\.tmp-(\d+)$")
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
    directory = Path(directory)
    if not directory.is_dir():
        return []
    out = []
    for entry in os.scandir(directory):
        m = _SNAPSHOT_RE.match(entry.name)
        if m and entry.is_file():
            out.append((int(m.group(1)), Path(entry.path)))
    out.sort()
    return out


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


_TRICKLE_CHUNK = 8 << 20
_SFR_WAIT_BEFORE, _SFR_WRITE, _SFR_WAIT_AFTER = 1, 2, 4


def _write_trickled(f, view: memoryview) -> None:
    """Write ``view`` in chunks, each sent to the disk as the next is written and waited for
    one chunk later, so that at most two chunks are ever dirty. Why: on ext4 (data=ordered)
    an fdatasync of the journal commits the file system's transaction, which first flushes
    every dirty data block of every file, a half-written snapshot's included; trickled,
    the engine's group commit never waits for more than a chunk of it."""
    import ctypes

    try:
        sfr = ctypes.CDLL(None, use_errno=True).sync_file_range
        sfr.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
    except (OSError, AttributeError):
        f.write(view)
        return
    if len(view) <= _TRICKLE_CHUNK:
        f.write(view)
        return
    f.flush()
    fd = f.fileno()
    base = f.tell()
    prev = None
    for off in range(0, len(view), _TRICKLE_CHUNK):
        chunk = view[off:off + _TRICKLE_CHUNK]
        f.write(chunk)
        f.flush()
        sfr(fd, base + off, len(chunk), _SFR_WRITE)
        if prev is not None:
            sfr(fd, prev[0], prev[1], _SFR_WAIT_BEFORE | _SFR_WRITE | _SFR_WAIT_AFTER)
        prev = (base + off, len(chunk))


_PAGE = 4096
# Small enough that the journal's own small write queues behind at most one of these.
_DIRECT_CHUNK = 1 << 20
# A gap after each write: the device is idle for the journal's own sync now and then.
_DIRECT_GAP_S = 0.001


def _write_direct(f, path: Path, a: np.ndarray, view: memoryview, file_offset: int) -> None:
    """Write ``view`` (``a``'s bytes) at ``file_offset`` of ``f``: its whole pages with
    O_DIRECT, the rest through ``f``; leaves ``f`` positioned after it.

    Why: a snapshot written through the page cache leaves hundreds of MB dirty, and on ext4
    (data=ordered) the engine's journal fdatasync then waits for all of it; the kernel's
    writeback of it is also slower here than direct I/O (282 MB/s against 1.4 GB/s with
    dd). Direct writes leave nothing dirty and copy nothing. Where O_DIRECT is refused (a
    file system without it, an unaligned array), the writes are trickled instead
    (:func:`_write_trickled`), never left all dirty at once."""
    f.flush()
    whole = len(view) // _PAGE * _PAGE
    if not whole or a.ctypes.data % _PAGE or file_offset % _PAGE:
        _write_trickled(f, view)
        return
    try:
        dfd = os.open(path, os.O_WRONLY | getattr(os, "O_DIRECT", 0))
    except OSError:
        _write_trickled(f, view)
        return
    done = 0
    try:
        while done < whole:
            done += os.pwrite(dfd, view[done:min(whole, done + _DIRECT_CHUNK)], file_offset + done)
            if _DIRECT_GAP_S:
                time.sleep(_DIRECT_GAP_S)
    except OSError:
        done = done // _PAGE * _PAGE  # refused midway (EINVAL): the rest through the cache
    finally:
        os.close(dfd)
    f.seek(file_offset + done)
    _write_trickled(f, view[done:])


def _byte_view(a: np.ndarray) -> memoryview:
    return memoryview(a.reshape(-1).view(np.uint8)) if a.size else memoryview(b"")


# --- writing -----------------------------------------------------------------------------


def write_snapshot(
    directory: Path | str,
    seq: int,
    arrays: Mapping[str, np.ndarray],
    meta: Mapping[str, Any] | None = None,
    *,
    keep: int = defaults.SNAPSHOTS_KEPT,
    direct: bool = False,
) -> Path:
    """Write a snapshot of ``arrays`` and ``meta`` covering the input messages before
    ``seq``; atomically (temp file, fsync, rename, directory fsync).  Afterwards only the
    newest ``keep`` snapshots are kept (``keep <= 0``: keep all).  Returns the file's path.

    ``direct``: write the arrays' pages with O_DIRECT, past the page cache (see
    :func:`_write_direct`); the bytes in the file are the same either way."""
    if seq < 0:
        raise ValueError(f"bad seq {seq}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    entries = []
    prepared: list[np.ndarray] = []
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
        prepared.append(a)
        offset = _align(offset + a.nbytes)
    data_length = offset
    manifest = json.dumps(
        {"meta": dict(meta or {}), "arrays": entries}, sort_keys=True, separators=(",", ":"),
        allow_nan=False,
    ).encode()
    manifest_offset = HEADER_LENGTH
    data_offset = _align(manifest_offset + len(manifest))
    pad = bytes(data_offset - manifest_offset - len(manifest))

    final = directory / snapshot_name(seq)
    tmp = directory / f"{TEMP_PREFIX}{seq:0{SEQ_DIGITS}d}{SNAPSHOT_SUFFIX}.tmp-{os.getpid()}"
    crc = zlib.crc32(manifest)
    crc = zlib.crc32(pad, crc)
    try:
        with open(tmp, "wb") as f:
            f.write(bytes(HEADER_LENGTH))  # filled in last
            f.write(manifest)
            f.write(pad)
            pos = 0
            for entry, a in zip(entries, prepared):
                gap = entry["offset"] - pos
                if gap:
                    zeros = bytes(gap)
                    f.write(zeros)
                    crc = zlib.crc32(zeros, crc)
                view = _byte_view(a)
                if direct:
                    _write_direct(f, tmp, a, view, data_offset + entry["offset"])
                else:
                    f.write(view)
                crc = zlib.crc32(view, crc)
                pos = entry["offset"] + a.nbytes
            tail = bytes(data_length - pos)
            if tail:
                f.write(tail)
                crc = zlib.crc32(tail, crc)
            body = _HEADER_BODY.pack(
                SNAPSHOT_MAGIC, VERSION, HEADER_LENGTH, seq, manifest_offset, len(manifest),
                data_offset, data_length, crc,
            )
            f.seek(0)
            f.write(body + _CRC.pack(zlib.crc32(body)))
            f.flush()
            os.fsync(f.fileno())
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


def prune_snapshots(directory: Path | str, keep: int = defaults.SNAPSHOTS_KEPT) -> list[Path]:
    """Delete all but the newest ``keep`` snapshot files; returns what was deleted."""
    snaps = list_snapshots(directory)
    doomed = [p for _, p in snaps[:-keep]] if keep > 0 else []
    for p in doomed:
        p.unlink(missing_ok=True)
    if doomed:
        fsync_directory(directory)
    return doomed


# --- reading -----------------------------------------------------------------------------


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
    if size < HEADER_LENGTH:
        raise SnapshotCorruptError(path, size, f"truncated header ({size} of {HEADER_LENGTH} bytes)")
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
    if version != VERSION:
        raise SnapshotCorruptError(path, VERSION_OFFSET, f"unsupported snapshot version {version}")
    if hlen != HEADER_LENGTH or m_off != HEADER_LENGTH or d_off < m_off + m_len:
        raise SnapshotCorruptError(path, HEADER_LENGTH_OFFSET, "inconsistent header lengths")
    end = d_off + d_len
    if size != end:
        raise SnapshotCorruptError(
            path, min(size, end),
            f"file is {size} bytes, header says {end}" + (" (truncated)" if size < end else ""),
        )
    crc = 0
    for start in range(m_off, end, _CRC_CHUNK):
        crc = zlib.crc32(raw[start:min(end, start + _CRC_CHUNK)], crc)
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


def load_latest_snapshot(directory: Path | str, *, clean: bool = True) -> Snapshot | None:
    """The newest valid snapshot in ``directory`` (unpacks as ``(seq, arrays, meta)``), or
    ``None`` when there is none.  Damaged snapshots are skipped with a warning; orphaned
    temporary files are ignored (and, with ``clean``, removed)."""
    if clean:
        clean_temporaries(directory)
    for seq, path in reversed(list_snapshots(directory)):
        try:
            return read_snapshot(path)
        except SnapshotCorruptError as exc:
            log.warning("snapshot: skipping %s; falling back to an older snapshot", exc)
        except OSError as exc:
            log.warning("snapshot: cannot read %s (%s); falling back to an older snapshot", path, exc)
    return None
