"""The FIX gateway's outgoing messages, compiled: a delivery's reports framed and stored in one call.

What ``FixSession.send`` does for one message (``fix_codec.encode``'s header, BodyLength and
CheckSum around a written body; the session store's record, CRC32 and all) costs a few
microseconds of Python a message. ``frame_messages`` does it for every message of a
delivery in one pass, making two byte runs: the messages as they go on the wire, and their
store records (``session_store.py``'s layout, the same bytes ``SessionStore.append`` writes),
each record's start offset included. Python then appends each run with one call.

The messages are ``encode``'s common case only: bodies already written (``tag=value<SOH>``
each, ending with SOH), no PossDupFlag or OrigSendingTime, a header whose CompIDs and
SendingTime hold no SOH (the caller checks those once a batch). A test holds the bytes
equal to ``encode`` and ``SessionStore.append`` message by message.

Each store record is written by ``outbound.put_record``, the binary gateway's writer of
the same layout. (numba's cache checks only the compiled function's own file; a change of
the record layout in ``outbound`` or ``session_store`` clears this file's cache too, as
``ringex.engine.kernel.jitcache`` clears a compiled folder's whole cache when any source of
the folder or the wire format changes. The byte-for-byte tests against
``SessionStore.append`` would say so if it did not.)
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ringex.engine.kernel.jitcache import guard_module
from ringex.gateways.outbound import RECORD_SIZE, put_record

guard_module(__file__)  # numba checks this file only; this checks the folder and engine/wire

__all__ = ["BEGIN", "TOO_LONG", "digit_count", "frame", "frame_messages", "put_digits", "warm_up"]

BEGIN = b"8=FIX.4.4\x019="  # BeginString, then BodyLength's tag
TOO_LONG = -1  # a message longer than the store takes: nothing framed

_BEGIN = np.frombuffer(BEGIN, np.uint8)
_SOH = 1


@njit(cache=True, inline="always")
def digit_count(value: int) -> int:
    """How many decimal digits ``value`` (>= 0) has."""
    n = 1
    while value >= 10:
        value //= 10
        n += 1
    return n


@njit(cache=True, inline="always")
def put_digits(buf: np.ndarray, at: int, value: int, width: int) -> None:
    """``value`` (>= 0) in decimal, zero-padded to ``width`` digits, at ``buf[at:]``."""
    for k in range(width - 1, -1, -1):
        buf[at + k] = 48 + value % 10
        value //= 10


@njit(cache=True, inline="always")
def _copy(dst: np.ndarray, at: int, src: np.ndarray, start: int, end: int) -> int:
    dst[at:at + end - start] = src[start:end]
    return at + end - start


# the words of ``frame_messages``' ``ints`` before the per-message ones
I_FIRST_SEQ, I_CREATED, I_SOURCE, I_BASE, I_MAX_PAYLOAD, I_MIDDLE, I_TIME, I_COUNT = range(8)
INT_WORDS = 8  # then the messages' MsgType lengths, body lengths and ring positions, ``count`` each


@njit(cache=True, nogil=True)
def frame_messages(data: np.ndarray, ints: np.ndarray) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
    """Messages numbered from ``ints[I_FIRST_SEQ]`` on, each of them MsgType, header and body
    from ``data``: the header's ``middle`` (``<SOH>49=sender<SOH>56=target<SOH>34=``,
    ``ints[I_MIDDLE]`` bytes), then ``<SOH>52=SendingTime<SOH>`` (``ints[I_TIME]`` bytes), then
    the MsgTypes one after the other, then the bodies; ``ints`` gives, after its first
    ``INT_WORDS``, each message's MsgType length, then each body's length, then each ring
    position. Returns (status, wire, records, offsets): status 0, or ``TOO_LONG`` (and empty
    runs) when a message is over ``ints[I_MAX_PAYLOAD]`` bytes; record ``i`` is the store's
    for ring ``ints[I_SOURCE]`` created at ``ints[I_CREATED]``, starting at ``offsets[i]``
    (counted from ``ints[I_BASE]``). Two arguments only: a compiled call costs about a
    microsecond an array argument, more than framing a message."""
    n = ints[I_COUNT]
    first_seq = ints[I_FIRST_SEQ]
    middle = ints[I_MIDDLE]
    tf = middle + ints[I_TIME]  # where the MsgTypes begin
    types_end = tf
    for i in range(n):
        types_end += ints[INT_WORDS + i]
    fixed = 3 + ints[I_TIME] + middle  # "35=" .. the body, but the MsgType, the number and the body
    total = 0
    for i in range(n):
        length = fixed + ints[INT_WORDS + i] + digit_count(first_seq + i) + ints[INT_WORDS + n + i]
        size = _BEGIN.shape[0] + digit_count(length) + 1 + length + 7
        if size > ints[I_MAX_PAYLOAD]:
            return TOO_LONG, np.empty(0, np.uint8), np.empty(0, np.uint8), np.empty(0, np.int64)
        total += size
    wire = np.empty(total, np.uint8)
    records = np.empty(total + n * RECORD_SIZE, np.uint8)
    offsets = np.empty(n, np.int64)
    created, source, base = ints[I_CREATED], ints[I_SOURCE], ints[I_BASE]
    w = 0
    r = 0
    t0 = tf
    b0 = types_end
    for i in range(n):
        t1 = t0 + ints[INT_WORDS + i]
        b1 = b0 + ints[INT_WORDS + n + i]
        seq = first_seq + i
        seq_width = digit_count(seq)
        length = fixed + t1 - t0 + seq_width + b1 - b0
        start = w
        w = _copy(wire, w, _BEGIN, 0, _BEGIN.shape[0])
        width = digit_count(length)
        put_digits(wire, w, length, width)
        w += width
        wire[w] = _SOH
        wire[w + 1] = 51  # "35="
        wire[w + 2] = 53
        wire[w + 3] = 61
        w = _copy(wire, w + 4, data, t0, t1)
        w = _copy(wire, w, data, 0, middle)
        put_digits(wire, w, seq, seq_width)
        w += seq_width
        w = _copy(wire, w, data, middle, tf)
        w = _copy(wire, w, data, b0, b1)
        check = 0
        for k in range(start, w):
            check += np.int64(wire[k])
        wire[w] = 49  # "10="
        wire[w + 1] = 48
        wire[w + 2] = 61
        put_digits(wire, w + 3, check % 256, 3)
        wire[w + 6] = _SOH
        w += 7
        offsets[i] = base + r
        r = put_record(records, r, wire, start, w, seq, created, ints[INT_WORDS + 2 * n + i], source)
        t0 = t1
        b0 = b1
    return 0, wire, records, offsets


def frame(types: tuple[bytes, ...], bodies: tuple[bytes, ...], sender: bytes, target: bytes, sending_time: bytes,
          first_seq: int, positions: tuple[int, ...], created: int, source: int, base: int, max_payload: int
          ) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
    """``frame_messages`` for messages given as bytes (the one place its arguments are made,
    so ``warm_up`` compiles the types the gateway passes)."""
    head = b"\x0149=%s\x0156=%s\x0134=" % (sender, target)
    time_field = b"\x0152=%s\x01" % sending_time
    data = b"".join((head, time_field, *types, *bodies))
    ints = [first_seq, created, source, base, max_payload, len(head), len(time_field), len(types)]
    ints += map(len, types)
    ints += map(len, bodies)
    ints += positions
    return frame_messages(np.frombuffer(data, np.uint8), np.array(ints, np.int64))


def warm_up() -> None:
    """Compile (or load from the cache) before a duty cycle needs it."""
    frame((b"0",), (b"112=a\x01",), b"S", b"T", b"20260101-00:00:00.000", 1, (0,), 0, 0, 0, 1 << 16)
