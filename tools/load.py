"""``ringex load``: an open-loop load generator against the binary gateway.

What it measures, and how:

* **Coordinated omission first.** Order ``i`` has an *intended* send time ``t0 + i / rate``,
  fixed before the run starts. Every duty cycle sends every order whose intended time has
  come, and every latency is measured from that intended time, never from when the bytes
  actually left. A stall anywhere (the generator descheduled, a socket buffer full because
  the gateway stopped reading, the engine writing a snapshot) therefore shows up as latency
  on every order that should have gone out meanwhile, instead of as a pause that nobody
  measured (Gil Tene, "How NOT to measure latency"; wrk2 works the same way). The time each
  order really left is kept too (``send_lag_*``, ``ack_from_send_p99_us``), to tell a slow
  generator from a slow exchange.
* **Acknowledgement latency**: intended time to the first response about the order:
  ``OrderAccepted`` or ``OrderRejected`` for a ``NewOrder``; for a ``CancelOrder``, the
  ``OrderCanceled(User)`` of its target (that event carries the *target's* ``clOrdId``,
  docs/engine.md, so the generator maps it back through the cancel it sent) or the
  ``CancelRejected`` (which carries the cancel's own ``clOrdId``).
* **Fill latency**: for an aggressive (IOC) order, intended time to the first ``Trade`` whose
  ``takerClOrdId`` is that order.

The order flow (``make_flow``), seeded, the engine benchmark's kinds and proportions
(tools/bench_engine.py) on one instrument around ``price``: 60% passive GTC limits
Geometric(0.35) ticks (at least one) behind a mid that random-walks one tick at a time (kept
within 2% of ``price``, well inside the demo's 10% price band); 30% cancels of the
session's own earlier orders; 10% IOC limits Geometric(0.3) - 1 ticks through the mid. Every
quantity is 1. Orders go round-robin over the sessions (order ``i`` to session ``i % S``
with ``clOrdId = i // S + 1``, so a response maps back to its order by arithmetic), each
session trading its own account. Three departures from the engine benchmark keep a demo
account's balances from running out (10M USD and 100 BTC: a resting buy holds ~50k USD, a
resting sell 1 BTC), whatever the rate and the latency:

* a session keeps at most ``max_live`` (40) orders working: past that a passive draw
  becomes a cancel, so a long run settles at about 45% passive, 45% cancels, 10% IOC;
* a cancel's target is chosen when it is sent: the session's oldest acknowledged order not
  yet known to be gone (a cancel needs the engine's ``orderId``, which only the
  ``OrderAccepted`` tells). A cancel that finds none goes out with ``orderId`` 0 and is
  refused ``UnknownOrder`` (``cancels_without_target``), as is one whose target was filled
  meanwhile; and when acknowledgements lag so far that the session already has
  ``max_live`` orders working or on their way, a passive order goes out as IOC instead
  (it rests nothing and holds nothing: ``passive_sent_as_ioc``);
* once an account's position (from its own fills) is more than ``max_position`` (20) lots
  from where the run started, its aggressive orders lean against it: side flipped, price
  mirrored about their mid, as they are sent (``aggressive_leaned``), so the random walk
  of fills never spends the account's cash or coins.

How it stays fast in Python (150k orders/s offered from one process): the flow is
generated and SOFH-framed ahead of time into one byte stream per session; a duty cycle
(at most one every ``CYCLE_US``, 200 µs) hands each session's due bytes to one non-blocking
``send``; responses come in with one
``recv_into`` per session into a ``FrameReader`` buffer, are framed by the compiled
``sofh.scan`` and decoded in bulk with numpy (the template id at payload offset 2 indexes a
table of each frame's kind and its ``clOrdId``'s offset, from the schema's layouts);
per-order state lives in preallocated arrays that each session indexes by clOrdId
through a strided view; HdrHistograms are filled once at the end from those arrays. No
Python object is made per message on the hot path.

FIXP: each session logs on with ``ringex.gateways.client.Client.connect`` (Negotiate,
Establish), then the generator takes its socket over; it sends a ``Sequence`` keepalive when
a session has sent nothing for half its keepalive interval, ignores the server's
``Sequence``, stops with ``LoadError`` on a ``Terminate`` (naming its code and reason), and
at the end waits (bounded) for outstanding acknowledgements and terminates each session
(``Terminate(Finished)``; the demo sessions' cancel-on-disconnect removes what still rests).

    python -m ringex.tools.load --rate 20000 --duration 10 --hgrm out/ --json
"""

from __future__ import annotations

import argparse
import gc
import json
import select
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, NoReturn, Sequence

import numpy as np

from ringex.engine.wire import messages as m
from ringex.gateways.sofh import HEADER_LENGTH, ConnectionClosed, FrameReader, header
from ringex.tools.load_args import DEFAULT_SESSIONS, add_load_args, session_triples

__all__ = ["SessionSpec", "Flow", "Schedule", "LoadGenerator", "LoadError", "make_flow", "parse_sessions",
           "run_load", "add_args", "main"]

PASSIVE, CANCEL, IOC = 0, 1, 2
KIND_P = (0.6, 0.3, 0.1)  # the engine benchmark's mix
MID_RANGE = 0.02  # the mid's random walk stays within this fraction of the reference price
MAX_LIVE = 40  # working orders per session: ~2M USD or 40 BTC held at most
MAX_POSITION = 20  # lots an account may drift before its aggressive orders lean against it
KEEPALIVE_MS = 1000
# The shortest duty cycle. A cycle costs 100-300 µs of CPU on a small host whatever it carries
# (a send and a receive per session, ~30 µs each on loopback, and a few dozen numpy calls per
# batch at 1-3 µs each), so cycles that each carried one order would take a core from the
# exchange. Orders due within a cycle wait for it, and that wait is inside the latencies
# reported (at most this much, on average half).
CYCLE_US = 200.0
DRAIN_S = 5.0
NS = 1_000_000_000
HIST_MAX_US = 3600 * 1_000_000  # an hour: anything the bounded waits could ever see

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


class LoadError(RuntimeError):
    """The run could not go on: a session was refused, terminated or lost."""


@dataclass(frozen=True)
class SessionSpec:
    session_id: int
    credentials: str
    account: int


def parse_sessions(text: str) -> list[SessionSpec]:
    """``"1:demo-1:1,2:demo-2:2"`` (sessionId:credentials:account, comma-separated)."""
    return [SessionSpec(int(sid), credentials, account)
            for sid, credentials, account in session_triples(text, "sessionId:credentials:account", numbered=True,
                                                             credentials_required=True)]


# ---------------------------------------------------------------------------- the flow


def _framed_dtype(layout: Any) -> np.dtype:
    """A structured dtype over one SOFH frame holding ``layout``'s message."""
    base = layout.slot_dtype(layout.size)
    names = ["sofhLength", "sofhEncoding", *base.names]
    formats = [">u4", ">u2", *(base.fields[n][0] for n in base.names)]
    offsets = [0, 4, *(base.fields[n][1] + HEADER_LENGTH for n in base.names)]
    return np.dtype({"names": names, "formats": formats, "offsets": offsets,
                     "itemsize": layout.size + HEADER_LENGTH})


def _frames(layout: Any, count: int, **fixed: Any) -> np.ndarray:
    """``count`` framed copies of ``layout.encode(**fixed)``: the codec's own bytes (its
    defaults, enums and header), ready for the varying fields to be written over."""
    frame = header(layout.size) + layout.encode(**fixed)
    arr = np.empty(count, _framed_dtype(layout))
    arr.view(np.uint8).reshape(count, len(frame))[:] = np.frombuffer(frame, np.uint8)
    return arr


@dataclass
class Flow:
    """A pre-generated, pre-framed order flow: order ``i`` goes to session ``i % S`` as its
    ``i // S``-th message (``clOrdId = i // S + 1``)."""

    sessions: list[SessionSpec]
    kinds: np.ndarray  # (n,) int8: PASSIVE, CANCEL, IOC
    mid: np.ndarray  # (n,) int64: the mid each order was priced around
    streams: list[np.ndarray]  # per session: every frame, back to back (uint8)
    ends: list[np.ndarray]  # per session: where each frame ends in its stream (int64)

    @property
    def n(self) -> int:
        return int(self.kinds.shape[0])

    def local(self, s: int, kind: int) -> np.ndarray:
        """Session ``s``'s message numbers (0-based) of one kind."""
        return np.flatnonzero(self.kinds[s::len(self.sessions)] == kind)


def _kinds(orders: int, sessions: int, rng: np.random.Generator, max_live: int) -> np.ndarray:
    kind = rng.choice(3, size=orders, p=KIND_P).astype(np.int8)
    # A session's working count is a clamped walk, sequential by nature: a plain loop
    k = kind.tolist()
    live = [0] * sessions
    for i in range(orders):
        s = i % sessions
        if k[i] == PASSIVE:
            if live[s] >= max_live:
                k[i] = CANCEL
                live[s] -= 1
            else:
                live[s] += 1
        elif k[i] == CANCEL:
            if live[s] == 0:  # nothing to cancel: a passive order, as in the engine benchmark
                k[i] = PASSIVE
                live[s] += 1
            else:
                live[s] -= 1
    return np.array(k, np.int8)


def make_flow(orders: int, sessions: Sequence[SessionSpec], *, instrument: int = 1, price: int = 50_000,
              seed: int = 1, max_live: int = MAX_LIVE) -> Flow:
    """``orders`` orders, seeded, framed per session (see the module docstring)."""
    if orders < 1 or not sessions or price < 1 or max_live < 1:
        raise ValueError("need orders >= 1, a session, price >= 1 and max_live >= 1")
    S = len(sessions)
    rng = np.random.default_rng(seed)
    kind = _kinds(orders, S, rng, max_live)
    span = max(1, int(price * MID_RANGE))
    mid = np.clip(price + np.cumsum(rng.choice([-1, 0, 0, 0, 0, 0, 0, 0, 0, 1], size=orders)),
                  max(1, price - span), price + span).astype(np.int64)
    buy = rng.integers(0, 2, size=orders) == 0
    passive_off = rng.geometric(0.35, size=orders)  # >= 1 tick away: never crosses its own mid
    ioc_off = rng.geometric(0.3, size=orders) - 1  # 0.. ticks through the mid
    passive = kind == PASSIVE
    off = np.where(passive, -passive_off, ioc_off)
    px = np.maximum(1, np.where(buy, mid + off, mid - off))
    clordid = np.arange(orders, dtype=np.int64) // S + 1

    streams, ends = [], []
    for s, spec in enumerate(sessions):
        sel = slice(s, orders, S)
        ks = kind[sel]
        is_new = ks != CANCEL
        new = _frames(m.NewOrder, int(is_new.sum()), sessionId=spec.session_id, account=spec.account,
                      instrument=instrument, side="Buy", ordType="Limit", timeInForce="GTC", qty=1, price=1, clOrdId=1)
        new["clOrdId"] = clordid[sel][is_new]
        new["price"] = px[sel][is_new]
        new["side"] = np.where(buy[sel][is_new], _BUY, _SELL)
        new["timeInForce"] = np.where(ks[is_new] == IOC, int(m.TimeInForce.IOC), int(m.TimeInForce.GTC))
        cxl = _frames(m.CancelOrder, int((~is_new).sum()), sessionId=spec.session_id, account=spec.account,
                      instrument=instrument, clOrdId=1)
        cxl["clOrdId"] = clordid[sel][~is_new]
        # frames of two sizes back to back: lay them out as rows of the larger size and keep
        # each row's first `length` bytes (a boolean mask flattens in row order)
        width = new.dtype.itemsize
        rows = np.zeros((len(ks), width), np.uint8)
        rows[is_new] = new.view(np.uint8).reshape(-1, width)
        rows[~is_new, :cxl.dtype.itemsize] = cxl.view(np.uint8).reshape(-1, cxl.dtype.itemsize)
        length = np.where(is_new, width, cxl.dtype.itemsize)
        streams.append(rows[np.arange(width) < length[:, None]])
        ends.append(np.cumsum(length))
    return Flow(list(sessions), kind, mid, streams, ends)


# ---------------------------------------------------------------------------- open loop


class Schedule:
    """Intended send times: order ``i`` at ``t0 + floor(i * 1e9 / rate)`` ns. ``due(now)`` is
    how many orders' times have come; the clock is the caller's."""

    def __init__(self, orders: int, rate: float, t0_ns: int) -> None:
        if rate <= 0:
            raise ValueError("rate must be > 0")
        self.rate = float(rate)
        self.t0 = int(t0_ns)
        self.offset = np.floor(np.arange(orders, dtype=np.float64) * (NS / self.rate)).astype(np.int64)
        self.intended = self.offset + self.t0

    def due(self, now_ns: int) -> int:
        d = now_ns - self.t0
        n = len(self.offset)
        if d < 0 or not n:
            return 0
        # arithmetic first, then the offsets themselves decide (float rounding at the edges)
        i = min(n, int(d * self.rate / NS) + 1)
        while i < n and self.offset[i] <= d:
            i += 1
        while i > 0 and self.offset[i - 1] > d:
            i -= 1
        return i

    def next_time(self, i: int) -> int:
        """The intended time of order ``i`` (the end of the run past the last)."""
        return int(self.intended[i]) if i < len(self.intended) else int(self.intended[-1])


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
class _Conn:
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


class LoadGenerator:
    """Drives a ``Flow`` over connected sessions with an injectable clock: ``cycle()`` is one
    duty cycle (send what is due, receive, keepalive), ``run()`` loops it until done."""

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
        # per order, padded by S on each side (see _Conn): times (-1: not yet), the engine's
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
        self.conns: list[_Conn] = []
        for s, spec in enumerate(flow.sessions):
            views = {k: a[s::S] for k, a in self._arrays.items()}
            c = _Conn(s, spec, socks[s], FrameReader(1 << 12, batch=4096, read_size=read_size),
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
        now = self.clock()
        for c in self.conns:
            if readable is None or c.sock in readable:
                work += self._receive(c, now)
        for c in self.conns:
            if now - c.last_send > self.keepalive_ns and c.sent_bytes == c.due_bytes:
                self._send_raw(c, m.Sequence.encode(nextSeqNo=c.first_seq + c.sent_msgs), now)
        if self.progress is not None and now >= self._next_report:
            self._report(now)
        return work

    def _make_due(self, c: _Conn, upto: int) -> None:
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

    def _cap_working(self, c: _Conn, local: np.ndarray) -> None:
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

    def _end(self, c: _Conn, cl: np.ndarray) -> None:
        """Orders of session ``c`` that ended (or will: a cancel is on its way)."""
        cl = cl[c.alive[cl]]
        c.alive[cl] = False
        c.passive_ended += int(np.count_nonzero(_IS_PASSIVE[c.kinds[cl]]))

    def _target_cancels(self, c: _Conn, lo: int, hi: int) -> None:
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

    def _lean(self, c: _Conn, local: np.ndarray) -> None:
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

    def _send(self, c: _Conn, now: int) -> int:
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

    def _send_raw(self, c: _Conn, message: bytes, now: int) -> None:
        """A session message between frames of the stream (only when nothing is half sent)."""
        frame = header(len(message)) + message
        try:
            k = c.sock.send(frame)
        except (BlockingIOError, InterruptedError):
            return  # full: the stream's own bytes are pending, so the session is not silent
        except OSError as exc:
            self._send_failed(c, exc, now)
        if k != len(frame):  # rare: finish it, or the next frame would be cut into it
            c.sock.setblocking(True)
            try:
                c.sock.sendall(frame[k:])
            finally:
                c.sock.setblocking(False)
        c.last_send = now

    def _send_failed(self, c: _Conn, exc: OSError, now: int) -> NoReturn:
        """The gateway closed the connection: what it said last (a Terminate and its
        reason) may still be waiting to be read, and says more than the send error."""
        try:
            while self._receive(c, now):
                pass
        except LoadError:
            raise
        except Exception:
            pass
        raise LoadError(f"session {c.spec.session_id}: send failed: {exc}") from exc

    # ------------------------------------------------------------ receiving

    def _receive(self, c: _Conn, now: int) -> int:
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

    def _decode(self, c: _Conn, buf: np.ndarray, p: np.ndarray, now: int) -> None:
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

    def _trades(self, c: _Conn, buf: np.ndarray, p: np.ndarray, taker_cl: np.ndarray, now: int) -> None:
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

    def _ack(self, c: _Conn, cl: np.ndarray, now: int) -> None:
        fresh = cl[c.ack_at[cl] < 0]
        if len(fresh):
            c.ack_at[fresh] = now
            self.acked += len(fresh)
            if self.progress is not None:
                self._window.append(now - c.intended[fresh])

    def _session_messages(self, c: _Conn, buf: np.ndarray, p: np.ndarray, t: np.ndarray) -> None:
        for at, tid in zip(p.tolist(), t.tolist()):
            if tid == _T_TERMINATE:
                d = m.Terminate.decode_body(buf, at)
                raise LoadError(f"session {c.spec.session_id} terminated by the gateway: "
                                f"{d['code'].name}: {d['reason']}")
            if tid == _T_NOT_APPLIED:
                self.not_applied += int(m.NotApplied.decode_body(buf, at)["count"])
            # Sequence: the server's keepalive; its numbering is of no use to the generator

    # ------------------------------------------------------------ the run

    def done(self) -> bool:
        if self.due < self.n or self.acked < self.n or any(c.sent_bytes < c.due_bytes for c in self.conns):
            return False
        self.acked = int(np.count_nonzero(self.per_order("ack_at") >= 0))  # the running count is a hint only
        return self.acked == self.n

    def late(self, now: int, limit_ns: int) -> int:
        """Orders known to have taken longer than ``limit_ns``: acknowledged late, or not
        acknowledged and intended more than ``limit_ns`` ago."""
        assert self.schedule is not None
        old = self.schedule.due(now - limit_ns)  # later ones cannot have taken that long yet
        ack = self.per_order("ack_at")[:old]
        return int(np.count_nonzero((ack < 0) | (ack - self.schedule.intended[:old] > limit_ns)))

    def run(self, drain_s: float = DRAIN_S, fail_fast: tuple[float, float] | None = None,
            cycle_us: float = CYCLE_US) -> bool:
        """Loop duty cycles until every order is sent and acknowledged, or ``drain_s`` after
        the last intended time. ``fail_fast = (latency_us, fraction)``: stop early once more
        than that fraction of all orders took longer than that (the run cannot pass).
        ``cycle_us``: the shortest duty cycle (see ``CYCLE_US``). Returns False when stopped
        early."""
        if self.schedule is None:
            self.start()
        assert self.schedule is not None
        deadline = self.schedule.next_time(self.n) + int(drain_s * NS)
        check_at = self.schedule.t0
        limit_ns = int(fail_fast[0] * 1000) if fail_fast else 0
        allowed = int(fail_fast[1] * self.n) if fail_fast else 0
        cycle_ns = int(cycle_us * 1000)
        socks = [c.sock for c in self.conns]
        readable: Sequence[Any] | None = None
        while not self.done():
            start = self.clock()
            self.cycle(readable)
            now = self.clock()
            if now > deadline:
                break
            if fail_fast and now >= check_at:
                check_at = now + NS // 5
                if self.late(now, limit_ns) > allowed:
                    return False
            if start + cycle_ns > now:
                time.sleep((start + cycle_ns - now) / NS)
                now = self.clock()
            # then wait for the next order's time, a response, or room in a full socket
            # (1 ms at most: the keepalive and progress timers)
            wait = (self.schedule.next_time(self.due) - now) / NS if self.due < self.n else 0.001
            pending = [c.sock for c in self.conns if c.sent_bytes < c.due_bytes]
            readable, _, _ = select.select(socks, pending, [], 0.001 if pending else min(0.001, max(0.0, wait)))
        return True

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

    # ------------------------------------------------------------ results

    def result(self, hgrm_dir: str | Path | None = None) -> dict[str, Any]:
        assert self.schedule is not None
        sched = self.schedule
        ack_at, sent_at, fill_at = (self.per_order(k) for k in ("ack_at", "sent_at", "fill_at"))
        acked = ack_at >= 0
        sent = sent_at >= 0
        ack_lat = (ack_at - sched.intended)[acked]
        is_ioc = self.flow.kinds == IOC
        filled = fill_at >= 0
        fill_lat = (fill_at - sched.intended)[filled & is_ioc]
        ack_h, fill_h = _histogram(ack_lat), _histogram(fill_lat)
        last_ack = int(ack_at.max()) if acked.any() else sched.t0
        last_sent = int(sent_at.max()) if sent.any() else sched.t0
        span = max(1, int(sched.offset[-1]) + int(NS / self.rate))
        out: dict[str, Any] = {
            "offered_rate": self.rate,
            "duration_s": span / NS,
            "orders": self.n,
            "sent": int(sent.sum()),
            "acked": int(acked.sum()),
            "unacked": int(self.n - acked.sum()),
            "unsent": int(self.n - sent.sum()),
            "rejected": {_REASONS.get(i, str(i)): int(self.rejects[i]) for i in np.flatnonzero(self.rejects).tolist()},
            "trades": self.trades,
            "filled_orders": int((filled & is_ioc).sum()),
            "achieved_rate": float(acked.sum()) * NS / max(1, last_ack - sched.t0),
            "send_rate": float(sent.sum()) * NS / max(1, last_sent - sched.t0),
            "ack_p50_us": _pct(ack_h, 50), "ack_p90_us": _pct(ack_h, 90), "ack_p99_us": _pct(ack_h, 99),
            "ack_p999_us": _pct(ack_h, 99.9), "ack_max_us": _max(ack_h),
            "fill_p50_us": _pct(fill_h, 50), "fill_p99_us": _pct(fill_h, 99), "fill_p999_us": _pct(fill_h, 99.9),
            "send_lag_p50_us": _us(np.percentile((sent_at - sched.intended)[sent], 50)) if sent.any() else None,
            "send_lag_p99_us": _us(np.percentile((sent_at - sched.intended)[sent], 99)) if sent.any() else None,
            "send_lag_max_us": _us((sent_at - sched.intended)[sent].max()) if sent.any() else None,
            "ack_from_send_p99_us": (_us(np.percentile((ack_at - sent_at)[acked & sent], 99))
                                     if (acked & sent).any() else None),
            "orders_passive": int((self.flow.kinds == PASSIVE).sum()),
            "orders_cancel": int((self.flow.kinds == CANCEL).sum()),
            "orders_ioc": int(is_ioc.sum()),
            "cancels_without_target": self.cancels_without_target,
            "aggressive_leaned": self.leaned,
            "passive_sent_as_ioc": self.demoted,
            "positions": {str(c.spec.account): c.position for c in self.conns},
            "not_applied": self.not_applied,
        }
        if hgrm_dir is not None:
            d = Path(hgrm_dir)
            d.mkdir(parents=True, exist_ok=True)
            for key, hist in (("ack_hgrm", ack_h), ("fill_hgrm", fill_h)):
                path = d / f"{key[:-5]}_latency.hgrm"
                with open(path, "wb") as f:
                    hist.output_percentile_distribution(f, 1)  # values in µs
                out[key] = str(path)
        return out


def _us(ns: Any) -> float:
    return round(float(ns) / 1000, 1)


def _histogram(latency_ns: np.ndarray) -> Any:
    """An HdrHistogram in µs (1 µs .. an hour, 3 significant digits) of ``latency_ns``,
    filled in bulk: values are first rounded down to the histogram's own resolution (3
    digits is 11 significant bits), so one ``record_value(v, count)`` per distinct bucket
    records them exactly as one call per value would."""
    from hdrh.histogram import HdrHistogram

    hist = HdrHistogram(1, HIST_MAX_US, 3)
    v = np.clip(latency_ns.astype(np.int64) // 1000, 1, HIST_MAX_US)
    if len(v):
        bits = np.frexp(v.astype(np.float64))[1]  # bit length (exact below 2**53)
        shift = np.maximum(0, bits - 11)
        values, counts = np.unique((v >> shift) << shift, return_counts=True)
        for value, count in zip(values.tolist(), counts.tolist()):
            hist.record_value(value, count)
    return hist


def _pct(hist: Any, q: float) -> float | None:
    return float(hist.get_value_at_percentile(q)) if hist.get_total_count() else None


def _max(hist: Any) -> float | None:
    return float(hist.get_max_value()) if hist.get_total_count() else None


# ---------------------------------------------------------------------------- sessions


def _connect(host: str, port: int, specs: Sequence[SessionSpec], keepalive_ms: int) -> tuple[list[Any], list[Any]]:
    """Log every session on; returns (clients, their sockets), non-blocking."""
    from ringex.gateways.client import Client, SessionRejected, SessionTerminated

    clients: list[Any] = []
    try:
        for spec in specs:
            try:
                clients.append(Client.connect(host, port, spec.session_id, spec.credentials, keepalive_ms=keepalive_ms))
            except (SessionRejected, SessionTerminated, OSError, TimeoutError) as exc:
                raise LoadError(f"session {spec.session_id}: logon failed: {exc}") from exc
    except BaseException:
        for c in clients:
            c.close_socket()
        raise
    socks = []
    for c in clients:
        if c._reader.pending or c._queue:
            raise LoadError(f"session {c.session_id}: the gateway sent application messages before any order")
        c._sock.setblocking(False)
        socks.append(c._sock)
    return clients, socks


def _terminate(gen: LoadGenerator | None, clients: Sequence[Any], timeout: float = 2.0) -> None:
    """Terminate(Finished) on each session (after finishing a half-sent frame), then read
    until the gateway closes, bounded."""
    deadline = time.monotonic() + timeout
    scratch = bytearray(1 << 16)
    for i, c in enumerate(clients):
        sock = c._sock
        if sock is None:
            continue
        try:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            conn = gen.conns[i] if gen is not None else None
            if conn is not None and conn.sent_bytes < conn.due_bytes:  # end the frame under way, no more
                nxt = int(conn.ends[np.searchsorted(conn.ends, conn.sent_bytes, side="right")])
                sock.sendall(memoryview(conn.stream)[conn.sent_bytes:nxt])
            bye = m.Terminate.encode(uuidHi=c.uuid[0], uuidLo=c.uuid[1], code=m.TerminationCode.Finished,
                                     reason="load done")
            sock.sendall(header(len(bye)) + bye)
            while time.monotonic() < deadline and sock.recv_into(scratch):
                sock.settimeout(max(0.01, deadline - time.monotonic()))
        except OSError:
            pass
        finally:
            c.close_socket()


def run_load(host: str = "127.0.0.1", port: int = 9100, sessions: str | Sequence[SessionSpec] = DEFAULT_SESSIONS,
             instrument: int = 1, price: int = 50_000, rate: float = 1000.0, duration: float = 10.0, seed: int = 1,
             hgrm_dir: str | Path | None = None, progress: bool = False, drain_s: float = DRAIN_S,
             keepalive_ms: int = KEEPALIVE_MS, max_live: int = MAX_LIVE, max_position: int = MAX_POSITION,
             fail_fast: tuple[float, float] | None = None, cycle_us: float = CYCLE_US) -> dict[str, Any]:
    """Offer ``rate`` orders/s for ``duration`` s to the gateway at ``host:port``; returns the
    figures (see the module docstring). ``fail_fast``, ``cycle_us``: ``LoadGenerator.run``'s."""
    specs = parse_sessions(sessions) if isinstance(sessions, str) else list(sessions)
    orders = max(1, int(round(rate * duration)))
    flow = make_flow(orders, specs, instrument=instrument, price=price, seed=seed, max_live=max_live)
    clients, socks = _connect(host, port, specs, keepalive_ms)
    show = _progress_line() if progress else None
    gen: LoadGenerator | None = None
    was_enabled = gc.isenabled()
    try:
        gen = LoadGenerator(flow, socks, rate, first_seq=[c.next_out for c in clients], keepalive_ms=keepalive_ms,
                            max_live=max_live, max_position=max_position, progress=show)
        gc.disable()  # a collection would be a stall of the generator's own making
        cpu, wall = time.process_time(), time.monotonic()
        completed = gen.run(drain_s=drain_s, fail_fast=fail_fast, cycle_us=cycle_us)
        cpu, wall = time.process_time() - cpu, time.monotonic() - wall
    finally:
        if was_enabled:
            gc.enable()
        _terminate(gen, clients)
        if show is not None:
            show(None)
    out = gen.result(hgrm_dir)
    out.update(completed=completed, run_s=round(wall, 3), generator_cpu_percent=round(100 * cpu / max(wall, 1e-9), 1))
    return out


def _progress_line() -> Callable[[str | None], None]:
    tty = sys.stderr.isatty()

    def show(line: str | None) -> None:
        if line is None:
            if tty:
                sys.stderr.write("\n")
        else:
            sys.stderr.write(("\r" + line) if tty else line + "\n")
        sys.stderr.flush()

    return show


# ---------------------------------------------------------------------------- command line


add_args = add_load_args


def print_result(result: dict[str, Any], title: str) -> None:
    print(title)
    width = max(len(k) for k in result)
    for key, value in result.items():
        if isinstance(value, float):
            value = f"{value:,.1f}"
        print(f"  {key:<{width}}  {value}")


def run_from_args(args: argparse.Namespace) -> int:
    """Run with ``add_args``'s options, print the result; the exit status (1 if an order
    went unacknowledged or the run failed)."""
    try:
        result = run_load(args.host, args.port, args.sessions, args.instrument, args.price, args.rate,
                          args.duration, args.seed, hgrm_dir=args.hgrm,
                          progress=args.progress or sys.stderr.isatty())
    except (LoadError, ValueError, OSError) as exc:
        print(f"ringex load: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result, sort_keys=True))
    else:
        print_result(result, f"ringex load: {args.rate:,.0f} orders/s for {args.duration:g} s")
    return 0 if result["unacked"] == 0 else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ringex load", description=__doc__.split("\n\n")[0])
    add_args(parser)
    try:
        return run_from_args(parser.parse_args(argv))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
