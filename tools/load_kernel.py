"""The binary load generator's duty cycle, compiled (tools/load.py drives it).

Three kernels over numpy buffers, each doing a whole phase of a duty cycle in one call, so
that Python pays one dispatch per phase (and per session for the receive) instead of a few
dozen numpy calls per session:

* ``make_due`` works out how many orders' intended times have come (``Schedule.due``'s
  arithmetic over the same offsets) and makes every newly due message of every session ready
  in the pre-framed stream, with the rules of load.py's docstring applied in the order the
  numpy implementation applied them to a batch: first the batch's cancels get their targets
  (the session's oldest acknowledged orders still working, from its FIFO), then its passive
  orders past ``max_live`` working are demoted to IOC (the last ones of the batch), then, if
  the session's position is past ``max_position``, its IOC orders lean against it (side
  flipped, price mirrored about their mid).
* ``mark_sent`` stamps every order whose last byte a send handed to its socket.
* ``receive`` takes what one ``recv_into`` added to a session's receive buffer: frames it
  (SOFH, as ``sofh.scan`` with the generator's ``FrameReader`` limits did), takes the session messages
  first (``NotApplied`` counted; a ``Terminate`` is handed back to Python untouched, before
  anything else of the batch is applied, as the numpy path raised before applying any of
  it), then every acknowledgement, refusal, cancel and trade in stream order, and keeps the
  bytes of an unfinished frame at the start of the buffer for the next read.

On what the gateway sends (a session's acknowledgements in its clOrdId order, each order
acknowledged once and ended once) the result is the numpy path's, number for number
(tests/test_load_kernel.py holds it to that path). Beyond that it takes each message once
where the numpy path, working on a batch at a time, did not: two acknowledgements of one
order in one batch counted twice in ``acked``, two ends of one order in one batch counted
twice as ended, and a second acceptance queued it twice (the kernels: once each). A frame
shorter than its message's layout is ignored here (the numpy path read the bytes after it),
and a framing error is raised on the read that found it, after the frames before it (the
numpy path raised it on the session's next read).

Every constant the kernels use is defined in this file, as a number, so numba's cache (which
checks only the compiled function's own file) cannot keep machine code built against another
layout; load.py checks them against the schema when it is imported, and a test does too.
(``ringex.engine.kernel.jitcache`` also clears this folder's cache when any source of
``tools/`` or the wire format changes, so a constant moved elsewhere would stay safe.)

The state lives in int64 words both sides read and write: per order (``O_*``), per session
(``S_*``) and per run (``R_*``; the refusals by reason follow the run's words from
``R_REJECTS``). Orders are rows of one array padded by ``S`` rows on each side: session ``s``'s
message with clOrdId ``k`` (``k >= 1``) is row ``s + k * S``, so a clOrdId clamped to
``0 .. S_LIMIT`` (as the numpy path clamped it) always lands on a row, the padding's when it
is not one of the session's orders. A session's acknowledged passive orders, oldest first,
are its stretch of ``fifo`` (clOrdIds, ``S_FIFO_BASE`` + ``S_FIFO_HEAD`` .. ``S_FIFO_TAIL``);
an order enters it once at most (``O_QUEUED``), so the stretch needs room for the session's
passive orders and no more.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ringex.engine.kernel.jitcache import guard_module

guard_module(__file__)  # numba checks this file only; this checks the folder and engine/wire

__all__ = [
    "PASSIVE", "CANCEL", "IOC", "O_KIND", "O_ALIVE", "O_QUEUED", "O_ACK_AT", "O_FILL_AT", "O_SENT_AT", "O_ORDER_ID",
    "O_CANCEL_OF", "O_MID", "O_END", "O_INTENDED", "ORDER_WORDS", "S_SESSION_ID", "S_LIMIT", "S_STREAM_BASE",
    "S_FIFO_BASE", "S_FIFO_HEAD", "S_FIFO_TAIL", "S_DUE", "S_DUE_BYTES", "S_SENT_BYTES", "S_SENT_MSGS",
    "S_PASSIVE_DUE", "S_PASSIVE_ENDED", "S_POSITION", "S_RLEN", "S_RBASE", "S_FRAMES", "SESSION_WORDS", "R_DUE",
    "R_ACKED", "R_TRADES", "R_NOT_APPLIED", "R_CANCELS_WITHOUT_TARGET", "R_LEANED", "R_DEMOTED", "R_WINDOW",
    "R_WINDOW_ON", "R_REJECTS", "REASONS", "RUN_WORDS", "RECEIVED", "TERMINATED", "TOO_SHORT", "TOO_LONG",
    "WRONG_ENCODING", "HEADER_LENGTH", "MAX_FRAME", "LAYOUT", "due_at", "make_due", "mark_sent", "receive",
    "warm_up",
]

PASSIVE, CANCEL, IOC = 0, 1, 2

# an order's words (row s + clOrdId * S)
O_KIND = 0  # PASSIVE, CANCEL or IOC; -1 on the padding
O_ALIVE = 1  # 1 while it may still be working (0: known, or about, to be gone)
O_QUEUED = 2  # 1 once it entered its session's FIFO
O_ACK_AT = 3  # clock ns of its acknowledgement, -1 until then
O_FILL_AT = 4  # clock ns of the first Trade naming it as the taker, -1 until then
O_SENT_AT = 5  # clock ns its last byte was handed to the socket, -1 until then
O_ORDER_ID = 6  # the engine's orderId, from its OrderAccepted
O_CANCEL_OF = 7  # the clOrdId of the cancel sent for it, 0: none
O_MID = 8  # the mid its price was drawn around (leaning mirrors the price about it)
O_END = 9  # where its frame ends in the flat stream buffer
O_INTENDED = 10  # its intended send time (clock ns), -1 on the padding
ORDER_WORDS = 11

# a session's words
S_SESSION_ID = 0
S_LIMIT = 1  # clOrdIds are clamped to 0 .. this (both ends are padding)
S_STREAM_BASE = 2  # where its stream starts in the flat stream buffer
S_FIFO_BASE = 3  # where its FIFO's stretch starts in ``fifo``
S_FIFO_HEAD = 4
S_FIFO_TAIL = 5
S_DUE = 6  # messages due (and made ready)
S_DUE_BYTES = 7  # where the last due message ends in its stream
S_SENT_BYTES = 8  # of its stream, handed to the socket (written by Python)
S_SENT_MSGS = 9  # whole frames handed to the socket
S_PASSIVE_DUE = 10  # passive orders due
S_PASSIVE_ENDED = 11  # of those, known to be (or about to be) gone
S_POSITION = 12  # lots bought minus sold in this run
S_RLEN = 13  # bytes at the start of its receive buffer not yet framed (an unfinished frame)
S_RBASE = 14  # stream offset of its receive buffer's first byte
S_FRAMES = 15  # frames received
SESSION_WORDS = 16

# the run's words
R_DUE = 0  # orders due
R_ACKED = 1
R_TRADES = 2
R_NOT_APPLIED = 3
R_CANCELS_WITHOUT_TARGET = 4
R_LEANED = 5
R_DEMOTED = 6
R_WINDOW = 7  # latencies in the progress window
R_WINDOW_ON = 8  # 1: keep them
R_REJECTS = 16  # then refusals by reason (a uint16), the schema's or not
REASONS = 1 << 16
RUN_WORDS = R_REJECTS + REASONS

# receive's answers
RECEIVED = 0  # every complete frame taken; the rest (S_RLEN bytes) starts one still to come
TERMINATED = 1  # a Terminate at the returned payload offset: nothing of the batch applied
TOO_SHORT = 2  # the header at the returned stream offset (at the buffer's start) is bad:
TOO_LONG = 3  # the frames before it were taken; these three are sofh.SCAN_TOO_SHORT,
WRONG_ENCODING = 4  # SCAN_TOO_LONG, SCAN_WRONG_ENCODING plus one

# SOFH (gateways/sofh.py) as the generator's FrameReader had it
HEADER_LENGTH = 6
MIN_FRAME = 7
MAX_FRAME = 1 << 12  # the largest frame accepted
SBE_LE = 0xEB50

# the schema's layouts (engine/wire/schema.xml): template ids, sizes (SBE header included),
# field offsets from the payload's start; ``LAYOUT`` lists them for the check against it
T_NEW_ORDER, T_CANCEL_ORDER = 1, 2
T_ACCEPTED, T_REJECTED, T_TRADE, T_CANCELED, T_CANCEL_REJ = 100, 101, 102, 103, 105
T_SEQUENCE, T_TERMINATE, T_NOT_APPLIED = 506, 510, 511
NEW_SIZE, NEW_PRICE, NEW_SIDE, NEW_TIF = 90, 40, 84, 86
CXL_SIZE, CXL_ORDER_ID, CXL_ORIG_CL = 68, 40, 48
ACC_SIZE, ACC_ORDER_ID, ACC_CL = 97, 32, 40
REJ_SIZE, REJ_CL, REJ_REASON = 64, 32, 60
CAN_SIZE, CAN_CL, CAN_REASON = 69, 40, 68
CRJ_SIZE, CRJ_CL, CRJ_REASON = 72, 40, 68
TR_SIZE, TR_QTY, TR_MAKER_CL, TR_MAKER_LEAVES, TR_TAKER_CL = 125, 48, 64, 72, 88
TR_MAKER_SESSION, TR_TAKER_SESSION, TR_AGGRESSOR = 112, 120, 124
NA_SIZE, NA_COUNT = 20, 16
BUY, SELL = 1, 2
USER_CANCEL = 1
TIF_IOC = 3

LAYOUT = {  # (message, field): offset, or (message, None): (template id, size)
    ("NewOrder", None): (T_NEW_ORDER, NEW_SIZE), ("NewOrder", "price"): NEW_PRICE, ("NewOrder", "side"): NEW_SIDE,
    ("NewOrder", "timeInForce"): NEW_TIF,
    ("CancelOrder", None): (T_CANCEL_ORDER, CXL_SIZE), ("CancelOrder", "orderId"): CXL_ORDER_ID,
    ("CancelOrder", "origClOrdId"): CXL_ORIG_CL,
    ("OrderAccepted", None): (T_ACCEPTED, ACC_SIZE), ("OrderAccepted", "orderId"): ACC_ORDER_ID,
    ("OrderAccepted", "clOrdId"): ACC_CL,
    ("OrderRejected", None): (T_REJECTED, REJ_SIZE), ("OrderRejected", "clOrdId"): REJ_CL,
    ("OrderRejected", "reason"): REJ_REASON,
    ("OrderCanceled", None): (T_CANCELED, CAN_SIZE), ("OrderCanceled", "clOrdId"): CAN_CL,
    ("OrderCanceled", "reason"): CAN_REASON,
    ("CancelRejected", None): (T_CANCEL_REJ, CRJ_SIZE), ("CancelRejected", "clOrdId"): CRJ_CL,
    ("CancelRejected", "reason"): CRJ_REASON,
    ("Trade", None): (T_TRADE, TR_SIZE), ("Trade", "qty"): TR_QTY, ("Trade", "makerClOrdId"): TR_MAKER_CL,
    ("Trade", "makerLeavesQty"): TR_MAKER_LEAVES, ("Trade", "takerClOrdId"): TR_TAKER_CL,
    ("Trade", "makerSessionId"): TR_MAKER_SESSION, ("Trade", "takerSessionId"): TR_TAKER_SESSION,
    ("Trade", "aggressorSide"): TR_AGGRESSOR,
    ("Sequence", None): (T_SEQUENCE, 16), ("Terminate", None): (T_TERMINATE, 73),
    ("NotApplied", None): (T_NOT_APPLIED, NA_SIZE), ("NotApplied", "count"): NA_COUNT,
}
ENUMS = {("Side", "Buy"): BUY, ("Side", "Sell"): SELL, ("CancelReason", "User"): USER_CANCEL,
         ("TimeInForce", "IOC"): TIF_IOC}
_NS = 1_000_000_000.0


# ---------------------------------------------------------------------------- little helpers


@njit(cache=True, inline="always")
def _i64(buf, at):
    """The little-endian int64 at ``buf[at:at + 8]``."""
    v = np.int64(0)
    for j in range(7, -1, -1):
        v = (v << 8) | np.int64(buf[at + j])
    return v


@njit(cache=True, inline="always")
def _u32(buf, at):
    return (np.int64(buf[at]) | (np.int64(buf[at + 1]) << 8) | (np.int64(buf[at + 2]) << 16)
            | (np.int64(buf[at + 3]) << 24))


@njit(cache=True, inline="always")
def _u16(buf, at):
    return np.int64(buf[at]) | (np.int64(buf[at + 1]) << 8)


@njit(cache=True, inline="always")
def _put_i64(buf, at, value):
    for j in range(8):
        buf[at + j] = np.uint8((value >> (8 * j)) & 0xFF)


@njit(cache=True, inline="always")
def _end(orders, sess, s, g):
    """Order row ``g`` of session ``s`` ended (or will: a cancel is on its way)."""
    if orders[g, O_ALIVE] != 0:
        orders[g, O_ALIVE] = 0
        if orders[g, O_KIND] == PASSIVE:
            sess[s, S_PASSIVE_ENDED] += 1


@njit(cache=True, inline="always")
def _ack(orders, run, window, g, now):
    if orders[g, O_ACK_AT] < 0:
        orders[g, O_ACK_AT] = now
        run[R_ACKED] += 1
        if run[R_WINDOW_ON] != 0 and run[R_WINDOW] < window.shape[0]:
            window[run[R_WINDOW]] = now - orders[g, O_INTENDED]
            run[R_WINDOW] += 1


@njit(cache=True, inline="always")
def _clamp(cl, limit):
    return min(max(cl, np.int64(0)), limit)


# ---------------------------------------------------------------------------- sending


@njit(cache=True, inline="always")
def due_at(offset, t0, rate, now):
    """How many orders are due at ``now``: ``Schedule.due``, the same float arithmetic first
    and then the offsets themselves."""
    d = now - t0
    n = offset.shape[0]
    if d < 0 or n == 0:
        return 0
    x = d * rate / _NS
    i = n if x >= n - 1 else np.int64(x) + 1
    while i < n and offset[i] <= d:
        i += 1
    while i > 0 and offset[i - 1] > d:
        i -= 1
    return i


@njit(cache=True, nogil=True)
def make_due(now, t0, rate, offset, stream, orders, sess, fifo, run, max_live, max_position):
    """Every order due at ``now`` made ready in ``stream`` (see the module's text); the
    number due."""
    due = due_at(offset, t0, rate, now)
    if due <= run[R_DUE]:
        return run[R_DUE]
    run[R_DUE] = due
    S = sess.shape[0]
    for s in range(S):
        upto = (due - s + S - 1) // S  # the session's messages due (order i is its (i // S)-th)
        lo = sess[s, S_DUE]
        if upto <= lo:
            continue
        sess[s, S_DUE] = upto
        base = sess[s, S_STREAM_BASE]
        sess[s, S_DUE_BYTES] = orders[s + upto * S, O_END] - base
        # the batch's cancels first: each the oldest acknowledged order still working
        fifo_base = sess[s, S_FIFO_BASE]
        passives = 0
        iocs = 0
        for j in range(lo, upto):
            g = s + (j + 1) * S
            kind = orders[g, O_KIND]
            if kind == PASSIVE:
                passives += 1
            elif kind == IOC:
                iocs += 1
            else:
                target = np.int64(-1)
                while sess[s, S_FIFO_HEAD] < sess[s, S_FIFO_TAIL]:
                    k = fifo[fifo_base + sess[s, S_FIFO_HEAD]]
                    sess[s, S_FIFO_HEAD] += 1
                    if orders[s + k * S, O_ALIVE] != 0:
                        target = k
                        break
                if target < 0:
                    run[R_CANCELS_WITHOUT_TARGET] += 1
                    continue
                t = s + target * S
                orders[t, O_CANCEL_OF] = j + 1
                orders[t, O_ALIVE] = 0  # passive and working, or the FIFO would have skipped it
                sess[s, S_PASSIVE_ENDED] += 1
                at = orders[g, O_END] - CXL_SIZE
                _put_i64(stream, at + CXL_ORDER_ID, orders[t, O_ORDER_ID])
                _put_i64(stream, at + CXL_ORIG_CL, target)
        # then its passive orders: beyond max_live working, the batch's last ones go out IOC
        if passives:
            sess[s, S_PASSIVE_DUE] += passives
            over = sess[s, S_PASSIVE_DUE] - sess[s, S_PASSIVE_ENDED] - max_live
            if over > 0:
                demote = min(over, passives)
                run[R_DEMOTED] += demote
                j = upto - 1
                while demote > 0:
                    g = s + (j + 1) * S
                    if orders[g, O_KIND] == PASSIVE:
                        stream[orders[g, O_END] - NEW_SIZE + NEW_TIF] = TIF_IOC
                        _end(orders, sess, s, g)
                        demote -= 1
                    j -= 1
        # then its aggressive orders lean against a drifting position
        position = sess[s, S_POSITION]
        if iocs and abs(position) > max_position:
            side = SELL if position > 0 else BUY
            for j in range(lo, upto):
                g = s + (j + 1) * S
                if orders[g, O_KIND] != IOC:
                    continue
                at = orders[g, O_END] - NEW_SIZE
                if stream[at + NEW_SIDE] == side:
                    continue
                stream[at + NEW_SIDE] = side
                price = _i64(stream, at + NEW_PRICE)
                _put_i64(stream, at + NEW_PRICE, max(np.int64(1), 2 * orders[g, O_MID] - price))
                run[R_LEANED] += 1
    return due


@njit(cache=True, nogil=True)
def mark_sent(orders, sess, now):
    """Every due order whose last byte is now handed to its socket (``S_SENT_BYTES``, every
    session) stamped ``now``; how many."""
    S = sess.shape[0]
    count = 0
    for s in range(S):
        sent = sess[s, S_SENT_BYTES] + sess[s, S_STREAM_BASE]
        j = sess[s, S_SENT_MSGS]
        due = sess[s, S_DUE]
        while j < due and orders[s + (j + 1) * S, O_END] <= sent:
            orders[s + (j + 1) * S, O_SENT_AT] = now
            j += 1
            count += 1
        sess[s, S_SENT_MSGS] = j
    return count


# ---------------------------------------------------------------------------- receiving


@njit(cache=True, nogil=True)
def receive(buf, got, s, now, orders, sess, fifo, run, window):
    """Session ``s``'s buffer after a read of ``got`` bytes (``got`` <= 0: none) behind its
    ``S_RLEN``: (frames taken, answer, value). ``RECEIVED``: value is the bytes now left in
    the buffer (``S_RLEN``: an unfinished frame, moved to the start); ``TERMINATED``: value
    is the Terminate's payload offset, and nothing of the batch was applied but the
    NotApplied before it; a framing error: the frames before the bad header were taken, the
    header is at the buffer's start and value is its stream offset."""
    end = sess[s, S_RLEN] + max(got, 0)
    S = sess.shape[0]
    # frame, and take the session messages first
    pos = 0
    answer = RECEIVED
    count = 0
    while end - pos >= HEADER_LENGTH:
        length = ((np.int64(buf[pos]) << 24) | (np.int64(buf[pos + 1]) << 16) | (np.int64(buf[pos + 2]) << 8)
                  | np.int64(buf[pos + 3]))
        if length < MIN_FRAME:
            answer = TOO_SHORT
            break
        if length > MAX_FRAME:
            answer = TOO_LONG
            break
        if ((np.int64(buf[pos + 4]) << 8) | np.int64(buf[pos + 5])) != SBE_LE:
            answer = WRONG_ENCODING
            break
        if end - pos < length:
            break
        p = pos + HEADER_LENGTH
        if length - HEADER_LENGTH >= 4:
            t = _u16(buf, p + 2)
            if t == T_TERMINATE:
                sess[s, S_RLEN] = end
                return count, TERMINATED, p
            if t == T_NOT_APPLIED and length - HEADER_LENGTH >= NA_SIZE:
                run[R_NOT_APPLIED] += _u32(buf, p + NA_COUNT)
        pos += length
        count += 1
    stop = pos
    # then the rest, in stream order
    limit = sess[s, S_LIMIT]
    sid = sess[s, S_SESSION_ID]
    fifo_base = sess[s, S_FIFO_BASE]
    pos = 0
    while pos < stop:
        length = ((np.int64(buf[pos]) << 24) | (np.int64(buf[pos + 1]) << 16) | (np.int64(buf[pos + 2]) << 8)
                  | np.int64(buf[pos + 3]))
        p = pos + HEADER_LENGTH
        size = length - HEADER_LENGTH
        pos += length
        if size < 4:
            continue
        t = _u16(buf, p + 2)
        if t == T_ACCEPTED and size >= ACC_SIZE:
            g = s + _clamp(_i64(buf, p + ACC_CL), limit) * S
            _ack(orders, run, window, g, now)
            orders[g, O_ORDER_ID] = _i64(buf, p + ACC_ORDER_ID)
            if orders[g, O_KIND] == PASSIVE and orders[g, O_QUEUED] == 0:
                orders[g, O_QUEUED] = 1
                fifo[fifo_base + sess[s, S_FIFO_TAIL]] = (g - s) // S
                sess[s, S_FIFO_TAIL] += 1
        elif t == T_TRADE and size >= TR_SIZE:
            qty = _i64(buf, p + TR_QTY)
            signed = qty if buf[p + TR_AGGRESSOR] == BUY else -qty
            if _u32(buf, p + TR_TAKER_SESSION) == sid:
                sess[s, S_POSITION] += signed
                run[R_TRADES] += 1  # every Trade once: on its taker's session
                g = s + _clamp(_i64(buf, p + TR_TAKER_CL), limit) * S
                if orders[g, O_FILL_AT] < 0:
                    orders[g, O_FILL_AT] = now
            if _u32(buf, p + TR_MAKER_SESSION) == sid:
                sess[s, S_POSITION] -= signed
                if _i64(buf, p + TR_MAKER_LEAVES) == 0:
                    _end(orders, sess, s, s + _clamp(_i64(buf, p + TR_MAKER_CL), limit) * S)
        elif t == T_CANCELED and size >= CAN_SIZE:
            # carries the canceled order's clOrdId: a user cancel acknowledges the cancel sent for it
            g = s + _clamp(_i64(buf, p + CAN_CL), limit) * S
            _end(orders, sess, s, g)
            if buf[p + CAN_REASON] == USER_CANCEL and orders[g, O_CANCEL_OF] > 0:
                _ack(orders, run, window, s + orders[g, O_CANCEL_OF] * S, now)
        elif t == T_REJECTED and size >= REJ_SIZE:
            g = s + _clamp(_i64(buf, p + REJ_CL), limit) * S
            _ack(orders, run, window, g, now)
            _end(orders, sess, s, g)
            run[R_REJECTS + _u16(buf, p + REJ_REASON)] += 1
        elif t == T_CANCEL_REJ and size >= CRJ_SIZE:
            _ack(orders, run, window, s + _clamp(_i64(buf, p + CRJ_CL), limit) * S, now)
            run[R_REJECTS + _u16(buf, p + CRJ_REASON)] += 1
        # Sequence (taken above, or nothing to take), anything else: ignored
    sess[s, S_FRAMES] += count
    # keep an unfinished frame (or a bad header) at the start
    rest = end - stop
    if stop:
        for j in range(rest):
            buf[j] = buf[stop + j]
        sess[s, S_RBASE] += stop
    sess[s, S_RLEN] = rest
    if answer != RECEIVED:
        return count, answer, sess[s, S_RBASE]
    return count, RECEIVED, rest


# ---------------------------------------------------------------------------- warming up


def warm_up() -> None:
    """Each kernel compiled (or loaded from numba's cache) with the argument types the duty
    cycle passes (writable C-contiguous arrays, Python ints, a float rate), with nothing to
    do: to be called before any session logs on, so that no compile lands in a run."""
    S = 1
    orders = np.zeros((3, ORDER_WORDS), np.int64)
    sess = np.zeros((S, SESSION_WORDS), np.int64)
    fifo = np.zeros(1, np.int64)
    run = np.zeros(RUN_WORDS, np.int64)
    window = np.zeros(1, np.int64)
    stream = np.zeros(1, np.uint8)
    offset = np.zeros(1, np.int64)
    buf = np.zeros(HEADER_LENGTH, np.uint8)
    make_due(int(-1), int(0), float(1.0), offset, stream, orders, sess, fifo, run, int(1), int(1))
    mark_sent(orders, sess, int(0))
    receive(buf, int(0), int(0), int(0), orders, sess, fifo, run, window)
