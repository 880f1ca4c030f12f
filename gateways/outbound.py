"""The binary gateway's event path, compiled: a session's events of a batch in one call.

The events routed to one session in one batch (``routing.route_by_session``) become two
byte runs in one pass (``packed_events`` sizes and makes them, ``pack_events`` fills them):
the session store's records (``session_store.py``'s record layout, CRC32 and all) and the
SOFH frames for its socket. Python then appends each run with one call, so an event
costs a copy and a CRC in compiled code, not a dozen Python lines.

``crc32`` is the IEEE 802.3 CRC that ``zlib.crc32`` computes (reflected, polynomial
0xEDB88320), table-driven eight bytes a step (slicing-by-8); a test holds the two equal.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ringex.engine.kernel.jitcache import guard_module
from ringex.gateways import session_store as st
from ringex.gateways import sofh

guard_module(__file__)  # numba checks this file only; this checks the folder and engine/wire

__all__ = ["RECORD_SIZE", "crc32", "pack_events", "packed_events", "put_record"]


def _tables() -> np.ndarray:
    """Slicing-by-8: row 0 the byte-at-a-time table, row k the CRC of a byte followed by k zeros."""
    tables = np.zeros((8, 256), np.int64)
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0xEDB88320 if c & 1 else c >> 1
        tables[0, i] = c
    for k in range(1, 8):
        for i in range(256):
            prev = int(tables[k - 1, i])
            tables[k, i] = (prev >> 8) ^ int(tables[0, prev & 0xFF])
    return tables


_CRC_TABLES = _tables()
RECORD_SIZE = st.RECORD.size
_CRC_FROM = st.CRC_FROM
_SOFH = sofh.HEADER_LENGTH
_ENCODING = sofh.SBE_1_0_LITTLE_ENDIAN


@njit(cache=True, nogil=True)
def crc32(buf: np.ndarray, start: int, end: int) -> int:
    t = _CRC_TABLES
    c = 0xFFFFFFFF
    i = start
    while i + 8 <= end:  # eight bytes a step (a record is a few hundred)
        one = c ^ (np.int64(buf[i]) | (np.int64(buf[i + 1]) << 8) | (np.int64(buf[i + 2]) << 16)
                   | (np.int64(buf[i + 3]) << 24))
        two = np.int64(buf[i + 4]) | (np.int64(buf[i + 5]) << 8) | (np.int64(buf[i + 6]) << 16) | (
            np.int64(buf[i + 7]) << 24)
        c = (t[7, one & 0xFF] ^ t[6, (one >> 8) & 0xFF] ^ t[5, (one >> 16) & 0xFF] ^ t[4, (one >> 24) & 0xFF]
             ^ t[3, two & 0xFF] ^ t[2, (two >> 8) & 0xFF] ^ t[1, (two >> 16) & 0xFF] ^ t[0, (two >> 24) & 0xFF])
        i += 8
    while i < end:
        c = t[0, (c ^ np.int64(buf[i])) & 0xFF] ^ (c >> 8)
        i += 1
    return c ^ 0xFFFFFFFF


@njit(cache=True, inline="always")
def _put(buf, at, value, size):
    for b in range(size):
        buf[at + b] = (value >> (8 * b)) & 0xFF


@njit(cache=True, inline="always")
def put_record(records: np.ndarray, at: int, payload: np.ndarray, start: int, end: int, seq: int, created: int,
               position: int, source: int) -> int:
    """``payload[start:end]`` as the session store's record numbered ``seq`` (from ring
    ``source`` created at ``created``, at ``position``) at ``records[at:]``, CRC32 and all;
    returns where the next record starts."""
    n = end - start
    _put(records, at, n, 4)
    _put(records, at + 8, seq, 8)
    _put(records, at + 16, created, 8)
    _put(records, at + 24, position, 8)
    records[at + 32] = source
    for b in range(33, RECORD_SIZE):
        records[at + b] = 0
    records[at + RECORD_SIZE:at + RECORD_SIZE + n] = payload[start:end]
    _put(records, at + 4, crc32(records, at + _CRC_FROM, at + RECORD_SIZE + n), 4)
    return at + RECORD_SIZE + n


@njit(cache=True, nogil=True)
def pack_events(region: np.ndarray, rows: np.ndarray, sizes: np.ndarray, positions: np.ndarray, first_seq: int,
                created: int, source: int, records: np.ndarray, offsets: np.ndarray, frames: np.ndarray) -> None:
    """For each ``rows[i]`` of ``region`` (ring slots), its first ``sizes[i]`` bytes as a
    store record numbered ``first_seq + i`` (from ring ``source`` created at ``created``, at
    ``positions[i]``) into ``records`` (its start into ``offsets[i]``) and as a SOFH frame
    into ``frames``; both buffers sized exactly by the caller."""
    r = 0
    f = 0
    for i in range(rows.shape[0]):
        row = region[rows[i]]
        n = sizes[i]
        offsets[i] = r
        r = put_record(records, r, row, 0, n, first_seq + i, created, positions[i], source)
        length = n + _SOFH  # SOFH: big-endian length, then the encoding type
        frames[f] = (length >> 24) & 0xFF
        frames[f + 1] = (length >> 16) & 0xFF
        frames[f + 2] = (length >> 8) & 0xFF
        frames[f + 3] = length & 0xFF
        frames[f + 4] = (_ENCODING >> 8) & 0xFF
        frames[f + 5] = _ENCODING & 0xFF
        for b in range(n):
            frames[f + _SOFH + b] = row[b]
        f += length


@njit(cache=True, nogil=True)
def packed_events(region: np.ndarray, rows: np.ndarray, sizes: np.ndarray, positions: np.ndarray, first_seq: int,
                  created: int, source: int, base: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``pack_events`` into buffers made here, each exactly the size it needs: (records,
    each record's start offset by ``base`` (where the records will sit in the store), frames)."""
    n = rows.shape[0]
    total = 0
    for i in range(n):
        total += sizes[i]
    records = np.empty(total + n * RECORD_SIZE, np.uint8)
    frames = np.empty(total + n * _SOFH, np.uint8)
    offsets = np.empty(n, np.int64)
    pack_events(region, rows, sizes, positions, first_seq, created, source, records, offsets, frames)
    for i in range(n):
        offsets[i] += base
    return records, offsets, frames
