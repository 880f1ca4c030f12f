"""A Python client of the binary gateway, for bots, tools and tests (docs/binary-protocol.md).

    from ringex.gateways.client import Client

    with Client.connect("127.0.0.1", 9100, session_id=1, credentials="demo-1") as c:
        c.new_order(clOrdId=1, account=1, instrument=1, side="Buy", ordType="Limit",
                    price=50_000, qty=1)
        event = c.receive(timeout=2.0)   # OrderAccepted, with its FIXP sequence number

``connect`` negotiates a new FIXP identity and establishes it; ``reconnect`` establishes the
same identity on a new TCP connection, asks for what the server sent while it was away
(``RetransmitRequest``) and drops anything it already had, so the events a caller receives
have consecutive sequence numbers with no gap and no duplicate. Messages the client sends
are numbered too; after a reconnect it resumes from the number after the last one the
server says it applied, or from its own count (``resend_from``) when it wants to resend.

Blocking, one socket, no threads: ``receive`` reads, answers the server's keepalive needs
(a ``Sequence`` when the client has been quiet for half the interval) and returns one
application message at a time.
"""

from __future__ import annotations

import socket
import time
import uuid as uuidlib
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from ringex.engine.wire import messages as m
from ringex.engine.wire.codec import Decoded
from ringex.gateways.sofh import ConnectionClosed, FrameReader, header

__all__ = ["Client", "Event", "SessionRejected", "SessionTerminated"]

_APP_OUT = {x.template_id for x in m.RING} | {m.NotApplied.template_id}


class SessionRejected(RuntimeError):
    """Negotiate or Establish was refused; ``code`` is the schema's reject code."""

    def __init__(self, what: str, code: Any, reason: str) -> None:
        self.code = code
        self.reason = reason
        super().__init__(f"{what} rejected: {getattr(code, 'name', code)}: {reason}")


class SessionTerminated(ConnectionError):
    """The server sent Terminate (``code``, ``reason``) or closed the connection."""

    def __init__(self, code: Any, reason: str) -> None:
        self.code = code
        self.reason = reason
        super().__init__(f"session terminated: {getattr(code, 'name', code)}: {reason}")


@dataclass(frozen=True)
class Event:
    """One application message from the server and its FIXP sequence number."""

    seq: int
    name: str
    fields: dict[str, Any] = field(repr=True)

    def __getitem__(self, key: str) -> Any:
        return self.fields[key]


def _new_uuid() -> tuple[int, int]:
    u = uuidlib.uuid4().int
    return u >> 64, u & ((1 << 64) - 1)


class Client:
    def __init__(self, host: str, port: int, session_id: int, credentials: str, *,
                 keepalive_ms: int = 1000, timeout: float = 5.0, receive_buffer: int = 0) -> None:
        """``receive_buffer``: the socket's SO_RCVBUF when not 0 (a test of a slow reader)."""
        self.host, self.port = host, port
        self.receive_buffer = receive_buffer
        self.session_id = session_id
        self.credentials = credentials
        self.keepalive_ms = keepalive_ms
        self.timeout = timeout
        self.uuid: tuple[int, int] = (0, 0)
        self.next_out = 1  # the number of the next application message this client sends
        self.next_in = 1  # the number the next server application message carries
        self.received_through = 0  # the highest server number handed to the caller
        self.last_applied = 0  # as the server said at Establish
        self.server_next = 1  # as the server said at Establish
        self.not_applied: list[tuple[int, int]] = []  # (fromSeqNo, count) the server reported
        self.terminated: SessionTerminated | None = None
        self._sock: socket.socket | None = None
        self._reader = FrameReader(1 << 16)
        self._queue: deque[Event] = deque()
        self._last_send = 0.0
        self._retransmitting = 0
        self.captured: list[bytes] | None = None  # set to a list to keep every message received, as sent
        self._awaiting = False  # a RetransmitRequest is outstanding
        self._held: list[tuple[int, Decoded]] = []  # live messages that came meanwhile

    # ---------------------------------------------------------------- session

    @classmethod
    def connect(cls, host: str, port: int, session_id: int, credentials: str, **kw: Any) -> "Client":
        """Connect, Negotiate a new identity and Establish it."""
        c = cls(host, port, session_id, credentials, **kw)
        c.open()
        c.negotiate()
        c.establish()
        return c

    def open(self) -> None:
        """A new TCP connection (no session messages yet)."""
        self.close_socket()
        sock = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET, socket.SOCK_STREAM)
        if self.receive_buffer:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.receive_buffer)
        sock.settimeout(self.timeout)
        try:
            sock.connect((self.host, self.port))
        except OSError:
            sock.close()
            raise
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock = sock
        self._reader = FrameReader(1 << 16)
        self.terminated = None
        self._retransmitting = 0
        self._awaiting = False
        self._held = []

    def negotiate(self, uuid: tuple[int, int] | None = None) -> None:
        self.uuid = uuid or _new_uuid()
        self.next_out = self.next_in = 1
        self.received_through = 0
        self.send_raw(m.Negotiate.encode(uuidHi=self.uuid[0], uuidLo=self.uuid[1], timestamp=time.time_ns(),
                                         sessionId=self.session_id, clientFlow=m.FlowType.Idempotent,
                                         credentials=self.credentials))
        reply = self._session_reply()
        if reply.name == "NegotiationReject":
            raise SessionRejected("Negotiate", reply["code"], reply["reason"])
        if reply.name != "NegotiationResponse":
            raise SessionTerminated(reply.fields.get("code"), f"unexpected {reply.name}")

    def establish(self, next_seq: int | None = None) -> None:
        """Establish the negotiated identity; ``next_seq`` is the number the next message
        sent will carry (default: the client's own count)."""
        if next_seq is not None:
            self.next_out = next_seq
        self.send_raw(m.Establish.encode(uuidHi=self.uuid[0], uuidLo=self.uuid[1], timestamp=time.time_ns(),
                                         nextSeqNo=self.next_out, keepaliveInterval=self.keepalive_ms,
                                         credentials=self.credentials))
        reply = self._session_reply()
        if reply.name == "EstablishmentReject":
            raise SessionRejected("Establish", reply["code"], reply["reason"])
        if reply.name != "EstablishmentAck":
            raise SessionTerminated(reply.fields.get("code"), f"unexpected {reply.name}")
        self.server_next = reply["nextSeqNo"]
        self.last_applied = reply["lastAppliedSeqNo"]
        self.next_in = self.server_next
        if self.server_next > self.received_through + 1:
            self.retransmit(self.received_through + 1, self.server_next - self.received_through - 1)

    def reconnect(self, resend_from: int | None = None) -> None:
        """A new connection for the same identity; what was missed is requested again.
        Messages sent are numbered on from ``resend_from`` (default: after the last the
        server applied, so nothing is applied twice and nothing already applied is resent)."""
        self.open()
        self.establish(next_seq=resend_from if resend_from is not None else None)
        if resend_from is None and self.last_applied + 1 > self.next_out:
            self.next_out = self.last_applied + 1

    def retransmit(self, from_seq: int, count: int) -> None:
        """Ask for server messages ``from_seq`` .. ``from_seq + count - 1`` again; live
        messages are held back until they have come, so the caller sees them in order."""
        self._awaiting = True
        self.send_raw(m.RetransmitRequest.encode(uuidHi=self.uuid[0], uuidLo=self.uuid[1], timestamp=time.time_ns(),
                                                 fromSeqNo=from_seq, count=count))

    def terminate(self) -> None:
        """End the session politely (Terminate, wait for the server's) and close."""
        if self._sock is None:
            return
        try:
            self.send_raw(m.Terminate.encode(uuidHi=self.uuid[0], uuidLo=self.uuid[1], code=m.TerminationCode.Finished,
                                             reason="client done"))
            deadline = time.monotonic() + self.timeout
            while time.monotonic() < deadline:
                self._read_some(deadline - time.monotonic())
        except (SessionTerminated, OSError, TimeoutError):
            pass
        self.close_socket()

    def close_socket(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.terminate()

    # ---------------------------------------------------------------- sending

    def send_raw(self, message: bytes) -> None:
        """One SBE message, framed; no numbering (session messages, or raw bytes in tests)."""
        if self._sock is None:
            raise SessionTerminated(None, "not connected")
        try:
            self._sock.sendall(header(len(message)) + message)
        except OSError as exc:  # the server closed: what it sent last (a Terminate) may still be readable
            raise SessionTerminated(None, f"send failed: {exc}") from exc
        self._last_send = time.monotonic()

    def send(self, name: str, **fields: Any) -> int:
        """One order-entry message (``NewOrder``, ``CancelOrder``, ``ReplaceOrder``,
        ``MassCancel``); returns the sequence number it carries."""
        layout = m.SCHEMA.message(name)
        if layout not in m.ORDER_ENTRY:
            raise ValueError(f"{name} is not an order-entry message")
        fields.setdefault("sessionId", self.session_id)
        self.send_raw(layout.encode(**fields))
        seq = self.next_out
        self.next_out += 1
        return seq

    def new_order(self, **fields: Any) -> int:
        return self.send("NewOrder", **fields)

    def cancel(self, **fields: Any) -> int:
        return self.send("CancelOrder", **fields)

    def replace(self, **fields: Any) -> int:
        return self.send("ReplaceOrder", **fields)

    def mass_cancel(self, **fields: Any) -> int:
        return self.send("MassCancel", **fields)

    # ---------------------------------------------------------------- receiving

    def receive(self, timeout: float | None = None) -> Event:
        """The next application message; TimeoutError if none comes within ``timeout``."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while not self._queue:
            if self.terminated is not None:
                raise self.terminated
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no message from the gateway")
            self._read_some(left)
        return self._queue.popleft()

    def receive_until(self, predicate: Any, timeout: float | None = None) -> list[Event]:
        """Messages up to and including the first for which ``predicate(event)`` holds."""
        out: list[Event] = []
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            e = self.receive(max(0.0, deadline - time.monotonic()))
            out.append(e)
            if predicate(e):
                return out

    def drain(self, quiet: float = 0.2) -> list[Event]:
        """Every message that arrives until none has for ``quiet`` seconds."""
        out: list[Event] = []
        while True:
            try:
                out.append(self.receive(quiet))
            except TimeoutError:
                return out

    def _keepalive(self) -> None:
        if self._sock is not None and time.monotonic() - self._last_send > self.keepalive_ms / 2000:
            try:
                self.send_raw(m.Sequence.encode(nextSeqNo=self.next_out))
            except SessionTerminated:
                self._last_send = time.monotonic()  # reading says why

    def _read_some(self, timeout: float) -> None:
        if self._sock is None:
            raise SessionTerminated(None, "not connected")
        self._keepalive()
        self._sock.settimeout(max(0.001, min(timeout, self.keepalive_ms / 2000)))
        try:
            frames = self._reader.receive(self._sock)
        except (TimeoutError, socket.timeout):
            return
        except (ConnectionClosed, ConnectionResetError) as exc:
            self.terminated = self.terminated or SessionTerminated(None, f"connection closed: {exc}")
            self.close_socket()
            raise self.terminated from None
        for i in range(len(frames)):
            payload = frames.payload(i)
            if self.captured is not None:
                self.captured.append(payload.tobytes())
            self._on_message(m.SCHEMA.decode(payload))

    def _session_reply(self) -> Decoded:
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if self._sock is None:
                break
            self._sock.settimeout(max(0.001, deadline - time.monotonic()))
            try:
                frames = self._reader.receive(self._sock)
            except (TimeoutError, socket.timeout):
                continue
            except (ConnectionClosed, ConnectionResetError) as exc:
                self.close_socket()
                raise SessionTerminated(None, f"connection closed: {exc}") from None
            reply = None
            for i in range(len(frames)):
                payload = frames.payload(i)
                if self.captured is not None:
                    self.captured.append(payload.tobytes())
                d = m.SCHEMA.decode(payload)
                if reply is None and d.name in ("NegotiationResponse", "NegotiationReject", "EstablishmentAck",
                                                "EstablishmentReject", "Terminate"):
                    reply = d
                else:
                    self._on_message(d)
            if reply is not None:
                return reply
        raise TimeoutError("no answer from the gateway")

    def _on_message(self, d: Decoded) -> None:
        if d.template_id in _APP_OUT:
            seq = self.next_in
            self.next_in += 1
            if self._retransmitting:
                self._retransmitting -= 1
                self._accept(seq, d)
                if not self._retransmitting:  # done: what came live meanwhile follows it
                    self._awaiting = False
                    held, self._held = self._held, []
                    for s, h in held:
                        self._accept(s, h)
            elif self._awaiting:
                self._held.append((seq, d))  # live, newer than what is being retransmitted
            else:
                self._accept(seq, d)
        elif d.name == "Sequence":
            self.next_in = d["nextSeqNo"]
        elif d.name == "Retransmission":
            self.next_in = d["nextSeqNo"]
            self._retransmitting = d["count"]
        elif d.name == "Terminate":
            self.terminated = SessionTerminated(d["code"], d["reason"])
        elif d.name == "RetransmitReject":
            self.terminated = SessionTerminated(d["code"], f"retransmission refused: {d['reason']}")

    def _accept(self, seq: int, d: Decoded) -> None:
        if seq <= self.received_through:
            return  # had it already (a retransmission overlapping what arrived live)
        self.received_through = seq
        if d.name == "NotApplied":
            self.not_applied.append((d["fromSeqNo"], d["count"]))
        self._queue.append(Event(seq, d.name, d.fields))
