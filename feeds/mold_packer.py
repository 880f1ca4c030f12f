"""MoldUDP64 downstream packets from a batch of messages in one buffer, compiled.

The publisher's messages of a duty cycle lie back to back in one buffer (message ``i`` at
``offsets[i]`` .. ``offsets[i + 1]``: ``itch_translate.Translator.translate_into``). One call
packs them, in order, into consecutive packets of at most ``max_payload`` bytes (as many
messages per packet as fit), each written whole into ``out``: the 20-byte header (session,
sequence number of its first message, message count; big-endian, ``moldudp64``'s layout,
checked at import) then the message blocks (2-byte length, message). ``moldudp64.encode_packets``
is the same packing for a list of bytes; a test holds the two equal.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ringex.engine.kernel.jitcache import guard_module
from ringex.feeds import moldudp64 as mold

guard_module(__file__)  # numba checks this file only; this checks the folder and engine/wire

__all__ = ["pack_packets", "packets", "warm_up"]

_HEADER = mold.HEADER_LENGTH
_SEQ_AT = mold.SEQUENCE_NUMBER_OFFSET
_COUNT_AT = mold.MESSAGE_COUNT_OFFSET
if (mold.SESSION_OFFSET, mold.SESSION_LENGTH, _SEQ_AT, _COUNT_AT, _HEADER) != (0, 10, 10, 18, 20):
    raise RuntimeError("the MoldUDP64 header is not where the packer writes it")
_MAX_COUNT = mold.MAX_MESSAGE_COUNT


@njit(cache=True, inline="always")
def _be(out, at, v, n):
    for k in range(n):
        out[at + n - 1 - k] = (v >> (8 * k)) & 0xFF


@njit(cache=True)
def pack_packets(buf, offsets, n, session, seq, max_payload, out, bounds):
    """Pack messages ``0 .. n-1`` of ``buf`` into ``out``; packet ``j`` is
    ``out[bounds[j]:bounds[j + 1]]``. Returns the number of packets, or -1 when a message
    fits no packet. ``out`` needs ``n * 2 + buf`` bytes plus 20 per packet; ``bounds``
    ``n + 1`` entries."""
    room = max_payload - _HEADER
    npk = 0
    at = 0
    i = 0
    while i < n:
        start = at
        bounds[npk] = start
        for k in range(10):
            out[at + k] = session[k]
        _be(out, at + _SEQ_AT, seq + i, 8)
        at += _HEADER
        count = 0
        used = 0
        while i < n and count < _MAX_COUNT:
            length = offsets[i + 1] - offsets[i]
            if used + 2 + length > room:
                break
            _be(out, at, length, 2)
            for k in range(length):
                out[at + 2 + k] = buf[offsets[i] + k]
            at += 2 + length
            used += 2 + length
            count += 1
            i += 1
        if count == 0:
            return -1
        _be(out, start + _COUNT_AT, count, 2)
        npk += 1
    bounds[npk] = at
    return npk


def packets(buf: np.ndarray, offsets: np.ndarray, session: bytes, seq: int, max_payload: int) -> list[memoryview]:
    """The packets of the messages in ``buf`` (``offsets``: n + 1 bounds), numbered from
    ``seq``, as views of one buffer (valid until the next call's buffer replaces it)."""
    n = len(offsets) - 1
    if n <= 0:
        return []
    size = int(offsets[-1] - offsets[0]) + 2 * n + _HEADER * (n + 1)
    out = np.empty(size, np.uint8)
    bounds = np.empty(n + 2, np.int64)
    sess = np.frombuffer(mold.encode_session(session), np.uint8)
    npk = pack_packets(buf, offsets, n, sess, seq, max_payload, out, bounds)
    if npk < 0:
        raise mold.MoldError(f"a message does not fit a {max_payload}-byte packet")
    view = memoryview(out)
    return [view[bounds[j]:bounds[j + 1]] for j in range(npk)]


def warm_up() -> None:
    """Compile (or load from the cache) the packer."""
    packets(np.zeros(4, np.uint8), np.array([0, 4], np.int64), b"WARM", 1, 100)
