"""The FIX gateway's common ExecutionReports, compiled: a delivery's acceptances, fills and ends in one call.

``FixGatewaySession.deliver_events`` hands each run of a session's engine events here
first. ``deliver_reports`` walks them in order and, for the events it knows, does what
``fix_orders.execution_report`` does in Python, over the session's ``ReportState`` (the
orders' report state in arrays) instead of ``Order`` objects:

==============  ==================================================================
OrderAccepted   orderId set, OrdStatus 0; ExecutionReport ExecType 0
Trade           each side of this session (taker, then maker): fill counted, status
                1 or 2; ExecType F with LastPx, LastQty, LastLiquidityInd,
                SecondaryExecID (the second report of a self-match ExecID "-2")
OrderCanceled   an order's end: ExecType and status per ``CANCEL_REASON_EXEC``, Text
                the reason's name; a client's cancel done names its request
                (ClOrdID the request's, OrigClOrdID the order's) and answers it
CancelRejected  a cancel or replace refused: OrderCancelReject (9), CxlRejReason 0 or 1
                (UnknownOrder: the order ended, or not) or 99, the request answered
==============  ==================================================================

and stops, with nothing of it done, at the first event it does not take (another
template, an STP decrement, a request it cannot tell (none, several, a mass cancel), an
order flagged in ``W_FLAGS``, a number out of its arithmetic's range), which the caller
gives to the Python path before calling again after it. The bytes are ``fix_orders``': each report's body (``_report``'s fields,
TransactTime 60 last) and each run of events' book record (``OrderBook.end_event``'s E
record of U records, framed and CRC'd as ``OrderBook._record`` does, at most
``changes_limit`` changes in one). Tests hold both equal to the Python path's, event by
event, and the ``ReportState`` equal to the objects.

Inputs (``ints``, by the ``I_*`` names): where to start, the session, what the book and the
flow already hold (``booked``, ``reported``: nothing is applied at or before ``booked``,
nothing reported at or before ``reported``), the ExecID numbering carried between calls,
the wall clock (an event without a timestamp), the mirror's base, the ring, the record
limit and the mirror's longest ClOrdID and order fields, and what ``fix_outbound.frame_messages``
needs to frame the reports (``head``: the header's CompIDs and SendingTime). Output: the
bodies then the book records (``uint8``); ``int64`` words: the ``O_*`` header, then each
report's length and ring position, then each change's row (``C_*``: what
``OrderBook.apply_reports`` sets on the objects, and where its U text lies); and the
reports framed: the wire bytes, their store records and the records' offsets
(``O_FRAMED`` 0 when ``frame_messages`` found one too long: the caller sends the bodies
one by one).
"""

from __future__ import annotations

from array import array

import numpy as np
from numba import njit

from ringex.engine.kernel.jitcache import guard_module
from ringex.engine.wire import messages as m
from ringex.gateways.fix_instrument import AVG_PX_EXTRA_DIGITS
from ringex.gateways.fix_report_state import (AVG_LIMIT, C_CUM, C_LEAVES, C_NOTIONAL, C_ORDER_ID, C_SLOT, C_STATUS,
                                              C_TEXT_LEN, C_TEXT_OFF, C_TRIGGERED, C_WORDS, LIMIT, W_CL_LEN, W_CL_OFF, W_CUM, W_FIELDS_LEN,
                                              W_FIELDS_OFF, W_FLAGS, W_KEY, W_LEAVES, W_NOTIONAL, W_ORDER_ID,
                                              W_ACCOUNT, W_PENDING_CL_LEN, W_PENDING_CL_OFF, W_PENDING_KIND, W_PENDING_NUM,
                                              W_PENDINGS, W_PRICE_DECIMALS, W_QTY_DECIMALS, W_STATUS, W_TRIGGERED,
                                              WORDS, P_CANCEL)
from ringex.gateways.fix_outbound import I_COUNT, I_CREATED as F_CREATED, I_FIRST_SEQ as F_FIRST_SEQ
from ringex.gateways.fix_outbound import I_BASE as F_BASE, I_MAX_PAYLOAD as F_MAX_PAYLOAD, I_MIDDLE as F_MIDDLE
from ringex.gateways.fix_outbound import I_SOURCE as F_SOURCE, I_TIME as F_TIME, INT_WORDS as F_WORDS
from ringex.gateways.fix_outbound import TOO_LONG, digit_count, frame_messages, put_digits
from ringex.gateways.outbound import crc32

guard_module(__file__)  # numba checks this file only; this checks the folder and engine/wire

__all__ = ["deliver_reports", "I_WORDS", "O_WORDS", "warm_up"]

# ints: the call's inputs
(I_START, I_SESSION, I_BOOKED, I_REPORTED, I_EXEC_SEQ, I_EXEC_K, I_WALL, I_BASE, I_SOURCE, I_CREATED, I_LIMIT,
 I_ROOM, I_FIRST_SEQ, I_STORE_END, I_MAX_PAYLOAD, I_MIDDLE) = range(16)
I_WORDS = 16
# the output's int64 header
(O_STOP, O_MESSAGES, O_BODY_BYTES, O_RECORD_BYTES, O_CHANGES, O_EXEC_SEQ, O_EXEC_K, O_THROUGH, O_FRAMED,
 O_DROPPED) = range(10)
O_WORDS = 10

_ACCEPTED, _TRADE, _CANCELED, _REFUSED = m.OrderAccepted, m.Trade, m.OrderCanceled, m.CancelRejected
_T_ACCEPTED, _T_TRADE, _T_CANCELED = _ACCEPTED.template_id, _TRADE.template_id, _CANCELED.template_id
_T_REFUSED = _REFUSED.template_id
_R_CL, _R_SESSION, _R_REASON = (_REFUSED.offset(f) for f in ("clOrdId", "sessionId", "reason"))
if _REFUSED.field("reason").size != 2 or _CANCELED.field("reason").size != 1:
    raise ImportError("the reasons' sizes changed: update fix_report_kernel")
_SEQ, _TS = _ACCEPTED.offset("seq"), _ACCEPTED.offset("timestampNs")
if _TRADE.offset("seq") != _SEQ or _CANCELED.offset("seq") != _SEQ or _TRADE.offset("timestampNs") != _TS:
    raise ImportError("the events' seq and timestampNs moved: update fix_report_kernel")
_A_ORDER_ID, _A_CL, _A_SESSION = (_ACCEPTED.offset(f) for f in ("orderId", "clOrdId", "sessionId"))
_X_CL, _X_QTY, _X_SESSION, _X_REASON = (_CANCELED.offset(f) for f in ("clOrdId", "canceledQty", "sessionId", "reason"))
_TR_ID, _TR_PX, _TR_QTY = (_TRADE.offset(f) for f in ("tradeId", "price", "qty"))
# per side, taker first (the order fix_orders._trade reports them in): session, clOrdId, leaves, liquidity
_TR_SIDES = np.array([[_TRADE.offset("takerSessionId"), _TRADE.offset("takerClOrdId"),
                       _TRADE.offset("takerLeavesQty"), ord("2")],
                      [_TRADE.offset("makerSessionId"), _TRADE.offset("makerClOrdId"),
                       _TRADE.offset("makerLeavesQty"), ord("1")]], np.int64)

_PENDING_NEW, _NEW, _PARTIAL, _FILLED = ord("A"), ord("0"), ord("1"), ord("2")
_USER = int(m.CancelReason.User)
_UNKNOWN_ORDER = int(m.RejectReason.UnknownOrder)
_TERMINAL = np.zeros(256, np.bool_)
for _s in b"248C":  # Filled, Canceled, Rejected, Expired (fix_order_book.TERMINAL)
    _TERMINAL[_s] = True


def _cancel_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """By engine CancelReason: ExecType and OrdStatus (0: not a reason), and the reason's
    name (Text) in one run with offsets."""
    from ringex.gateways.fix_orders import CANCEL_REASON_EXEC  # (fix_orders imports nothing of this module)
    exec_status = np.zeros((256, 2), np.int64)
    names = b""
    offsets = np.zeros(257, np.int64)
    for v in range(256):
        offsets[v] = len(names)
        try:
            reason = m.CancelReason(v)
        except ValueError:
            continue
        exec_type, status = CANCEL_REASON_EXEC.get(reason, (b"4", b"4"))
        exec_status[v] = exec_type[0], status[0]
        names += reason.name.encode("ascii")
    offsets[256] = len(names)
    return exec_status, np.frombuffer(names, np.uint8).copy(), offsets


_CANCEL_EXEC, _CANCEL_NAMES, _CANCEL_NAME_AT = _cancel_tables()


def _reject_names() -> tuple[np.ndarray, np.ndarray]:
    """By engine RejectReason: its name (Text) in one run with offsets; an empty one is not a
    reason (``m.RejectReason`` would refuse it: Python's)."""
    names = b""
    top = max(int(x) for x in m.RejectReason) + 1
    offsets = np.zeros(top + 1, np.int64)
    for v in range(top):
        offsets[v] = len(names)
        try:
            names += m.RejectReason(v).name.encode("ascii")
        except ValueError:
            pass
    offsets[top] = len(names)
    return np.frombuffer(names, np.uint8).copy(), offsets


_REJECT_NAMES, _REJECT_NAME_AT = _reject_names()

_REPORT_ROOM = 512  # a report's bytes beside its ClOrdID and order fields (tags, numbers, a reason's name)
_CHANGE_ROOM = 140  # a U record's bytes in an E record, at most
_RECORD_ROOM = 128  # an E record's bytes beside its changes
_EXTRA_DIGITS = AVG_PX_EXTRA_DIGITS
_SCALE = 10 ** _EXTRA_DIGITS
_AVG_LIMIT = AVG_LIMIT


@njit(cache=True, inline="always")
def _u(row: np.ndarray, at: int, size: int) -> int:
    v = np.int64(0)
    for b in range(size - 1, -1, -1):
        v = (v << 8) | np.int64(row[at + b])
    return v


@njit(cache=True, inline="always")
def _text(buf: np.ndarray, at: int, text: bytes) -> int:
    for k in range(len(text)):
        buf[at + k] = text[k]
    return at + len(text)


@njit(cache=True, inline="always")
def _copy(buf: np.ndarray, at: int, src: np.ndarray, start: int, n: int) -> int:
    buf[at:at + n] = src[start:start + n]
    return at + n


@njit(cache=True)
def _uint(buf: np.ndarray, at: int, value: int) -> int:
    """``value`` (>= 0) in decimal."""
    n = digit_count(value)
    put_digits(buf, at, value, n)
    return at + n


@njit(cache=True)
def _int(buf: np.ndarray, at: int, value: int) -> int:
    if value < 0:
        buf[at] = 45  # "-"
        return _uint(buf, at + 1, -value)
    return _uint(buf, at, value)


@njit(cache=True)
def _decimal(buf: np.ndarray, at: int, value: int, decimals: int) -> int:
    """``fix_instrument._render``: ``value / 10**decimals``, its shortest exact form."""
    if decimals == 0:
        return _int(buf, at, value)
    if value < 0:
        buf[at] = 45
        at += 1
        value = -value
    digits = np.empty(20, np.uint8)
    n = 0
    v = value
    while True:
        digits[n] = 48 + v % 10  # backwards
        v //= 10
        n += 1
        if v == 0:
            break
    zeros = 0  # the fraction's trailing zeros (its lowest digits)
    while zeros < decimals and zeros < n and digits[zeros] == 48:
        zeros += 1
    if zeros < decimals and zeros == n:  # value 0
        zeros = decimals
    if n <= decimals:
        buf[at] = 48
        at += 1
    else:
        for k in range(n - 1, decimals - 1, -1):
            buf[at] = digits[k]
            at += 1
    if zeros >= decimals:
        return at
    buf[at] = 46  # "."
    at += 1
    for k in range(decimals - 1, zeros - 1, -1):
        buf[at] = digits[k] if k < n else 48
        at += 1
    return at


@njit(cache=True, inline="always")
def _avg_fits(notional: int, cum: int) -> bool:
    return cum == 0 or (cum <= _AVG_LIMIT and notional // cum <= _AVG_LIMIT)


@njit(cache=True)
def _avg_px(buf: np.ndarray, at: int, notional: int, cum: int, price_decimals: int) -> int:
    """``fix_instrument._avg_px``: notional / cum with 8 more decimals, half to even, in
    int64 (``_avg_fits``: notional * 10**8 split as (a * cum + b) * 10**8)."""
    if cum == 0:
        buf[at] = 48
        return at + 1
    a = notional // cum
    c, r = divmod((notional - a * cum) * _SCALE, cum)
    q = a * _SCALE + c
    if 2 * r > cum or (2 * r == cum and q % 2 == 1):
        q += 1
    return _decimal(buf, at, q, price_decimals + _EXTRA_DIGITS)


@njit(cache=True)
def _two(buf: np.ndarray, at: int, v: int) -> int:
    put_digits(buf, at, v, 2)
    return at + 2


@njit(cache=True)
def _utc(buf: np.ndarray, at: int, ns: int) -> int:
    """``fix_codec.utc_timestamp``: YYYYMMDD-HH:MM:SS.sss (civil date from days, proleptic
    Gregorian, as ``datetime.date``)."""
    days = ns // 86_400_000_000_000
    rest = ns - days * 86_400_000_000_000
    z = days + 719_468
    era = z // 146_097
    doe = z - era * 146_097
    yoe = (doe - doe // 1460 + doe // 36_524 - doe // 146_096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = mp + 3 if mp < 10 else mp - 9
    year = yoe + era * 400 + (1 if month <= 2 else 0)
    put_digits(buf, at, year, 4)
    at = _two(buf, _two(buf, at + 4, month), day)
    buf[at] = 45  # "-"
    seconds = rest // 1_000_000_000
    at = _two(buf, at + 1, seconds // 3600)
    buf[at] = 58  # ":"
    at = _two(buf, at + 1, (seconds // 60) % 60)
    buf[at] = 58
    at = _two(buf, at + 1, seconds % 60)
    buf[at] = 46
    put_digits(buf, at + 1, (rest // 1_000_000) % 1000, 3)
    return at + 4


@njit(cache=True)
def _slot(slot_of: np.ndarray, base: int, num: int) -> int:
    """``slot_of``'s word for engine clOrdId ``num`` (-1: none)."""
    at = num - base
    if at < 0 or at >= slot_of.shape[0]:
        return -1
    return slot_of[at]


@njit(cache=True)
def _ids(out: np.ndarray, at: int, state: np.ndarray, arena: np.ndarray, b: int, by_request: bool) -> int:
    """OrderID 37 ("NONE" before acceptance) and ClOrdID 11 of the order at ``state[b:]``;
    ``by_request``: ClOrdID its pending request's and OrigClOrdID 41 its own."""
    at = _text(out, at, b"37=")
    if state[b + W_ORDER_ID]:
        at = _uint(out, at, state[b + W_ORDER_ID])
    else:
        at = _text(out, at, b"NONE")
    at = _text(out, at, b"\x0111=")
    if by_request:
        at = _copy(out, at, arena, state[b + W_PENDING_CL_OFF], state[b + W_PENDING_CL_LEN])
        at = _text(out, at, b"\x0141=")
    return _copy(out, at, arena, state[b + W_CL_OFF], state[b + W_CL_LEN])


@njit(cache=True)
def _report(out: np.ndarray, at: int, state: np.ndarray, arena: np.ndarray, b: int, exec_seq: int, exec_k: int,
            second: bool, exec_type: int, extra: np.ndarray, extra_len: int, transact: int, by_request: bool) -> int:
    """``fix_orders._report`` of the order at ``state[b:]``, ``extra`` fields written
    already, then TransactTime (``with_fields``); ``by_request``: ClOrdID its pending
    request's, OrigClOrdID its own (a client's cancel done)."""
    at = _ids(out, at, state, arena, b, by_request)
    at = _text(out, at, b"\x0117=")
    at = _uint(out, at, exec_seq)
    out[at] = 46
    at = _uint(out, at + 1, exec_k)
    if second:
        at = _text(out, at, b"-2")
    at = _text(out, at, b"\x01150=")
    out[at] = exec_type
    at = _text(out, at + 1, b"\x0139=")
    status = state[b + W_STATUS]
    out[at] = status
    out[at + 1] = 1
    at = _copy(out, at + 2, arena, state[b + W_FIELDS_OFF], state[b + W_FIELDS_LEN])
    at = _copy(out, at, extra, 0, extra_len)
    qd = state[b + W_QTY_DECIMALS]
    at = _text(out, at, b"151=")
    at = _decimal(out, at, 0 if _TERMINAL[status] else state[b + W_LEAVES], qd)
    at = _text(out, at, b"\x0114=")
    at = _decimal(out, at, state[b + W_CUM], qd)
    at = _text(out, at, b"\x016=")
    at = _avg_px(out, at, state[b + W_NOTIONAL], state[b + W_CUM], state[b + W_PRICE_DECIMALS])
    at = _text(out, at, b"\x0160=")
    at = _utc(out, at, transact)
    out[at] = 1
    return at + 1


@njit(cache=True)
def _change(rec: np.ndarray, at: int, state: np.ndarray, b: int, slot: int, first: bool, changes: np.ndarray,
            nc: int) -> int:
    """A U record of the order at ``state[b:]`` into the open E record (``["U",[...]]``), and
    its change row."""
    if not first:
        rec[at] = 44  # ","
        at += 1
    at = _text(rec, at, b'["U",')
    start = at
    rec[at] = 91  # "["
    at = _uint(rec, at + 1, state[b + W_KEY])
    rec[at] = 44
    at = _uint(rec, at + 1, state[b + W_ORDER_ID])
    at = _text(rec, at, b',"')
    rec[at] = state[b + W_STATUS]
    at = _text(rec, at + 1, b'",')
    at = _uint(rec, at, state[b + W_CUM])
    rec[at] = 44
    at = _uint(rec, at + 1, state[b + W_LEAVES])
    rec[at] = 44
    at = _uint(rec, at + 1, state[b + W_NOTIONAL])
    at = _text(rec, at, b",true]" if state[b + W_TRIGGERED] else b",false]")
    c = nc * C_WORDS
    changes[c + C_SLOT] = slot
    changes[c + C_ORDER_ID] = state[b + W_ORDER_ID]
    changes[c + C_STATUS] = state[b + W_STATUS]
    changes[c + C_CUM] = state[b + W_CUM]
    changes[c + C_LEAVES] = state[b + W_LEAVES]
    changes[c + C_NOTIONAL] = state[b + W_NOTIONAL]
    changes[c + C_TRIGGERED] = state[b + W_TRIGGERED]
    changes[c + C_TEXT_OFF] = start
    changes[c + C_TEXT_LEN] = at - start
    rec[at] = 93  # "]"
    return at + 1


@njit(cache=True)
def _answered(rec: np.ndarray, at: int, state: np.ndarray, slot_of: np.ndarray, base: int, b: int, slot: int,
              first: bool) -> int:
    """The order at ``state[b:]``'s pending request answered: its X record into the open E
    record (``OrderBook.drop_pending``'s), and the mirror's words of it cleared."""
    num = state[b + W_PENDING_NUM]
    if not first:
        rec[at] = 44
        at += 1
    at = _text(rec, at, b'["X",{"num":')
    at = _uint(rec, at, num)
    at = _text(rec, at, b"}]")
    state[b + W_PENDINGS] -= 1
    state[b + W_PENDING_NUM] = 0
    if 0 <= num - base < slot_of.shape[0] and slot_of[num - base] == -2 - slot:
        slot_of[num - base] = -1
    return at


@njit(cache=True)
def _close(rec: np.ndarray, start: int, at: int, source: int, created: int, position: int) -> int:
    """Close the E record begun at ``start`` (8 bytes of length and CRC, then ``E{"r":[``)."""
    at = _text(rec, at, b'],"w":[')
    at = _uint(rec, at, source)
    rec[at] = 44
    at = _int(rec, at + 1, created)
    rec[at] = 44
    at = _uint(rec, at + 1, position)
    at = _text(rec, at, b"]}")
    n = at - start - 8
    c = crc32(rec, start + 8, at)
    for k in range(4):
        rec[start + k] = (n >> (8 * k)) & 0xFF
        rec[start + 4 + k] = (c >> (8 * k)) & 0xFF
    return at


@njit(cache=True)
def _open(rec: np.ndarray, at: int) -> int:
    return _text(rec, at + 8, b'E{"r":[')


@njit(cache=True, nogil=True)
def deliver_reports(region: np.ndarray, rows: np.ndarray, positions: np.ndarray, state: np.ndarray,
                    slot_of: np.ndarray, arena: np.ndarray, head: np.ndarray, ints: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """See the module docstring."""
    start, sid, booked, reported = ints[I_START], ints[I_SESSION], ints[I_BOOKED], ints[I_REPORTED]
    exec_seq, exec_k, wall, base = ints[I_EXEC_SEQ], ints[I_EXEC_K], ints[I_WALL], ints[I_BASE]
    source, created, limit = ints[I_SOURCE], ints[I_CREATED], ints[I_LIMIT]
    n = rows.shape[0]
    room = _REPORT_ROOM + ints[I_ROOM]  # a report's bytes at most (I_ROOM: the longest ClOrdID and fields)
    body = np.empty(max(1, (n - start) * 2 * room), np.uint8)
    rec = np.empty(max(1, (n - start) * (2 * _CHANGE_ROOM + _RECORD_ROOM) + _RECORD_ROOM), np.uint8)
    lengths = np.empty(max(1, 2 * (n - start)), np.int64)
    types = np.full(max(1, 2 * (n - start)), 56, np.uint8)  # each report's MsgType: 8, or 9
    at_pos = np.empty(max(1, 2 * (n - start)), np.int64)
    changes = np.empty(max(1, 2 * (n - start)) * C_WORDS, np.int64)
    dropped = np.empty(max(1, n - start), np.int64)  # pending requests answered
    nd = 0
    extra = np.empty(_REPORT_ROOM, np.uint8)
    nm = 0  # reports
    bw = 0  # body bytes
    nc = 0  # changes
    rw = 0  # record bytes
    rec_start = rw
    rw = _open(rec, rw)
    in_rec = 0  # changes in the open record
    last = -1  # the last event the open record covers
    through = -1  # the last event of the records closed
    sides = _TR_SIDES
    i = start
    while i < n:
        row = region[rows[i]]
        position = positions[i]
        tid = _u(row, 2, 2)
        seq = _u(row, _SEQ, 8)
        if seq < 0 or _u(row, _TS, 8) < 0:
            break  # numbers past int64: Python's
        # what the event needs, checked before anything of it is done (a stop leaves it whole)
        kind = 0  # 0 nothing to do, 1 accepted, 2 trade, 3 canceled
        slot0 = -1
        slot1 = -1
        if position > booked:
            if tid == _T_ACCEPTED:
                if _u(row, _A_SESSION, 4) == sid:
                    slot0 = _slot(slot_of, base, _u(row, _A_CL, 8))
                    if slot0 >= 0:
                        if state[slot0 * WORDS + W_FLAGS]:
                            break
                        if state[slot0 * WORDS + W_STATUS] == _PENDING_NEW:
                            oid = _u(row, _A_ORDER_ID, 8)
                            if not 0 <= oid < LIMIT:
                                break
                            kind = 1
            elif tid == _T_TRADE:
                px = _u(row, _TR_PX, 8)
                qty = _u(row, _TR_QTY, 8)
                trade_id = _u(row, _TR_ID, 8)
                stop = False
                for side in range(2):
                    if _u(row, sides[side, 0], 4) != sid:
                        continue
                    s = _slot(slot_of, base, _u(row, sides[side, 1], 8))
                    if s < 0 or _TERMINAL[state[s * WORDS + W_STATUS]]:
                        continue
                    b = s * WORDS
                    leaves = _u(row, sides[side, 2], 8)
                    cum = state[b + W_CUM] + qty  # (both < LIMIT: no overflow)
                    if (state[b + W_FLAGS] or not 0 < px < LIMIT or not 0 < qty < LIMIT
                            or not 0 <= leaves < LIMIT or trade_id < 0 or cum >= LIMIT
                            or px > (LIMIT - 1 - state[b + W_NOTIONAL]) // qty
                            or not _avg_fits(state[b + W_NOTIONAL] + px * qty, cum)
                            or (side == 1 and s == slot0)):
                        stop = True
                        break
                    if side == 0:
                        slot0 = s
                    else:
                        slot1 = s
                if stop:
                    break
                if slot0 >= 0 or slot1 >= 0:
                    kind = 2
            elif tid == _T_CANCELED:
                if _u(row, _X_SESSION, 4) == sid:
                    slot0 = _slot(slot_of, base, _u(row, _X_CL, 8))
                    if slot0 >= 0 and not _TERMINAL[state[slot0 * WORDS + W_STATUS]]:
                        b = slot0 * WORDS
                        reason = _u(row, _X_REASON, 1)
                        if (state[b + W_FLAGS] or _CANCEL_EXEC[reason, 0] == 0
                                or state[b + W_LEAVES] > _u(row, _X_QTY, 8)):
                            break  # an unknown reason, an STP decrement
                        if reason == _USER and state[b + W_PENDINGS] and (
                                state[b + W_PENDINGS] > 1 or state[b + W_PENDING_NUM] == 0):
                            break  # which request it answers is Python's to say
                        kind = 3
            elif tid == _T_REFUSED:
                if _u(row, _R_SESSION, 4) == sid:
                    # the request's number names the order it is pending for (-2 - slot), or
                    # no request the mirror knows (none, or a mass cancel: Python's)
                    num = _u(row, _R_CL, 8)
                    v = _slot(slot_of, base, num)
                    if v > -2:
                        break
                    slot0 = -2 - v
                    b = slot0 * WORDS
                    reason = _u(row, _R_REASON, 2)
                    if (state[b + W_FLAGS] or state[b + W_PENDINGS] != 1 or state[b + W_PENDING_NUM] != num
                            or reason >= _REJECT_NAME_AT.shape[0] - 1
                            or _REJECT_NAME_AT[reason + 1] == _REJECT_NAME_AT[reason]):
                        break
                    kind = 4
            else:
                break
        # the event is the kernel's: numbered, applied, reported
        if seq != exec_seq:
            exec_seq = seq
            exec_k = 0
        exec_k += 1
        i += 1
        if position <= booked:
            continue
        last = position
        report = position > reported
        ts = _u(row, _TS, 8)
        transact = ts if ts > 0 else wall
        if kind == 1:
            b = slot0 * WORDS
            state[b + W_ORDER_ID] = _u(row, _A_ORDER_ID, 8)
            state[b + W_STATUS] = _NEW
            rw = _change(rec, rw, state, b, slot0, in_rec == 0, changes, nc)
            nc += 1
            in_rec += 1
            if report:
                bw0 = bw
                bw = _report(body, bw, state, arena, b, exec_seq, exec_k, False, 48, extra, 0, transact, False)
                lengths[nm] = bw - bw0
                at_pos[nm] = position
                nm += 1
        elif kind == 2:
            px = _u(row, _TR_PX, 8)
            qty = _u(row, _TR_QTY, 8)
            first = True
            for side in range(2):
                s = slot0 if side == 0 else slot1
                if s < 0:
                    continue
                b = s * WORDS
                state[b + W_CUM] += qty
                state[b + W_NOTIONAL] += px * qty
                state[b + W_LEAVES] = _u(row, sides[side, 2], 8)
                state[b + W_STATUS] = _FILLED if state[b + W_LEAVES] == 0 else _PARTIAL
                rw = _change(rec, rw, state, b, s, in_rec == 0, changes, nc)
                nc += 1
                in_rec += 1
                if report:
                    e = _text(extra, 0, b"31=")
                    e = _decimal(extra, e, px, state[b + W_PRICE_DECIMALS])
                    e = _text(extra, e, b"\x0132=")
                    e = _decimal(extra, e, qty, state[b + W_QTY_DECIMALS])
                    e = _text(extra, e, b"\x01851=")
                    extra[e] = sides[side, 3]
                    e = _text(extra, e + 1, b"\x01527=")
                    e = _uint(extra, e, _u(row, _TR_ID, 8))
                    extra[e] = 1
                    bw0 = bw
                    bw = _report(body, bw, state, arena, b, exec_seq, exec_k, not first, 70, extra, e + 1, transact,
                                 False)
                    lengths[nm] = bw - bw0
                    at_pos[nm] = position
                    nm += 1
                    first = False
        elif kind == 3:
            b = slot0 * WORDS
            reason = _u(row, _X_REASON, 1)
            state[b + W_STATUS] = _CANCEL_EXEC[reason, 1]
            state[b + W_LEAVES] = 0
            rw = _change(rec, rw, state, b, slot0, in_rec == 0, changes, nc)
            nc += 1
            in_rec += 1
            # a client's cancel done: its request answered (fix_orders._canceled's drop_pending)
            by_request = reason == _USER and state[b + W_PENDINGS] == 1 and state[b + W_PENDING_KIND] == P_CANCEL
            if by_request:
                dropped[nd] = state[b + W_PENDING_NUM]
                nd += 1
                rw = _answered(rec, rw, state, slot_of, base, b, slot0, False)
                in_rec += 1
            if report:
                e = _text(extra, 0, b"58=")
                e = _copy(extra, e, _CANCEL_NAMES, _CANCEL_NAME_AT[reason],
                          _CANCEL_NAME_AT[reason + 1] - _CANCEL_NAME_AT[reason])
                extra[e] = 1
                bw0 = bw
                bw = _report(body, bw, state, arena, b, exec_seq, exec_k, False, _CANCEL_EXEC[reason, 0], extra,
                             e + 1, transact, by_request)
                lengths[nm] = bw - bw0
                at_pos[nm] = position
                nm += 1
        elif kind == 4:  # a cancel or replace refused: OrderCancelReject (fix_orders._cancel_rejected)
            b = slot0 * WORDS
            reason = _u(row, _R_REASON, 2)
            replace = state[b + W_PENDING_KIND] != P_CANCEL
            dropped[nd] = state[b + W_PENDING_NUM]
            nd += 1
            rw = _answered(rec, rw, state, slot_of, base, b, slot0, in_rec == 0)
            in_rec += 1
            if report:
                bw0 = bw
                bw = _ids(body, bw, state, arena, b, True)
                bw = _text(body, bw, b"\x0139=")
                status = state[b + W_STATUS]
                body[bw] = status
                bw = _text(body, bw + 1, b"\x011=")
                bw = _uint(body, bw, state[b + W_ACCOUNT])
                bw = _text(body, bw, b"\x01434=2\x01102=" if replace else b"\x01434=1\x01102=")
                if reason == _UNKNOWN_ORDER:
                    body[bw] = 48 if _TERMINAL[status] else 49  # 0 too late, 1 unknown
                    bw += 1
                else:
                    bw = _text(body, bw, b"99")
                bw = _text(body, bw, b"\x0158=")
                bw = _copy(body, bw, _REJECT_NAMES, _REJECT_NAME_AT[reason],
                           _REJECT_NAME_AT[reason + 1] - _REJECT_NAME_AT[reason])
                bw = _text(body, bw, b"\x0160=")
                bw = _utc(body, bw, transact)
                body[bw] = 1
                bw += 1
                lengths[nm] = bw - bw0
                at_pos[nm] = position
                types[nm] = 57  # MsgType 9
                nm += 1
        if in_rec >= limit:  # one record per run, kept small
            rw = _close(rec, rec_start, rw, source, created, last)
            through = last
            rec_start = rw
            rw = _open(rec, rw)
            in_rec = 0
            last = -1
    if last >= 0:
        rw = _close(rec, rec_start, rw, source, created, last)
        through = last
    else:
        rw = rec_start  # an open record with no event in it (and so no change): dropped
    out = np.empty(bw + rw, np.uint8)
    out[:bw] = body[:bw]
    out[bw:] = rec[:rw]
    # the reports framed and their store records made (fix_outbound.frame_messages; ``head``
    # is its header middle then SendingTime, ``I_MIDDLE`` bytes of it the middle)
    hl = head.shape[0]
    data = np.empty(hl + nm + bw, np.uint8)
    data[:hl] = head
    data[hl:hl + nm] = types[:nm]
    data[hl + nm:] = body[:bw]
    fints = np.empty(F_WORDS + 3 * nm, np.int64)
    fints[F_FIRST_SEQ] = ints[I_FIRST_SEQ]
    fints[F_CREATED] = created
    fints[F_SOURCE] = source
    fints[F_BASE] = ints[I_STORE_END]
    fints[F_MAX_PAYLOAD] = ints[I_MAX_PAYLOAD]
    fints[F_MIDDLE] = ints[I_MIDDLE]
    fints[F_TIME] = hl - ints[I_MIDDLE]
    fints[I_COUNT] = nm
    fints[F_WORDS:F_WORDS + nm] = 1
    fints[F_WORDS + nm:F_WORDS + 2 * nm] = lengths[:nm]
    fints[F_WORDS + 2 * nm:] = at_pos[:nm]
    status, wire, records, offsets = frame_messages(data, fints)
    words = np.empty(O_WORDS + 2 * nm + nc * C_WORDS + nd, np.int64)
    words[O_FRAMED] = 1 if status != TOO_LONG else 0
    words[O_STOP] = i
    words[O_MESSAGES] = nm
    words[O_BODY_BYTES] = bw
    words[O_RECORD_BYTES] = rw
    words[O_CHANGES] = nc
    words[O_EXEC_SEQ] = exec_seq
    words[O_EXEC_K] = exec_k
    words[O_THROUGH] = through
    words[O_WORDS:O_WORDS + nm] = lengths[:nm]
    words[O_WORDS + nm:O_WORDS + 2 * nm] = at_pos[:nm]
    words[O_WORDS + 2 * nm:O_WORDS + 2 * nm + nc * C_WORDS] = changes[:nc * C_WORDS]
    words[O_DROPPED] = nd
    words[O_WORDS + 2 * nm + nc * C_WORDS:] = dropped[:nd]
    return out, words, wire, records, offsets


def warm_up() -> None:
    """Compile (or load from the cache) before a duty cycle needs it."""
    region = np.zeros((1, m.SLOT_SIZE), np.uint8)
    region.flags.writeable = False  # what a ring consumer's read gives
    ints = np.zeros(I_WORDS, np.int64)
    ints[I_LIMIT] = 64
    # the types the gateway passes: the mirror's buffers viewed (writable), the header's bytes (not)
    mirror_words, mirror_bytes = np.frombuffer(array("q"), np.int64), np.frombuffer(bytearray(), np.uint8)
    deliver_reports(region, np.zeros(1, np.int64), np.zeros(1, np.int64), mirror_words, mirror_words, mirror_bytes,
                    np.frombuffer(b"", np.uint8), ints)
