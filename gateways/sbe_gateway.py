"""The binary order-entry gateway: SBE over TCP, SOFH framing, FIXP sessions (docs/binary-protocol.md).

The duty cycle, the rings, staging, routing and crash recovery are every gateway's
(``gateway_agent.GatewayAgent``); this is the protocol: each ready connection's receive is
framed (SOFH) and its run of orders taken in one compiled call (``inbound.take_orders``),
anything else frame by frame here; each session's share of the engine's events is stored and
framed in one compiled pass (``outbound.pack_events``, in ``FixpSession.deliver_events``);
the FIXP timers.

Every refusal has its own answer (docs/binary-protocol.md, "Bad input"): a stream that
cannot be framed, a message this schema cannot read, or one out of place ends the connection
with a ``Terminate`` naming the reason; a refused Negotiate or Establish gets its reject and
the connection is closed; an order for an account the session may not trade, or over its
rate, gets ``OrderRejected``/``CancelRejected`` (``AccountNotPermitted``, ``Throttled``)
and is never sequenced. One connection's failure is handled on that connection only.

Exactly once across a crash of the gateway, and what an untethered gateway misses: see
``gateway_agent``.
"""

from __future__ import annotations

import socket
import struct
import time
from pathlib import Path

import numpy as np

from ringex.engine.wire import messages as m
from ringex.engine.wire.codec import HEADER, CodecError
from ringex.engine.wire.rejections import rejection_for
from ringex.gateways.connection import Connection
from ringex.gateways.fixp_session import FixpSession, terminate_message
from ringex.gateways.gateway_agent import ADDRESS_FILE, STAGE_HIGH, GatewayAgent, log
from ringex.gateways.inbound import DONE, FULL, SESSION_WORDS, take_orders
from ringex.gateways.sofh import (
    SBE_1_0_LITTLE_ENDIAN,
    SCAN_TOO_LONG,
    SCAN_TOO_SHORT,
    ConnectionClosed,
    FramingError,
    scan,
)

__all__ = ["SbeGatewayAgent", "ADDRESS_FILE"]

HANDSHAKE_TIMEOUT_NS = 5_000_000_000  # a connection must establish within this
KEEPALIVE_LAPSE = 1.5  # intervals of silence before a client is terminated
MAX_FRAME = 8 + 1024  # SOFH length a client may send: the largest message and then some
# room for what is staged and one receive's worth of the smallest order-entry frames
READ_SIZE = 1 << 16
STAGE_ROWS = STAGE_HIGH + (MAX_FRAME + READ_SIZE) // (6 + min(x.size for x in m.ORDER_ENTRY)) + 16

_TC = m.TerminationCode
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


class SbeGatewayAgent(GatewayAgent):
    """SBE order entry with FIXP sessions over one listening socket."""

    stage_rows = STAGE_ROWS

    # ---------------------------------------------------------------- protocol hooks

    def warm_up(self) -> None:
        super().warm_up()
        none = np.zeros(0, np.int64)
        scan(np.zeros(16, np.uint8), 0, 0, MAX_FRAME, SBE_1_0_LITTLE_ENDIAN, np.zeros((1, 2), np.int64))
        take_orders(np.zeros(16, np.uint8), np.zeros((0, 2), np.int64), 0, np.zeros(SESSION_WORDS, np.int64),
                    np.zeros(4, np.int64), np.zeros(1, np.uint8), np.zeros((1, m.SLOT_SIZE), np.uint8), none.copy(),
                    none.copy(), 0, 0, 0)

    def counter_labels(self) -> dict[str, str]:
        g = f"gateway {self.cfg.name}"
        return super().counter_labels() | {
            "negotiated": f"{g}: sessions negotiated",
            "established": f"{g}: sessions established",
            "bad_credentials": f"{g}: logons refused (credentials)",
            "bad_session": f"{g}: logons refused (unknown session)",
            "logon_refused": f"{g}: logons refused (other)",
            "terminated": f"{g}: connections terminated for bad input",
            "keepalive": f"{g}: keepalive lapses",
            "duplicates": f"{g}: duplicate client messages ignored",
            "not_permitted": f"{g}: orders refused (account not permitted)",
            "throttled": f"{g}: orders refused (throttle)",
            "retransmitted": f"{g}: messages retransmitted",
        }

    def _make_sessions(self, directory: Path, now: int) -> dict[int, FixpSession]:
        sessions = {s.id: FixpSession(s, self.cfg, directory, now) for s in self.cfg.session}
        self._by_uuid = {s.uuid: s for s in sessions.values() if s.uuid != (0, 0)}
        return sessions

    def _connection(self, sock: socket.socket, peer: str, now: int) -> Connection:
        return Connection(sock, peer, MAX_FRAME, self.cfg.max_backlog_bytes, now)

    def _goodbye(self, conn: Connection) -> None:
        uuid = conn.session.uuid if conn.session is not None else (0, 0)
        conn.queue(terminate_message(_TC.GatewayShutdown, "the gateway is stopping", uuid))

    def _end_slow(self, conn: Connection) -> None:
        self._terminate(conn, _TC.SlowConsumer, f"over {self.cfg.max_backlog_bytes} bytes unread", discard=True)

    # ---------------------------------------------------------------- inbound messages

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
                    self._counts.add("orders_in", self._staged - before)
                    self._hold(s, int(self._stage_seq[before]))
                if status == DONE:
                    break
                if status == FULL:  # cannot happen while STAGE_ROWS holds a receive beyond STAGE_HIGH
                    raise RuntimeError("gateway staging rows full")
            self._on_frame(conn, frames.payload(i), now, wall)
            i += 1
        return n

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
                self._counts.add("retransmitted", len(answer) - 2)

    def _negotiate(self, conn: Connection, f: dict) -> None:
        uuid = dict(uuidHi=f["uuidHi"], uuidLo=f["uuidLo"], requestTimestamp=f["timestamp"])
        s = self.sessions.get(f["sessionId"])
        if s is None:
            self._counts.add("bad_session")
            return self._refuse(conn, m.NegotiationReject.encode(
                **uuid, code=m.NegotiationRejectCode.UnknownSession,
                reason=f"no session {f['sessionId']} on this gateway"[:48]))
        if f["credentials"] != s.cfg.credentials:
            self._counts.add("bad_credentials")
            return self._refuse(conn, m.NegotiationReject.encode(
                **uuid, code=m.NegotiationRejectCode.Credentials, reason="wrong credentials"))
        if conn.session is not None and conn.session is not s:
            self._counts.add("logon_refused")
            return self._refuse(conn, m.NegotiationReject.encode(
                **uuid, code=m.NegotiationRejectCode.Unspecified,
                reason="this connection negotiated another session"))
        old = s.uuid
        reply, ok = s.negotiate(conn, f, (self._in_ring.created_time_ns, self._in.position))
        conn.queue(reply)
        if not ok:
            self._counts.add("logon_refused")
            conn.closing = True
            return
        self._by_uuid.pop(old, None)
        self._by_uuid[s.uuid] = s
        self._counts.add("negotiated")

    def _establish(self, conn: Connection, f: dict, now: int) -> None:
        uuid = (f["uuidHi"], f["uuidLo"])
        ids = dict(uuidHi=uuid[0], uuidLo=uuid[1], requestTimestamp=f["timestamp"])
        s = self._by_uuid.get(uuid)
        if s is None or (conn.session is not None and conn.session is not s):
            self._counts.add("logon_refused")
            return self._refuse(conn, m.EstablishmentReject.encode(
                **ids, code=m.EstablishmentRejectCode.Unnegotiated,
                reason="no session was negotiated with this UUID"))
        if f["credentials"] != s.cfg.credentials:
            self._counts.add("bad_credentials")
            return self._refuse(conn, m.EstablishmentReject.encode(
                **ids, code=m.EstablishmentRejectCode.Credentials, reason="wrong credentials"))
        was_established = conn.established
        reply, previous = s.establish(conn, f, now)
        conn.queue(reply)
        if was_established:  # AlreadyEstablished: the session goes on
            return
        if not conn.established:
            self._counts.add("logon_refused")
            conn.closing = True
            return
        self._counts.add("established")
        self._established(s)
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
            self._counts.add("duplicates")
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
            self._counts.add("throttled")
            s.deliver(rejection_for(row[:n], _THROTTLED, wall))
            return s.applied(seq)
        account = _U32.unpack_from(row, _ACCOUNT_AT[tid])[0]
        scope = int(row[_SCOPE_AT]) if tid == m.MassCancel.template_id else 0
        if not s.permits(tid, account, scope):
            self._counts.add("not_permitted")
            s.deliver(rejection_for(row[:n], _NOT_PERMITTED, wall))
            return s.applied(seq)
        self._stage_session[self._staged] = s.id
        self._stage_seq[self._staged] = seq
        self._staged += 1
        self._hold(s, seq)
        self._counts.add("orders_in")



    # ---------------------------------------------------------------- outbound




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
                self._counts.add("keepalive")
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
            self._counts.add("terminated")
        log.info("gateway %s: terminating %r: %s (%s)", self.cfg.name, conn, _TC(code).name, reason)
        uuid = conn.session.uuid if conn.session is not None else (0, 0)
        conn.queue(terminate_message(code, reason, uuid))
        conn.closing = True
