"""The binary order-entry gateway: SBE over TCP, SOFH framing, FIXP sessions (docs/binary-protocol.md).

One agent serves every connection inside its duty cycle, non-blocking, with no thread per
connection and no event loop: one readiness poll (epoll, not waiting) says which sockets
have something; accept what is waiting; receive once from each ready connection (round
robin, while the staging rows have room) and take its run of orders in one compiled call
(``inbound.take_orders``), anything else frame by frame here; put the staged orders on the
gateway's inbound ring in one publish; read the engine's output and the sequencer's
rejections, route each event to its session (``routing.route``), store and frame each
session's share in one compiled pass (``outbound.pack_events``) and queue it; write each
connection's queue with one ``send``; keep the FIXP timers.

Every refusal has its own answer (docs/binary-protocol.md, "Bad input"): a stream that
cannot be framed, a message this schema cannot read, or one out of place ends the connection
with a ``Terminate`` naming the reason; a refused Negotiate or Establish gets its reject and
the connection is closed; an order for an account the session may not trade, or over its
rate, gets ``OrderRejected``/``CancelRejected`` (``AccountNotPermitted``, ``Throttled``)
and is never sequenced. One connection's failure is handled on that connection only.

The gateway is the single producer of ``<prefix>-in-<name>`` and subscriber ``index`` of
``<prefix>-out`` and ``<prefix>-rej``. Restarted after a crash it resumes both consumers from
their cursors and skips the events its session stores already hold, so no session sees an
event twice or misses one, and it reads back from its inbound ring the client numbers it
had published but not yet counted (``_recover_applied``), so no order is applied twice; if
it was untethered meanwhile it rejoins at the head, and what it missed is not in the stores
(noted in docs/binary-protocol.md).
"""

from __future__ import annotations

import errno
import logging
import select
import socket
import struct
import time
from pathlib import Path

import numpy as np

from ringex import crash_points
from ringex.engine.wire import messages as m
from ringex.engine.wire.codec import HEADER, CodecError
from ringex.engine.wire.rejections import rejection_for
from ringex.gateways.connection import Connection
from ringex.gateways.fixp_session import FixpSession, terminate_message
from ringex.gateways.gateway_config import GatewayConfig
from ringex.gateways.inbound import DONE, FULL, SESSION_WORDS, take_orders
from ringex.gateways.outbound import pack_events
from ringex.gateways.routing import MESSAGE_SIZE, route
from ringex.gateways.session_store import SOURCE_OUTPUT, SOURCE_REJECT
from ringex.gateways.sofh import (
    SBE_1_0_LITTLE_ENDIAN,
    SCAN_TOO_LONG,
    SCAN_TOO_SHORT,
    ConnectionClosed,
    FramingError,
    scan,
)
from ringex.ringbuffer.agent import Agent
from ringex.ringbuffer.consumer import Consumer
from ringex.ringbuffer.counters import TYPE_BACK_PRESSURE, TYPE_USER
from ringex.ringbuffer.errors import UntetheredError
from ringex.ringbuffer.latency import EgressMarks, LatencyRecorder, latency_name
from ringex.ringbuffer.latency import warm_up as warm_up_recorders
from ringex.ringbuffer.producer import Producer
from ringex.ringbuffer.ring import Ring

log = logging.getLogger("ringex.gateway")

__all__ = ["SbeGatewayAgent", "ADDRESS_FILE"]

ADDRESS_FILE = "listening"  # in the gateway's directory: "host:port" it is bound to
HANDSHAKE_TIMEOUT_NS = 5_000_000_000  # a connection must establish within this
TIMER_EVERY_NS = 10_000_000
KEEPALIVE_LAPSE = 1.5  # intervals of silence before a client is terminated
MAX_FRAME = 8 + 1024  # SOFH length a client may send: the largest message and then some
STAGE_HIGH = 1024  # stop receiving while this many orders wait for the ring
# room for what is staged and one receive's worth of the smallest order-entry frames
READ_SIZE = 1 << 16
STAGE_ROWS = STAGE_HIGH + (MAX_FRAME + READ_SIZE) // (6 + min(x.size for x in m.ORDER_ENTRY)) + 16

_TC = m.TerminationCode
_CRASH = crash_points.ARMED
_SCHEMA = m.SCHEMA
_ORDER_ENTRY = {x.template_id: x for x in m.ORDER_ENTRY}
_SESSION_IN = {x.template_id for x in (m.Negotiate, m.Establish, m.Sequence, m.RetransmitRequest, m.Terminate)}
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_SEQ, _TS, _INGRESS = (m.NewOrder.offset(n) for n in ("seq", "timestampNs", "ingressNs"))
# per order-entry template: where its sessionId and account are, and a MassCancel's scope
_SESSION_AT = {t: x.offset("sessionId") for t, x in _ORDER_ENTRY.items()}
_ACCOUNT_AT = {t: x.offset("account") for t, x in _ORDER_ENTRY.items()}
_SCOPE_AT = m.MassCancel.offset("scope")
_NOT_PERMITTED = int(m.RejectReason.AccountNotPermitted)
_THROTTLED = int(m.RejectReason.Throttled)


def warm_up() -> None:
    """Compile (or load from numba's cache) every compiled path of the gateway, with the
    argument types of the duty cycle's calls (ring slots read-only). Compiled lazily, the
    first orders after a cold start would stall the duty cycle for seconds, long enough for
    the supervisor to judge the gateway hung and kill it."""
    slots = np.zeros((1, m.SLOT_SIZE), np.uint8)
    slots.flags.writeable = False  # what a ring consumer's read gives
    none = np.zeros(0, np.int64)
    scan(np.zeros(16, np.uint8), 0, 0, MAX_FRAME, SBE_1_0_LITTLE_ENDIAN, np.zeros((1, 2), np.int64))
    take_orders(np.zeros(16, np.uint8), np.zeros((0, 2), np.int64), 0, np.zeros(SESSION_WORDS, np.int64),
                np.zeros(4, np.int64), np.zeros(1, np.uint8), np.zeros((1, m.SLOT_SIZE), np.uint8), none.copy(),
                none.copy(), 0, 0, 0)
    route(slots, np.zeros(1, np.int64))
    pack_events(slots, none, none, none, 1, 0, 0, np.zeros(0, np.uint8), none.copy(), np.zeros(0, np.uint8))
    warm_up_recorders()


def _counter_labels(name: str) -> dict[str, str]:
    g = f"gateway {name}"
    return {
        "accepted": f"{g}: connections accepted",
        "refused_conn": f"{g}: connections refused (max_connections)",
        "negotiated": f"{g}: sessions negotiated",
        "established": f"{g}: sessions established",
        "bad_credentials": f"{g}: logons refused (credentials)",
        "bad_session": f"{g}: logons refused (unknown session)",
        "logon_refused": f"{g}: logons refused (other)",
        "terminated": f"{g}: connections terminated for bad input",
        "slow": f"{g}: slow consumers disconnected",
        "keepalive": f"{g}: keepalive lapses",
        "orders_in": f"{g}: orders in",
        "duplicates": f"{g}: duplicate client messages ignored",
        "not_permitted": f"{g}: orders refused (account not permitted)",
        "throttled": f"{g}: orders refused (throttle)",
        "events_out": f"{g}: messages to sessions",
        "retransmitted": f"{g}: messages retransmitted",
        "cancel_on_disconnect": f"{g}: cancel-on-disconnect sent",
    }


class SbeGatewayAgent(Agent):
    def __init__(self, cfg: GatewayConfig, inbound_ring: str, output_ring: str, reject_ring: str,
                 subscriber_index: int, state_dir: str | Path, batch_limit: int = 1024,
                 latency_prefix: str | None = None) -> None:
        """``latency_prefix``: record the engine-output-to-socket stage latency
        (``ringbuffer/latency.py``) under this exchange prefix; None records none."""
        self.latency_prefix = latency_prefix
        self.cfg = cfg
        self.role_name = cfg.name
        self.inbound_ring = inbound_ring
        self.output_ring = output_ring
        self.reject_ring = reject_ring
        self.subscriber_index = subscriber_index
        self.state_dir = str(state_dir)
        self.batch_limit = batch_limit
        self.address: tuple[str, int] | None = None

    # ---------------------------------------------------------------- lifecycle

    def on_start(self) -> None:
        warm_up()  # before any ring role: compiling in the duty cycle would look hung
        now = time.monotonic_ns()
        directory = Path(self.state_dir)
        directory.mkdir(parents=True, exist_ok=True)
        self._rings: list[Ring] = []
        inbound = self._attach(self.inbound_ring)
        self._in_ring = inbound
        self._in: Producer = inbound.producer(takeover=True)
        self._sources: list[tuple[Consumer, int, int]] = []
        for name, source in ((self.output_ring, SOURCE_OUTPUT), (self.reject_ring, SOURCE_REJECT)):
            ring = self._attach(name)
            consumer = ring.consumer(self.subscriber_index, takeover=True)
            if consumer.rejoined_at is not None:
                log.warning("gateway %s rejoined %s at %d after being untethered: events before it "
                            "are not in the session stores", self.cfg.name, name, consumer.rejoined_at)
            self._sources.append((consumer, source, ring.created_time_ns))
        self.sessions: dict[int, FixpSession] = {
            s.id: FixpSession(s, self.cfg, directory, now) for s in self.cfg.session}
        self._session_ids = np.array(sorted(self.sessions), np.int64)
        self._recover_applied()
        self._to_socket: LatencyRecorder | None = None
        self._published_at: EgressMarks | None = None
        if self.latency_prefix is not None:
            self._to_socket = LatencyRecorder(latency_name(self.latency_prefix, "engine_output_to_socket", self.cfg.name))
            self._published_at = EgressMarks(latency_name(self.latency_prefix, "sequencer_to_engine_output"))
        self._sent_positions: list[int] = []  # output positions of the events queued this cycle
        self._by_uuid = {s.uuid: s for s in self.sessions.values() if s.uuid != (0, 0)}
        self._conns: list[Connection] = []
        self._stage = np.zeros((STAGE_ROWS, m.SLOT_SIZE), np.uint8)
        self._stage_session = np.zeros(STAGE_ROWS, np.int64)  # 0: the gateway's own message
        self._stage_seq = np.zeros(STAGE_ROWS, np.int64)  # the client's number of each row
        self._staged = 0
        self._next_timer = now
        self._c = {}
        if self.counters is not None:
            self._c = {k: self.counters.allocate(v, TYPE_USER) for k, v in _counter_labels(self.cfg.name).items()}
            self._back_pressure = self.counters.allocate(f"gateway {self.cfg.name}: back-pressure",
                                                         TYPE_BACK_PRESSURE)
        host, port = self.cfg.address()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._listener = socket.socket(family, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((host, port))
        self._listener.listen(128)
        self._listener.setblocking(False)
        self._listener_fd = self._listener.fileno()
        self._poll = select.epoll()
        self._poll.register(self._listener_fd, select.EPOLLIN)
        self._next_first = 0
        self.address = self._listener.getsockname()[:2]
        (directory / ADDRESS_FILE).write_text(f"{self.address[0]}:{self.address[1]}\n")
        log.info("gateway %s listening on %s:%d with %d session(s)", self.cfg.name, *self.address,
                 len(self.sessions))

    def _attach(self, name: str) -> Ring:
        ring = Ring.attach(name, wait_s=5.0)
        self._rings.append(ring)
        return ring

    def doorbell_sources(self) -> list[object]:
        """Its output and reject consumers, and its epoll object: readable when a socket is
        (a new connection, a client's bytes)."""
        return [c for c, _, _ in self._sources] + [self._poll]

    def on_close(self) -> None:
        for conn in list(getattr(self, "_conns", [])):
            if not conn.closed:
                uuid = conn.session.uuid if conn.session is not None else (0, 0)
                conn.queue(terminate_message(_TC.GatewayShutdown, "the gateway is stopping", uuid))
                try:
                    conn.flush(time.monotonic_ns())
                except OSError:
                    pass
                conn.close()
        if getattr(self, "_staged", 0):
            self._publish_staged()
        if hasattr(self, "_listener"):
            self._listener.close()
        if hasattr(self, "_poll"):
            self._poll.close()
        for s in getattr(self, "sessions", {}).values():
            s.close()
        if getattr(self, "_to_socket", None) is not None:
            self._to_socket.close()
        if getattr(self, "_published_at", None) is not None:
            self._published_at.close()
        for c, _, _ in getattr(self, "_sources", []):
            c.close()
        if hasattr(self, "_in"):
            self._in.close()
        for r in getattr(self, "_rings", []):
            r.close()

    def _count(self, key: str, n: int = 1) -> None:
        c = self._c.get(key)
        if c is not None:
            c.increment(n)

    # ---------------------------------------------------------------- duty cycle

    def do_work(self) -> int:
        now = time.monotonic_ns()
        # one readiness poll a cycle: no system call (and no exception) per idle socket
        ready = {fd for fd, _ in self._poll.poll(0)}
        work = self._accept(now) if self._listener_fd in ready else 0
        if self._staged:
            work += self._publish_staged()
        conns = self._conns
        if ready and conns:
            wall = time.time_ns()
            first = self._next_first % len(conns)  # round robin: a full stage never starves the same ones
            self._next_first += 1
            for k in range(len(conns)):
                conn = conns[(first + k) % len(conns)]
                if conn.fd not in ready:
                    continue
                if self._staged >= STAGE_HIGH:
                    self._publish_staged()  # room for one more receive, or none this cycle
                    if self._staged >= STAGE_HIGH:
                        break
                work += self._receive(conn, now, wall)
        if self._staged:
            work += self._publish_staged()
        work += self._outbound()
        if now >= self._next_timer:
            self._timers(now)
            self._next_timer = now + TIMER_EVERY_NS
        for conn in self._conns:
            if conn.slow:
                self._terminate(conn, _TC.SlowConsumer,
                                f"over {self.cfg.max_backlog_bytes} bytes unread", discard=True)
                self._count("slow")
            if conn.backlog:
                try:
                    conn.flush(now)
                except OSError as exc:
                    self._drop(conn, f"send failed: {exc.strerror}")
                    continue
            if conn.closing:
                self._drop(conn, "terminated")
        if any(c.closed for c in self._conns):
            self._conns = [c for c in self._conns if not c.closed]
        if self._sent_positions:
            self._record_to_socket()
        return work

    def _record_to_socket(self) -> None:
        """Engine publish to socket write, for the events this cycle wrote (measured at the
        write: what the kernel did not take yet is counted as written)."""
        positions = np.array(self._sent_positions, np.int64)
        self._sent_positions.clear()
        if self._to_socket is None or self._published_at is None:
            return
        published = self._published_at.published_at(positions)
        known = published > 0
        if known.any():
            self._to_socket.record(time.time_ns() - published[known])

    def _accept(self, now: int) -> int:
        n = 0
        while True:
            try:
                sock, peer = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return n
            except OSError as exc:  # EMFILE and the like: try again next cycle
                if exc.errno not in (errno.EMFILE, errno.ENFILE, errno.ECONNABORTED):
                    log.error("gateway %s: accept failed: %s", self.cfg.name, exc)
                return n
            n += 1
            if len(self._conns) >= self.cfg.max_connections:
                sock.close()
                self._count("refused_conn")
                continue
            conn = Connection(sock, f"{peer[0]}:{peer[1]}", MAX_FRAME, self.cfg.max_backlog_bytes, now)
            self._poll.register(conn.fd, select.EPOLLIN)
            self._conns.append(conn)
            self._count("accepted")

    def _receive(self, conn: Connection, now: int, wall: int) -> int:
        if conn.closing or conn.closed:
            return 0
        try:
            frames = conn.reader.receive(conn.sock)
        except ConnectionClosed as exc:
            self._drop(conn, str(exc))
            return 1
        except FramingError as exc:
            code = _TC.InvalidLength if exc.status in (SCAN_TOO_SHORT, SCAN_TOO_LONG) else _TC.UnknownEncodingType
            self._terminate(conn, code, f"{exc.reason}: length {exc.declared_length}, type {exc.encoding:#06x}")
            return 1
        except OSError as exc:
            self._drop(conn, f"receive failed: {exc.strerror}")
            return 1
        n = len(frames)
        if not n:
            return 0
        conn.last_recv_ns = now
        buf, rows = frames.buf, frames.rows
        i = 0
        while i < n and not (conn.closing or conn.closed):
            s = conn.session
            if conn.established and s is not None:  # the run of orders, compiled
                before = self._staged
                i, self._staged, status = take_orders(
                    buf, rows, i, s.words, s.throttle.words, s.permitted, self._stage, self._stage_session,
                    self._stage_seq, self._staged, time.monotonic_ns(), wall)
                if self._staged > before:
                    self._count("orders_in", self._staged - before)
                if status == DONE:
                    break
                if status == FULL:  # cannot happen while STAGE_ROWS holds a receive beyond STAGE_HIGH
                    raise RuntimeError("gateway staging rows full")
            self._on_frame(conn, frames.payload(i), now, wall)
            i += 1
        return n

    # ---------------------------------------------------------------- inbound messages

    def _on_frame(self, conn: Connection, p: np.ndarray, now: int, wall: int) -> None:
        n = len(p)
        if n < HEADER.size:
            return self._terminate(conn, _TC.TruncatedMessage, f"{n} bytes, shorter than the SBE header")
        block, tid, schema_id, version = HEADER.unpack_from(p)
        if schema_id != _SCHEMA.schema_id:
            return self._terminate(conn, _TC.WrongSchema, f"schemaId {schema_id}, expected {_SCHEMA.schema_id}")
        if version != _SCHEMA.version:
            return self._terminate(conn, _TC.WrongSchemaVersion, f"version {version}, expected {_SCHEMA.version}")
        layout = _SCHEMA.messages.get(tid)
        if layout is None:
            return self._terminate(conn, _TC.UnknownTemplate, f"templateId {tid}")
        if block != layout.block_length:
            return self._terminate(conn, _TC.WrongBlockLength,
                                   f"{layout.name} blockLength {block}, expected {layout.block_length}")
        if n != layout.size:
            code = _TC.TruncatedMessage if n < layout.size else _TC.InvalidLength
            return self._terminate(conn, code, f"{layout.name}: {n} bytes, expected {layout.size}")
        if tid in _ORDER_ENTRY:
            return self._order_entry(conn, p, tid, wall)
        if tid not in _SESSION_IN:
            return self._terminate(conn, _TC.UnexpectedMessage, f"{layout.name} is not sent by a client")
        try:
            f = layout.decode_body(p)
        except CodecError as exc:
            return self._terminate(conn, _TC.InvalidField, str(exc))
        if layout is m.Negotiate:
            self._negotiate(conn, f)
        elif layout is m.Establish:
            self._establish(conn, f, now)
        elif layout is m.Terminate:
            conn.queue(terminate_message(_TC.Finished, "goodbye", (f["uuidHi"], f["uuidLo"])))
            conn.closing = True
        elif not conn.established:
            self._terminate(conn, _TC.Unestablished, f"{layout.name} before Establish")
        elif layout is m.Sequence:
            if f["nextSeqNo"] < 1:
                return self._terminate(conn, _TC.InvalidField, "Sequence.nextSeqNo starts at 1")
            conn.session.sequence(f)
        else:  # RetransmitRequest
            answer = conn.session.retransmit(f)
            for msg in answer:
                conn.queue(msg)
            if len(answer) > 1:
                self._count("retransmitted", len(answer) - 2)

    def _negotiate(self, conn: Connection, f: dict) -> None:
        uuid = dict(uuidHi=f["uuidHi"], uuidLo=f["uuidLo"], requestTimestamp=f["timestamp"])
        s = self.sessions.get(f["sessionId"])
        if s is None:
            self._count("bad_session")
            return self._refuse(conn, m.NegotiationReject.encode(
                **uuid, code=m.NegotiationRejectCode.UnknownSession,
                reason=f"no session {f['sessionId']} on this gateway"[:48]))
        if f["credentials"] != s.cfg.credentials:
            self._count("bad_credentials")
            return self._refuse(conn, m.NegotiationReject.encode(
                **uuid, code=m.NegotiationRejectCode.Credentials, reason="wrong credentials"))
        if conn.session is not None and conn.session is not s:
            self._count("logon_refused")
            return self._refuse(conn, m.NegotiationReject.encode(
                **uuid, code=m.NegotiationRejectCode.Unspecified,
                reason="this connection negotiated another session"))
        old = s.uuid
        reply, ok = s.negotiate(conn, f, (self._in_ring.created_time_ns, self._in.position))
        conn.queue(reply)
        if not ok:
            self._count("logon_refused")
            conn.closing = True
            return
        self._by_uuid.pop(old, None)
        self._by_uuid[s.uuid] = s
        self._count("negotiated")

    def _establish(self, conn: Connection, f: dict, now: int) -> None:
        uuid = (f["uuidHi"], f["uuidLo"])
        ids = dict(uuidHi=uuid[0], uuidLo=uuid[1], requestTimestamp=f["timestamp"])
        s = self._by_uuid.get(uuid)
        if s is None or (conn.session is not None and conn.session is not s):
            self._count("logon_refused")
            return self._refuse(conn, m.EstablishmentReject.encode(
                **ids, code=m.EstablishmentRejectCode.Unnegotiated,
                reason="no session was negotiated with this UUID"))
        if f["credentials"] != s.cfg.credentials:
            self._count("bad_credentials")
            return self._refuse(conn, m.EstablishmentReject.encode(
                **ids, code=m.EstablishmentRejectCode.Credentials, reason="wrong credentials"))
        was_established = conn.established
        reply, previous = s.establish(conn, f, now)
        conn.queue(reply)
        if was_established:  # AlreadyEstablished: the session goes on
            return
        if not conn.established:
            self._count("logon_refused")
            conn.closing = True
            return
        self._count("established")
        if previous is not None:  # the session lives on here: no cancel-on-disconnect
            previous.session = None
            previous.established = False
            self._terminate(previous, _TC.SessionTakenOver, "established on a newer connection")

    def _refuse(self, conn: Connection, reply: bytes) -> None:
        conn.queue(reply)
        conn.closing = True

    def _order_entry(self, conn: Connection, p: np.ndarray, tid: int, wall: int) -> None:
        s = conn.session
        if not conn.established or s is None:
            return self._terminate(conn, _TC.Unestablished, "an order before Establish")
        seq, gap = s.number_incoming()
        if gap is not None:
            s.deliver(gap)
        if not seq:
            self._count("duplicates")
            return
        # The stamp and the session are the gateway's to write, whatever the client put there.
        # Until the sequencer stamps its copy, the stamp's seq word carries the client's number:
        # what a restarted gateway reads back from its ring (_recover_applied).
        row = self._stage[self._staged]
        n = len(p)
        row[:n] = p
        row[n:] = 0
        _U64.pack_into(row, _SEQ, seq)
        _U64.pack_into(row, _TS, 0)
        _U64.pack_into(row, _INGRESS, wall)
        _U32.pack_into(row, _SESSION_AT[tid], s.id)
        if not s.throttle.take(time.monotonic_ns()):
            self._count("throttled")
            s.deliver(rejection_for(row[:n], _THROTTLED, wall))
            return s.applied(seq)
        account = _U32.unpack_from(row, _ACCOUNT_AT[tid])[0]
        scope = int(row[_SCOPE_AT]) if tid == m.MassCancel.template_id else 0
        if not s.permits(tid, account, scope):
            self._count("not_permitted")
            s.deliver(rejection_for(row[:n], _NOT_PERMITTED, wall))
            return s.applied(seq)
        self._stage_session[self._staged] = s.id
        self._stage_seq[self._staged] = seq
        self._staged += 1
        self._count("orders_in")

    def _publish_staged(self) -> int:
        """Publish what is staged (as much as the ring takes), then count each session's
        published messages as applied."""
        k = self._staged
        done = self._in.offer_batch(self._stage[:k])
        if done and _CRASH:
            crash_points.hit("gateway.after_publish")
        if done:
            sessions = self._stage_session[:done]
            for sid in np.unique(sessions).tolist():
                if sid:
                    self.sessions[sid].applied(int(self._stage_seq[:done][sessions == sid].max()))
        if done < k:
            for a in (self._stage, self._stage_session, self._stage_seq):
                a[:k - done] = a[done:k].copy()
            if hasattr(self, "_back_pressure"):
                self._back_pressure.increment()
        self._staged = k - done
        return done

    def _recover_applied(self) -> None:
        """After a crash: the client numbers of messages this gateway published to its ring
        but had not yet counted in their session's store (the stamp's seq word of each of
        the ring's last ``capacity`` slots), from each identity's first message on."""
        ring, top = self._in_ring, self._in.position
        slots, mask, created = ring.slots(), ring.capacity - 1, ring.created_time_ns
        found: dict[int, int] = {}
        for position in range(max(0, top - ring.capacity), top):
            row = slots[position & mask]
            tid = int(row[2]) | int(row[3]) << 8
            at = _SESSION_AT.get(tid)
            if at is None:
                continue
            sid = _U32.unpack_from(row, at)[0]
            seq = _U64.unpack_from(row, _SEQ)[0]
            s = self.sessions.get(sid)
            if s is None or not seq or s.store.inbound_start[0] != created or position < s.store.inbound_start[1]:
                continue
            found[sid] = max(found.get(sid, 0), seq)
        for sid, seq in sorted(found.items()):
            if seq >= self.sessions[sid].store.next_in:
                log.info("gateway %s: session %d's messages up to %d were published before a restart",
                         self.cfg.name, sid, seq)
            self.sessions[sid].recovered(seq)

    # ---------------------------------------------------------------- outbound

    def _outbound(self) -> int:
        total = 0
        for i, (consumer, source, created) in enumerate(self._sources):
            try:
                head, tail = consumer.read(self.batch_limit)
            except UntetheredError:
                consumer = self._rejoin(i)
                head, tail = consumer.read(self.batch_limit)
            k = len(head) + len(tail)
            if not k:
                continue
            base = consumer.position
            touched: set[FixpSession] = set()
            for region, at in ((head, base), (tail, base + len(head))):
                if len(region):
                    self._deliver(region, at, source, created, touched)
            for s in touched:  # what they stored is written before the cursor moves past it
                s.store.flush()
            if _CRASH and touched:
                crash_points.hit("gateway.after_store")
            consumer.commit(k)
            total += k
        return total

    def _deliver(self, region: np.ndarray, at: int, source: int, created: int, touched: set) -> None:
        """Route ``region`` (ring slots from position ``at``) to the sessions, each session's
        share stored and framed in one compiled pass."""
        rows, sids = route(region, self._session_ids)
        if not len(rows):
            return
        tids = region[rows, 2].astype(np.int64) | (region[rows, 3].astype(np.int64) << 8)
        sizes = MESSAGE_SIZE[tids]
        delivered = 0
        for sid in np.unique(sids).tolist():
            mine = sids == sid
            s = self.sessions[sid]
            positions = at + rows[mine]
            fresh = positions > s.store.stored_through(source, created)  # not stored before a restart
            if not fresh.all():
                mine = np.flatnonzero(mine)[fresh]
                positions = positions[fresh]
            if not len(positions):
                continue
            s.deliver_events(region, rows[mine], sizes[mine], positions, source, created)
            touched.add(s)
            delivered += len(positions)
            if source == SOURCE_OUTPUT and s.conn is not None:
                self._sent_positions.extend(positions.tolist())
        if delivered:
            self._count("events_out", delivered)

    def _rejoin(self, i: int) -> Consumer:
        consumer, source, created = self._sources[i]
        name = self.output_ring if source == SOURCE_OUTPUT else self.reject_ring
        consumer.close()
        ring = self._rings[1 + i]  # inbound first, then output and reject, as attached
        fresh = ring.consumer(self.subscriber_index, takeover=True)
        log.warning("gateway %s was untethered from %s; rejoined at %s: events before it are not in "
                    "the session stores", self.cfg.name, name, fresh.rejoined_at)
        self._sources[i] = (fresh, source, created)
        return fresh

    # ---------------------------------------------------------------- connections

    def _timers(self, now: int) -> None:
        for conn in self._conns:
            if conn.closing or conn.closed:
                continue
            s = conn.session
            if not conn.established:
                if now - conn.opened_ns > HANDSHAKE_TIMEOUT_NS:
                    self._terminate(conn, _TC.Unestablished, "no Establish within 5 s")
                continue
            if now - conn.last_recv_ns > KEEPALIVE_LAPSE * s.keepalive_ns:
                self._count("keepalive")
                self._terminate(conn, _TC.KeepaliveLapsed, "nothing received for 1.5 keepalive intervals")
            elif now - conn.last_send_ns >= s.keepalive_ns and not conn.backlog:
                conn.queue(m.Sequence.encode(nextSeqNo=s.store.next_seq))

    def _terminate(self, conn: Connection, code: int, reason: str, discard: bool = False) -> None:
        """End ``conn`` with a Terminate naming ``code`` (sent if the socket takes it)."""
        if conn.closing or conn.closed:
            return
        if discard:
            conn.discard_output()
        if code not in (_TC.Finished, _TC.SessionTakenOver, _TC.GatewayShutdown):
            self._count("terminated")
        log.info("gateway %s: terminating %r: %s (%s)", self.cfg.name, conn, _TC(code).name, reason)
        uuid = conn.session.uuid if conn.session is not None else (0, 0)
        conn.queue(terminate_message(code, reason, uuid))
        conn.closing = True

    def _drop(self, conn: Connection, why: str) -> None:
        """``conn`` is gone: close it, and cancel its session's orders if it was established
        and the session asks for that."""
        if conn.closed:
            return
        try:
            self._poll.unregister(conn.fd)
        except (OSError, ValueError):
            pass
        conn.close()
        s = conn.session
        if s is not None and s.detach(conn):
            log.info("gateway %s: session %d disconnected (%s)", self.cfg.name, s.id, why)
            if s.cfg.cancel_on_disconnect:
                self._stage_internal(s.cancel_on_disconnect())
                self._count("cancel_on_disconnect")

    def _stage_internal(self, message: bytes) -> None:
        if self._staged >= STAGE_ROWS:
            self._publish_staged()
        row = self._stage[self._staged]
        row[:len(message)] = np.frombuffer(message, np.uint8)
        row[len(message):] = 0
        _U64.pack_into(row, _INGRESS, time.time_ns())
        self._stage_session[self._staged] = 0
        self._staged += 1
