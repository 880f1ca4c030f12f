"""A snapshot's data section as blocks: their checksums, and writing only some of them.

The data section of a snapshot file (``ringex.engine.storage.snapshot``) is the arrays'
bytes, each at its offset, with zeros between them. It is checked, and rewritten, a block
of ``BLOCK_BYTES`` at a time: the file keeps a table of the blocks' CRC-32s, and a writer
that reuses an old snapshot's file (``write_snapshot(..., recycle=True)``) compares the new
table with the old and writes only the blocks whose checksum changed.

Why: at the bench's 321 MB arena, 105,000 input messages changed 35 MB of it in 256 KiB
blocks (31 MB in 64 KiB blocks, 45 MB in 1 MiB ones; docs/benchmarks.md). Every byte a
snapshot writes is a byte the journal's fdatasync may have to wait behind in the device's
queue and its cache flush, so a snapshot that writes a tenth as much is a tenth of that.

How the bytes reach the disk (:meth:`DataBlocks.write`):

* ``direct``: with O_DIRECT, in writes of at most ``DIRECT_CHUNK``, paced to at most
  ``DIRECT_RATE`` bytes a second. Direct I/O leaves nothing dirty in the page cache, which
  on ext4 (data=ordered) the journal's fdatasync would otherwise flush first; it was also
  faster here (1.4-1.5 GB/s against 282 MB/s buffered). The small chunk keeps the device
  queue short; the rate bounds what each of the journal's syncs finds in the device's
  write cache to flush with its own few KB (at 1 ms gaps after 1 MiB writes, syncs beside
  a snapshot took 5-8 ms instead of 1-3; docs/benchmarks.md). What O_DIRECT cannot take (a piece
  not on whole pages, a file system that refuses it) goes through the page cache.
* otherwise through the page cache, sent to the disk ``TRICKLE_CHUNK`` at a time
  (``sync_file_range``), so that never more than two chunks are dirty at once.
"""

from __future__ import annotations

import ctypes
import os
import time
import zlib
from dataclasses import dataclass

import numpy as np

#: The unit of checking and of rewriting. Changes in the engine's arena cluster (new order
#: slots are taken in order, freed ones reused last-in first-out), so 256 KiB blocks write
#: about as little as 64 KiB ones with a quarter of the table.
BLOCK_BYTES = 256 << 10
PAGE = 4096
DIRECT_CHUNK = 256 << 10  # the journal's own small write queues behind at most one of these
#: A recycled snapshot (35 MB at the bench's arena) then takes about half a second.
DIRECT_RATE = 128 << 20
TRICKLE_CHUNK = 8 << 20
_SFR_WAIT_BEFORE, _SFR_WRITE, _SFR_WAIT_AFTER = 1, 2, 4
_ZEROS = memoryview(bytes(BLOCK_BYTES))


@dataclass(frozen=True)
class Piece:
    """An array's bytes at ``offset`` of the data section."""

    offset: int
    view: memoryview
    address: int  # of the first byte in memory (O_DIRECT wants it on a page)


class DataBlocks:
    """The data section: ``length`` bytes, ``pieces`` (sorted, disjoint) and zeros elsewhere."""

    def __init__(self, pieces: list[Piece], length: int) -> None:
        self.pieces = pieces
        self.length = length
        self.count = -(-length // BLOCK_BYTES)

    def _spans(self, start: int, end: int):
        """``(offset, view, length, address)`` covering ``[start, end)`` in order; ``view``
        is None (and ``address`` 0) where the section is zeros."""
        at = start
        for p in self.pieces:
            p_end = p.offset + len(p.view)
            if p_end <= at:
                continue
            if p.offset >= end:
                break
            if p.offset > at:
                yield at, None, p.offset - at, 0
                at = p.offset
            stop = min(end, p_end)
            yield at, p.view[at - p.offset:stop - p.offset], stop - at, p.address + at - p.offset
            at = stop
        if at < end:
            yield at, None, end - at, 0

    def checksums(self) -> np.ndarray:
        """zlib.crc32 of every block, as the little-endian uint32 table the file stores."""
        out = np.empty(self.count, dtype="<u4")
        for b in range(self.count):
            start = b * BLOCK_BYTES
            crc = 0
            for _at, view, n, _addr in self._spans(start, min(self.length, start + BLOCK_BYTES)):
                if view is None:
                    while n:
                        k = min(n, BLOCK_BYTES)
                        crc = zlib.crc32(_ZEROS[:k], crc)
                        n -= k
                else:
                    crc = zlib.crc32(view, crc)
            out[b] = crc
        return out

    def write(self, fd: int, path: str, file_offset: int, blocks: np.ndarray, direct: bool,
              paced: bool = True) -> int:
        """Write the given blocks (ascending indices) at ``file_offset`` of the file ``fd``
        (open for writing, ``path`` its name for a second, O_DIRECT descriptor); returns the
        bytes written. ``paced``: direct writes at most ``DIRECT_RATE`` (off where no
        journal is being written beside it, at start-up)."""
        dfd = -1
        if direct and hasattr(os, "O_DIRECT"):
            try:
                dfd = os.open(path, os.O_WRONLY | os.O_DIRECT)
            except OSError:
                dfd = -1
        out = _Writer(fd, dfd, paced)
        try:
            for start, end in _runs(blocks, self.length):
                for at, view, n, address in self._spans(start, end):
                    if view is None:
                        out.zeros(file_offset + at, n)
                    else:
                        out.bytes(file_offset + at, view, address)
            out.finish()
        finally:
            if dfd >= 0:
                os.close(dfd)
        return out.written


def pwrite_all(fd: int, data: bytes | memoryview, at: int) -> None:
    """Write all of ``data`` at offset ``at`` of ``fd`` (``os.pwrite`` may write less)."""
    view = memoryview(data)
    while len(view):
        n = os.pwrite(fd, view, at)
        view, at = view[n:], at + n


def _runs(blocks: np.ndarray, length: int):
    """Contiguous runs of the given blocks as byte ranges ``[start, end)``."""
    run_start = prev = None
    for b in blocks.tolist():
        if prev is not None and b == prev + 1:
            prev = b
            continue
        if run_start is not None:
            yield run_start * BLOCK_BYTES, min(length, (prev + 1) * BLOCK_BYTES)
        run_start = prev = b
    if run_start is not None:
        yield run_start * BLOCK_BYTES, min(length, (prev + 1) * BLOCK_BYTES)


class _Writer:
    """Positional writes: whole pages through ``dfd`` (O_DIRECT) when there is one and
    memory and file are page-aligned, everything else through ``fd``, trickled."""

    def __init__(self, fd: int, dfd: int, paced: bool = True) -> None:
        self.fd, self.dfd, self.paced = fd, dfd, paced
        self.written = 0
        self._dirty_from = -1  # start of the page-cache range not yet sent to the disk
        self._dirty_to = -1
        self._sent: tuple[int, int] | None = None
        self._sfr = _sync_file_range()
        self._paced_from = time.monotonic()
        self._paced_bytes = 0

    def zeros(self, at: int, n: int) -> None:
        while n:
            k = min(n, BLOCK_BYTES)
            self._cached(at, _ZEROS[:k])
            at += k
            n -= k

    def bytes(self, at: int, view: memoryview, address: int) -> None:
        n = len(view)
        if self.dfd >= 0 and at % PAGE == 0 and address % PAGE == 0:
            whole = n // PAGE * PAGE
            done = 0
            try:
                while done < whole:
                    k = min(whole - done, DIRECT_CHUNK)
                    wrote = os.pwrite(self.dfd, view[done:done + k], at + done)
                    done += wrote
                    if self.paced:
                        self._pace(wrote)
            except OSError:  # refused midway (EINVAL): the rest through the cache
                done = done // PAGE * PAGE
                os.close(self.dfd)
                self.dfd = -1
            self.written += done
            view, at = view[done:], at + done
        while len(view):
            k = min(len(view), TRICKLE_CHUNK)
            self._cached(at, view[:k])
            view, at = view[k:], at + k

    def _pace(self, wrote: int) -> None:
        """Sleep until ``DIRECT_RATE`` allows what has been written so far."""
        self._paced_bytes += wrote
        ahead = self._paced_from + self._paced_bytes / DIRECT_RATE - time.monotonic()
        if ahead > 0:
            time.sleep(ahead)

    def _cached(self, at: int, view: memoryview) -> None:
        pwrite_all(self.fd, view, at)
        done = len(view)
        self.written += done
        if self._sfr is None:
            return
        if self._dirty_from < 0 or at != self._dirty_to:
            self._send()
            self._dirty_from = at
        self._dirty_to = at + done
        if self._dirty_to - self._dirty_from >= TRICKLE_CHUNK:
            self._send()

    def _send(self) -> None:
        """Start writing the dirty range back, and wait for the range sent before it: at
        most two ranges are ever dirty."""
        if self._sfr is None or self._dirty_from < 0:
            return
        start, n = self._dirty_from, self._dirty_to - self._dirty_from
        self._sfr(self.fd, start, n, _SFR_WRITE)
        if self._sent is not None:
            self._sfr(self.fd, *self._sent, _SFR_WAIT_BEFORE | _SFR_WRITE | _SFR_WAIT_AFTER)
        self._sent = (start, n)
        self._dirty_from = self._dirty_to = -1

    def finish(self) -> None:
        self._send()


def _sync_file_range():
    try:
        sfr = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    sfr.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
    return sfr
