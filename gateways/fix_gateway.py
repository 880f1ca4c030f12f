"""The FIX 4.4 order-entry gateway: tag=value over TCP, a FIX session per counterparty.

The duty cycle, the rings, staging, routing and crash recovery are every gateway's
(``gateway_agent.GatewayAgent``); this is the FIX front end on them:

* a connection is bound to a session by its Logon: SenderCompID names the counterparty
  (``[[gateway.session]] target_comp_id``), TargetCompID must be the gateway's ``comp_id``;
  an unknown CompID is logged out with the reason and counted, and so is a Logon for a
  session that is logged on from another connection;
* each session's FIX rules (numbers, gaps, resends, heartbeats, validation) are
  ``fix_session.FixSession``'s, on the same persistent flow store as the binary gateway's,
  so an ExecutionReport sent while the counterparty was away is resent when it asks;
* an application message becomes an engine message through ``fix_orders`` (ClOrdIDs kept in
  the session's ``OrderBook`` file), is throttled and staged with its MsgSeqNum in the
  stamp's seq word (so a restarted gateway finds what it had published), or is answered at
  once with the report ``fix_orders.refusal_report`` makes, never sequenced;
* each engine event routed to the session becomes its ExecutionReport, OrderCancelReject or
  OrderMassCancelReport (``fix_orders.execution_report``), stored under its MsgSeqNum with
  the ring position it came from, and sent when the session is logged on.

ExecIDs are the engine's input sequence number and the event's rank among that input's
events for the session (``<seq>.<k>``): unique for the life of the data directory and the
same when a replay regenerates the events.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any

import numpy as np

from ringex.engine.wire import messages as m
from ringex.engine.wire.rejections import rejection_for
from ringex.gateways import fix_orders as fo
from ringex.gateways.connection import Connection
from ringex.gateways.fix_codec import FixMessage, FixReader, Garbled, utc_timestamp
from ringex.gateways.fix_instrument import FixInstrument, FixRefusal
from ringex.gateways.fix_order_book import OrderBook
from ringex.gateways.fix_session import FixSession, FixSessionConfig
from ringex.gateways.gateway_agent import GatewayAgent, log
from ringex.gateways.gateway_config import GatewayConfig, SessionConfig
from ringex.gateways.session_store import SessionStore
from ringex.gateways.throttle import Throttle

__all__ = ["FixGatewayAgent", "FixGatewaySession"]

MAX_MESSAGE = 8192  # the largest FIX message a counterparty may send
READ_SIZE = 1 << 16
NS = 1_000_000_000

_THROTTLED = int(m.RejectReason.Throttled)
_SCHEMA = m.SCHEMA


class FixGatewaySession:
    """One configured FIX counterparty: its session layer, ClOrdID book, throttle and store,
    and the connection it is logged on from (None while away)."""

    def __init__(self, cfg: SessionConfig, gateway: GatewayConfig, directory: Path,
                 instruments: dict[bytes, FixInstrument], now_ns: int) -> None:
        self.cfg = cfg
        self.id = cfg.id
        self.accounts = frozenset(cfg.accounts)
        self.store = SessionStore(directory, cfg.id)
        self.book = OrderBook(directory / f"session-{cfg.id}.orders")
        self.fix = FixSession(FixSessionConfig(
            sender_comp_id=gateway.comp_id, target_comp_id=cfg.target_comp_id, password=cfg.credentials,
            min_heartbeat_s=max(1, gateway.keepalive_min_ms // 1000),
            max_heartbeat_s=max(1, gateway.keepalive_max_ms // 1000)), self.store)
        self.throttle = Throttle(cfg.max_msgs_per_s, cfg.bucket(), now_ns)
        self.instruments = instruments
        self.by_id = {i.id: i for i in instruments.values()}
        self.conn: Connection | None = None
        self._exec_seq = -1  # the engine input whose events are being numbered, and how many so far
        self._exec_k = 0

    def account_ok(self, account: int) -> bool:
        return account in self.accounts

    # --------------------------------------------------------------- what the gateway calls

    def applied(self, seq: int) -> None:
        """Counterparty message ``seq`` is published (or answered): counted in the store."""
        self.store.applied(seq)

    def recovered(self, seq: int) -> None:
        """A restarted gateway found message ``seq`` already in its inbound ring."""
        self.applied(seq)

    def deliver_events(self, region: np.ndarray, rows: np.ndarray, sizes: np.ndarray, positions: np.ndarray,
                       source: int, created: int) -> None:
        """Each routed engine event as the FIX messages it gives this session, stored under
        the ring position it came from and sent if the session is logged on."""
        now, wall = time.monotonic_ns(), time.time_ns()
        for row, position in zip(rows.tolist(), positions.tolist()):
            d = _SCHEMA.decode(region[row])
            ev = d.fields
            seq = int(ev.get("seq", 0))
            if seq != self._exec_seq:
                self._exec_seq, self._exec_k = seq, 0
            self._exec_k += 1
            exec_id = b"%d.%d" % (seq, self._exec_k)
            transact = utc_timestamp(int(ev.get("timestampNs", 0)) or wall)
            for out in fo.execution_report(d.name, ev, self.book, self.by_id, self.id, exec_id):
                self.fix.send(out.msg_type, out.body + [(60, transact)], wall, now, source, created, position)
        self.flush_to_connection()

    def detach(self, conn: Connection) -> bool:
        """``conn`` ended; True if it was this session's logged-on connection."""
        if self.conn is conn:
            self.conn = None
            self.fix.disconnected()
            return True
        return False

    def flush_to_connection(self) -> None:
        """Queue what the session layer produced on the connection (stored already: with no
        connection it waits in the store for a ResendRequest)."""
        if self.fix.out:
            # stored before written: a number the counterparty saw is never given again
            self.store.flush()
            if self.conn is not None:
                self.conn.queue_framed(bytes(self.fix.out))
            self.fix.out.clear()
        if self.conn is not None and self.fix.closing:
            self.conn.closing = True

    def close(self) -> None:
        self.store.close()
        self.book.close()


class FixGatewayAgent(GatewayAgent):
    """FIX 4.4 order entry for the configured counterparties over one listening socket."""

    def __init__(self, cfg: GatewayConfig, inbound_ring: str, output_ring: str, reject_ring: str,
                 subscriber_index: int, state_dir: str | Path, instruments: list[FixInstrument],
                 batch_limit: int = 1024, latency_prefix: str | None = None) -> None:
        super().__init__(cfg, inbound_ring, output_ring, reject_ring, subscriber_index, state_dir,
                         batch_limit=batch_limit, latency_prefix=latency_prefix)
        self.instruments = {i.symbol: i for i in instruments}

    # ---------------------------------------------------------------- protocol hooks

    def counter_labels(self) -> dict[str, str]:
        g = f"gateway {self.cfg.name}"
        return super().counter_labels() | {
            "logons": f"{g}: logons",
            "bad_logons": f"{g}: logons refused",
            "garbled": f"{g}: garbled messages ignored",
            "rejects": f"{g}: session Rejects sent",
            "refused": f"{g}: orders refused by the gateway",
            "throttled": f"{g}: orders refused (throttle)",
        }

    def _make_sessions(self, directory: Path, now: int) -> dict[int, FixGatewaySession]:
        sessions = {s.id: FixGatewaySession(s, self.cfg, directory, self.instruments, now) for s in self.cfg.session}
        self._by_comp = {s.cfg.target_comp_id.encode(): s for s in sessions.values()}
        return sessions

    def _connection(self, sock: socket.socket, peer: str, now: int) -> Connection:
        return Connection(sock, peer, MAX_MESSAGE, self.cfg.max_backlog_bytes, now, reader=FixReader(MAX_MESSAGE))

    def _goodbye(self, conn: Connection) -> None:
        s = conn.session
        if s is not None:
            s.fix.logout("the gateway is stopping", time.time_ns(), time.monotonic_ns())
            s.flush_to_connection()

    def _end_slow(self, conn: Connection) -> None:
        conn.discard_output()
        conn.closing = True
        log.info("gateway %s: %r did not read %d bytes of its output: disconnected", self.cfg.name, conn,
                 self.cfg.max_backlog_bytes)

    def _timers(self, now: int) -> None:
        wall = time.time_ns()
        for conn in self._conns:
            if conn.closed:
                continue
            s = conn.session
            if s is None:
                if now - conn.opened_ns > 10 * NS:  # no Logon
                    conn.closing = True
                continue
            s.fix.on_timer(now, wall)
            s.flush_to_connection()

    # ---------------------------------------------------------------- receiving

    def _receive(self, conn: Connection, now: int, wall: int) -> int:
        if conn.closing or conn.closed:
            return 0
        try:
            data = conn.sock.recv(READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return 0
        except OSError as exc:
            self._drop(conn, f"receive failed: {exc.strerror}")
            return 1
        if not data:
            self._drop(conn, "closed by the counterparty")
            return 1
        conn.last_recv_ns = now
        found = conn.reader.feed(data)
        for item in found:
            if conn.closing or conn.closed:
                break
            if isinstance(item, Garbled):
                self._count("garbled")
                if conn.session is not None:
                    conn.session.fix.on_garbled(item)
                continue
            s = conn.session if conn.session is not None else self._logon(conn, item, now)
            if s is None:
                continue
            rejects = s.fix.stats.rejects_sent
            for app in s.fix.on_message(item, now, wall):
                self._application(s, app, wall, now)
            if s.fix.stats.rejects_sent > rejects:
                self._count("rejects", s.fix.stats.rejects_sent - rejects)
            s.flush_to_connection()
        return len(found) or 1

    def _logon(self, conn: Connection, msg: FixMessage, now: int) -> FixGatewaySession | None:
        """Bind ``conn`` to the session its first message names, or end it."""
        s = self._by_comp.get(msg.get(49) or b"")
        if s is None or msg.msg_type != b"A":
            self._count("bad_logons")
            why = "first message not a Logon" if msg.msg_type != b"A" else "unknown SenderCompID"
            log.info("gateway %s: %r refused: %s", self.cfg.name, conn, why)
            conn.closing = True  # we do not know whom to answer, so no Logout
            return None
        if s.conn is not None and not s.conn.closed:
            self._count("bad_logons")
            log.info("gateway %s: %r refused: session %d is logged on from %r", self.cfg.name, conn, s.id, s.conn)
            conn.closing = True
            return None
        s.fix.connected(now)
        logons = s.fix.stats.logons
        conn.session = s
        s.conn = conn
        apps = s.fix.on_message(msg, now, time.time_ns())
        if s.fix.stats.logons > logons:
            conn.established = True
            self._count("logons")
        else:
            self._count("bad_logons")
            s.flush_to_connection()
            s.conn = None
            conn.session = None
            conn.closing = True
            return None
        for app in apps:
            self._application(s, app, time.time_ns(), now)
        s.flush_to_connection()
        return None  # the Logon itself is handled

    # ---------------------------------------------------------------- application messages

    def _application(self, s: FixGatewaySession, msg: FixMessage, wall: int, now: int) -> None:
        """One application message in sequence: staged for the engine, or answered here."""
        seq = msg.seq_num or 0
        fields = dict(msg.fields)
        t = msg.msg_type
        try:
            if t == b"D":
                name, kw = "NewOrder", fo.new_order(fields, s.book, self.instruments, s.account_ok, s.id)
            elif t == b"F":
                name, kw = "CancelOrder", fo.cancel(fields, s.book, s.id)
            elif t == b"G":
                name, kw = "ReplaceOrder", fo.replace(fields, s.book, self.instruments, s.id)
            elif t == b"q":
                name, kw = "MassCancel", fo.mass_cancel(fields, s.book, self.instruments, s.account_ok, s.id)
            elif t == b"H":
                body = fo.status(fields, s.book, b"%d.0" % seq)
                s.fix.send(b"8", body + [(60, utc_timestamp(wall))], wall, now)
                return s.applied(seq)
            else:  # a message type the dictionary knows and no one here serves
                raise FixRefusal("business", f"{t.decode()} is not served by this gateway", 35,
                                 business_reason=3)
        except FixRefusal as refusal:
            self._count("refused")
            answer = fo.refusal_report(t, fields, refusal, b"%d.0" % seq, s.book)
            body = answer.body + ([(45, seq)] if answer.msg_type == b"j" else [(60, utc_timestamp(wall))])
            s.fix.send(answer.msg_type, body, wall, now)
            return s.applied(seq)
        payload = getattr(m, name).encode(**kw)
        if not s.throttle.take(now):
            self._count("throttled")
            self._refuse_throttled(s, payload, wall, now)
            return s.applied(seq)
        self._stage_message(payload, s.id, seq, wall)
        self._count("orders_in")

    def _refuse_throttled(self, s: FixGatewaySession, payload: bytes, wall: int, now: int) -> None:
        """What the engine would answer a refused order with, as this session's report."""
        row = np.zeros(m.SLOT_SIZE, np.uint8)
        row[:len(payload)] = np.frombuffer(payload, np.uint8)
        answer = rejection_for(row[:len(payload)], _THROTTLED, wall)
        d = _SCHEMA.decode(np.frombuffer(answer, np.uint8))
        for out in fo.execution_report(d.name, d.fields, s.book, s.by_id, s.id, b"T%d" % s.store.next_seq):
            s.fix.send(out.msg_type, out.body + [(60, utc_timestamp(wall))], wall, now)



def instruments_for(instruments: list[Any]) -> list[FixInstrument]:
    """The FIX view of the configured instruments (their decimals from the configuration)."""
    return [FixInstrument.from_config(i, i.price_decimals, i.qty_decimals) for i in instruments]
