"""The binary load generator's compiled duty cycle (tools/load_kernel.py) against the numpy
implementation it replaces, without an exchange.

``NumpyReference`` below is tools/load.py's ``LoadGenerator`` as it was before the kernels:
its duty cycle verbatim (numpy over each batch). Both are driven by the same seeded fake
exchange (a book per run, orders accepted or refused for every reason, IOC orders trading
against the sessions' own resting orders or an outside one, cancels found or not, other
cancels, session messages, frames it does not know), over fake sockets that take part of a
send or none and hand back responses late and cut into reads of any size, and must agree
after every duty cycle: every per-order array, every counter, every byte sent, the FIFOs,
the progress lines and ``result()``. The streams keep what the gateway guarantees and the
numpy path relied on: a session's acknowledgements come in its clOrdId order, each order is
acknowledged once and ends once.

Also: a stream cut at every byte, a Terminate in a batch, framing errors, a closed
connection, the schedule's arithmetic, the layouts compiled in against the schema, and (in
a fresh interpreter) that the warm-up leaves nothing for a duty cycle to compile.

``python tests/test_load_kernel.py`` (from the repository root) runs the probe: the CPU one
duty cycle costs each implementation at 20,000 orders/s over three sessions against a sink
process that answers as the gateway would.
"""

from __future__ import annotations

import random
import select
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, NoReturn, Sequence

import numpy as np
import pytest

from ringex.engine.wire import messages as m
from ringex.gateways import sofh
from ringex.gateways.sofh import ConnectionClosed, FrameReader, FramingError, header
from ringex.tools import load as L
from ringex.tools import load_kernel as K
from ringex.tools.load import (CANCEL, IOC, KEEPALIVE_MS, MAX_LIVE, MAX_POSITION, NS, PASSIVE, Flow, LoadError,
                               LoadGenerator, Schedule, SessionSpec)

DRAIN_S, CYCLE_US = L.DRAIN_S, L.CYCLE_US
US = 1000
MS = 1_000_000


# ---- the reference: constants
_AR2, _AR4, _AR8, _AR16 = (np.arange(k) for k in (2, 4, 8, 16))
_BUY, _SELL = int(m.Side.Buy), int(m.Side.Sell)
_USER_CANCEL = int(m.CancelReason.User)
_REASONS = {int(v): k for k, v in m.RejectReason.__members__.items()}

# where each decoded field sits in its message (offsets from the schema's layouts)
_ACC_CL, _ACC_OID = m.OrderAccepted.offset("clOrdId"), m.OrderAccepted.offset("orderId")
_REJ_CL, _REJ_REASON = m.OrderRejected.offset("clOrdId"), m.OrderRejected.offset("reason")
_CAN_CL, _CAN_REASON = m.OrderCanceled.offset("clOrdId"), m.OrderCanceled.offset("reason")
_CRJ_CL, _CRJ_REASON = m.CancelRejected.offset("clOrdId"), m.CancelRejected.offset("reason")
_TR = {f: m.Trade.offset(f) for f in ("qty", "makerClOrdId", "makerLeavesQty", "takerClOrdId",
                                       "makerSessionId", "takerSessionId", "aggressorSide")}
# patched when an order is due: a cancel's target, an aggressive order's side and price
_CXL_OID = m.CancelOrder.offset("orderId")
assert m.CancelOrder.offset("origClOrdId") == _CXL_OID + 8  # written together, 16 bytes
_NEW_SIDE, _NEW_PRICE, _TIF = (m.NewOrder.offset(f) for f in ("side", "price", "timeInForce"))
_TIF_IOC = int(m.TimeInForce.IOC)
_T_ACCEPTED, _T_REJECTED, _T_TRADE = (x.template_id for x in (m.OrderAccepted, m.OrderRejected, m.Trade))
_T_CANCELED, _T_CANCEL_REJ = m.OrderCanceled.template_id, m.CancelRejected.template_id
_T_TERMINATE, _T_NOT_APPLIED = m.Terminate.template_id, m.NotApplied.template_id


def _u64(buf: np.ndarray, at: np.ndarray) -> np.ndarray:
    return buf[at[:, None] + _AR8].view("<i8")[:, 0]


def _u32(buf: np.ndarray, at: np.ndarray) -> np.ndarray:
    return buf[at[:, None] + _AR4].view("<u4")[:, 0]


def _u16(buf: np.ndarray, at: np.ndarray) -> np.ndarray:
    return buf[at[:, None] + _AR2].view("<u2")[:, 0]


def _before(mask: np.ndarray) -> np.ndarray:
    """``out[j]``: how many of ``mask[:j]`` are set."""
    out = np.zeros(len(mask) + 1, np.int64)
    np.cumsum(mask, out=out[1:])
    return out


# How a batch of responses is decoded: one table lookup by template id gives each frame's
# class and where its clOrdId is, so a batch costs a few numpy calls whatever it holds.
(_C_OTHER, _C_ACCEPTED, _C_REJECTED, _C_CANCEL_REJ, _C_CANCELED, _C_TRADE, _C_SESSION) = range(7)
_CLASS = np.zeros(1 << 16, np.int8)
_CL_AT = np.zeros(1 << 16, np.int64)  # a Trade's is the taker's clOrdId
for _layout, _cls, _field in ((m.OrderAccepted, _C_ACCEPTED, "clOrdId"), (m.OrderRejected, _C_REJECTED, "clOrdId"),
                              (m.CancelRejected, _C_CANCEL_REJ, "clOrdId"), (m.OrderCanceled, _C_CANCELED, "clOrdId"),
                              (m.Trade, _C_TRADE, "takerClOrdId")):
    _CLASS[_layout.template_id] = _cls
    _CL_AT[_layout.template_id] = _layout.offset(_field)
_CLASS[[m.Sequence.template_id, m.Terminate.template_id, m.NotApplied.template_id]] = _C_SESSION
_IS_ACK = np.zeros(7, bool)  # the response that acknowledges the order whose clOrdId it carries
_IS_ACK[[_C_ACCEPTED, _C_REJECTED, _C_CANCEL_REJ]] = True
_IS_PASSIVE = np.array([True, False, False])  # by kind


@dataclass
class _RefConn:
    """One session: its socket, its pre-framed stream, where it stands, and its views of the
    generator's per-order arrays, indexed by clOrdId (order ``i`` is element ``i + S`` of a
    global array, so session ``s``'s view ``a[s::S]`` has clOrdId ``k`` at index ``k``)."""

    s: int
    spec: SessionSpec
    sock: Any  # socket.socket, or anything with send/recv_into (tests)
    reader: FrameReader
    stream: np.ndarray
    ends: np.ndarray
    first_seq: int  # FIXP number of the first application message the generator sends
    views: dict[str, np.ndarray]
    due: int = 0  # messages due (and patched)
    sent_bytes: int = 0
    sent_msgs: int = 0  # whole frames handed to the socket
    last_send: int = 0
    # per kind: the session's message numbers (0-based) of that kind, how many of them come
    # before each message number (so that "which became due" is one lookup), how many are due
    cxl_local: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    cxl_before: np.ndarray = field(default_factory=lambda: np.zeros(1, np.int64))
    cxl_oid_at: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # where each cancel's orderId is
    cxl_next: int = 0
    ioc_local: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    ioc_before: np.ndarray = field(default_factory=lambda: np.zeros(1, np.int64))
    ioc_next: int = 0
    passive_local: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    passive_before: np.ndarray = field(default_factory=lambda: np.zeros(1, np.int64))
    passive_due: int = 0
    passive_ended: int = 0  # passive orders due that are known to be (or about to be) gone
    fifo: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # clOrdIds accepted, oldest first
    head: int = 0
    tail: int = 0
    position: int = 0  # lots bought minus sold in this run
    limit: int = 0  # clOrdIds beyond this (or 0) fall on the views' padding
    intended: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # by clOrdId, once started
    ack_at: np.ndarray = field(init=False, repr=False)
    fill_at: np.ndarray = field(init=False, repr=False)
    sent_at: np.ndarray = field(init=False, repr=False)
    order_id: np.ndarray = field(init=False, repr=False)
    cancel_of: np.ndarray = field(init=False, repr=False)
    alive: np.ndarray = field(init=False, repr=False)
    kinds: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        v = self.views
        self.ack_at, self.fill_at, self.sent_at = v["ack_at"], v["fill_at"], v["sent_at"]
        self.order_id, self.cancel_of, self.alive, self.kinds = v["order_id"], v["cancel_of"], v["alive"], v["kinds"]
        self.limit = len(self.ack_at) - 1

    @property
    def due_bytes(self) -> int:
        return int(self.ends[self.due - 1]) if self.due else 0


class NumpyReference:
    """tools/load.py's ``LoadGenerator`` as it was before its duty cycle was compiled (numpy
    over each batch), kept verbatim as the reference the compiled one is held to, and as the
    "before" of the probe; the methods that did not change (``done``, ``late``, ``run``,
    ``_send_raw``, ``_send_failed``, a cycle's ``_after_sending``) are borrowed from it."""

    def __init__(self, flow: Flow, socks: Sequence[Any], rate: float, *, clock: Callable[[], int] = time.monotonic_ns,
                 first_seq: Sequence[int] | None = None, keepalive_ms: int = KEEPALIVE_MS, max_live: int = MAX_LIVE,
                 max_position: int = MAX_POSITION, read_size: int = 1 << 20,
                 progress: Callable[[str], None] | None = None) -> None:
        S = len(flow.sessions)
        if len(socks) != S:
            raise ValueError("one socket per session")
        self.flow, self.rate, self.clock = flow, float(rate), clock
        self.n, self.S = flow.n, S
        self.keepalive_ns = keepalive_ms * 1_000_000 // 2
        self.max_live = max_live
        self.max_position = max_position
        self.progress = progress
        n = self.n
        # per order, padded by S on each side (see _RefConn): times (-1: not yet), the engine's
        # orderId, the cancel sent for it (its clOrdId, 0: none), whether it may still be working
        size = n + 2 * S
        self._arrays = {"ack_at": np.full(size, -1, np.int64), "fill_at": np.full(size, -1, np.int64),
                        "sent_at": np.full(size, -1, np.int64), "order_id": np.zeros(size, np.int64),
                        "cancel_of": np.zeros(size, np.int64), "alive": np.ones(size, bool),
                        "kinds": np.full(size, -1, np.int8)}
        self._arrays["kinds"][S:S + n] = flow.kinds
        self.rejects = np.zeros(1 << 16, np.int64)  # by reason (a uint16), the schema's or not
        self.trades = 0
        self.acked = 0
        self.not_applied = 0
        self.cancels_without_target = 0
        self.leaned = 0  # aggressive orders whose side was flipped against the position
        self.demoted = 0  # passive orders sent as IOC because their session had max_live working
        self.conns: list[_RefConn] = []
        for s, spec in enumerate(flow.sessions):
            views = {k: a[s::S] for k, a in self._arrays.items()}
            c = _RefConn(s, spec, socks[s], FrameReader(1 << 12, batch=4096, read_size=read_size),
                      flow.streams[s], flow.ends[s], first_seq[s] if first_seq else 1, views)
            kinds = flow.kinds[s::S]
            c.cxl_local, c.cxl_before = flow.local(s, CANCEL), _before(kinds == CANCEL)
            c.cxl_oid_at = c.ends[c.cxl_local] - m.CancelOrder.size + _CXL_OID
            c.ioc_local, c.ioc_before = flow.local(s, IOC), _before(kinds == IOC)
            c.passive_local, c.passive_before = flow.local(s, PASSIVE), _before(kinds == PASSIVE)
            c.fifo = np.zeros(len(c.passive_local), np.int64)
            self.conns.append(c)
        FrameReader(64).feed(b"")  # load the compiled scan now, not inside the first cycle
        self.schedule: Schedule | None = None
        self.due = 0
        self._window: list[np.ndarray] = []  # latencies acked since the last progress line
        self._next_report = 0
        self._reported = (0, 0)

    def per_order(self, name: str) -> np.ndarray:
        """A per-order array (``ack_at``, ``fill_at``, ``sent_at``, ...), indexed by order number."""
        return self._arrays[name][self.S: self.S + self.n]

    # ------------------------------------------------------------ the duty cycle

    def start(self, t0_ns: int | None = None) -> None:
        t0 = self.clock() if t0_ns is None else t0_ns
        self.schedule = Schedule(self.n, self.rate, t0)
        padded = np.full(self.n + 2 * self.S, -1, np.int64)
        padded[self.S: self.S + self.n] = self.schedule.intended
        for c in self.conns:
            c.last_send = t0
            c.intended = padded[c.s::self.S]
        self._next_report = t0 + NS
        self._reported = (t0, 0)
        self._late_upto = self._late = 0  # the borrowed late()'s

    def cycle(self, readable: Sequence[Any] | None = None) -> int:
        """Send every order now due, read each session once (only those in ``readable``
        when given), keep the sessions alive. Returns the work done (messages sent and
        received)."""
        assert self.schedule is not None, "start() first"
        now = self.clock()
        due = self.schedule.due(now)
        if due > self.due:
            self.due = due
            for c in self.conns:
                self._make_due(c, (due - c.s + self.S - 1) // self.S)
        work = 0
        for c in self.conns:
            work += self._send(c, now)
        return work + self._after_sending(readable)

    def _make_due(self, c: _RefConn, upto: int) -> None:
        """Messages ``c.due .. upto`` of session ``c`` become due: its cancels get their
        targets, its passive orders are held to ``max_live`` and its aggressive orders lean
        against its position, in the stream, before any of it is sent."""
        c.due = upto
        lo, hi = c.cxl_next, int(c.cxl_before[upto])
        if hi > lo:
            c.cxl_next = hi
            self._target_cancels(c, lo, hi)
        lo, hi = c.passive_due, int(c.passive_before[upto])
        if hi > lo:
            c.passive_due = hi
            self._cap_working(c, c.passive_local[lo:hi])
        lo, hi = c.ioc_next, int(c.ioc_before[upto])
        if hi > lo:
            c.ioc_next = hi
            if abs(c.position) > self.max_position:
                self._lean(c, c.ioc_local[lo:hi])

    def _cap_working(self, c: _RefConn, local: np.ndarray) -> None:
        """The flow keeps a session's working orders under ``max_live`` only if its cancels
        find their targets in time; when acknowledgements lag they do not, so the true count
        is checked here too: passive orders beyond it go out as IOC (they rest nothing and
        hold nothing), which keeps the account's holds bounded whatever the latency."""
        over = (c.passive_due - c.passive_ended) - self.max_live
        if over <= 0:
            return
        demote = local[-min(over, len(local)):]
        c.stream[c.ends[demote] - m.NewOrder.size + _TIF] = _TIF_IOC
        self._end(c, demote + 1)
        self.demoted += len(demote)

    def _end(self, c: _RefConn, cl: np.ndarray) -> None:
        """Orders of session ``c`` that ended (or will: a cancel is on its way)."""
        cl = cl[c.alive[cl]]
        c.alive[cl] = False
        c.passive_ended += int(np.count_nonzero(_IS_PASSIVE[c.kinds[cl]]))

    def _target_cancels(self, c: _RefConn, lo: int, hi: int) -> None:
        """Cancels ``lo .. hi`` of session ``c`` (by their rank among its cancels) get the
        session's oldest acknowledged orders still working: their orderId and origClOrdId
        are written into the stream."""
        want = hi - lo
        picked: list[np.ndarray] = []
        have = 0
        while have < want and c.head < c.tail:
            window = c.fifo[c.head: min(c.tail, c.head + 2 * (want - have))]
            take = window[c.alive[window]][: want - have]
            # the FIFO is in clOrdId order (a session's acknowledgements come in its order):
            # resume just past the last one taken, or past the window if it ran short
            c.head += int(np.searchsorted(window, take[-1])) + 1 if len(take) == want - have else len(window)
            picked.append(take)
            have += len(take)
        targets = picked[0] if len(picked) == 1 else np.concatenate(picked) if picked else np.zeros(0, np.int64)
        k = len(targets)
        self.cancels_without_target += want - k
        if not k:
            return
        c.cancel_of[targets] = c.cxl_local[lo: lo + k] + 1
        c.alive[targets] = False  # passive and working, or the FIFO would have skipped them
        c.passive_ended += k
        words = np.empty((k, 2), "<i8")
        words[:, 0] = c.order_id[targets]
        words[:, 1] = targets  # origClOrdId
        c.stream[c.cxl_oid_at[lo: lo + k, None] + _AR16] = words.view(np.uint8).reshape(k, 16)

    def _lean(self, c: _RefConn, local: np.ndarray) -> None:
        """Aggressive orders of a session that drifted: all on the side that brings it back,
        at the price mirrored about their mid (as far through it as drawn)."""
        side = _SELL if c.position > 0 else _BUY
        start = c.ends[local] - m.NewOrder.size
        flip = c.stream[start + _NEW_SIDE] != side
        if not flip.any():
            return
        start = start[flip]
        mid = self.flow.mid[local[flip] * self.S + c.s]
        price = _u64(c.stream, start + _NEW_PRICE)
        c.stream[start + _NEW_SIDE] = side
        c.stream[(start + _NEW_PRICE)[:, None] + _AR8] = np.maximum(1, 2 * mid - price).astype("<i8").view(
            np.uint8).reshape(-1, 8)
        self.leaned += int(flip.sum())

    def _send(self, c: _RefConn, now: int) -> int:
        end = c.due_bytes
        if c.sent_bytes >= end:
            return 0
        try:
            k = c.sock.send(memoryview(c.stream)[c.sent_bytes:end])
        except (BlockingIOError, InterruptedError):
            return 0
        except OSError as exc:
            self._send_failed(c, exc, now)
        if k <= 0:
            return 0
        c.sent_bytes += k
        c.last_send = now
        whole = c.due if c.sent_bytes == end else int(np.searchsorted(c.ends, c.sent_bytes, side="right"))
        if whole > c.sent_msgs:
            c.sent_at[c.sent_msgs + 1: whole + 1] = now
            k = whole - c.sent_msgs
            c.sent_msgs = whole
            return k
        return 0

    # (as the compiled generator's, which kept them)
    _send_raw = LoadGenerator._send_raw
    _send_failed = LoadGenerator._send_failed
    _after_sending = LoadGenerator._after_sending

    # ------------------------------------------------------------ receiving

    def _receive(self, c: _RefConn, now: int) -> int:
        try:
            frames = c.reader.receive(c.sock)
        except ConnectionClosed as exc:
            raise LoadError(f"session {c.spec.session_id}: the gateway closed the connection ({exc})") from None
        except OSError as exc:
            raise LoadError(f"session {c.spec.session_id}: {exc}") from None
        count = len(frames)
        if count:
            self._decode(c, frames.buf, frames.rows[:, 0], now)
        return count

    def _decode(self, c: _RefConn, buf: np.ndarray, p: np.ndarray, now: int) -> None:
        """One batch of a session's responses (``p``: where each payload starts in ``buf``)."""
        t = _u16(buf, p + 2)
        cls = _CLASS[t]
        count = np.bincount(cls, minlength=_C_SESSION + 1).tolist()
        if count[_C_SESSION]:
            self._session_messages(c, buf, p[cls == _C_SESSION], t[cls == _C_SESSION])
        # every frame's clOrdId at once (junk for classes without one, never used); one not
        # ours, which cannot happen, would land on the views' padding
        cl = _u64(buf, p + _CL_AT[t])
        np.minimum(np.maximum(cl, 0, out=cl), c.limit, out=cl)
        if count[_C_ACCEPTED] + count[_C_REJECTED] + count[_C_CANCEL_REJ]:
            self._ack(c, cl[_IS_ACK[cls]], now)
        if count[_C_ACCEPTED]:
            sel = cls == _C_ACCEPTED
            accepted = cl[sel]
            c.order_id[accepted] = _u64(buf, p[sel] + _ACC_OID)
            passive = accepted[_IS_PASSIVE[c.kinds[accepted]]]
            c.fifo[c.tail: c.tail + len(passive)] = passive
            c.tail += len(passive)
        if count[_C_REJECTED]:
            sel = cls == _C_REJECTED
            self._end(c, cl[sel])
            self._count_rejects(_u16(buf, p[sel] + _REJ_REASON))
        if count[_C_CANCEL_REJ]:
            sel = cls == _C_CANCEL_REJ
            self._count_rejects(_u16(buf, p[sel] + _CRJ_REASON))
        if count[_C_CANCELED]:
            # carries the canceled order's clOrdId: a user cancel acknowledges the cancel sent for it
            sel = cls == _C_CANCELED
            canceled = cl[sel]
            self._end(c, canceled)
            cancels = c.cancel_of[canceled[buf[p[sel] + _CAN_REASON] == _USER_CANCEL]]
            self._ack(c, cancels[cancels > 0], now)
        if count[_C_TRADE]:
            sel = cls == _C_TRADE
            self._trades(c, buf, p[sel], cl[sel], now)

    def _count_rejects(self, reasons: np.ndarray) -> None:
        np.add.at(self.rejects, reasons, 1)

    def _trades(self, c: _RefConn, buf: np.ndarray, p: np.ndarray, taker_cl: np.ndarray, now: int) -> None:
        sid = c.spec.session_id
        taker = _u32(buf, p + _TR["takerSessionId"]) == sid
        maker = _u32(buf, p + _TR["makerSessionId"]) == sid
        signed = _u64(buf, p + _TR["qty"]) * np.where(buf[p + _TR["aggressorSide"]] == _BUY, 1, -1)
        c.position += int(signed[taker].sum()) - int(signed[maker].sum())
        mine = taker_cl[taker]
        self.trades += len(mine)  # every Trade once: on its taker's session
        mine = mine[c.fill_at[mine] < 0]
        c.fill_at[mine] = now
        done = maker & (_u64(buf, p + _TR["makerLeavesQty"]) == 0)
        if done.any():
            gone = _u64(buf, p[done] + _TR["makerClOrdId"])
            self._end(c, np.minimum(np.maximum(gone, 0, out=gone), c.limit, out=gone))

    def _ack(self, c: _RefConn, cl: np.ndarray, now: int) -> None:
        fresh = cl[c.ack_at[cl] < 0]
        if len(fresh):
            c.ack_at[fresh] = now
            self.acked += len(fresh)
            if self.progress is not None:
                self._window.append(now - c.intended[fresh])

    def _session_messages(self, c: _RefConn, buf: np.ndarray, p: np.ndarray, t: np.ndarray) -> None:
        for at, tid in zip(p.tolist(), t.tolist()):
            if tid == _T_TERMINATE:
                d = m.Terminate.decode_body(buf, at)
                raise LoadError(f"session {c.spec.session_id} terminated by the gateway: "
                                f"{d['code'].name}: {d['reason']}")
            if tid == _T_NOT_APPLIED:
                self.not_applied += int(m.NotApplied.decode_body(buf, at)["count"])
            # Sequence: the server's keepalive; its numbering is of no use to the generator

    # ------------------------------------------------------------ the run
    # (as the compiled generator's, which kept them: they read only the state both keep)
    done = LoadGenerator.done
    late = LoadGenerator.late
    run = LoadGenerator.run

    def _report(self, now: int) -> None:
        assert self.schedule is not None
        t_prev, acked_prev = self._reported
        rate = (self.acked - acked_prev) * NS / max(1, now - t_prev)
        p99 = float("nan")
        if self._window:
            p99 = float(np.percentile(np.concatenate(self._window), 99)) / 1000
        sent = sum(c.sent_msgs for c in self.conns)
        assert self.progress is not None
        self.progress(f"sent {sent:>10,}  acked {self.acked:>10,}  {rate:>10,.0f}/s  ack p99 {p99:>10,.0f} µs")
        self._window.clear()
        self._reported = (now, self.acked)
        self._next_report = now + NS



# ---------------------------------------------------------------------------- a fake exchange

_NEW_ORDER, _CANCEL_ORDER = m.NewOrder.template_id, m.CancelOrder.template_id
_REASON_VALUES = [int(v) for v in m.RejectReason.__members__.values()] + [999, 65535]
_OTHER_CANCELS = [int(v) for k, v in m.CancelReason.__members__.items() if k != "User"]
_OUTSIDE = 99  # a session that is not the generator's
_UNKNOWN = 4242  # a template id the generator does not know


def _with(message: bytes, offset: int, value: int, size: int) -> bytes:
    """``message`` with the field at ``offset`` (``size`` bytes, little-endian) set to ``value``."""
    b = bytearray(message)
    b[offset:offset + size] = value.to_bytes(size, "little", signed=value < 0)
    return bytes(b)


class Exchange:
    """One run's exchange, seeded: answers what each session sends (by the rules in the
    module's text) and holds every answer back a random while, in its session's order."""

    def __init__(self, specs: Sequence[SessionSpec], seed: int, *, delay_us: int = 3000, p_reject: float = 0.1,
                 quiet: bool = False) -> None:
        self.specs = list(specs)
        self.rng = random.Random(seed)
        self.delay_us = delay_us
        self.p_reject = p_reject
        self.readers = [FrameReader(1 << 12) for _ in specs]
        self.received = [bytearray() for _ in specs]  # every byte each session sent
        self.queue: list[list[tuple[int, bytes]]] = [[] for _ in specs]  # (release time, frame)
        self.out = [bytearray() for _ in specs]  # released, to be read
        self.book: dict[int, tuple[int, int, int]] = {}  # orderId -> (session, clOrdId, side) resting
        self.next_oid = 1000
        self.now = 0
        self.quiet = quiet  # only answers: no noise, no responses naming no order of the run
        # a response naming no order of the run: clOrdId 0, and one past the last
        if not quiet:
            for s in range(len(specs)):
                for cl in (0, 1 << 40):
                    self.emit(s, m.OrderAccepted.encode(orderId=1, clOrdId=cl, sessionId=specs[s].session_id,
                                                        side="Buy", price=1, qty=1))

    def emit(self, s: int, message: bytes, delay_us: int | None = None) -> None:
        q = self.queue[s]
        lag = self.rng.randrange(self.delay_us + 1) if delay_us is None else delay_us
        at = max(q[-1][0] if q else 0, self.now + lag * US)
        q.append((at, header(len(message)) + message))

    def release(self, now: int) -> None:
        self.now = now
        for s, q in enumerate(self.queue):
            k = 0
            while k < len(q) and q[k][0] <= now:
                self.out[s] += q[k][1]
                k += 1
            del q[:k]

    def take(self, s: int, data: bytes) -> None:
        self.received[s] += data
        frames = self.readers[s].feed(data)
        for i in range(len(frames)):
            self.answer(s, m.SCHEMA.decode(frames.payload(i)))
        if not self.quiet:
            self.noise(s)

    def noise(self, s: int) -> None:
        """What the gateway sends besides answers: keepalives, NotApplied, frames of other
        kinds, other cancels, trades of resting orders against outside takers."""
        r, sid = self.rng, self.specs[s].session_id
        x = r.random()
        if x < 0.05:
            self.emit(s, m.Sequence.encode(nextSeqNo=r.randrange(1, 1 << 30)))
        elif x < 0.08:
            self.emit(s, m.NotApplied.encode(fromSeqNo=r.randrange(1, 100), count=r.randrange(1, 5)))
        elif x < 0.10:
            body = bytes(r.randrange(256) for _ in range(r.randrange(0, 120)))
            block = r.randrange(0, 200).to_bytes(2, "little")
            self.emit(s, block + _UNKNOWN.to_bytes(2, "little") + b"\0" * 4 + body)
        elif x < 0.14:
            mine = [oid for oid, (ss, _, _) in self.book.items() if ss == s]
            if mine:
                oid = r.choice(mine)
                _, cl, side = self.book.pop(oid)
                if r.random() < 0.5:
                    self.emit(s, _with(m.OrderCanceled.encode(orderId=oid, clOrdId=cl, sessionId=sid,
                                                              reason="KillSwitch", canceledQty=1),
                                       K.CAN_REASON, r.choice(_OTHER_CANCELS), 1))
                else:  # an outside taker fills it
                    self.trade(None, 0, 3 - side, oid, cl, s, leaves=0)
        elif x < 0.16:
            cl = r.choice([0, -5, 1 << 50])
            if r.random() < 0.5:
                self.emit(s, m.OrderCanceled.encode(orderId=7, clOrdId=cl & ((1 << 64) - 1), sessionId=sid,
                                                    reason="Expired", canceledQty=1))
            else:
                self.emit(s, m.Trade.encode(qty=1, price=1, takerClOrdId=cl & ((1 << 64) - 1), makerClOrdId=3,
                                            takerSessionId=sid, makerSessionId=_OUTSIDE, aggressorSide="Sell",
                                            takerOrderId=1, makerLeavesQty=1))

    def trade(self, taker_s: int | None, taker_cl: int, side: int, maker_oid: int, maker_cl: int, maker_s: int | None,
              leaves: int) -> None:
        r = self.rng
        qty = r.choice([1, 1, 1, 2, 3])
        taker_sid = self.specs[taker_s].session_id if taker_s is not None else _OUTSIDE
        maker_sid = self.specs[maker_s].session_id if maker_s is not None else _OUTSIDE
        msg = m.Trade.encode(qty=qty, price=50_000, takerClOrdId=taker_cl, makerClOrdId=maker_cl,
                             takerSessionId=taker_sid, makerSessionId=maker_sid, aggressorSide=side,
                             takerOrderId=self.next_oid, makerOrderId=maker_oid, makerLeavesQty=leaves,
                             tradeId=r.randrange(1 << 30))
        for s in {x for x in (taker_s, maker_s) if x is not None}:
            self.emit(s, msg)

    def answer(self, s: int, d: Any) -> None:
        r, sid = self.rng, self.specs[s].session_id
        if d.name == "NewOrder":
            cl = d["clOrdId"]
            if r.random() < self.p_reject:
                reason = r.choice(_REASON_VALUES)
                self.emit(s, _with(m.OrderRejected.encode(clOrdId=cl, sessionId=sid, reason="BadTick"),
                                   K.REJ_REASON, reason, 2))
                return
            self.next_oid += 1
            oid = self.next_oid
            self.emit(s, m.OrderAccepted.encode(orderId=oid, clOrdId=cl, sessionId=sid, side=d["side"],
                                                price=d["price"], qty=1))
            side = int(d["side"])
            if d["timeInForce"] != m.TimeInForce.IOC:
                self.book[oid] = (s, cl, side)
                return
            makers = [o for o, (_, _, sd) in self.book.items() if sd != side]
            x = r.random()
            if makers and x < 0.6:  # against one of the sessions' own resting orders (its own, even)
                o = r.choice(makers)
                ms, mcl, _ = self.book[o]
                leaves = r.choice([0, 0, 1])
                if not leaves:
                    del self.book[o]
                self.trade(s, cl, side, o, mcl, ms, leaves)
            elif x < 0.85:  # against an outside maker, sometimes two of them
                self.trade(s, cl, side, 5, 77, None, r.choice([0, 1]))
                if r.random() < 0.3:
                    self.trade(s, cl, side, 6, 78, None, 0)
            else:
                self.emit(s, m.OrderCanceled.encode(orderId=oid, clOrdId=cl, sessionId=sid, reason="IocRemainder",
                                                    canceledQty=1))
        elif d.name == "CancelOrder":
            oid, orig = d["orderId"], d["origClOrdId"]
            if oid in self.book and self.book[oid][0] == s and r.random() < 0.9:
                assert self.book[oid][1] == orig
                del self.book[oid]
                self.emit(s, m.OrderCanceled.encode(orderId=oid, clOrdId=orig, sessionId=sid, reason="User",
                                                    canceledQty=1))
            else:
                reason = r.choice([int(m.RejectReason.UnknownOrder)] * 4 + _REASON_VALUES)
                self.emit(s, _with(m.CancelRejected.encode(clOrdId=d["clOrdId"], reason="UnknownOrder",
                                                           sessionId=sid, refTemplateId=_CANCEL_ORDER),
                                   K.CRJ_REASON, reason, 2))
        elif d.name == "Sequence":
            pass
        else:
            raise AssertionError(f"the generator sent {d.name}")


class FakeSocket:
    """A session's end of the fake exchange: a send takes all, part or none of what it is
    given; a read hands back what was released, cut at a random byte."""

    def __init__(self, ex: Exchange, s: int, rng: random.Random, *, partial: bool = True) -> None:
        self.ex, self.s, self.rng, self.partial = ex, s, rng, partial

    def send(self, data: Any) -> int:
        data = bytes(data)
        if self.partial:
            x = self.rng.random()
            if x < 0.1:
                raise BlockingIOError
            if x < 0.4:
                data = data[:self.rng.randrange(1, len(data) + 1)]
        self.ex.take(self.s, data)
        return len(data)

    def sendall(self, data: Any) -> None:
        self.ex.take(self.s, bytes(data))

    def setblocking(self, flag: bool) -> None:
        pass

    def recv_into(self, view: Any, n: int = 0) -> int:
        out = self.ex.out[self.s]
        if not out:
            raise BlockingIOError
        k = min(len(view), n or len(view), len(out), self.rng.choice([1, 2, 5, 13, 64, 100, 200, 1000, 1 << 20]))
        view[:k] = out[:k]
        del out[:k]
        return k


class Clock:
    def __init__(self) -> None:
        self.t = 0

    def __call__(self) -> int:
        return self.t


@dataclass
class Side:
    """One implementation with its own flow, exchange, sockets and clock."""

    gen: Any
    ex: Exchange
    socks: list[FakeSocket]
    clock: Clock
    lines: list[str] = field(default_factory=list)


def sides(seed: int, *, sessions: int = 3, orders: int = 1500, rate: float = 20_000.0, flow_live: int = MAX_LIVE,
          max_live: int = MAX_LIVE, max_position: int = MAX_POSITION, keepalive_ms: int = KEEPALIVE_MS,
          read_size: int = 1 << 20, progress: bool = False, partial: bool = True, **exchange: Any
          ) -> tuple[Side, Side]:
    specs = [SessionSpec(10 + 7 * s, "x", 1 + s) for s in range(sessions)]
    out = []
    for impl in (L.LoadGenerator, NumpyReference):
        flow = L.make_flow(orders, specs, price=50_000, seed=seed, max_live=flow_live)
        ex = Exchange(specs, seed, **exchange)
        rng = random.Random(seed + 1)
        socks = [FakeSocket(ex, s, rng, partial=partial) for s in range(sessions)]
        clock = Clock()
        lines: list[str] = []
        gen = impl(flow, socks, rate, clock=clock, first_seq=[3 + s for s in range(sessions)],
                   keepalive_ms=keepalive_ms, max_live=max_live, max_position=max_position, read_size=read_size,
                   progress=lines.append if progress else None)
        gen.start(t0_ns=0)
        out.append(Side(gen, ex, socks, clock, lines))
    return out[0], out[1]


def step(a: Side, b: Side, t: int, readable: Sequence[int] | None = None) -> None:
    """One duty cycle of each at ``t`` (reading only the sessions in ``readable`` if given)."""
    for side in (a, b):
        side.clock.t = t
        side.ex.release(t)
        side.gen.cycle(None if readable is None else [side.socks[s] for s in readable])


def fifo(side: Side, s: int) -> list[int]:
    gen = side.gen
    if isinstance(gen, NumpyReference):
        c = gen.conns[s]
        return c.fifo[c.head:c.tail].tolist()
    w = gen.sess[s]
    base = int(w[K.S_FIFO_BASE])
    return gen.fifo[base + int(w[K.S_FIFO_HEAD]): base + int(w[K.S_FIFO_TAIL])].tolist()


def assert_same(a: Side, b: Side, where: str = "") -> None:
    new, ref = a.gen, b.gen
    for name in ("ack_at", "fill_at", "sent_at", "order_id", "cancel_of", "alive"):
        x, y = new.per_order(name), ref.per_order(name)
        if not np.array_equal(x, y):
            bad = np.flatnonzero(x != y)[:5].tolist()
            raise AssertionError(f"{where}: {name} differs at orders {bad}: {x[bad].tolist()} != {y[bad].tolist()}")
    assert new.due == ref.due, where
    assert (new.acked, new.trades, new.not_applied, new.cancels_without_target, new.leaned, new.demoted) == (
        ref.acked, ref.trades, ref.not_applied, ref.cancels_without_target, ref.leaned, ref.demoted), where
    assert np.array_equal(new.rejects, ref.rejects), where
    for s, (c, r) in enumerate(zip(new.conns, ref.conns)):
        assert (c.position, c.sent_bytes, c.due_bytes, c.sent_msgs, c.due, c.passive_ended, c.last_send) == (
            r.position, r.sent_bytes, r.due_bytes, r.sent_msgs, r.due, r.passive_ended, r.last_send), (where, s)
        assert fifo(a, s) == fifo(b, s), (where, s)
        assert a.ex.received[s] == b.ex.received[s], (where, s)  # every byte sent, patches included
    assert a.lines == b.lines, where


def drive(a: Side, b: Side, seed: int, until_ms: int, *, subsets: bool = True) -> int:
    """Duty cycles at random times (a few µs to several ms apart) until ``until_ms``, some
    reading only some sessions; both compared after each. Returns how many."""
    rng = random.Random(seed + 2)
    S = len(a.socks)
    t = cycles = 0
    while t < until_ms * MS:
        t += rng.choice([0, 1, 20, 150, 200, 200, 300, 1000, 4000, 12_000]) * US
        readable = None
        if subsets and rng.random() < 0.3:
            readable = [s for s in range(S) if rng.random() < 0.5]
        step(a, b, t, readable)
        assert_same(a, b, f"seed {seed}, cycle {cycles} at {t / MS:.3f} ms")
        cycles += 1
    return cycles


# ---------------------------------------------------------------------------- the duty cycle


@pytest.mark.parametrize("seed", range(6))
def test_the_compiled_duty_cycle_does_what_the_numpy_one_did(seed: int) -> None:
    # small caps and a slow exchange, so that every rule comes into play: cancels without a
    # target, passive orders demoted past max_live, aggressive ones leaning
    sessions = (3, 1, 2, 3, 4, 3)[seed]
    a, b = sides(seed, sessions=sessions, orders=1200, rate=20_000.0, flow_live=(10, 40, 6, 40, 8, 3)[seed],
                 max_live=(4, 40, 3, 8, 5, 2)[seed], max_position=(2, 5, 1, 3, 0, 2)[seed],
                 keepalive_ms=(2, 1000, 3, 1000, 2, 5)[seed], read_size=(1 << 20, 300, 100, 2000, 1 << 16, 250)[seed],
                 progress=seed % 2 == 0, delay_us=(3000, 500, 8000, 20_000, 2000, 300)[seed])
    drive(a, b, seed, until_ms=400)
    # everything answered and read: the figures agree too
    t, cycles = 400 * MS, 0
    while not (a.gen.done() and b.gen.done()) and cycles < 20_000:
        t += 200 * US
        cycles += 1
        step(a, b, t)
    assert_same(a, b, "drained")
    ra, rb = a.gen.result(), L.LoadGenerator.result(b.gen)
    assert ra == rb
    assert ra["acked"] == ra["orders"] == 1200 and a.gen.done() and b.gen.done()


def test_the_rules_are_exercised_by_those_runs() -> None:
    seen = {"cancels_without_target": 0, "leaned": 0, "demoted": 0, "trades": 0, "not_applied": 0}
    reasons: set[int] = set()
    positions = set()
    for seed in range(6):
        a, b = sides(seed, sessions=3, orders=900, flow_live=6, max_live=(4, 3, 2, 5, 3, 4)[seed], max_position=1,
                     delay_us=5000)
        drive(a, b, seed, until_ms=200, subsets=False)
        for key in seen:
            seen[key] += getattr(a.gen, key)
        reasons |= set(np.flatnonzero(a.gen.rejects).tolist())
        positions |= {c.position for c in a.gen.conns}
    assert all(seen.values()), seen
    assert {999, 65535, int(m.RejectReason.UnknownOrder)} <= reasons and len(reasons) > 20
    assert min(positions) < 0 < max(positions)


def hand_stream(side: Side, s: int) -> bytes:
    """Session ``s``'s answers to its due orders, one of every kind the generator reads: an
    acceptance, a refusal, a trade as taker, a fill as maker, cancels of every reason,
    refused cancels, session messages and a frame of a kind it does not know."""
    gen, sid = side.gen, side.ex.specs[s].session_id
    kinds = gen.flow.kinds[s::gen.S][:gen.conns[s].due]
    out = [m.Sequence.encode(nextSeqNo=5), m.NotApplied.encode(fromSeqNo=2, count=3)]
    for j, kind in enumerate(kinds.tolist()):
        cl = j + 1
        if kind == CANCEL:
            out.append(_with(m.CancelRejected.encode(clOrdId=cl, reason="UnknownOrder", sessionId=sid), K.CRJ_REASON,
                             (8, 999, 0)[j % 3], 2))
        elif j % 5 == 4:
            out.append(_with(m.OrderRejected.encode(clOrdId=cl, sessionId=sid, reason="BadTick"), K.REJ_REASON, 27, 2))
        else:
            out.append(m.OrderAccepted.encode(orderId=500 + cl, clOrdId=cl, sessionId=sid, side="Buy", price=1, qty=1))
            if kind == IOC:
                for _ in range(2):  # a second fill is no news
                    out.append(m.Trade.encode(qty=2, price=1, takerClOrdId=cl, makerClOrdId=9, takerSessionId=sid,
                                              makerSessionId=_OUTSIDE, aggressorSide="Sell", makerLeavesQty=1))
            elif j % 3 == 1:
                out.append(m.Trade.encode(qty=1, price=1, takerClOrdId=9, makerClOrdId=cl, takerSessionId=_OUTSIDE,
                                          makerSessionId=sid, aggressorSide="Buy", makerLeavesQty=0))
            elif j % 3 == 2:
                out.append(m.OrderCanceled.encode(orderId=500 + cl, clOrdId=cl, sessionId=sid, reason="MassCancel",
                                                  canceledQty=1))
        if j == 2:
            out.append(b"\x10\x00" + _UNKNOWN.to_bytes(2, "little") + b"\x00" * 20)
    return b"".join(header(len(x)) + x for x in out)


def test_a_stream_cut_at_every_byte_is_taken_alike() -> None:
    # 16 orders sent, then each session's answers (hand_stream) read in two pieces cut at
    # every byte; then the next orders go out, their cancels' targets taken from what was read
    def pair() -> tuple[Side, Side]:
        a, b = sides(11, sessions=2, orders=60, rate=1000.0, flow_live=4, max_live=3, max_position=0,
                     partial=False, quiet=True)
        for side in (a, b):
            side.ex.take = lambda s, data, ex=side.ex: ex.received[s].__iadd__(data)  # type: ignore # no answers
            for sock in side.socks:
                sock.recv_into = _whole_reads(sock)  # type: ignore[method-assign]
        step(a, b, 15 * MS, readable=[])
        return a, b

    a, b = pair()
    whole = [hand_stream(a, s) for s in range(2)]
    assert whole == [hand_stream(b, s) for s in range(2)]
    assert {int.from_bytes(x, "little") for x in _templates(whole[0])} == {
        K.T_ACCEPTED, K.T_REJECTED, K.T_TRADE, K.T_CANCELED, K.T_CANCEL_REJ, K.T_SEQUENCE, K.T_NOT_APPLIED, _UNKNOWN}
    for cut in range(len(whole[0]) + 1):
        a, b = pair()
        for side in (a, b):
            side.ex.out[0] += whole[0][:cut]
            side.ex.out[1] += whole[1]
        step(a, b, 15 * MS)
        assert_same(a, b, f"cut {cut}")
        for side in (a, b):
            side.ex.out[0] += whole[0][cut:]
        step(a, b, 15 * MS)
        assert_same(a, b, f"cut {cut}, the rest")
        step(a, b, 59 * MS)  # the rest of the orders: cancels take their targets from what was read
        assert_same(a, b, f"cut {cut}, then")
    assert a.gen.not_applied == 6 and a.gen.trades and a.gen.demoted and a.gen.cancels_without_target
    assert (a.gen.per_order("cancel_of") > 0).any()  # targets found in what was read


def _templates(stream: bytes) -> list[bytes]:
    out, at = [], 0
    while at < len(stream):
        out.append(stream[at + 8: at + 10])
        at += int.from_bytes(stream[at:at + 4], "big")
    return out


def _whole_reads(sock: FakeSocket) -> Callable[..., int]:
    def recv_into(view: Any, n: int = 0) -> int:
        out = sock.ex.out[sock.s]
        if not out:
            raise BlockingIOError
        k = min(len(view), n or len(view), len(out))
        view[:k] = out[:k]
        del out[:k]
        return k

    return recv_into


def test_reads_of_one_byte_and_a_bounded_buffer() -> None:
    # read_size 1: every frame arrives a byte at a time; read_size 3000: frames straddle the
    # end of the buffer's read room, so the unfinished one moves to the front
    for read_size in (1, 3000):
        a, b = sides(4, sessions=2, orders=300, read_size=read_size, delay_us=100)
        drive(a, b, 4, until_ms=30)


# ---------------------------------------------------------------------------- the rare cases


def test_a_terminate_stops_the_run_before_anything_else_of_its_batch() -> None:
    a, b = sides(5, sessions=2, orders=60, rate=1000.0, partial=False, delay_us=0, quiet=True)
    step(a, b, 30 * MS, readable=[])
    for side in (a, b):
        for sock in side.socks:
            sock.recv_into = _whole_reads(sock)  # type: ignore[method-assign]
        side.ex.release(30 * MS)
        side.ex.emit(1, m.NotApplied.encode(fromSeqNo=1, count=4), delay_us=0)
        side.ex.emit(1, m.Terminate.encode(code="SlowConsumer", reason="too slow"), delay_us=0)
        side.ex.emit(1, m.NotApplied.encode(fromSeqNo=1, count=100), delay_us=0)
        side.ex.release(30 * MS)
    for side in (a, b):
        with pytest.raises(LoadError, match="session 17 terminated by the gateway: SlowConsumer: too slow"):
            side.gen.cycle()
    # session 0's answers were taken; of session 1's batch only the NotApplied before the Terminate
    assert_same(a, b, "terminated")
    assert a.gen.not_applied == 4 and a.gen.per_order("ack_at")[0] >= 0 and a.gen.per_order("ack_at")[1] < 0


@pytest.mark.parametrize("bad, status", [((3).to_bytes(4, "big") + b"\xeb\x50", sofh.SCAN_TOO_SHORT),
                                         ((5000).to_bytes(4, "big") + b"\xeb\x50", sofh.SCAN_TOO_LONG),
                                         ((20).to_bytes(4, "big") + b"\x5b\xe0", sofh.SCAN_WRONG_ENCODING)])
def test_a_frame_without_a_boundary_is_the_frame_readers_error(bad: bytes, status: int) -> None:
    a, b = sides(6, sessions=1, orders=20, rate=1000.0, partial=False, delay_us=0, quiet=True)
    step(a, b, 19 * MS, readable=[])
    for side in (a, b):
        side.ex.release(19 * MS)
        at = len(side.ex.out[0])  # the stream offset of the bad header
        side.ex.out[0] += bad + b"\0" * 30
        side.socks[0].recv_into = _whole_reads(side.socks[0])  # type: ignore[method-assign]
    errors = []
    for side in (a, b):
        with pytest.raises(FramingError) as caught:
            side.gen.cycle()  # the numpy path takes the frames before it, then fails on the next read
            side.gen.cycle()
        errors.append(caught.value)
    x, y = errors
    assert (x.status, x.at, x.declared_length, x.encoding) == (y.status, y.at, y.declared_length, y.encoding)
    assert x.status == status and x.at == at
    assert (x.declared_length, x.encoding) == (int.from_bytes(bad[:4], "big"), int.from_bytes(bad[4:], "big"))
    assert_same(a, b, "framing error")
    with pytest.raises(FramingError):
        a.gen.cycle()  # and again


def test_a_closed_connection_names_what_was_pending() -> None:
    for partial_frame in (b"", m.Sequence.encode(nextSeqNo=1)[:5]):
        a, b = sides(7, sessions=1, orders=10, rate=1000.0, partial=False, delay_us=0, quiet=True)
        step(a, b, 9 * MS, readable=[])
        messages = []
        for side in (a, b):
            side.ex.release(9 * MS)
            side.ex.out[0] += (header(16) + partial_frame) if partial_frame else b""
            side.socks[0].recv_into = _whole_reads(side.socks[0])  # type: ignore[method-assign]
            side.gen.cycle()
            side.socks[0].recv_into = lambda view, n=0: 0  # type: ignore[method-assign]
            with pytest.raises(LoadError) as caught:
                side.gen.cycle()
            messages.append(str(caught.value))
        assert messages[0] == messages[1]
        assert ("inside a frame (11 bytes pending)" in messages[0]) == bool(partial_frame)


def test_the_schedule_and_the_kernels_due_agree() -> None:
    rng = np.random.default_rng(3)
    for rate in (1.0, 7.7, 1000.0, 20_000.0, 149_999.0, 333_333.3):
        sched = Schedule(5000, rate, 12_345)
        times = [-1, 0, 1, 10 ** 15] + list(rng.integers(0, int(6000 / rate * 1e9), 300))
        times += [int(x) - 12_345 + d for x in sched.intended[::97] for d in (-1, 0, 1)]
        for d in times:
            assert K.due_at(sched.offset, sched.t0, sched.rate, 12_345 + int(d)) == sched.due(12_345 + int(d))


def test_the_layouts_compiled_in_are_the_schemas() -> None:
    for (name, fld), want in K.LAYOUT.items():
        layout = getattr(m, name)
        assert ((layout.template_id, layout.size) if fld is None else layout.offset(fld)) == want, (name, fld)
    assert K.MAX_FRAME == 1 << 12  # the generator's FrameReader had max_length 1 << 12
    L._check_kernel_layouts()


def test_a_hand_made_flow_is_laid_out_for_the_kernels() -> None:
    specs = [SessionSpec(1, "x", 1), SessionSpec(2, "y", 2)]
    made = L.make_flow(50, specs, seed=2)
    assert made.stream_bases() == [0, len(made.streams[0])]
    copy = Flow(made.sessions, made.kinds, made.mid, [bytes(x) for x in made.streams], made.ends)  # type: ignore[misc]
    assert copy.stream_bases() == [0, len(made.streams[0])]
    assert np.array_equal(copy.buffer, made.buffer)


# ---------------------------------------------------------------------------- warming up

_WARM_SCRIPT = r"""
import random, socket, sys
import numpy as np
from ringex.engine.wire import messages as m
from ringex.gateways.sofh import FrameReader, header
from ringex.tools import load as L, load_kernel as K

KERNELS = (K.make_due, K.mark_sent, K.receive)

def made():
    return [(len(f.signatures), len(f.nopython_signatures)) for f in KERNELS]

# run_load warms the kernels up before any session logs on
seen = []
def connect(*args, **kw):
    seen.append(made())
    raise L.LoadError("stop here")
L._connect = connect
try:
    L.run_load("127.0.0.1", 1, "1:a:1", rate=100, duration=0.1)
except L.LoadError:
    pass
assert seen and all(n for n, _ in seen[0]), seen
warm = seen[0]

# a run's duty cycles over real sockets, every kind of answer
specs = [L.SessionSpec(i + 1, "x", i + 1) for i in range(3)]
pairs = [socket.socketpair() for _ in specs]
mine = [p[0] for p in pairs]
for sock in mine:
    sock.setblocking(False)
lines = []
gen = L.LoadGenerator(L.make_flow(600, specs, seed=1, max_live=5), mine, 20_000.0, max_live=3, max_position=0,
                      keepalive_ms=2, read_size=64, progress=lines.append)
gen.start()
readers = [FrameReader(1 << 12) for _ in specs]
oid = 0
end = gen.schedule.next_time(gen.n) + 5_000_000_000
import time
cycles = 0
while not gen.done() and time.monotonic_ns() < end:
    cycles += 1
    if cycles % 50 == 0:
        gen._next_report = 0  # a progress line now
    gen.cycle()
    for s, (_, peer) in enumerate(pairs):
        peer.setblocking(False)
        try:
            data = peer.recv(1 << 16)
        except BlockingIOError:
            continue
        out = b""
        frames = readers[s].feed(data)
        for i in range(len(frames)):
            d = m.SCHEMA.decode(frames.payload(i))
            sid = specs[s].session_id
            if d.name == "NewOrder":
                oid += 1
                out += header(97) + m.OrderAccepted.encode(orderId=oid, clOrdId=d["clOrdId"], sessionId=sid,
                                                           side=d["side"], price=1, qty=1)
                if d["timeInForce"] == m.TimeInForce.IOC:
                    out += header(125) + m.Trade.encode(qty=1, price=1, takerClOrdId=d["clOrdId"], takerSessionId=sid,
                                                        makerSessionId=99 if oid % 2 else sid, makerClOrdId=1,
                                                        aggressorSide=d["side"])
            elif d.name == "CancelOrder":
                if d["orderId"]:
                    out += header(69) + m.OrderCanceled.encode(orderId=d["orderId"], clOrdId=d["origClOrdId"],
                                                               sessionId=sid, reason="User", canceledQty=1)
                else:
                    out += header(72) + m.CancelRejected.encode(clOrdId=d["clOrdId"], reason="UnknownOrder",
                                                                sessionId=sid)
        out += header(16) + m.Sequence.encode(nextSeqNo=1) + header(20) + m.NotApplied.encode(fromSeqNo=1, count=1)
        out += header(64) + m.OrderRejected.encode(clOrdId=0, reason="BadTick", sessionId=sid)
        peer.sendall(out)
    time.sleep(0.0002)
assert gen.done(), gen.result()
assert gen.leaned and gen.demoted and gen.trades and lines, gen.result()
pairs[0][1].sendall(header(73) + m.Terminate.encode(code="Finished", reason="bye"))
try:
    for _ in range(100_000):  # what is left of the answers first, 64 bytes a cycle
        gen.cycle()
    raise AssertionError("no Terminate")
except L.LoadError as exc:
    assert "terminated by the gateway: Finished: bye" in str(exc), exc
for a, b in pairs:
    a.close(); b.close()
assert made() == warm, (warm, made(), [f.signatures for f in KERNELS])
print("ok")
"""


def test_the_warm_up_compiles_what_the_duty_cycle_calls() -> None:
    """Every kernel call of a run (real sockets, every kind of answer, progress on) finds a
    version that ``run_load`` made before its first logon: none compiles in a duty cycle. In
    a fresh interpreter, so that no other test's calls have made them already."""
    done = subprocess.run([sys.executable, "-c", _WARM_SCRIPT], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-3000:]


# ---------------------------------------------------------------------------- the probe


def _sink(socks: list[Any], session_ids: list[int], theirs: list[Any]) -> None:
    """A forked process answering as the gateway would (OrderAccepted; for an IOC a Trade
    against an outside maker; a cancel's OrderCanceled(User), or CancelRejected when its
    target is unknown), until every socket is closed (``theirs``: the other ends, closed
    here at once, so that the generator's closing them ends the sink)."""
    import os
    import select
    import struct

    for sock in theirs:
        sock.close()

    accepted = bytearray(header(m.OrderAccepted.size) + m.OrderAccepted.encode(orderId=1, clOrdId=1, side="Buy",
                                                                              price=1, qty=1))
    trade = bytearray(header(m.Trade.size) + m.Trade.encode(qty=1, price=1, makerSessionId=_OUTSIDE))
    canceled = bytearray(header(m.OrderCanceled.size) + m.OrderCanceled.encode(reason="User", canceledQty=1))
    refused = bytearray(header(m.CancelRejected.size) + m.CancelRejected.encode(reason="UnknownOrder"))
    h = sofh.HEADER_LENGTH
    q, u4 = struct.Struct("<q"), struct.Struct("<I")
    acc_sid, can_sid, crj_sid = (x.offset("sessionId") for x in (m.OrderAccepted, m.OrderCanceled, m.CancelRejected))
    try:
        buffers = {s.fileno(): bytearray() for s in socks}
        index = {s.fileno(): i for i, s in enumerate(socks)}
        resting: dict[int, int] = {}
        oid = 0
        open_socks = list(socks)
        while open_socks:
            ready, _, _ = select.select(open_socks, [], [], 1.0)
            for sock in ready:
                data = sock.recv(1 << 16)
                if not data:
                    open_socks.remove(sock)
                    continue
                buf = buffers[sock.fileno()]
                buf += data
                sid = session_ids[index[sock.fileno()]]
                out = bytearray()
                at = 0
                while len(buf) - at >= h:
                    length = int.from_bytes(buf[at:at + 4], "big")
                    if len(buf) - at < length:
                        break
                    p = at + h
                    tid = int.from_bytes(buf[p + 2:p + 4], "little")
                    if tid == _NEW_ORDER:
                        cl = q.unpack_from(buf, p + 32)[0]
                        oid += 1
                        q.pack_into(accepted, h + K.ACC_CL, cl)
                        q.pack_into(accepted, h + K.ACC_ORDER_ID, oid)
                        u4.pack_into(accepted, h + acc_sid, sid)
                        out += accepted
                        if buf[p + K.NEW_TIF] == K.TIF_IOC:
                            q.pack_into(trade, h + K.TR_TAKER_CL, cl)
                            u4.pack_into(trade, h + K.TR_TAKER_SESSION, sid)
                            trade[h + K.TR_AGGRESSOR] = buf[p + K.NEW_SIDE]
                            out += trade
                        else:
                            resting[sid << 40 | oid] = cl
                    elif tid == _CANCEL_ORDER:
                        target = q.unpack_from(buf, p + K.CXL_ORDER_ID)[0]
                        orig = q.unpack_from(buf, p + K.CXL_ORIG_CL)[0]
                        if resting.pop(sid << 40 | target, None) is not None:
                            q.pack_into(canceled, h + K.CAN_CL, orig)
                            q.pack_into(canceled, h + m.OrderCanceled.offset("orderId"), target)
                            u4.pack_into(canceled, h + can_sid, sid)
                            out += canceled
                        else:
                            q.pack_into(refused, h + K.CRJ_CL, q.unpack_from(buf, p + 32)[0])
                            u4.pack_into(refused, h + crj_sid, sid)
                            out += refused
                    at += length
                del buf[:at]
                if out:
                    sock.sendall(out)
    finally:
        os._exit(0)


def probe(runs: int = 5, rate: float = 20_000.0, seconds: float = 2.0, sessions: int = 3) -> dict[str, list[dict]]:
    """Each implementation ``runs`` times, alternating, at ``rate`` orders/s for ``seconds``
    over ``sessions`` socket pairs whose other ends a forked ``_sink`` serves: the
    generator's own CPU per duty cycle (``time.thread_time_ns`` around ``cycle``), its
    thread's CPU over the whole ``run`` (cycles, sleeps and polls) as a share of the wall
    time, the orders per cycle and the send lag."""
    import gc
    import multiprocessing
    import socket

    specs = [SessionSpec(1 + s, "x", 1 + s) for s in range(sessions)]
    out: dict[str, list[dict]] = {"numpy": [], "compiled": []}
    fork = multiprocessing.get_context("fork")
    for _ in range(runs):
        for name, impl in (("numpy", NumpyReference), ("compiled", L.LoadGenerator)):
            pairs = [socket.socketpair() for _ in specs]
            proc = fork.Process(target=_sink, args=([b for _, b in pairs], [x.session_id for x in specs],
                                                    [a for a, _ in pairs]))
            proc.start()
            try:
                for _, b in pairs:
                    b.close()
                mine = [a for a, _ in pairs]
                for a in mine:
                    a.setblocking(False)
                flow = L.make_flow(int(rate * seconds), specs, seed=1)
                gen = impl(flow, mine, rate)
                samples: list[int] = []
                cycle = gen.cycle

                def timed(readable: Any = None, cycle: Any = cycle, samples: list[int] = samples) -> int:
                    t = time.thread_time_ns()
                    work = cycle(readable)
                    samples.append(time.thread_time_ns() - t)
                    return work

                gen.cycle = timed
                gc.disable()
                cpu, wall = time.thread_time_ns(), time.monotonic_ns()
                completed = gen.run(drain_s=2.0)
                cpu, wall = time.thread_time_ns() - cpu, time.monotonic_ns() - wall
                gc.enable()
                r = L.LoadGenerator.result(gen)
                assert completed and r["unacked"] == 0, r
                cycles = np.array(samples) / 1000
                out[name].append({"cycle_us_p50": float(np.median(cycles)), "cycle_us_mean": float(cycles.mean()),
                                  "cycle_us_p99": float(np.percentile(cycles, 99)), "cycles": len(cycles),
                                  "orders_per_cycle": r["sent"] / len(cycles),
                                  "cpu_percent": 100 * cpu / wall, "send_lag_p50_us": r["send_lag_p50_us"],
                                  "send_lag_p99_us": r["send_lag_p99_us"], "ack_p50_us": r["ack_p50_us"],
                                  "ack_p99_us": r["ack_p99_us"]})
            finally:
                for a, _ in pairs:
                    a.close()
                proc.join(10)
                if proc.is_alive():
                    proc.kill()
                    proc.join()
    return out


if __name__ == "__main__":
    figures = probe(*(float(x) if "." in x else int(x) for x in sys.argv[1:2]))
    keys = list(figures["numpy"][0])
    title = f"median of {len(figures['numpy'])} runs"
    print(f"{title:<22}" + "".join(f"{k:>18}" for k in ("numpy", "compiled")))
    for key in keys:
        print(f"{key:<22}" + "".join(f"{float(np.median([r[key] for r in figures[name]])):>18.2f}"
                                     for name in ("numpy", "compiled")))
