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
generated and SOFH-framed ahead of time into one byte stream per session (all of them back
to back in one buffer); a duty cycle (at most one every ``CYCLE_US``, 200 µs) costs Python
one compiled call per phase (tools/load_kernel.py, numba) and the socket calls: ``make_due``
makes every session's newly due messages ready in the streams (cancel targets, ``max_live``
demotion, leaning, in the order the rules above say), each session's due bytes go to one
non-blocking ``send`` and ``mark_sent`` stamps the orders that went; responses come in with
one ``recv_into`` per session into its receive buffer and ``receive`` frames them (SOFH, the
limits of ``sofh.FrameReader``) and takes them all, acknowledgements, trades, refusals and
session messages, leaving only a ``Terminate`` (and a framing error) to Python. Per-order
state lives in one preallocated int64 array (a row per order, words named in
load_kernel.py) that the kernels index by session and clOrdId; HdrHistograms are filled
once at the end from it. No Python object is made per message on the hot path. The kernels
are compiled (or loaded from numba's cache) before any session logs on.

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, NoReturn, Sequence

import numpy as np

from ringex.engine.wire import messages as m
from ringex.gateways import sofh
from ringex.gateways.sofh import HEADER_LENGTH, FramingError, header
from ringex.tools import load_kernel as K
from ringex.tools.load_args import DEFAULT_SESSIONS, add_load_args, session_triples

__all__ = ["SessionSpec", "Flow", "Schedule", "LoadGenerator", "LoadError", "make_flow", "parse_sessions",
           "run_load", "add_args", "main"]

PASSIVE, CANCEL, IOC = 0, 1, 2
KIND_P = (0.6, 0.3, 0.1)  # the engine benchmark's mix
MID_RANGE = 0.02  # the mid's random walk stays within this fraction of the reference price
MAX_LIVE = 40  # working orders per session: ~2M USD or 40 BTC held at most
MAX_POSITION = 20  # lots an account may drift before its aggressive orders lean against it
KEEPALIVE_MS = 1000
# The shortest duty cycle. A cycle costs CPU whatever it carries (a send and a receive per
# session, a few µs each on loopback, and a compiled call per phase: ~25 µs in all for three
# sessions on a small host; 100-300 µs when the phases were numpy), so cycles that each
# carried one order would take a core from the exchange. Orders due within a cycle wait for
# it, and that wait is inside the latencies reported (at most this much, on average half).
CYCLE_US = 200.0
DRAIN_S = 5.0
NS = 1_000_000_000
HIST_MAX_US = 3600 * 1_000_000  # an hour: anything the bounded waits could ever see

_BUY, _SELL = int(m.Side.Buy), int(m.Side.Sell)
_REASONS = {int(v): k for k, v in m.RejectReason.__members__.items()}


def _check_kernel_layouts() -> None:
    """The numbers load_kernel.py compiles in (it may not import them: numba's cache would
    not notice them change) are the schema's and sofh's."""
    for (name, fld), want in K.LAYOUT.items():
        layout = getattr(m, name)
        have = (layout.template_id, layout.size) if fld is None else layout.offset(fld)
        if have != want:
            raise ImportError(f"tools/load_kernel.py is out of date: {name}.{fld or 'layout'} is {have}, not {want}")
    for (enum, member), want in K.ENUMS.items():
        if int(getattr(m, enum)[member]) != want:
            raise ImportError(f"tools/load_kernel.py is out of date: {enum}.{member} is not {want}")
    if (K.HEADER_LENGTH, K.MIN_FRAME, K.SBE_LE, K.PASSIVE, K.CANCEL, K.IOC) != (
            sofh.HEADER_LENGTH, sofh.MIN_MESSAGE_LENGTH, sofh.SBE_1_0_LITTLE_ENDIAN, PASSIVE, CANCEL, IOC):
        raise ImportError("tools/load_kernel.py is out of date: SOFH's numbers or the order kinds")
    if (K.TOO_SHORT, K.TOO_LONG, K.WRONG_ENCODING) != tuple(1 + x for x in (
            sofh.SCAN_TOO_SHORT, sofh.SCAN_TOO_LONG, sofh.SCAN_WRONG_ENCODING)):
        raise ImportError("tools/load_kernel.py is out of date: SOFH's scan statuses")


_check_kernel_layouts()


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
    # every session's stream back to back (``streams`` are views of it), for the kernels;
    # made from ``streams`` (which then become views of it) when not given
    buffer: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.buffer is None or self.stream_bases() is None:
            parts = [np.asarray(x, np.uint8) if isinstance(x, np.ndarray) else np.frombuffer(x, np.uint8)
                     for x in self.streams]
            self.buffer = np.concatenate(parts) if parts else np.zeros(0, np.uint8)
            bounds = np.cumsum([0] + [len(x) for x in self.streams]).tolist()
            self.streams = [self.buffer[a:b] for a, b in zip(bounds, bounds[1:])]

    @property
    def n(self) -> int:
        return int(self.kinds.shape[0])

    def local(self, s: int, kind: int) -> np.ndarray:
        """Session ``s``'s message numbers (0-based) of one kind."""
        return np.flatnonzero(self.kinds[s::len(self.sessions)] == kind)

    def stream_bases(self) -> list[int] | None:
        """Where each session's stream starts in ``buffer`` (None: they are not views of it)."""
        buf = self.buffer
        if buf is None or buf.dtype != np.uint8 or buf.ndim != 1 or not buf.flags.c_contiguous:
            return None
        start = buf.__array_interface__["data"][0]
        bases = []
        for x in self.streams:
            if not isinstance(x, np.ndarray):
                return None
            at = x.__array_interface__["data"][0] - start
            if (x.dtype != np.uint8 or x.ndim != 1 or not x.flags.c_contiguous or not 0 <= at <= len(buf) - len(x)
                    or (len(x) and not np.shares_memory(x[:1], buf))):
                return None
            bases.append(at)
        return bases


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

    # every session's frames back to back in one buffer: its lengths first, to size it
    new_size, cxl_size = m.NewOrder.size + HEADER_LENGTH, m.CancelOrder.size + HEADER_LENGTH
    ends = [np.cumsum(np.where(kind[s::S] == CANCEL, cxl_size, new_size)) for s in range(S)]
    bounds = np.cumsum([0] + [int(e[-1]) if len(e) else 0 for e in ends]).tolist()
    buffer = np.empty(bounds[-1], np.uint8)
    streams = []
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
        stream = buffer[bounds[s]:bounds[s + 1]]
        stream[:] = rows[np.arange(width) < length[:, None]]
        streams.append(stream)
    return Flow(list(sessions), kind, mid, streams, ends, buffer)


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


_ORDER_WORD = {"ack_at": K.O_ACK_AT, "fill_at": K.O_FILL_AT, "sent_at": K.O_SENT_AT, "order_id": K.O_ORDER_ID,
               "cancel_of": K.O_CANCEL_OF, "alive": K.O_ALIVE, "kinds": K.O_KIND}


class _Conn:
    """One session: its socket, its pre-framed stream (a view of the flow's buffer), its
    receive buffer, and its words of ``LoadGenerator.sess`` (``words``, shared with the
    kernels)."""

    def __init__(self, s: int, spec: SessionSpec, sock: Any, stream: np.ndarray, ends: np.ndarray, first_seq: int,
                 words: np.ndarray, read_size: int) -> None:
        self.s, self.spec, self.sock = s, spec, sock  # sock: socket.socket, or anything with send/recv_into (tests)
        self.stream, self.ends = stream, ends
        self.view = memoryview(stream)
        self.first_seq = first_seq  # FIXP number of the first application message the generator sends
        self.words = words
        self.sent_bytes = 0  # of the stream, handed to the socket (also words[S_SENT_BYTES], for mark_sent)
        self.last_send = 0
        # room for an unfinished frame of the largest size and a read (FrameReader's buffer)
        self.rbuf = np.zeros(K.MAX_FRAME + read_size, np.uint8)
        self.rview = memoryview(self.rbuf)
        self.rlen = 0  # bytes at its start not yet framed (words[S_RLEN])
        self.failed: FramingError | None = None

    def _word(index: int) -> property:  # type: ignore[misc]
        return property(lambda self: int(self.words[index]))

    due = _word(K.S_DUE)  # messages due (and made ready)
    due_bytes = _word(K.S_DUE_BYTES)
    sent_msgs = _word(K.S_SENT_MSGS)  # whole frames handed to the socket
    position = _word(K.S_POSITION)  # lots bought minus sold in this run
    passive_ended = _word(K.S_PASSIVE_ENDED)
    del _word


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
        if read_size < 1:
            raise ValueError("read_size must be positive")
        self.flow, self.rate, self.clock = flow, float(rate), clock
        self.n, self.S = flow.n, S
        self.keepalive_ns = keepalive_ms * 1_000_000 // 2
        self.max_live = int(max_live)
        self.max_position = int(max_position)
        self.read_size = int(read_size)
        self.progress = progress
        n = self.n
        bases = flow.stream_bases()
        assert flow.buffer is not None and bases is not None, "Flow.__post_init__ lays the streams out"
        if not flow.buffer.flags.writeable:  # patched as orders become due
            flow.buffer = flow.buffer.copy()
            flow.streams = [flow.buffer[b: b + len(x)] for b, x in zip(bases, flow.streams)]
        self.stream = flow.buffer
        # per order, a row of words (load_kernel's O_*), padded by S rows on each side: session
        # s's message with clOrdId k is row s + k * S
        size = n + 2 * S
        self.orders = np.zeros((size, K.ORDER_WORDS), np.int64)
        self.orders[:, [K.O_ACK_AT, K.O_FILL_AT, K.O_SENT_AT, K.O_INTENDED, K.O_KIND]] = -1
        self.orders[:, K.O_ALIVE] = 1
        self.orders[S:S + n, K.O_KIND] = flow.kinds
        self.orders[S:S + n, K.O_MID] = flow.mid
        self.sess = np.zeros((S, K.SESSION_WORDS), np.int64)
        self.run_words = np.zeros(K.RUN_WORDS, np.int64)
        self.rejects = self.run_words[K.R_REJECTS:]  # by reason (a uint16), the schema's or not
        # ack latencies since the last progress line (each row is acknowledged once at most)
        self.window = np.zeros(size if progress is not None else 1, np.int64)
        self.run_words[K.R_WINDOW_ON] = progress is not None
        passive = [int(np.count_nonzero(flow.kinds[s::S] == PASSIVE)) for s in range(S)]
        self.fifo = np.zeros(max(1, sum(passive)), np.int64)  # clOrdIds accepted, oldest first, per session
        fifo_base = 0
        self.conns: list[_Conn] = []
        for s, spec in enumerate(flow.sessions):
            w = self.sess[s]
            count = len(flow.ends[s])
            w[K.S_SESSION_ID] = spec.session_id
            w[K.S_LIMIT] = count + 1
            w[K.S_STREAM_BASE] = bases[s]
            w[K.S_FIFO_BASE] = fifo_base
            fifo_base += passive[s]
            self.orders[S + s: S + n: S, K.O_END] = bases[s] + np.asarray(flow.ends[s], np.int64)
            self.conns.append(_Conn(s, spec, socks[s], flow.streams[s], flow.ends[s],
                                    first_seq[s] if first_seq else 1, w, self.read_size))
        self.schedule: Schedule | None = None
        self.due = 0
        self._next_report = 0
        self._reported = (0, 0)
        K.warm_up()
        self._warm_up()

    def _warm_up(self) -> None:
        """Each kernel called once on this generator's own arrays with nothing to do (the
        run's types: ``K.warm_up`` compiled them already, before any logon)."""
        K.make_due(-1, 0, self.rate, np.zeros(1, np.int64), self.stream, self.orders, self.sess, self.fifo,
                   self.run_words, self.max_live, self.max_position)
        K.mark_sent(self.orders, self.sess, 0)
        c = self.conns[0]
        K.receive(c.rbuf, 0, 0, 0, self.orders, self.sess, self.fifo, self.run_words, self.window)

    def _word(index: int) -> property:  # type: ignore[misc]
        return property(lambda self: int(self.run_words[index]))

    trades = _word(K.R_TRADES)
    not_applied = _word(K.R_NOT_APPLIED)
    cancels_without_target = _word(K.R_CANCELS_WITHOUT_TARGET)
    leaned = _word(K.R_LEANED)  # aggressive orders whose side was flipped against the position
    demoted = _word(K.R_DEMOTED)  # passive orders sent as IOC because their session had max_live working
    del _word

    @property
    def acked(self) -> int:
        """Acknowledged orders (a running count: a response naming no order of the run counts
        once too; ``done`` counts them exactly)."""
        return int(self.run_words[K.R_ACKED])

    @acked.setter
    def acked(self, value: int) -> None:
        self.run_words[K.R_ACKED] = value

    def per_order(self, name: str) -> np.ndarray:
        """A per-order array (``ack_at``, ``fill_at``, ``sent_at``, ``order_id``,
        ``cancel_of``: views; ``alive``, ``kinds``: copies), indexed by order number."""
        column = self.orders[self.S: self.S + self.n, _ORDER_WORD[name]]
        if name == "alive":
            return column != 0
        if name == "kinds":
            return column.astype(np.int8)
        return column

    # ------------------------------------------------------------ the duty cycle

    def start(self, t0_ns: int | None = None) -> None:
        t0 = self.clock() if t0_ns is None else t0_ns
        self.schedule = Schedule(self.n, self.rate, t0)
        self.orders[self.S: self.S + self.n, K.O_INTENDED] = self.schedule.intended
        for c in self.conns:
            c.last_send = t0
        self._next_report = t0 + NS
        self._reported = (t0, 0)
        self._late_upto = self._late = 0  # late()'s orders looked at, and of those late

    def cycle(self, readable: Sequence[Any] | None = None) -> int:
        """Send every order now due, read each session once (only those in ``readable``
        when given), keep the sessions alive. Returns the work done (messages sent and
        received)."""
        sched = self.schedule
        assert sched is not None, "start() first"
        now = self.clock()
        self.due = K.make_due(now, sched.t0, sched.rate, sched.offset, self.stream, self.orders, self.sess, self.fifo,
                              self.run_words, self.max_live, self.max_position)
        went = False
        for c in self.conns:
            went = self._send(c, now) or went
        work = K.mark_sent(self.orders, self.sess, now) if went else 0
        return work + self._after_sending(readable)

    def _after_sending(self, readable: Sequence[Any] | None) -> int:
        """A duty cycle's second half: each session read once (only those in ``readable``
        when given), the quiet ones kept alive, the progress line; the messages received."""
        now = self.clock()
        work = 0
        for c in self.conns:
            if readable is None or c.sock in readable:
                work += self._receive(c, now)
        for c in self.conns:
            if now - c.last_send > self.keepalive_ns and c.sent_bytes == c.due_bytes:
                self._send_raw(c, m.Sequence.encode(nextSeqNo=c.first_seq + c.sent_msgs), now)
        if self.progress is not None and now >= self._next_report:
            self._report(now)
        return work

    def _send(self, c: _Conn, now: int) -> bool:
        """Session ``c``'s due bytes to its socket, as many as it takes; whether any went
        (``mark_sent`` then stamps the orders whose last byte did)."""
        sent = c.sent_bytes
        end = int(c.words[K.S_DUE_BYTES])
        if sent >= end:
            return False
        try:
            k = c.sock.send(c.view[sent:end])
        except (BlockingIOError, InterruptedError):
            return False
        except OSError as exc:
            self._send_failed(c, exc, now)
        if k <= 0:
            return False
        c.sent_bytes = sent + k
        c.words[K.S_SENT_BYTES] = sent + k
        c.last_send = now
        return True

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
        """One ``recv_into`` of session ``c`` and everything it completed taken (``receive``);
        how many frames."""
        if c.failed is not None:
            raise c.failed
        rlen = c.rlen
        try:
            got = c.sock.recv_into(c.rview[rlen:] if rlen else c.rview, self.read_size)
        except (BlockingIOError, InterruptedError):
            return 0
        except OSError as exc:
            raise LoadError(f"session {c.spec.session_id}: {exc}") from None
        if not got:
            inside = f" inside a frame ({rlen} bytes pending)" if rlen else ""
            raise LoadError(f"session {c.spec.session_id}: the gateway closed the connection "
                            f"(peer closed the connection{inside})") from None
        count, answer, value = K.receive(c.rbuf, got, c.s, now, self.orders, self.sess, self.fifo, self.run_words,
                                         self.window)
        if answer == K.RECEIVED:
            c.rlen = value
            return count
        if answer == K.TERMINATED:
            d = m.Terminate.decode_body(c.rbuf, value)
            raise LoadError(f"session {c.spec.session_id} terminated by the gateway: "
                            f"{d['code'].name}: {d['reason']}")
        # a header that leaves the stream without a boundary: the frames before it were taken
        c.rlen = int(c.words[K.S_RLEN])
        b = c.rbuf[:HEADER_LENGTH]
        c.failed = FramingError(answer - 1, value, int.from_bytes(bytes(b[:4]), "big"),
                                int.from_bytes(bytes(b[4:6]), "big"))
        raise c.failed


    # ------------------------------------------------------------ the run

    def done(self) -> bool:
        if self.due < self.n or self.acked < self.n or any(c.sent_bytes < c.due_bytes for c in self.conns):
            return False
        self.acked = int(np.count_nonzero(self.per_order("ack_at") >= 0))  # the running count is a hint only
        return self.acked == self.n

    def late(self, now: int, limit_ns: int) -> int:
        """Orders known to have taken longer than ``limit_ns``: acknowledged late, or not
        acknowledged and intended more than ``limit_ns`` ago. Each order is looked at once,
        when its time is that old (its verdict cannot change after): a look at every order
        so far, on the orders' strided column, cost 6-7 ms of the duty cycle every check
        by the end of a 10 s run at 150k/s, and the send lag grew with the rate."""
        assert self.schedule is not None
        old = self.schedule.due(now - limit_ns)  # later ones cannot have taken that long yet
        if old > self._late_upto:
            ack = self.per_order("ack_at")[self._late_upto:old]
            intended = self.schedule.intended[self._late_upto:old]
            self._late += int(np.count_nonzero((ack < 0) | (ack - intended > limit_ns)))
            self._late_upto = old
        return self._late

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
        kept = int(self.run_words[K.R_WINDOW])
        if kept:
            p99 = float(np.percentile(self.window[:kept], 99)) / 1000
        sent = sum(c.sent_msgs for c in self.conns)
        assert self.progress is not None
        self.progress(f"sent {sent:>10,}  acked {self.acked:>10,}  {rate:>10,.0f}/s  ack p99 {p99:>10,.0f} µs")
        self.run_words[K.R_WINDOW] = 0
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
    K.warm_up()  # compiled (or loaded from numba's cache) before any session logs on
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
