"""The FIX 4.4 open-loop load generator: FIX sessions over TCP offering an order flow to a
FIX gateway at a fixed rate, every latency measured from each order's intended send time
(``ringex bench fix`` drives the running exchange with it).

The generator (``FixLoad``, ``run_fix_load``) follows tools/load.py's rules:

* **Open loop, coordinated omission first.** Order ``i`` has an intended send time
  ``t0 + i / rate`` (fixed before the run); every duty cycle (at most one every ``cycle_us``,
  200 µs) sends every order whose time has come, one non-blocking ``send`` per session, and
  every latency is measured from the intended time. The time each order's bytes were handed
  to the socket is kept too (``send_lag_*``), to tell a slow generator from a slow exchange.
* **The order flow** is the engine benchmark's mix as load.py makes it: 60% passive GTC
  limits Geometric(0.35) ticks (>= 1) behind a random-walk mid (within 2% of the price), 30%
  cancels of the session's own oldest acknowledged working order (OrderCancelRequest F with
  OrigClOrdID), 10% IOC limits Geometric(0.3) - 1 ticks through the mid; quantity 1; orders
  round-robin over the sessions. As in load.py a session keeps at most ``max_live`` (40)
  orders working (beyond that a passive order goes out IOC: ``passive_sent_as_ioc``), a
  cancel that finds no acknowledged target goes out naming OrigClOrdID ``none`` (refused
  Unknown: ``cancels_without_target``), and once an account's position drifts more than
  ``max_position`` lots its IOC orders lean against it (``aggressive_leaned``).
* **Acknowledgement**: the first answer that names the request's ClOrdID (11): an
  ExecutionReport (35=8) of any ExecType, or an OrderCancelReject (35=9); a session-level
  Reject (35=3) or a BusinessMessageReject (35=j) naming the request counts too, as a
  refusal. **Fill**: for an IOC order, the first ExecutionReport 150=F naming it.
* **Session**: Logon with ResetSeqNumFlag=Y (fix_codec's ``encode``, ``FixReader``), a
  TestRequest is answered with a Heartbeat, a Heartbeat goes out after HeartBtInt idle, a
  Logout (or ResendRequest) from the gateway ends the run (``LoadError``); at the end a
  Logout, answered or not within a bounded wait.

For speed the hot path is compiled (tools/fix_load_kernel.py, numba) and works on numpy
arrays rather than through ``FixReader``/``FixMessage`` (which frame and parse at ~15k
messages/s in Python):

* the flow (``make_flow``, drawn in Python before the run) and every order's state and
  times are rows of one int64 array; each session's working orders, its FIFO of
  acknowledged ones, its MsgSeqNums and position are int64 words both sides share;
* ``render`` writes every due order of a duty cycle into its session's output row in one
  call (the bytes ``fix_codec.encode`` makes: a test checks it), cancel targets, demotion
  and leaning included; Python hands each row to its socket and ``mark_sent`` stamps the
  orders that went;
* ``scan`` frames every complete message of a session's receive buffer in one call and takes
  Heartbeats, ExecutionReports (but Rejected) and OrderCancelRejects with the usual reasons.
  Anything else, admin messages, rejects with text and whatever it does not read exactly as
  the Python code would, it hands back one message at a time to ``FixLoad._message``, the
  Python handling of any message. A stream that does not frame (a garbled message from the
  gateway, a BodyLength that is not digits) stops the run.

What stays Python: the logon, the timestamps (one per millisecond), the socket calls (a
receive only where a poll finds something to read), the sessions' admin messages, the rare
messages, the run loop and the figures. What is left per order is a few µs; most of the
generator's CPU is now the duty cycle's own (a wake-up, a poll, a send per session with
something to send), whatever the rate.
"""

from __future__ import annotations

import math
import random
import re
import select
import socket
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from ringex.tools import fix_load_kernel as K
from ringex.tools.fix_load_kernel import CANCEL, IOC, PASSIVE
from ringex.tools.load_args import session_triples

__all__ = ["FixSessionSpec", "FixLoad", "LoadError", "DEFAULT_SESSIONS", "parse_sessions", "run_fix_load"]

DEFAULT_SESSIONS = "DEMO1:demo-1:1,DEMO2:demo-2:2,DEMO3:demo-3:3"  # the embedded default's FIX demo sessions
TARGET = "RINGEX"
SYMBOL = "BTC-USD"
PRICE = 50_000
HEARTBEAT_S = 10
CYCLE_US = 200.0
DRAIN_S = 5.0
NS = 1_000_000_000

KIND_P = (0.6, 0.3, 0.1)  # the engine benchmark's mix (tools/load.py)
MID_RANGE = 0.02
MAX_LIVE = 40
MAX_POSITION = 20
_CXL_REASONS = {b"0": "TooLateToCancel", b"1": "UnknownOrder", b"3": "CancelPending", b"6": "DuplicateClOrdID"}

_FIELD = re.compile(rb"(\d+)=([^\x01]*)\x01")
_OUT_ROW = 1 << 20  # a session's output row to start with (grown when what is unsent needs more)
_RECV = 1 << 20  # the most one receive takes
_TRAILER = 7  # b"10=ddd\x01"


class LoadError(RuntimeError):
    """The run could not go on: a session was refused, logged out or lost."""


@dataclass(frozen=True)
class FixSessionSpec:
    comp_id: str  # the counterparty's CompID: SenderCompID (49) on what the generator sends
    password: str
    account: int


def parse_sessions(text: str) -> list[FixSessionSpec]:
    """``"DEMO1:demo-1:1,DEMO2:demo-2:2"`` (CompID:password:account, comma-separated; a
    password may be empty)."""
    return [FixSessionSpec(comp_id, password, account)
            for comp_id, password, account in session_triples(text, "CompID:password:account", numbered=False,
                                                              credentials_required=False)]


# ---------------------------------------------------------------------------- the flow


def _geometric(rng: random.Random, p: float) -> int:
    """Geometric(p) on 1, 2, ...: trials up to the first success."""
    return int(math.log(1.0 - rng.random()) / math.log(1.0 - p)) + 1


def make_flow(orders: int, sessions: int, price: int, seed: int, max_live: int = MAX_LIVE
              ) -> tuple[list[int], list[int], list[bool], list[int]]:
    """(kinds, prices, buy, mids) per order: load.py's flow, drawn in Python (order ``i`` to
    session ``i % sessions``)."""
    rng = random.Random(seed)
    kinds, prices, buys, mids = [0] * orders, [0] * orders, [False] * orders, [0] * orders
    live = [0] * sessions
    span = max(1, int(price * MID_RANGE))
    lo, hi = max(1, price - span), price + span
    mid = price
    for i in range(orders):
        s = i % sessions
        u = rng.random()
        k = PASSIVE if u < KIND_P[0] else CANCEL if u < KIND_P[0] + KIND_P[1] else IOC
        if k == PASSIVE:
            if live[s] >= max_live:
                k = CANCEL
                live[s] -= 1
            else:
                live[s] += 1
        elif k == CANCEL:
            if live[s] == 0:
                k = PASSIVE
                live[s] += 1
            else:
                live[s] -= 1
        step = rng.random()
        mid = min(hi, max(lo, mid + (-1 if step < 0.1 else 1 if step >= 0.9 else 0)))
        buy = rng.random() < 0.5
        off = -_geometric(rng, 0.35) if k == PASSIVE else _geometric(rng, 0.3) - 1
        kinds[i], buys[i], mids[i] = k, buy, mid
        prices[i] = max(1, mid + off if buy else mid - off)
    return kinds, prices, buys, mids


# ---------------------------------------------------------------------------- sessions


class _Session:
    """One FIX session's socket and buffers; its numbers are words of ``FixLoad.sess``
    (``words``, shared with the compiled kernels)."""

    def __init__(self, s: int, spec: FixSessionSpec, sock: socket.socket, words: np.ndarray) -> None:
        self.s, self.spec, self.sock, self.words = s, spec, sock, words
        self.sender = spec.comp_id.encode()
        self.account = b"%d" % spec.account
        self.rbuf = np.empty(2 * _RECV, np.uint8)
        self.rview = memoryview(self.rbuf)
        self.rlen = 0  # bytes in rbuf not yet taken
        self.last_send = 0
        self.logged_out = False

    def _word(index: int) -> property:  # type: ignore[misc]
        def get(self: "_Session") -> int:
            return int(self.words[index])

        def put(self: "_Session", value: int) -> None:
            self.words[index] = value

        return property(get, put)

    seq = _word(K.S_SEQ)
    next_in = _word(K.S_NEXT_IN)
    gaps = _word(K.S_GAPS)
    position = _word(K.S_POSITION)
    del _word

    def feed(self, data: bytes) -> None:
        """``data`` appended to what is waiting to be read."""
        need = self.rlen + len(data)
        if need > len(self.rbuf):
            self._grow(need)
        self.rbuf[self.rlen:need] = np.frombuffer(data, np.uint8)
        self.rlen = need

    def _grow(self, need: int) -> None:
        bigger = np.empty(max(need, 2 * len(self.rbuf)), np.uint8)
        bigger[:self.rlen] = self.rbuf[:self.rlen]
        self.rbuf, self.rview = bigger, memoryview(bigger)

    def room_to_receive(self) -> memoryview:
        if len(self.rbuf) - self.rlen < _RECV:
            self._grow(self.rlen + _RECV)
        return self.rview[self.rlen:self.rlen + _RECV]


def _checksummed(message: bytes) -> bytes:
    return message + b"10=%03d\x01" % (sum(message) % 256)


def _frame(sender: bytes, seq: int, ts: bytes, msg_type: bytes, body: bytes) -> bytes:
    """What ``fix_codec.encode`` makes for ``body`` (already ``tag=value<SOH>`` fields)."""
    fields = b"35=%s\x0149=%s\x0156=%s\x0134=%d\x0152=%s\x01%s" % (msg_type, sender, TARGET.encode(), seq, ts, body)
    return _checksummed(b"8=FIX.4.4\x019=%d\x01%s" % (len(fields), fields))


def _read_one(sock: socket.socket, reader: Any, deadline: float) -> Any:
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("no answer from the gateway")
        sock.settimeout(left)
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("the gateway closed the connection")
        got = reader.feed(data)
        if got:
            return got


def _logon(host: str, port: int, spec: FixSessionSpec, heartbeat_s: int, timeout: float = 10.0
           ) -> tuple[socket.socket, int, bytes]:
    """Connect and log on (ResetSeqNumFlag=Y); the socket, non-blocking, the gateway's next
    MsgSeqNum, and what it sent after the Logon in the same read (reports of an earlier
    connection's orders, e.g. canceled on its disconnect: not this run's ClOrdIDs, read
    and ignored by the run like any other)."""
    from ringex.gateways.fix_codec import FixMessage, FixReader, encode, utc_timestamp

    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        raise LoadError(f"{spec.comp_id}: cannot connect to {host}:{port}: {exc}") from exc
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        body: list[tuple[int, bytes | str | int]] = [(98, 0), (108, heartbeat_s)]
        if spec.password:
            body.append((554, spec.password))
        body.append((141, b"Y"))
        sock.sendall(encode(b"A", spec.comp_id.encode(), TARGET.encode(), 1, utc_timestamp(time.time_ns()), body))
        reader = FixReader(1 << 16)
        deadline = time.monotonic() + timeout
        pending: list[Any] = []
        while True:
            if not pending:
                pending = list(_read_one(sock, reader, deadline))
            msg = pending.pop(0)
            if not isinstance(msg, FixMessage):
                raise LoadError(f"{spec.comp_id}: garbled answer to the Logon: {msg.reason}")
            if msg.msg_type == b"A":
                after = b"".join(m.raw for m in pending) + reader.take_pending()
                sock.setblocking(False)
                return sock, (msg.seq_num or 1) + 1, after
            if msg.msg_type == b"5":
                raise LoadError(f"{spec.comp_id}: logon refused: {(msg.get(58) or b'').decode(errors='replace')}")
    except (OSError, TimeoutError, ConnectionError) as exc:
        sock.close()
        raise LoadError(f"{spec.comp_id}: logon failed: {exc}") from exc
    except BaseException:
        sock.close()
        raise


# ---------------------------------------------------------------------------- the generator


class FixLoad:
    """Drives the flow over logged-on sessions (see the module docstring); ``clock``
    injectable for tests."""

    def __init__(self, socks: Sequence[socket.socket], specs: Sequence[FixSessionSpec], next_in: Sequence[int],
                 rate: float, duration: float, *, symbol: str = SYMBOL, price: int = PRICE, seed: int = 1,
                 max_live: int = MAX_LIVE, max_position: int = MAX_POSITION, heartbeat_s: int = HEARTBEAT_S,
                 clock: Callable[[], int] = time.monotonic_ns, received: Sequence[bytes] = ()) -> None:
        """``received``: per session, what the gateway sent after its Logon and was read with
        it (``_logon``), read first."""
        if rate <= 0 or duration <= 0:
            raise ValueError("need rate > 0 and duration > 0")
        self.S = len(specs)
        self.n = max(1, int(round(rate * duration)))
        self.rate = float(rate)
        self.clock = clock
        self.max_live, self.max_position = max_live, max_position
        self.heartbeat_ns = heartbeat_s * NS
        self.symbol = symbol.encode()
        self._ts_ms = -1
        self._ts = b""
        self._ts_array = np.empty(0, np.uint8)
        kinds, prices, buys, mids = make_flow(self.n, self.S, price, seed, max_live)
        self.orders = np.zeros((self.n, K.ORDER_WORDS), np.int64)
        self.orders[:, K.O_KIND] = kinds
        self.orders[:, K.O_PRICE] = prices
        self.orders[:, K.O_BUY] = buys
        self.orders[:, K.O_MID] = mids
        self.orders[:, [K.O_ACK_AT, K.O_SENT_AT, K.O_FILL_AT]] = -1
        # ClOrdIDs unique on this exchange across runs: a run tag, then the session's order number
        self.tag = b"%s-" % format(time.time_ns() % (36 ** 6), "x").encode()
        self._tag = np.frombuffer(self.tag, np.uint8).copy()
        self._symbol = np.frombuffer(self.symbol, np.uint8).copy()
        self.sess = np.zeros((self.S, K.SESSION_WORDS), np.int64)
        self.sess[:, K.S_SEQ] = 2  # the Logon was 1
        self.sess[:, K.S_NEXT_IN] = list(next_in)[:self.S]
        self.sess[:, K.S_NEXT_SENT] = np.arange(self.S)
        self.sessions = [_Session(s, spec, sock, self.sess[s]) for s, (spec, sock) in enumerate(zip(specs, socks))]
        texts = [(b"49=%s\x0156=%s\x0134=" % (c.sender, TARGET.encode()), c.account) for c in self.sessions]
        self.text = np.zeros((self.S, 2, max(len(t) for pair in texts for t in pair)), np.uint8)
        for s, (header, account) in enumerate(texts):
            self.text[s, K.T_HEADER, :len(header)] = np.frombuffer(header, np.uint8)
            self.text[s, K.T_ACCOUNT, :len(account)] = np.frombuffer(account, np.uint8)
            self.sess[s, K.S_HEADER_LEN], self.sess[s, K.S_ACCOUNT_LEN] = len(header), len(account)
        self.room = K.message_room(self.text.shape[2], self.text.shape[2], len(self.tag), len(self.symbol),
                                   len(self._timestamp()))
        self.out = np.empty((self.S, max(_OUT_ROW, 4 * self.room)), np.uint8)
        self.fifo = np.zeros((self.S, -(-self.n // self.S)), np.int64)  # an order enters it once at most
        self.run_words = np.zeros(K.RUN_WORDS, np.int64)
        for c, data in zip(self.sessions, received):
            c.feed(data)
        self.rejects: dict[str, int] = {}  # those counted in Python
        self._readable: Any = None  # a select.poll of the sessions' sockets, made on the first cycle
        self._by_fd = {c.sock.fileno(): c for c in self.sessions if c.sock is not None}
        self.due = 0
        self.intended = np.empty(0, np.int64)
        self.t0 = 0
        self._late = self._late_upto = 0
        self._warm_up()

    def _warm_up(self) -> None:
        """Each kernel called once with nothing to do, so that compiling (or loading it from
        numba's cache) is not part of the run."""
        self._render(0, self._ts_array)
        K.scan(self.sessions[0].rbuf, 0, 0, 0, self.S, 0, self._tag, self.orders, self.sess, self.fifo,
               self.run_words)
        K.mark_sent(self.orders, self.sess, 0, self.S, 0, 0)

    def _word(index: int) -> property:  # type: ignore[misc]
        return property(lambda self: int(self.run_words[index]))

    acked = _word(K.R_ACKED)
    trades = _word(K.R_TRADES)
    cancels_without_target = _word(K.R_CANCELS_WITHOUT_TARGET)
    demoted = _word(K.R_DEMOTED)
    leaned = _word(K.R_LEANED)
    del _word

    # ------------------------------------------------------------ sending

    def _timestamp(self) -> bytes:
        wall = time.time_ns()
        ms = wall // 1_000_000
        if ms != self._ts_ms:
            from ringex.gateways.fix_codec import utc_timestamp

            self._ts_ms, self._ts = ms, utc_timestamp(wall)
            self._ts_array = np.frombuffer(self._ts, np.uint8)
        return self._ts

    def start(self, t0: int | None = None) -> None:
        self.t0 = self.clock() if t0 is None else t0
        step = NS / self.rate
        self.intended = self.t0 + (np.arange(self.n, dtype=np.float64) * step).astype(np.int64)  # int(i * step)
        for c in self.sessions:
            c.last_send = self.t0

    def _due(self, now: int) -> int:
        d = now - self.t0
        if d < 0:
            return 0
        return min(self.n, int(d * self.rate / NS) + 1)

    def _render(self, upto: int, ts: np.ndarray) -> int:
        return K.render(self.due, upto, self.S, self.max_live, self.max_position, self.room, ts, self._tag,
                        self._symbol, self.text, self.orders, self.sess, self.fifo, self.run_words, self.out)

    def _make_due(self, upto: int, ts: bytes) -> None:
        array = self._ts_array if ts is self._ts else np.frombuffer(ts, np.uint8)
        while self.due < upto:
            self.due = self._render(upto, array)
            if self.due < upto:  # its session's row is full
                self._make_room(self.due % self.S, self.room)

    def _make_room(self, s: int, size: int) -> None:
        """At least ``size`` bytes free at the end of session ``s``'s output row: what went
        is dropped (orders' ends are counted from the stream's start, so they stay right),
        and the rows grow if that is not enough."""
        w = self.sess[s]
        sent, end = int(w[K.S_OUT_SENT]), int(w[K.S_OUT_END])
        if sent:
            self.out[s, :end - sent] = self.out[s, sent:end]
            w[K.S_OUT_BASE] += sent
            w[K.S_OUT_END] = end - sent
            w[K.S_OUT_SENT] = 0
        width = self.out.shape[1]
        if width - int(w[K.S_OUT_END]) < max(size, width // 2):
            bigger = np.empty((self.S, 2 * width + size), np.uint8)
            bigger[:, :width] = self.out
            self.out = bigger

    def _send_admin(self, c: _Session, msg_type: bytes, body: bytes, ts: bytes) -> None:
        message = _frame(c.sender, c.seq, ts, msg_type, body)
        w = c.words
        if self.out.shape[1] - w[K.S_OUT_END] < len(message):
            self._make_room(c.s, len(message))
        end = int(w[K.S_OUT_END])
        self.out[c.s, end:end + len(message)] = np.frombuffer(message, np.uint8)
        w[K.S_OUT_END] = end + len(message)
        w[K.S_SEQ] += 1

    def _unsent(self, c: _Session) -> bool:
        return bool(c.words[K.S_OUT_SENT] < c.words[K.S_OUT_END])

    def _flush(self, c: _Session, now: int) -> int:
        w = c.words
        sent, end = w[K.S_OUT_SENT], w[K.S_OUT_END]
        if sent >= end:
            return 0
        try:
            k = c.sock.send(self.out[c.s, sent:end])
        except (BlockingIOError, InterruptedError):
            return 0
        except OSError as exc:
            self._drain_on_error(c, now)
            raise LoadError(f"{c.spec.comp_id}: send failed: {exc}") from exc
        w[K.S_OUT_SENT] = sent + k
        c.last_send = now
        went = K.mark_sent(self.orders, self.sess, c.s, self.S, self.due, now)
        if sent + k == end:  # all of it: the row starts over
            w[K.S_OUT_BASE] += end
            w[K.S_OUT_SENT] = w[K.S_OUT_END] = 0
        return went

    def _drain_on_error(self, c: _Session, now: int) -> None:
        """The gateway closed the connection: its Logout may say why."""
        try:
            c.sock.setblocking(True)
            c.sock.settimeout(0.2)
            while True:
                data = c.sock.recv(65536)
                if not data:
                    break
                c.feed(data)
                self._parse(c, now)
        except LoadError:
            raise
        except Exception:
            pass

    # ------------------------------------------------------------ receiving

    def _receive(self, c: _Session, now: int) -> int:
        try:
            got = c.sock.recv_into(c.room_to_receive())
        except (BlockingIOError, InterruptedError):
            return 0
        except OSError as exc:
            raise LoadError(f"{c.spec.comp_id}: {exc}") from exc
        if not got:
            raise LoadError(f"{c.spec.comp_id}: the gateway closed the connection")
        c.rlen += got
        return self._parse(c, now)

    def _parse(self, c: _Session, now: int) -> int:
        """Every complete message in ``c``'s buffer taken (``scan``, and ``_message`` for
        those it leaves to Python); how many."""
        buf = c.rbuf
        pos = count = 0
        while True:
            answer, pos, fields, end, taken = K.scan(buf, pos, c.rlen, c.s, self.S, now, self._tag, self.orders,
                                                     self.sess, self.fifo, self.run_words)
            count += taken
            if answer == K.SLOW:
                self._message(c, dict(_FIELD.findall(bytes(buf[fields:end - _TRAILER]))), now)
                pos = end
                count += 1
            elif answer == K.GARBLED_PREFIX:
                raise LoadError(f"{c.spec.comp_id}: garbled stream from the gateway: {bytes(buf[pos:pos + 40])!r}")
            elif answer == K.GARBLED_LENGTH:
                raise LoadError(f"{c.spec.comp_id}: garbled BodyLength from the gateway")
            else:
                break
        if pos:
            rest = c.rlen - pos
            buf[:rest] = buf[pos:c.rlen]
            c.rlen = rest
        return count

    def _order(self, c: _Session, cl: bytes | None) -> int:
        """The order number a ClOrdID names on session ``c`` (-1: not one of this run's)."""
        if cl is None or not cl.startswith(self.tag):
            return -1
        try:
            k = int(cl[len(self.tag):])
        except ValueError:
            return -1
        i = k * self.S + c.s
        return i if 0 <= k and i < self.n else -1

    def _ack(self, i: int, now: int) -> None:
        if i >= 0 and self.orders[i, K.O_ACK_AT] < 0:
            self.orders[i, K.O_ACK_AT] = now
            self.run_words[K.R_ACKED] += 1

    def _refused(self, reason: str) -> None:
        self.rejects[reason] = self.rejects.get(reason, 0) + 1

    def _stop_working(self, c: _Session, i: int) -> None:
        if i >= 0 and self.orders[i, K.O_WORKING]:
            self.orders[i, K.O_WORKING] = 0
            c.words[K.S_LIVE] -= 1

    def _gone(self, c: _Session, cl: bytes | None) -> None:
        self._stop_working(c, self._order(c, cl))

    def _message(self, c: _Session, f: dict[bytes, bytes], now: int) -> None:
        """Any message from the gateway, in Python (``scan`` takes the common ones the same
        way, compiled)."""
        seq = int(f.get(b"34", b"0"))
        if seq > c.next_in:
            c.gaps += 1
        c.next_in = max(c.next_in, seq + 1)
        t = f.get(b"35")
        if t == b"8":
            i = self._order(c, f.get(b"11"))
            self._ack(i, now)
            et = f.get(b"150")
            o = self.orders[i] if i >= 0 else None
            if et == b"0":
                if o is not None and o[K.O_KIND] == PASSIVE and o[K.O_WORKING] and not o[K.O_QUEUED]:
                    o[K.O_QUEUED] = 1
                    w = c.words
                    self.fifo[c.s, w[K.S_FIFO_TAIL]] = i
                    w[K.S_FIFO_TAIL] += 1
            elif et == b"F":
                qty = int(f.get(b"32", b"0"))
                c.position += qty if f.get(b"54") == b"1" else -qty
                if o is not None:
                    if o[K.O_KIND] == IOC:
                        self.run_words[K.R_TRADES] += 1  # counted once: on the taker's report
                        if o[K.O_FILL_AT] < 0:
                            o[K.O_FILL_AT] = now
                    if f.get(b"151") == b"0":
                        self._stop_working(c, i)
            elif et in (b"4", b"C"):
                self._gone(c, f.get(b"41") or f.get(b"11"))
                self._gone(c, f.get(b"11"))
            elif et == b"8":
                self._gone(c, f.get(b"11"))
                text = f.get(b"58", b"").decode(errors="replace")
                self._refused(f"OrderRejected:{f.get(b'103', b'?').decode()}:{text[:40]}")
        elif t == b"9":
            self._ack(self._order(c, f.get(b"11")), now)
            code = f.get(b"102", b"?")
            self._refused(_CXL_REASONS.get(code, f"CancelRejected:{code.decode()}"))
        elif t == b"0":
            pass
        elif t == b"1":
            self._send_admin(c, b"0", b"112=%s\x01" % f.get(b"112", b"TEST"), self._timestamp())
        elif t == b"3":
            self._ack(self._order_at_seq(c, int(f.get(b"45", b"0"))), now)
            self._refused(f"SessionReject:{f.get(b'373', b'?').decode()}:{f.get(b'58', b'').decode(errors='replace')[:40]}")
        elif t == b"j":
            self._ack(self._order(c, f.get(b"379")), now)
            self._refused(f"BusinessReject:{f.get(b'380', b'?').decode()}")
        elif t == b"5":
            c.logged_out = True
            raise LoadError(f"{c.spec.comp_id}: logged out by the gateway: {f.get(b'58', b'').decode(errors='replace')}")
        elif t == b"2":
            raise LoadError(f"{c.spec.comp_id}: the gateway asked for a resend ({f.get(b'7')!r}..{f.get(b'16')!r})")
        elif t == b"4":
            new = int(f.get(b"36", b"0"))
            c.next_in = max(c.next_in, new)

    def _order_at_seq(self, c: _Session, seq: int) -> int:
        """The order session ``c`` sent with MsgSeqNum ``seq`` (-1: none; an admin message)."""
        mine = self.orders[c.s:self.due:self.S, K.O_SEQ]  # increasing: sent in order
        j = int(np.searchsorted(mine, seq))
        return c.s + j * self.S if j < len(mine) and mine[j] == seq else -1

    def rejected(self) -> dict[str, int]:
        """Refusals by reason: those counted in Python and the cancel rejects ``scan`` counts."""
        out = dict(self.rejects)
        for code in K.CANCEL_REJECT_CODES:
            count = int(self.run_words[K.R_CANCEL_REJECT + code])
            if count:
                reason = _CXL_REASONS[b"%d" % code]
                out[reason] = out.get(reason, 0) + count
        return dict(sorted(out.items()))

    # ------------------------------------------------------------ the run

    def cycle(self) -> int:
        now = self.clock()
        due = self._due(now)
        ts = self._timestamp()
        if due > self.due:
            self._make_due(due, ts)
        work = 0
        for c in self.sessions:
            work += self._flush(c, now)
        now = self.clock()
        if self._readable is None:
            self._readable = select.poll()
            for c in self.sessions:
                self._readable.register(c.sock, select.POLLIN)
        # only the sockets with something to read: a receive that finds nothing costs a
        # system call and an exception each
        for fd, _ in self._readable.poll(0):
            work += self._receive(self._by_fd[fd], now)
        for c in self.sessions:
            if now - c.last_send > self.heartbeat_ns and not self._unsent(c):
                self._send_admin(c, b"0", b"", ts)
                self._flush(c, now)
        return work

    def done(self) -> bool:
        return (self.due >= self.n and self.run_words[K.R_ACKED] >= self.n
                and not any(self._unsent(c) for c in self.sessions))

    def late(self, now: int, limit_ns: int) -> int:
        """Orders known to have taken longer than ``limit_ns`` (acknowledged late, or not yet
        and intended longer ago): each order is looked at once, when its time is that old."""
        old = self._due(now - limit_ns)
        if old > self._late_upto:
            ack = self.orders[self._late_upto:old, K.O_ACK_AT]
            self._late += int(np.count_nonzero((ack < 0) | (ack - self.intended[self._late_upto:old] > limit_ns)))
            self._late_upto = old
        return self._late

    def run(self, drain_s: float = DRAIN_S, fail_fast: tuple[float, float] | None = None,
            cycle_us: float = CYCLE_US) -> bool:
        """Duty cycles until every order is sent and acknowledged, or ``drain_s`` after the last
        intended time; False when stopped early (``fail_fast``: (latency µs, fraction), as
        load.py's)."""
        if not len(self.intended):
            self.start()
        deadline = int(self.intended[-1]) + int(drain_s * NS)
        cycle_ns = int(cycle_us * 1000)
        limit_ns = int(fail_fast[0] * 1000) if fail_fast else 0
        allowed = int(fail_fast[1] * self.n) if fail_fast else 0
        check_at = self.t0 + NS
        socks = [c.sock for c in self.sessions]
        while not self.done():
            start = self.clock()
            self.cycle()
            now = self.clock()
            if now > deadline:
                return True  # ran to its end; what is unacknowledged says the rest
            if fail_fast and now >= check_at:
                check_at = now + NS
                if self.late(now, limit_ns) > allowed:
                    return False
            if start + cycle_ns > now:
                time.sleep((start + cycle_ns - now) / NS)
                now = self.clock()
            nxt = int(self.intended[self.due]) if self.due < self.n else now + 1_000_000
            pending = [c.sock for c in self.sessions if self._unsent(c)]
            select.select(socks, pending, [], 0.001 if pending else min(0.001, max(0.0, (nxt - now) / NS)))
        return True

    def logout(self, timeout: float = 2.0) -> None:
        """Logout on each session (after what is queued), then read until its answer or the
        close, bounded; the sockets are closed."""
        deadline = time.monotonic() + timeout
        ts = self._timestamp()
        for c in self.sessions:
            try:
                if not c.logged_out:
                    self._send_admin(c, b"5", b"", ts)
                c.sock.setblocking(True)
                c.sock.settimeout(max(0.01, deadline - time.monotonic()))
                w = c.words
                c.sock.sendall(self.out[c.s, w[K.S_OUT_SENT]:w[K.S_OUT_END]])
                w[K.S_OUT_BASE] += w[K.S_OUT_END]
                w[K.S_OUT_SENT] = w[K.S_OUT_END] = 0
                while not c.logged_out and time.monotonic() < deadline:
                    c.sock.settimeout(max(0.01, deadline - time.monotonic()))
                    data = c.sock.recv(65536)
                    if not data:
                        break
                    c.feed(data)
                    try:
                        self._parse(c, self.clock())
                    except LoadError:
                        break  # its Logout: the answer awaited
            except OSError:
                pass
            finally:
                c.sock.close()

    def result(self) -> dict[str, Any]:
        import numpy as np

        from ringex.tools.load import _histogram, _max, _pct

        intended = self.intended
        ack, sent, fill = (self.orders[:, w] for w in (K.O_ACK_AT, K.O_SENT_AT, K.O_FILL_AT))
        kinds = self.orders[:, K.O_KIND]
        acked, was_sent = ack >= 0, sent >= 0
        ack_h = _histogram((ack - intended)[acked])
        fill_h = _histogram((fill - intended)[(fill >= 0) & (kinds == IOC)])
        lag = (sent - intended)[was_sent]
        last_ack = int(ack.max()) if acked.any() else self.t0

        def us(v: Any) -> float:
            return round(float(v) / 1000, 1)

        return {
            "offered_rate": self.rate, "orders": self.n, "sent": int(was_sent.sum()), "acked": int(acked.sum()),
            "unacked": int(self.n - acked.sum()), "unsent": int(self.n - was_sent.sum()),
            "rejected": self.rejected(), "trades": self.trades,
            "achieved_rate": float(acked.sum()) * NS / max(1, last_ack - self.t0),
            "ack_p50_us": _pct(ack_h, 50), "ack_p90_us": _pct(ack_h, 90), "ack_p99_us": _pct(ack_h, 99),
            "ack_p999_us": _pct(ack_h, 99.9), "ack_max_us": _max(ack_h),
            "fill_p50_us": _pct(fill_h, 50), "fill_p99_us": _pct(fill_h, 99),
            "send_lag_p50_us": us(np.percentile(lag, 50)) if len(lag) else None,
            "send_lag_p99_us": us(np.percentile(lag, 99)) if len(lag) else None,
            "orders_passive": int((kinds == PASSIVE).sum()), "orders_cancel": int((kinds == CANCEL).sum()),
            "orders_ioc": int((kinds == IOC).sum()), "cancels_without_target": self.cancels_without_target,
            "passive_sent_as_ioc": self.demoted, "aggressive_leaned": self.leaned,
            "positions": {str(c.spec.account): c.position for c in self.sessions},
            "sequence_gaps": sum(c.gaps for c in self.sessions),
        }


def _compile() -> None:
    """The kernels compiled (or loaded from numba's cache) before any session logs on: a first
    run compiles for seconds, and a session silent that long is one the gateway tests and drops."""
    FixLoad([None], [FixSessionSpec("compile", "", 0)], [1], 1.0, 1.0)  # type: ignore[list-item]


def run_fix_load(host: str, port: int, sessions: str | Sequence[FixSessionSpec] = DEFAULT_SESSIONS,
                 symbol: str = SYMBOL, price: int = PRICE, rate: float = 1000.0, duration: float = 10.0,
                 seed: int = 1, drain_s: float = DRAIN_S, fail_fast: tuple[float, float] | None = None,
                 heartbeat_s: int = HEARTBEAT_S, cycle_us: float = CYCLE_US, max_live: int = MAX_LIVE,
                 max_position: int = MAX_POSITION) -> dict[str, Any]:
    """Offer ``rate`` orders/s for ``duration`` s over FIX sessions to ``host:port``; the
    figures (``FixLoad.result``, with ``completed``, ``run_s``, ``generator_cpu_percent``)."""
    import gc

    specs = parse_sessions(sessions) if isinstance(sessions, str) else list(sessions)
    _compile()
    socks: list[socket.socket] = []
    next_in: list[int] = []
    received: list[bytes] = []
    try:
        for spec in specs:
            sock, nin, after = _logon(host, port, spec, heartbeat_s)
            socks.append(sock)
            next_in.append(nin)
            received.append(after)
        gen = FixLoad(socks, specs, next_in, rate, duration, symbol=symbol, price=price, seed=seed,
                      max_live=max_live, max_position=max_position, heartbeat_s=heartbeat_s, received=received)
    except BaseException:
        for s in socks:
            s.close()
        raise
    was_enabled = gc.isenabled()
    try:
        gc.disable()
        cpu, wall = time.process_time(), time.monotonic()
        completed = gen.run(drain_s=drain_s, fail_fast=fail_fast, cycle_us=cycle_us)
        cpu, wall = time.process_time() - cpu, time.monotonic() - wall
    finally:
        if was_enabled:
            gc.enable()
        gen.logout()
    out = gen.result()
    out.update(completed=completed, run_s=round(wall, 3), generator_cpu_percent=round(100 * cpu / max(wall, 1e-9), 1))
    return out
