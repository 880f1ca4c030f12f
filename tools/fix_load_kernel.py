"""The FIX load generator's hot path, compiled (tools/fix_load.py drives it).

Two kernels over numpy buffers, each doing a whole batch in one call so that Python pays one
dispatch per duty cycle and session instead of dozens of lines per message:

* ``render`` appends every due order (NewOrderSingle D or OrderCancelRequest F) to its
  session's output row: header with the session's MsgSeqNum and the cycle's SendingTime,
  body, BodyLength and CheckSum, the bytes ``fix_codec.encode`` makes. It applies the flow's
  rules that depend on the run's state (the cancel's target from the session's acknowledged
  working orders, demotion to IOC past ``max_live``, leaning against a drifting position).
* ``scan`` frames every complete message in a session's receive buffer and applies the
  common ones (Heartbeat 0, ExecutionReport 8 but Rejected, OrderCancelReject 9 with a known
  reason) to the run's state. It stops at the first message that needs anything else (admin,
  a reject with text, a field it does not read as the Python code would) and returns it, so
  the rare cases are written once, in Python (``FixLoad._message``), which shares the state.

``mark_sent`` stamps the orders whose last byte a send handed to the socket.

Every constant the kernels use is defined in this file, so numba's cache (which checks only
the compiled function's own file) cannot keep machine code built against another layout.
(``ringex.engine.kernel.jitcache`` also clears this folder's cache when any source of
``tools/`` or the wire format changes, so a constant moved elsewhere would stay safe.)

The state lives in int64 words both sides read and write: per order (``O_*``), per session
(``S_*``) and per run (``R_*``). A session's working passive orders are ``O_WORKING`` (the
side's byte, 0 when not working) with their count in ``S_LIVE``; its acknowledged ones, oldest
first, are a FIFO row of order numbers (``fifo[s]``, ``S_FIFO_HEAD`` .. ``S_FIFO_TAIL``). An
order enters that FIFO at most once (``O_QUEUED``): a second New report for it would only add
an entry the cancel skips anyway, as it is no longer working by then, so each row needs
room for the session's orders and no more.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ringex.engine.kernel.jitcache import guard_module

guard_module(__file__)  # numba checks this file only; this checks the folder and engine/wire

__all__ = [
    "PASSIVE", "CANCEL", "IOC", "O_KIND", "O_PRICE", "O_BUY", "O_MID", "O_WORKING", "O_QUEUED", "O_SEQ", "O_END",
    "O_ACK_AT", "O_SENT_AT", "O_FILL_AT", "ORDER_WORDS", "S_SEQ", "S_NEXT_IN", "S_GAPS", "S_LIVE", "S_POSITION",
    "S_FIFO_HEAD", "S_FIFO_TAIL", "S_OUT_BASE", "S_OUT_END", "S_OUT_SENT", "S_NEXT_SENT", "S_HEADER_LEN",
    "S_ACCOUNT_LEN", "SESSION_WORDS", "R_ACKED", "R_TRADES", "R_CANCELS_WITHOUT_TARGET", "R_DEMOTED", "R_LEANED",
    "R_CANCEL_REJECT", "RUN_WORDS", "CANCEL_REJECT_CODES", "T_HEADER", "T_ACCOUNT", "DONE", "SLOW",
    "GARBLED_PREFIX", "GARBLED_LENGTH", "MIN_FRAME", "PREFIX", "message_room", "render", "scan", "mark_sent",
]

PASSIVE, CANCEL, IOC = 0, 1, 2

# an order's words
O_KIND = 0  # PASSIVE, CANCEL or IOC
O_PRICE = 1
O_BUY = 2  # 1: buy
O_MID = 3  # the mid its price was drawn around (leaning mirrors the price about it)
O_WORKING = 4  # a passive order working: its side's byte (b"1"/b"2"); 0 when not
O_QUEUED = 5  # 1 once it entered its session's FIFO
O_SEQ = 6  # its MsgSeqNum (a session Reject names that)
O_END = 7  # where its bytes end in its session's stream (counted from the first byte sent)
O_ACK_AT = 8  # clock ns of its acknowledgement, -1 until then
O_SENT_AT = 9  # clock ns its last byte was handed to the socket, -1 until then
O_FILL_AT = 10  # clock ns of an IOC order's first fill, -1 until then
ORDER_WORDS = 11

# a session's words
S_SEQ = 0  # the MsgSeqNum of the next message sent
S_NEXT_IN = 1  # the gateway's MsgSeqNum expected next
S_GAPS = 2
S_LIVE = 3  # passive orders working
S_POSITION = 4  # lots, from its fills
S_FIFO_HEAD = 5
S_FIFO_TAIL = 6
S_OUT_BASE = 7  # where the output row's first byte sits in the session's stream
S_OUT_END = 8  # bytes written in the output row
S_OUT_SENT = 9  # of those, handed to the socket
S_NEXT_SENT = 10  # the session's first order not yet handed over in full
S_HEADER_LEN = 11  # of text[s, T_HEADER]
S_ACCOUNT_LEN = 12  # of text[s, T_ACCOUNT]
SESSION_WORDS = 13

# the run's words
R_ACKED = 0
R_TRADES = 1
R_CANCELS_WITHOUT_TARGET = 2
R_DEMOTED = 3
R_LEANED = 4
R_CANCEL_REJECT = 5  # + CxlRejReason's digit: OrderCancelRejects counted by reason
RUN_WORDS = R_CANCEL_REJECT + 10
CANCEL_REJECT_CODES = (0, 1, 3, 6)  # the reasons counted here (fix_load's _CXL_REASONS); others go to Python

# a session's text rows: what its header carries between MsgType and MsgSeqNum, its Account
T_HEADER = 0  # b"49=<sender>\x0156=<target>\x0134="
T_ACCOUNT = 1

# scan's answers
DONE = 0  # every complete message taken; the rest is an incomplete one
SLOW = 1  # the message at the returned position needs FixLoad._message
GARBLED_PREFIX = 2  # the stream does not start a message at the returned position
GARBLED_LENGTH = 3  # its BodyLength is not one

PREFIX = b"8=FIX.4.4\x019="
MIN_FRAME = 16  # a frame is looked at once more than this many bytes are in (the Python framer's rule)
_BODY_LENGTH_WINDOW = 12  # its BodyLength's SOH is looked for this far past the prefix
_TRAILER = 7  # b"10=ddd\x01"
_MAX_DIGITS = 18  # a number longer than this is left to Python's int
_SOH = 1
_EQ = ord("=")
_ZERO = ord("0")

_SLOTS = 9  # the fields scan reads, each at its slot
_F11, _F32, _F34, _F35, _F41, _F54, _F102, _F150, _F151 = range(_SLOTS)
_READ = ((11, _F11), (32, _F32), (34, _F34), (35, _F35), (41, _F41), (54, _F54), (102, _F102), (150, _F150),
         (151, _F151))
_SLOT_OF = np.full(max(tag for tag, _ in _READ) + 1, -1, np.int64)  # tag -> slot, -1: not read
for _tag, _slot in _READ:
    _SLOT_OF[_tag] = _slot
_MAX_TAG = 6  # digits of a tag read here; a longer one goes to Python


def _b(text: bytes) -> np.ndarray:
    return np.frombuffer(text, np.uint8).copy()


_PREFIX = _b(PREFIX)
_TYPE = _b(b"35=")
_SENDING_TIME = _b(b"\x0152=")
_ORIG = _b(b"41=")
_NONE = _b(b"none")
_CL_FIRST = _b(b"11=")
_CL = _b(b"\x0111=")
_ACCOUNT = _b(b"\x011=")
_SYMBOL = _b(b"\x0155=")
_SIDE = _b(b"\x0154=")
_TRANSACT_TIME = _b(b"\x0160=")
_LIMIT_ONE = _b(b"\x0138=1\x0140=2\x0144=")  # quantity 1, OrdType limit, then the price
_TIF = _b(b"\x0159=")
_CHECKSUM = _b(b"10=")
_BUY, _SELL = ord("1"), ord("2")
_DAY_GTC, _IOC = ord("1"), ord("3")
_NEW_ORDER, _CANCEL_REQUEST = ord("D"), ord("F")


_LITERALS = (_PREFIX, _TYPE, _SENDING_TIME, _ORIG, _NONE, _CL_FIRST, _CL, _ACCOUNT, _SYMBOL, _SIDE, _TRANSACT_TIME,
             _LIMIT_ONE, _TIF, _CHECKSUM)
_SINGLE_BYTES = 11  # written one at a time: MsgType, Side, TimeInForce, CheckSum's digits, the SOHs between
_NUMBERS = 5  # BodyLength, MsgSeqNum, the ClOrdID's and OrigClOrdID's numbers, the price
_INT64_DIGITS = 19


def message_room(header: int, account: int, tag: int, symbol: int, timestamp: int) -> int:
    """At least the bytes one order takes with text of these lengths (``render`` wants this
    much free in a row before it writes there): every literal, whichever message uses it."""
    literals = sum(x.shape[0] for x in _LITERALS)
    return (literals + _SINGLE_BYTES + _NUMBERS * _INT64_DIGITS + header + account + 2 * tag + symbol
            + 2 * timestamp)


@njit(cache=True, inline="always")
def _copy(dst, at, src, start, stop):
    for j in range(start, stop):
        dst[at] = src[j]
        at += 1
    return at


@njit(cache=True, inline="always")
def _lit(dst, at, src):
    return _copy(dst, at, src, 0, src.shape[0])


@njit(cache=True, inline="always")
def _uint(dst, at, value):
    """``value`` (>= 0) in decimal, as ``b"%d"``."""
    digits = 1
    v = value
    while v >= 10:
        v //= 10
        digits += 1
    end = at + digits
    for j in range(end - 1, at - 1, -1):
        dst[j] = _ZERO + value % 10
        value //= 10
    return end


@njit(cache=True, nogil=True)
def render(first: int, upto: int, sessions: int, max_live: int, max_position: int, room: int, ts: np.ndarray,
           tag: np.ndarray, symbol: np.ndarray, text: np.ndarray, orders: np.ndarray, sess: np.ndarray,
           fifo: np.ndarray, run: np.ndarray, out: np.ndarray) -> int:
    """Orders ``first`` .. ``upto`` - 1 (order ``i`` to session ``i % sessions``, its
    ClOrdID ``tag`` + ``i // sessions``) appended to their sessions' rows of ``out``; the
    first not written (``upto`` unless a row had less than ``room`` bytes free)."""
    fields = np.empty(room, np.uint8)
    for i in range(first, upto):
        s = i % sessions
        at = sess[s, S_OUT_END]
        if out.shape[1] - at < room:
            return i
        o = orders[i]
        kind = o[O_KIND]
        seq = sess[s, S_SEQ]
        f = _lit(fields, 0, _TYPE)
        fields[f] = _CANCEL_REQUEST if kind == CANCEL else _NEW_ORDER
        fields[f + 1] = _SOH
        f += 2
        f = _copy(fields, f, text[s, T_HEADER], 0, sess[s, S_HEADER_LEN])
        f = _uint(fields, f, seq)
        f = _lit(fields, f, _SENDING_TIME)
        f = _lit(fields, f, ts)
        fields[f] = _SOH
        f += 1
        if kind == CANCEL:
            target = -1
            side = _BUY  # a cancel without a target names side 1
            while sess[s, S_FIFO_HEAD] < sess[s, S_FIFO_TAIL]:
                t = fifo[s, sess[s, S_FIFO_HEAD]]
                sess[s, S_FIFO_HEAD] += 1
                if orders[t, O_WORKING] != 0:
                    target = t
                    side = orders[t, O_WORKING]
                    orders[t, O_WORKING] = 0
                    sess[s, S_LIVE] -= 1
                    break
            f = _lit(fields, f, _ORIG)
            if target < 0:
                run[R_CANCELS_WITHOUT_TARGET] += 1
                f = _lit(fields, f, _NONE)
            else:
                f = _lit(fields, f, tag)
                f = _uint(fields, f, target // sessions)
            f = _lit(fields, f, _CL)
            f = _lit(fields, f, tag)
            f = _uint(fields, f, i // sessions)
            f = _lit(fields, f, _SYMBOL)
            f = _lit(fields, f, symbol)
            f = _lit(fields, f, _SIDE)
            fields[f] = side
            f = _lit(fields, f + 1, _TRANSACT_TIME)
            f = _lit(fields, f, ts)
        else:
            buy = o[O_BUY] != 0
            price = o[O_PRICE]
            tif = _DAY_GTC
            if kind == PASSIVE:
                if sess[s, S_LIVE] >= max_live:
                    tif = _IOC
                    run[R_DEMOTED] += 1
                else:
                    orders[i, O_WORKING] = _BUY if buy else _SELL
                    sess[s, S_LIVE] += 1
            else:
                tif = _IOC
                position = sess[s, S_POSITION]
                if abs(position) > max_position and buy != (position < 0):
                    buy = position < 0
                    price = max(1, 2 * o[O_MID] - price)
                    run[R_LEANED] += 1
            f = _lit(fields, f, _CL_FIRST)
            f = _lit(fields, f, tag)
            f = _uint(fields, f, i // sessions)
            f = _lit(fields, f, _ACCOUNT)
            f = _copy(fields, f, text[s, T_ACCOUNT], 0, sess[s, S_ACCOUNT_LEN])
            f = _lit(fields, f, _SYMBOL)
            f = _lit(fields, f, symbol)
            f = _lit(fields, f, _SIDE)
            fields[f] = _BUY if buy else _SELL
            f = _lit(fields, f + 1, _TRANSACT_TIME)
            f = _lit(fields, f, ts)
            f = _lit(fields, f, _LIMIT_ONE)
            f = _uint(fields, f, price)
            f = _lit(fields, f, _TIF)
            fields[f] = tif
            f += 1
        fields[f] = _SOH
        f += 1
        row = out[s]
        start = at
        at = _lit(row, at, _PREFIX)
        at = _uint(row, at, f)
        row[at] = _SOH
        at = _copy(row, at + 1, fields, 0, f)
        total = 0
        for j in range(start, at):
            total += row[j]
        at = _lit(row, at, _CHECKSUM)
        total %= 256
        row[at] = _ZERO + total // 100
        row[at + 1] = _ZERO + total // 10 % 10
        row[at + 2] = _ZERO + total % 10
        row[at + 3] = _SOH
        at += 4
        sess[s, S_OUT_END] = at
        sess[s, S_SEQ] = seq + 1
        orders[i, O_SEQ] = seq
        orders[i, O_END] = sess[s, S_OUT_BASE] + at
    return upto


@njit(cache=True, nogil=True)
def mark_sent(orders: np.ndarray, sess: np.ndarray, s: int, sessions: int, due: int, now: int) -> int:
    """Session ``s``'s orders (before ``due``) whose last byte is now handed to the socket
    stamped ``now``; how many."""
    sent = sess[s, S_OUT_BASE] + sess[s, S_OUT_SENT]
    i = sess[s, S_NEXT_SENT]
    count = 0
    while i < due and orders[i, O_END] <= sent:
        orders[i, O_SENT_AT] = now
        i += sessions
        count += 1
    sess[s, S_NEXT_SENT] = i
    return count


@njit(cache=True, inline="always")
def _number(buf, start, stop):
    """The digits ``buf[start:stop]`` as a number; -1 if empty, not all digits, or too long
    (Python's ``int`` reads more than that: left to it)."""
    if stop <= start or stop - start > _MAX_DIGITS:
        return -1
    v = 0
    for j in range(start, stop):
        d = buf[j] - _ZERO
        if d < 0 or d > 9:
            return -1
        v = v * 10 + d
    return v


@njit(cache=True, inline="always")
def _is(buf, span, slot, byte):
    """The field at ``slot`` is present and is the one byte ``byte``."""
    return span[slot, 1] - span[slot, 0] == 1 and span[slot, 0] >= 0 and buf[span[slot, 0]] == byte


@njit(cache=True, inline="always")
def _order_of(buf, start, stop, tag, s, sessions, n):
    """The order a ClOrdID names on session ``s``: its number, -1 if not one of this run's,
    -2 if Python's ``int`` must say (``FixLoad._order``)."""
    if start < 0:
        return -1
    size = tag.shape[0]
    if stop - start < size:
        return -1
    for j in range(size):
        if buf[start + j] != tag[j]:
            return -1
    if stop - start == size:
        return -1  # int(b"") fails: not ours
    k = _number(buf, start + size, stop)
    if k < 0:
        return -2
    i = k * sessions + s
    return i if i < n else -1


@njit(cache=True, inline="always")
def _ack(orders, run, i, now):
    if i >= 0 and orders[i, O_ACK_AT] < 0:
        orders[i, O_ACK_AT] = now
        run[R_ACKED] += 1


@njit(cache=True, inline="always")
def _gone(orders, sess, s, i):
    if i >= 0 and orders[i, O_WORKING] != 0:
        orders[i, O_WORKING] = 0
        sess[s, S_LIVE] -= 1


@njit(cache=True, nogil=True)
def scan(buf: np.ndarray, start: int, stop: int, s: int, sessions: int, now: int, tag: np.ndarray,
         orders: np.ndarray, sess: np.ndarray, fifo: np.ndarray, run: np.ndarray) -> tuple[int, int, int, int, int]:
    """Frame and take session ``s``'s messages in ``buf[start:stop]``: (answer, position,
    its fields' start, its end, messages taken). ``DONE``: the position is where an
    incomplete message starts (or ``stop``); ``SLOW``: the message at the position (fields
    from the third to the fourth number, less the trailer) is for Python, untouched;
    ``GARBLED_*``: the stream breaks at the position."""
    n = orders.shape[0]
    span = np.empty((_SLOTS, 2), np.int64)
    pos = start
    taken = 0
    while stop - pos > MIN_FRAME:
        for j in range(_PREFIX.shape[0]):
            if buf[pos + j] != _PREFIX[j]:
                return GARBLED_PREFIX, pos, 0, 0, taken
        digits = pos + _PREFIX.shape[0]
        soh = -1
        for j in range(digits, min(digits + _BODY_LENGTH_WINDOW, stop)):
            if buf[j] == _SOH:
                soh = j
                break
        if soh < 0:
            return GARBLED_LENGTH, pos, 0, 0, taken
        length = _number(buf, digits, soh)
        if length < 0:
            return GARBLED_LENGTH, pos, 0, 0, taken
        end = soh + 1 + length + _TRAILER
        if end > stop:
            break
        # the fields, as the Python side's regex would find them, or SLOW
        span[:, 0] = -1
        span[:, 1] = -1
        f = soh + 1
        last = end - _TRAILER
        slow = False
        while f < last:
            t = 0
            j = f
            while j < last and j - f <= _MAX_TAG and _ZERO <= buf[j] <= _ZERO + 9:
                t = t * 10 + buf[j] - _ZERO
                j += 1
            # not tag=value as the regex reads it, or a tag with a leading zero (the dict's key
            # would be b"011", not b"11"): the regex's and the dict's business
            if j == f or j - f > _MAX_TAG or j >= last or buf[j] != _EQ or buf[f] == _ZERO:
                slow = True
                break
            v = j + 1
            while v < last and buf[v] != _SOH:
                v += 1
            if v >= last:
                slow = True
                break
            if t < _SLOT_OF.shape[0] and _SLOT_OF[t] >= 0:
                span[_SLOT_OF[t], 0] = j + 1  # a repeated tag: the last one counts, as in a dict
                span[_SLOT_OF[t], 1] = v
            f = v + 1
        seq = 0
        if not slow and span[_F34, 0] >= 0:
            seq = _number(buf, span[_F34, 0], span[_F34, 1])
            slow = seq < 0
        kind = buf[span[_F35, 0]] if span[_F35, 1] - span[_F35, 0] == 1 else 0
        i = -1
        if not slow:
            if kind == ord("8") or kind == ord("9"):
                i = _order_of(buf, span[_F11, 0], span[_F11, 1], tag, s, sessions, n)
                slow = i == -2
            elif kind != ord("0"):
                slow = True  # admin and the rest: Python's
        code = -1
        qty = 0
        gone = -1
        if not slow and kind == ord("9"):
            code = buf[span[_F102, 0]] - _ZERO if span[_F102, 1] - span[_F102, 0] == 1 else -1
            slow = not (code == 0 or code == 1 or code == 3 or code == 6)
        elif not slow and kind == ord("8"):
            if _is(buf, span, _F150, ord("8")):
                slow = True  # Rejected: its reason and text are counted in Python
            elif _is(buf, span, _F150, ord("F")) and span[_F32, 0] >= 0:
                qty = _number(buf, span[_F32, 0], span[_F32, 1])
                slow = qty < 0
            elif _is(buf, span, _F150, ord("4")) or _is(buf, span, _F150, ord("C")):
                if span[_F41, 1] > span[_F41, 0]:  # ``f.get(41) or f.get(11)``
                    gone = _order_of(buf, span[_F41, 0], span[_F41, 1], tag, s, sessions, n)
                    slow = gone == -2
                else:
                    gone = i
        if slow:
            return SLOW, pos, soh + 1, end, taken
        if seq > sess[s, S_NEXT_IN]:
            sess[s, S_GAPS] += 1
        sess[s, S_NEXT_IN] = max(sess[s, S_NEXT_IN], seq + 1)
        if kind == ord("9"):
            _ack(orders, run, i, now)
            run[R_CANCEL_REJECT + code] += 1
        elif kind == ord("8"):
            _ack(orders, run, i, now)
            if _is(buf, span, _F150, ord("0")):
                if i >= 0 and orders[i, O_KIND] == PASSIVE and orders[i, O_WORKING] != 0 and orders[i, O_QUEUED] == 0:
                    orders[i, O_QUEUED] = 1
                    fifo[s, sess[s, S_FIFO_TAIL]] = i
                    sess[s, S_FIFO_TAIL] += 1
            elif _is(buf, span, _F150, ord("F")):
                sess[s, S_POSITION] += qty if _is(buf, span, _F54, ord("1")) else -qty
                if i >= 0:
                    if orders[i, O_KIND] == IOC:
                        run[R_TRADES] += 1  # counted once: on the taker's report
                        if orders[i, O_FILL_AT] < 0:
                            orders[i, O_FILL_AT] = now
                    if _is(buf, span, _F151, ord("0")):
                        _gone(orders, sess, s, i)
            elif _is(buf, span, _F150, ord("4")) or _is(buf, span, _F150, ord("C")):
                _gone(orders, sess, s, gone)
                _gone(orders, sess, s, i)
        pos = end
        taken += 1
    return DONE, pos, 0, 0, taken
