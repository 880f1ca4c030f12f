"""One configured session's FIXP state: identity, both flows, throttle, and its connection.

The binary gateway speaks FIXP (the FIX Performance Session Layer) with a recoverable
server flow and an idempotent client flow (docs/binary-protocol.md):

* **Negotiate** binds a connection to a configured session (its ``sessionId`` and
  ``credentials``) under a new identity, the client's UUID. The server flow starts again at
  1 and nothing of the client's is applied yet. A UUID the session already used is refused
  (``DuplicateId``), as FIXP requires an identity per session instance.
* **Establish** (on the connection that negotiated, or on a later one, naming the UUID)
  starts the flows: the ack says the server's next sequence number and the last client
  number applied, so a client that lost its connection knows what to retransmit and what
  to ask for.
* Client application messages are numbered implicitly from Establish's ``nextSeqNo`` (or
  the last ``Sequence``): a number already applied is a duplicate and is ignored; a jump
  forward is reported with ``NotApplied`` for the numbers that never came.
* Server application messages (engine events for the session, the gateway's own
  rejections) are stored before they are sent (``SessionStore``); ``RetransmitRequest``
  sends a stored range again, framed by ``Retransmission`` and followed by a ``Sequence``
  that restores the live numbering.

This module decides; the gateway agent owns sockets and rings and calls in.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ringex.engine.wire import messages as m
from ringex.gateways.connection import Connection
from ringex.gateways.inbound import S_DUPLICATES, S_EXPECTED, S_ID, S_RECV, SESSION_WORDS
from ringex.gateways.gateway_config import GatewayConfig, SessionConfig
from ringex.gateways.session_store import SOURCE_GATEWAY, SessionStore
from ringex.gateways.throttle import Throttle

log = logging.getLogger("ringex.gateway")

__all__ = ["FixpSession", "terminate_message"]

_SCOPE_SESSION = int(m.MassCancelScope.Session)
_SCOPE_INSTRUMENT = int(m.MassCancelScope.Instrument)


def _reason(text: str) -> str:
    """Reason text cut to the schema's field (ASCII, 48 characters)."""
    return text.encode("ascii", "replace")[:48].decode("ascii")


def terminate_message(code: int, reason: str, uuid: tuple[int, int] = (0, 0)) -> bytes:
    return m.Terminate.encode(uuidHi=uuid[0], uuidLo=uuid[1], code=code, reason=_reason(reason))


class FixpSession:
    """A configured session and its persistent flows."""

    def __init__(self, cfg: SessionConfig, gateway: GatewayConfig, directory: Path, now_ns: int) -> None:
        self.cfg = cfg
        self.id = cfg.id
        self.gateway = gateway
        self.store = SessionStore(directory, cfg.id)
        self.throttle = Throttle(cfg.max_msgs_per_s, cfg.bucket(), now_ns)
        self.accounts = frozenset(cfg.accounts)
        self.permitted = np.zeros(max(cfg.accounts, default=0) + 1, np.uint8)  # by account id, for inbound.py
        self.permitted[list(cfg.accounts)] = 1
        self.conn: Connection | None = None  # the established connection
        # the numbering words the compiled order path shares (inbound.S_*)
        self.words = np.zeros(SESSION_WORDS, np.int64)
        self.words[S_ID] = cfg.id
        self.expected_in = self.store.next_in
        self.keepalive_ns = 0
        self.used_uuids: set[tuple[int, int]] = set()
        if self.store.uuid != (0, 0):
            self.used_uuids.add(self.store.uuid)

    @property
    def uuid(self) -> tuple[int, int]:
        return self.store.uuid

    @property
    def recv_seq(self) -> int:
        """The number the client's next application message carries."""
        return int(self.words[S_RECV])

    @recv_seq.setter
    def recv_seq(self, value: int) -> None:
        self.words[S_RECV] = value

    @property
    def expected_in(self) -> int:
        """The next client number not yet taken: ahead of the store's nextIn by the messages
        staged or in flight to the ring (the store counts them once published)."""
        return int(self.words[S_EXPECTED])

    @expected_in.setter
    def expected_in(self, value: int) -> None:
        self.words[S_EXPECTED] = value

    @property
    def duplicates(self) -> int:
        return int(self.words[S_DUPLICATES])

    # ---------------------------------------------------------------- session messages

    def negotiate(self, conn: Connection, f: dict, inbound_mark: tuple[int, int] = (0, 0)) -> tuple[bytes, bool]:
        """A Negotiate on ``conn`` for this session (credentials already matched): the reply,
        and whether it was accepted. ``inbound_mark``: the gateway's inbound ring (creation
        time, producer position) now, where the new identity's messages begin."""
        uuid = (f["uuidHi"], f["uuidLo"])
        common = dict(uuidHi=uuid[0], uuidLo=uuid[1], requestTimestamp=f["timestamp"])
        if f["clientFlow"] != m.FlowType.Idempotent:
            return m.NegotiationReject.encode(
                **common, code=m.NegotiationRejectCode.FlowTypeNotSupported,
                reason=_reason("this gateway takes an Idempotent client flow")), False
        if uuid == (0, 0) or uuid in self.used_uuids:
            return m.NegotiationReject.encode(
                **common, code=m.NegotiationRejectCode.DuplicateId,
                reason=_reason("this UUID was used before: negotiate a new one")), False
        if self.conn is not None and self.conn is not conn:
            return m.NegotiationReject.encode(
                **common, code=m.NegotiationRejectCode.SessionInUse,
                reason=_reason("the session is established on another connection")), False
        self.store.reset(*uuid, *inbound_mark)
        self.expected_in = 1
        self.used_uuids.add(uuid)
        conn.session = self
        return m.NegotiationResponse.encode(**common, serverFlow=m.FlowType.Recoverable), True

    def establish(self, conn: Connection, f: dict, now_ns: int) -> tuple[bytes, Connection | None]:
        """An Establish naming this session's UUID (credentials already matched): the reply,
        and the connection it takes the session over from (to be terminated), if any."""
        common = dict(uuidHi=f["uuidHi"], uuidLo=f["uuidLo"], requestTimestamp=f["timestamp"])
        g = self.gateway
        ka = f["keepaliveInterval"]
        if conn.established:
            return m.EstablishmentReject.encode(
                **common, code=m.EstablishmentRejectCode.AlreadyEstablished,
                reason=_reason("this connection is already established")), None
        if not g.keepalive_min_ms <= ka <= g.keepalive_max_ms:
            return m.EstablishmentReject.encode(
                **common, code=m.EstablishmentRejectCode.KeepaliveInterval,
                reason=_reason(f"keepaliveInterval must be {g.keepalive_min_ms}..{g.keepalive_max_ms} ms")), None
        if f["nextSeqNo"] < 1:
            return m.EstablishmentReject.encode(
                **common, code=m.EstablishmentRejectCode.Unspecified,
                reason=_reason("nextSeqNo starts at 1")), None
        previous = self.conn if self.conn is not None and self.conn is not conn else None
        self.conn = conn
        conn.session = self
        conn.established = True
        self.keepalive_ns = ka * 1_000_000
        self.recv_seq = f["nextSeqNo"]
        ack = m.EstablishmentAck.encode(
            **common, nextSeqNo=self.store.next_seq, lastAppliedSeqNo=self.expected_in - 1,
            keepaliveInterval=ka)
        return ack, previous

    def sequence(self, f: dict) -> None:
        """A client Sequence: its next application message carries ``nextSeqNo``."""
        self.recv_seq = f["nextSeqNo"]

    def retransmit(self, f: dict) -> list[bytes]:
        """The answer to a RetransmitRequest: Retransmission, the messages, and a Sequence that
        restores the live numbering; or one RetransmitReject."""
        common = dict(uuidHi=f["uuidHi"], uuidLo=f["uuidLo"], requestTimestamp=f["timestamp"])
        first, count = f["fromSeqNo"], f["count"]
        if (f["uuidHi"], f["uuidLo"]) != self.uuid:
            return [m.RetransmitReject.encode(**common, code=m.RetransmitRejectCode.InvalidSession,
                                              reason=_reason("not this session's current UUID"))]
        if count > self.gateway.max_retransmit:
            return [m.RetransmitReject.encode(
                **common, code=m.RetransmitRejectCode.RequestLimitExceeded,
                reason=_reason(f"at most {self.gateway.max_retransmit} messages a request"))]
        if first < 1 or count < 1 or first + count > self.store.next_seq:
            return [m.RetransmitReject.encode(
                **common, code=m.RetransmitRejectCode.OutOfRange,
                reason=_reason(f"the flow holds 1..{self.store.next_seq - 1}"))]
        out = [m.Retransmission.encode(**common, nextSeqNo=first, count=count)]
        out += self.store.read(first, count)
        out.append(m.Sequence.encode(nextSeqNo=self.store.next_seq))
        return out

    # ---------------------------------------------------------------- application flow

    def number_incoming(self) -> tuple[int, bytes | None]:
        """Number the client's next application message: ``(seq, not_applied)``, ``seq`` 0
        for a number already taken (a duplicate, not to be applied). A jump forward yields a
        NotApplied for the numbers skipped, for the server flow (``not_applied``). The store
        counts the message once it is answered or published (``applied``)."""
        seq = self.recv_seq
        self.recv_seq = seq + 1
        expected = self.expected_in
        if seq < expected:
            self.words[S_DUPLICATES] += 1
            return 0, None
        gap = None
        if seq > expected:
            gap = m.NotApplied.encode(fromSeqNo=expected, count=min(seq - expected, (1 << 32) - 1))
        self.expected_in = seq + 1
        return seq, gap

    def applied(self, seq: int) -> None:
        """Client message ``seq`` (and every one before it) is published or answered."""
        self.store.applied(seq)

    def recovered(self, seq: int) -> None:
        """A restarted gateway found client message ``seq`` already in its inbound ring."""
        self.applied(seq)
        self.expected_in = max(self.expected_in, seq + 1)

    def permits(self, template_id: int, account: int, scope: int) -> bool:
        """Whether this session may send the message: its account is one the session trades
        (a Session-scoped mass cancel names none; an Instrument-scoped one is everybody's
        orders, an operator's action)."""
        if template_id == m.MassCancel.template_id:
            if scope == _SCOPE_SESSION:
                return True
            if scope == _SCOPE_INSTRUMENT:
                return False
        return account in self.accounts

    def deliver(self, payload: bytes, source: int = SOURCE_GATEWAY, created: int = 0, position: int = 0) -> None:
        """Store one server application message and send it if the session is established."""
        self.store.append(payload, source, created, position)
        if self.conn is not None:
            self.conn.queue(payload)

    def deliver_events(self, region: np.ndarray, rows: np.ndarray, sizes: np.ndarray, positions: np.ndarray,
                       source: int, created: int) -> None:
        """Store ring events ``region[rows]`` in the flow and send them if the session is
        established: one compiled pass for the lot (``outbound.pack_events``)."""
        frames = self.store.append_events(region, rows, sizes, positions, source, created)
        if self.conn is not None:
            self.conn.queue_framed(frames)

    def detach(self, conn: Connection) -> bool:
        """``conn`` ended; True if it was this session's established connection (the session
        is now disconnected)."""
        if self.conn is conn:
            self.conn = None
            return True
        return False

    def close(self) -> None:
        self.store.close()
