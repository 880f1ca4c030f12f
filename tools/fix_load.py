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

For speed the hot path does not go through ``FixReader``/``FixMessage`` (which frame and parse
at ~15k messages/s in Python): orders are written with a pre-built header and checksummed by
hand (the same bytes ``fix_codec.encode`` makes; a test checks it), and responses are framed
by BodyLength and their fields picked out with one regular expression. A stream that does not
frame (a garbled message from the gateway) stops the run.
"""

from __future__ import annotations

import math
import random
import re
import select
import socket
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Sequence

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

PASSIVE, CANCEL, IOC = 0, 1, 2
KIND_P = (0.6, 0.3, 0.1)  # the engine benchmark's mix (tools/load.py)
MID_RANGE = 0.02
MAX_LIVE = 40
MAX_POSITION = 20
_CXL_REASONS = {b"0": "TooLateToCancel", b"1": "UnknownOrder", b"3": "CancelPending", b"6": "DuplicateClOrdID"}

_FIELD = re.compile(rb"(\d+)=([^\x01]*)\x01")
_PREFIX = b"8=FIX.4.4\x019="


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
    def __init__(self, s: int, spec: FixSessionSpec, sock: socket.socket, next_in: int) -> None:
        self.s, self.spec, self.sock = s, spec, sock
        self.sender = spec.comp_id.encode()
        self.account = b"%d" % spec.account
        self.seq = 2  # the Logon was 1
        self.next_in = next_in
        self.out = bytearray()
        self.sent_bytes = 0  # of out, handed to the socket (out is trimmed as it goes)
        self.inflight: deque[tuple[int, int]] = deque()  # (end offset in out, order number) not yet handed over
        self.rbuf = bytearray()
        self.last_send = 0
        self.working: dict[int, bytes] = {}  # passive orders working (local number -> side)
        self.fifo: deque[int] = deque()  # acknowledged passive orders, oldest first
        self.position = 0
        self.seq_order: dict[int, int] = {}  # MsgSeqNum -> order number (for a session Reject)
        self.gaps = 0
        self.logged_out = False


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
        self.kinds, self.prices, self.buys, self.mids = make_flow(self.n, self.S, price, seed, max_live)
        # ClOrdIDs unique on this exchange across runs: a run tag, then the session's order number
        self.tag = b"%s-" % format(time.time_ns() % (36 ** 6), "x").encode()
        self.sessions = [_Session(s, spec, sock, nin) for s, (spec, sock, nin) in enumerate(zip(specs, socks, next_in))]
        for c, data in zip(self.sessions, received):
            c.rbuf += data
        self.ack_at = [-1] * self.n
        self.sent_at = [-1] * self.n
        self.fill_at = [-1] * self.n
        self.rejects: dict[str, int] = {}
        self.trades = 0
        self.acked = 0
        self.due = 0
        self.cancels_without_target = self.demoted = self.leaned = 0
        self.intended: list[int] = []
        self.t0 = 0
        self._ts_ms = -1
        self._ts = b""
        self._late = self._late_upto = 0

    # ------------------------------------------------------------ sending

    def _timestamp(self) -> bytes:
        wall = time.time_ns()
        ms = wall // 1_000_000
        if ms != self._ts_ms:
            from ringex.gateways.fix_codec import utc_timestamp

            self._ts_ms, self._ts = ms, utc_timestamp(wall)
        return self._ts

    def start(self, t0: int | None = None) -> None:
        self.t0 = self.clock() if t0 is None else t0
        step = NS / self.rate
        self.intended = [self.t0 + int(i * step) for i in range(self.n)]
        for c in self.sessions:
            c.last_send = self.t0

    def _due(self, now: int) -> int:
        d = now - self.t0
        if d < 0:
            return 0
        return min(self.n, int(d * self.rate / NS) + 1)

    def _make_due(self, upto: int, ts: bytes) -> None:
        S, tag, sym = self.S, self.tag, self.symbol
        for i in range(self.due, upto):
            c = self.sessions[i % S]
            k = i // S
            kind = self.kinds[i]
            cl = b"%s%d" % (tag, k)
            if kind == CANCEL:
                target = None
                while c.fifo:
                    t = c.fifo.popleft()
                    side = c.working.pop(t, None)
                    if side is not None:
                        target = t
                        break
                if target is None:
                    self.cancels_without_target += 1
                    body = b"41=none\x0111=%s\x0155=%s\x0154=1\x0160=%s\x01" % (cl, sym, ts)
                else:
                    body = b"41=%s%d\x0111=%s\x0155=%s\x0154=%s\x0160=%s\x01" % (tag, target, cl, sym, side, ts)
                msg_type = b"F"
            else:
                buy, price = self.buys[i], self.prices[i]
                tif = b"1"
                if kind == PASSIVE:
                    if len(c.working) >= self.max_live:
                        tif = b"3"
                        self.demoted += 1
                    else:
                        c.working[k] = b"1" if buy else b"2"
                else:
                    tif = b"3"
                    if abs(c.position) > self.max_position and buy != (c.position < 0):
                        buy = c.position < 0
                        price = max(1, 2 * self.mids[i] - price)
                        self.leaned += 1
                body = (b"11=%s\x011=%s\x0155=%s\x0154=%s\x0160=%s\x0138=1\x0140=2\x0144=%d\x0159=%s\x01"
                        % (cl, c.account, sym, b"1" if buy else b"2", ts, price, tif))
                msg_type = b"D"
            c.seq_order[c.seq] = i
            c.out += _frame(c.sender, c.seq, ts, msg_type, body)
            c.seq += 1
            c.inflight.append((len(c.out), i))
        self.due = upto

    def _send_admin(self, c: _Session, msg_type: bytes, body: bytes, ts: bytes) -> None:
        c.out += _frame(c.sender, c.seq, ts, msg_type, body)
        c.seq += 1

    def _flush(self, c: _Session, now: int) -> int:
        if c.sent_bytes >= len(c.out):
            return 0
        try:
            k = c.sock.send(memoryview(c.out)[c.sent_bytes:])
        except (BlockingIOError, InterruptedError):
            return 0
        except OSError as exc:
            self._drain_on_error(c, now)
            raise LoadError(f"{c.spec.comp_id}: send failed: {exc}") from exc
        c.sent_bytes += k
        c.last_send = now
        sent = 0
        while c.inflight and c.inflight[0][0] <= c.sent_bytes:
            self.sent_at[c.inflight.popleft()[1]] = now
            sent += 1
        if c.sent_bytes == len(c.out):
            c.out.clear()
            c.sent_bytes = 0
            c.inflight.clear()
        elif c.sent_bytes > 1 << 20:  # trim what went, keeping the offsets right
            cut = c.sent_bytes
            del c.out[:cut]
            c.sent_bytes = 0
            c.inflight = deque((end - cut, i) for end, i in c.inflight)
        return sent

    def _drain_on_error(self, c: _Session, now: int) -> None:
        """The gateway closed the connection: its Logout may say why."""
        try:
            c.sock.setblocking(True)
            c.sock.settimeout(0.2)
            while True:
                data = c.sock.recv(65536)
                if not data:
                    break
                c.rbuf += data
                self._parse(c, now)
        except LoadError:
            raise
        except Exception:
            pass

    # ------------------------------------------------------------ receiving

    def _receive(self, c: _Session, now: int) -> int:
        try:
            data = c.sock.recv(1 << 20)
        except (BlockingIOError, InterruptedError):
            return 0
        except OSError as exc:
            raise LoadError(f"{c.spec.comp_id}: {exc}") from exc
        if not data:
            raise LoadError(f"{c.spec.comp_id}: the gateway closed the connection")
        c.rbuf += data
        return self._parse(c, now)

    def _parse(self, c: _Session, now: int) -> int:
        buf = c.rbuf
        pos, count, size = 0, 0, len(buf)
        while size - pos > 16:
            if buf[pos:pos + 12] != _PREFIX:
                raise LoadError(f"{c.spec.comp_id}: garbled stream from the gateway: {bytes(buf[pos:pos + 40])!r}")
            soh = buf.find(b"\x01", pos + 12, pos + 24)
            if soh < 0:
                raise LoadError(f"{c.spec.comp_id}: garbled BodyLength from the gateway")
            end = soh + 1 + int(buf[pos + 12:soh]) + 7
            if end > size:
                break
            self._message(c, dict(_FIELD.findall(buf, soh + 1, end - 7)), now)
            pos = end
            count += 1
        if pos:
            del buf[:pos]
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
        if i >= 0 and self.ack_at[i] < 0:
            self.ack_at[i] = now
            self.acked += 1

    def _refused(self, reason: str) -> None:
        self.rejects[reason] = self.rejects.get(reason, 0) + 1

    def _gone(self, c: _Session, cl: bytes | None) -> None:
        i = self._order(c, cl)
        if i >= 0:
            c.working.pop(i // self.S, None)

    def _message(self, c: _Session, f: dict[bytes, bytes], now: int) -> None:
        seq = int(f.get(b"34", b"0"))
        if seq > c.next_in:
            c.gaps += 1
        c.next_in = max(c.next_in, seq + 1)
        t = f.get(b"35")
        if t == b"8":
            i = self._order(c, f.get(b"11"))
            self._ack(i, now)
            et = f.get(b"150")
            if et == b"0":
                if i >= 0 and self.kinds[i] == PASSIVE and (i // self.S) in c.working:
                    c.fifo.append(i // self.S)
            elif et == b"F":
                qty = int(f.get(b"32", b"0"))
                c.position += qty if f.get(b"54") == b"1" else -qty
                if i >= 0:
                    if self.kinds[i] == IOC:
                        self.trades += 1  # counted once: on the taker's report
                        if self.fill_at[i] < 0:
                            self.fill_at[i] = now
                    if f.get(b"151") == b"0":
                        c.working.pop(i // self.S, None)
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
            i = c.seq_order.get(int(f.get(b"45", b"0")), -1)
            self._ack(i, now)
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
        for c in self.sessions:
            work += self._receive(c, now)
        for c in self.sessions:
            if now - c.last_send > self.heartbeat_ns and c.sent_bytes >= len(c.out):
                self._send_admin(c, b"0", b"", ts)
                self._flush(c, now)
        return work

    def done(self) -> bool:
        return self.due >= self.n and self.acked >= self.n and all(c.sent_bytes >= len(c.out) for c in self.sessions)

    def late(self, now: int, limit_ns: int) -> int:
        """Orders known to have taken longer than ``limit_ns`` (acknowledged late, or not yet
        and intended longer ago): each order is looked at once, when its time is that old."""
        old = self._due(now - limit_ns)
        ack, intended = self.ack_at, self.intended
        for j in range(self._late_upto, old):
            if ack[j] < 0 or ack[j] - intended[j] > limit_ns:
                self._late += 1
        self._late_upto = max(self._late_upto, old)
        return self._late

    def run(self, drain_s: float = DRAIN_S, fail_fast: tuple[float, float] | None = None,
            cycle_us: float = CYCLE_US) -> bool:
        """Duty cycles until every order is sent and acknowledged, or ``drain_s`` after the last
        intended time; False when stopped early (``fail_fast``: (latency µs, fraction), as
        load.py's)."""
        if not self.intended:
            self.start()
        deadline = self.intended[-1] + int(drain_s * NS)
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
            nxt = self.intended[self.due] if self.due < self.n else now + 1_000_000
            pending = [c.sock for c in self.sessions if c.sent_bytes < len(c.out)]
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
                c.sock.sendall(memoryview(c.out)[c.sent_bytes:])
                c.out.clear()
                c.sent_bytes = 0
                while not c.logged_out and time.monotonic() < deadline:
                    c.sock.settimeout(max(0.01, deadline - time.monotonic()))
                    data = c.sock.recv(65536)
                    if not data:
                        break
                    c.rbuf += data
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

        intended = np.array(self.intended, np.int64)
        ack, sent, fill = (np.array(a, np.int64) for a in (self.ack_at, self.sent_at, self.fill_at))
        kinds = np.array(self.kinds, np.int8)
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
            "rejected": dict(sorted(self.rejects.items())), "trades": self.trades,
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


def run_fix_load(host: str, port: int, sessions: str | Sequence[FixSessionSpec] = DEFAULT_SESSIONS,
                 symbol: str = SYMBOL, price: int = PRICE, rate: float = 1000.0, duration: float = 10.0,
                 seed: int = 1, drain_s: float = DRAIN_S, fail_fast: tuple[float, float] | None = None,
                 heartbeat_s: int = HEARTBEAT_S, cycle_us: float = CYCLE_US, max_live: int = MAX_LIVE,
                 max_position: int = MAX_POSITION) -> dict[str, Any]:
    """Offer ``rate`` orders/s for ``duration`` s over FIX sessions to ``host:port``; the
    figures (``FixLoad.result``, with ``completed``, ``run_s``, ``generator_cpu_percent``)."""
    import gc

    specs = parse_sessions(sessions) if isinstance(sessions, str) else list(sessions)
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
