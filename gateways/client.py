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

Three layers: ``ClientProtocol`` is the session without I/O (messages built, both flows
numbered, arrivals put in order); ``Client`` drives it over a blocking socket with no
threads (``receive`` reads, sends the keepalive ``Sequence`` when the client has been quiet
for half the interval, and returns one application message at a time); ``AsyncClient``
over asyncio streams, with a reader task and a keepalive task.
"""

from __future__ import annotations

import asyncio
import socket
import time
import uuid as uuidlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ringex.engine.wire import messages as m
from ringex.engine.wire.codec import Decoded
from ringex.gateways.sofh import ConnectionClosed, FrameReader, FramingError, header

__all__ = ["AsyncClient", "Client", "ClientProtocol", "Event", "SessionRejected", "SessionTerminated"]

_APP_OUT = {x.template_id for x in m.RING} | {m.NotApplied.template_id}
# what answers a Negotiate or an Establish (a Terminate may, too)
_HANDSHAKE = frozenset({"NegotiationResponse", "NegotiationReject", "EstablishmentAck", "EstablishmentReject",
                        "Terminate"})


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


class ClientProtocol:
    """The client side of FIXP without any I/O: it builds the session messages, numbers both
    flows and orders what arrives (a retransmission before the live messages that overtook
    it, duplicates dropped). ``Client`` (blocking) and ``AsyncClient`` (asyncio) add a
    socket; anything else (a test, another event loop) can drive it with bytes."""

    def __init__(self, session_id: int, credentials: str, keepalive_ms: int = 1000) -> None:
        self.session_id = session_id
        self.credentials = credentials
        self.keepalive_ms = keepalive_ms
        self.uuid: tuple[int, int] = (0, 0)
        self.next_out = 1  # the number of the next application message this client sends
        self.next_in = 1  # the number the next server application message carries
        self.received_through = 0  # the highest server number handed to the caller
        self.last_applied = 0  # as the server said at Establish
        self.server_next = 1  # as the server said at Establish
        self.not_applied: list[tuple[int, int]] = []  # (fromSeqNo, count) the server reported
        self.terminated: SessionTerminated | None = None
        self.captured: list[bytes] | None = None  # set to a list to keep every message received, as sent
        self._queue: deque[Event] = deque()
        self._retransmitting = 0
        self._awaiting = False  # a RetransmitRequest is outstanding
        self._held: list[tuple[int, Decoded]] = []  # live messages that came meanwhile
        self._paused: list[bytes] | None = None  # what arrived after a handshake answer, unhandled yet

    # ---------------------------------------------------------------- building

    def new_connection(self) -> None:
        """A new transport: what was in flight on the old one is forgotten."""
        self.terminated = None
        self._retransmitting = 0
        self._awaiting = False
        self._held = []
        self._paused = None

    def negotiate_message(self, uuid: tuple[int, int] | None = None) -> bytes:
        """Negotiate a new identity (``uuid``, or a random one): both flows start again."""
        self.uuid = uuid or _new_uuid()
        self.next_out = self.next_in = 1
        self.received_through = 0
        return m.Negotiate.encode(uuidHi=self.uuid[0], uuidLo=self.uuid[1], timestamp=time.time_ns(),
                                  sessionId=self.session_id, clientFlow=m.FlowType.Idempotent,
                                  credentials=self.credentials)

    def establish_message(self, next_seq: int | None = None) -> bytes:
        """Establish the identity; ``next_seq`` is the number the next message sent will
        carry (default: the client's own count)."""
        if next_seq is not None:
            self.next_out = next_seq
        return m.Establish.encode(uuidHi=self.uuid[0], uuidLo=self.uuid[1], timestamp=time.time_ns(),
                                  nextSeqNo=self.next_out, keepaliveInterval=self.keepalive_ms,
                                  credentials=self.credentials)

    def negotiated(self, reply: Decoded) -> None:
        """The answer to Negotiate; raises unless it is a NegotiationResponse."""
        if reply.name == "NegotiationReject":
            raise SessionRejected("Negotiate", reply["code"], reply["reason"])
        if reply.name != "NegotiationResponse":
            raise SessionTerminated(reply.fields.get("code"), f"unexpected {reply.name}")

    def established(self, reply: Decoded, resend_from: int | None = None) -> bytes | None:
        """The answer to Establish; raises unless it is an EstablishmentAck. Returns the
        RetransmitRequest to send when the server sent more than this client has."""
        if reply.name == "EstablishmentReject":
            raise SessionRejected("Establish", reply["code"], reply["reason"])
        if reply.name != "EstablishmentAck":
            raise SessionTerminated(reply.fields.get("code"), f"unexpected {reply.name}")
        self.server_next = reply["nextSeqNo"]
        self.last_applied = reply["lastAppliedSeqNo"]
        self.next_in = self.server_next
        if resend_from is None and self.last_applied + 1 > self.next_out:
            self.next_out = self.last_applied + 1  # nothing applied twice, nothing applied resent
        if self.server_next > self.received_through + 1:
            return self.retransmit_message(self.received_through + 1, self.server_next - self.received_through - 1)
        return None

    def retransmit_message(self, from_seq: int, count: int) -> bytes:
        """Ask for server messages ``from_seq`` .. ``from_seq + count - 1`` again; live
        messages are held back until they have come, so the caller sees them in order."""
        self._awaiting = True
        return m.RetransmitRequest.encode(uuidHi=self.uuid[0], uuidLo=self.uuid[1], timestamp=time.time_ns(),
                                          fromSeqNo=from_seq, count=count)

    def terminate_message(self) -> bytes:
        return m.Terminate.encode(uuidHi=self.uuid[0], uuidLo=self.uuid[1], code=m.TerminationCode.Finished,
                                  reason="client done")

    def keepalive_message(self) -> bytes:
        return m.Sequence.encode(nextSeqNo=self.next_out)

    def order_message(self, name: str, fields: dict[str, Any]) -> tuple[bytes, int]:
        """One order-entry message (``NewOrder``, ``CancelOrder``, ``ReplaceOrder``,
        ``MassCancel``) and the sequence number it carries."""
        layout = m.SCHEMA.message(name)
        if layout not in m.ORDER_ENTRY:
            raise ValueError(f"{name} is not an order-entry message")
        fields.setdefault("sessionId", self.session_id)
        message = layout.encode(**fields)
        seq = self.next_out
        self.next_out += 1
        return message, seq

    # ---------------------------------------------------------------- receiving

    def on_payload(self, payload: Any, handshake: bool = False) -> Decoded | None:
        """One SBE message from the server. With ``handshake``, an answer to Negotiate or
        Establish (or a Terminate) is returned instead of being handled, and what arrives
        after it waits until ``resume``: the answer decides how it is numbered (and whether
        a retransmission comes first)."""
        raw = bytes(payload)
        if self.captured is not None:
            self.captured.append(raw)
        if self._paused is not None:
            self._paused.append(raw)
            return None
        d = m.SCHEMA.decode(raw)
        if handshake and d.name in _HANDSHAKE:
            self._paused = []
            return d
        self._on_message(d)
        return None

    def resume(self) -> None:
        """The handshake answer is handled: what arrived after it, in order."""
        paused, self._paused = self._paused or [], None
        for raw in paused:
            if self._paused is not None:  # another answer among them: wait again
                self._paused.append(raw)
                continue
            self._on_message(m.SCHEMA.decode(raw))

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


class Client(ClientProtocol):
    """A blocking client: one socket, no threads."""

    def __init__(self, host: str, port: int, session_id: int, credentials: str, *,
                 keepalive_ms: int = 1000, timeout: float = 5.0, receive_buffer: int = 0) -> None:
        """``receive_buffer``: the socket's SO_RCVBUF when not 0 (a test of a slow reader)."""
        super().__init__(session_id, credentials, keepalive_ms)
        self.host, self.port = host, port
        self.receive_buffer = receive_buffer
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._reader = FrameReader(1 << 16)
        self._last_send = 0.0

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
        self.new_connection()

    def negotiate(self, uuid: tuple[int, int] | None = None) -> None:
        self.send_raw(self.negotiate_message(uuid))
        try:
            self.negotiated(self._session_reply())
        finally:
            self.resume()

    def establish(self, next_seq: int | None = None) -> None:
        """Establish the negotiated identity; ``next_seq`` is the number the next message
        sent will carry (default: the client's own count)."""
        self.send_raw(self.establish_message(next_seq))
        try:
            request = self.established(self._session_reply(), next_seq)
            if request is not None:
                self.send_raw(request)
        finally:
            self.resume()

    def reconnect(self, resend_from: int | None = None) -> None:
        """A new connection for the same identity; what was missed is requested again.
        Messages sent are numbered on from ``resend_from`` (default: after the last the
        server applied, so nothing is applied twice and nothing already applied is resent)."""
        self.open()
        self.establish(next_seq=resend_from)

    def retransmit(self, from_seq: int, count: int) -> None:
        self.send_raw(self.retransmit_message(from_seq, count))

    def terminate(self) -> None:
        """End the session politely (Terminate, wait for the server's) and close."""
        if self._sock is None:
            return
        try:
            self.send_raw(self.terminate_message())
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
        message, seq = self.order_message(name, fields)
        self.send_raw(message)
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

    def receive_until(self, predicate: Callable[[Event], bool], timeout: float | None = None) -> list[Event]:
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
                self.send_raw(self.keepalive_message())
            except SessionTerminated:
                self._last_send = time.monotonic()  # reading says why

    def _receive_frames(self, timeout: float) -> Any:
        """One receive (bounded by ``timeout``): the frames complete now, or None."""
        if self._sock is None:
            raise SessionTerminated(None, "not connected")
        self._sock.settimeout(max(0.001, timeout))
        try:
            return self._reader.receive(self._sock)
        except (TimeoutError, socket.timeout):
            return None
        except (ConnectionClosed, ConnectionResetError) as exc:
            self.terminated = self.terminated or SessionTerminated(None, f"connection closed: {exc}")
            self.close_socket()
            raise self.terminated from None

    def _read_some(self, timeout: float) -> None:
        self._keepalive()
        frames = self._receive_frames(min(timeout, self.keepalive_ms / 2000))
        for i in range(len(frames) if frames is not None else 0):
            self.on_payload(frames.payload(i))

    def _session_reply(self) -> Decoded:
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            frames = self._receive_frames(deadline - time.monotonic())
            reply = None
            for i in range(len(frames) if frames is not None else 0):
                reply = self.on_payload(frames.payload(i), handshake=True) or reply
            if reply is not None:
                return reply
        raise TimeoutError("no answer from the gateway")


class AsyncClient(ClientProtocol):
    """The asyncio client: the same session, with coroutines. A reader task takes what
    arrives and a keepalive task sends a ``Sequence`` when the client has been quiet for half
    the interval, so a caller that only sends, or only waits, keeps the session alive.

        c = await AsyncClient.connect("127.0.0.1", 9100, 1, "demo-1")
        await c.new_order(clOrdId=1, account=1, instrument=1, side="Buy", ordType="Limit",
                          price=49_990, qty=1, timeInForce="GTC")
        event = await c.receive(timeout=2.0)
        await c.terminate()
    """

    def __init__(self, host: str, port: int, session_id: int, credentials: str, *,
                 keepalive_ms: int = 1000, timeout: float = 5.0) -> None:
        super().__init__(session_id, credentials, keepalive_ms)
        self.host, self.port = host, port
        self.timeout = timeout
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self._tasks: list[asyncio.Task] = []
        self._arrived = asyncio.Event()
        self._replies: deque[Decoded] = deque()
        self._handshaking = False  # waiting for the answer to a Negotiate or an Establish
        self._last_send = 0.0

    @classmethod
    async def connect(cls, host: str, port: int, session_id: int, credentials: str, **kw: Any) -> "AsyncClient":
        c = cls(host, port, session_id, credentials, **kw)
        await c.open()
        await c.negotiate()
        await c.establish()
        return c

    async def open(self) -> None:
        await self.close_socket()
        self._streams = await asyncio.wait_for(asyncio.open_connection(self.host, self.port), self.timeout)
        self._streams[1].get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.new_connection()
        self._replies.clear()
        reader = FrameReader(1 << 16)
        self._tasks = [asyncio.create_task(self._read_loop(reader)), asyncio.create_task(self._keepalive_loop())]

    async def _read_loop(self, reader: FrameReader) -> None:
        assert self._streams is not None
        stream = self._streams[0]
        try:
            while True:
                data = await stream.read(1 << 16)
                if not data:
                    raise ConnectionClosed("peer closed the connection")
                frames = reader.feed(data)
                for i in range(len(frames)):
                    d = self.on_payload(frames.payload(i), handshake=self._handshaking)
                    if d is not None:
                        self._replies.append(d)
                        if d.name == "Terminate":
                            self._on_message(d)
                self._arrived.set()
        except (ConnectionClosed, ConnectionError, FramingError) as exc:
            self.terminated = self.terminated or SessionTerminated(None, f"connection closed: {exc}")
            self._arrived.set()

    async def _keepalive_loop(self) -> None:
        while True:
            await asyncio.sleep(self.keepalive_ms / 4000)
            if time.monotonic() - self._last_send > self.keepalive_ms / 2000 and self.terminated is None:
                try:
                    await self.send_raw(self.keepalive_message())
                except SessionTerminated:
                    return

    async def _wait(self, ready: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            if self.terminated is not None:
                raise self.terminated
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(what)
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), left)
            except asyncio.TimeoutError:
                pass

    async def _session_reply(self) -> Decoded:
        await self._wait(lambda: bool(self._replies), self.timeout, "no answer from the gateway")
        return self._replies.popleft()

    async def negotiate(self, uuid: tuple[int, int] | None = None) -> None:
        self._handshaking = True
        try:
            await self.send_raw(self.negotiate_message(uuid))
            self.negotiated(await self._session_reply())
        finally:
            self._handshaking = False
            self.resume()

    async def establish(self, next_seq: int | None = None) -> None:
        self._handshaking = True
        try:
            await self.send_raw(self.establish_message(next_seq))
            request = self.established(await self._session_reply(), next_seq)
            if request is not None:
                await self.send_raw(request)
        finally:
            self._handshaking = False
            self.resume()

    async def reconnect(self, resend_from: int | None = None) -> None:
        await self.open()
        await self.establish(next_seq=resend_from)

    async def send_raw(self, message: bytes) -> None:
        if self._streams is None:
            raise SessionTerminated(None, "not connected")
        writer = self._streams[1]
        try:
            writer.write(header(len(message)) + message)
            await writer.drain()
        except ConnectionError as exc:
            raise SessionTerminated(None, f"send failed: {exc}") from exc
        self._last_send = time.monotonic()

    async def send(self, name: str, **fields: Any) -> int:
        message, seq = self.order_message(name, fields)
        await self.send_raw(message)
        return seq

    async def new_order(self, **fields: Any) -> int:
        return await self.send("NewOrder", **fields)

    async def cancel(self, **fields: Any) -> int:
        return await self.send("CancelOrder", **fields)

    async def replace(self, **fields: Any) -> int:
        return await self.send("ReplaceOrder", **fields)

    async def mass_cancel(self, **fields: Any) -> int:
        return await self.send("MassCancel", **fields)

    async def receive(self, timeout: float | None = None) -> Event:
        await self._wait(lambda: bool(self._queue), self.timeout if timeout is None else timeout,
                         "no message from the gateway")
        return self._queue.popleft()

    async def receive_until(self, predicate: Callable[[Event], bool], timeout: float | None = None) -> list[Event]:
        out: list[Event] = []
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            e = await self.receive(max(0.0, deadline - time.monotonic()))
            out.append(e)
            if predicate(e):
                return out

    async def terminate(self) -> None:
        """End the session politely (Terminate, wait for the server's) and close."""
        if self._streams is None:
            return
        try:
            await self.send_raw(self.terminate_message())
            await self._wait(lambda: False, self.timeout, "no Terminate")  # until the server's Terminate
        except (SessionTerminated, TimeoutError):
            pass
        await self.close_socket()

    async def close_socket(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        self._tasks = []
        if self._streams is not None:
            writer = self._streams[1]
            self._streams = None
            writer.close()
            try:
                await writer.wait_closed()
            except ConnectionError:
                pass

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.terminate()
