"""One client TCP connection of a gateway: non-blocking, framed in, batched out, bounded.

Receiving is one read a duty cycle into the connection's framer (SOFH's ``FrameReader``, or
the FIX gateway's ``FixReader``).
Sending is queued: everything a duty cycle produces for the connection is appended to its
output buffer and written with as few ``send`` calls as the socket takes (``flush``), so a
busy session costs one system call a cycle, not one a message. What the socket does not take
stays queued; once more than ``max_backlog`` bytes wait, the client is not reading and the
connection is marked ``slow`` (the gateway terminates it): memory never grows with a client
that stopped reading.

A connection that has something for its gateway's duty cycle to do (output queued, a
``closing`` flag, a close) puts itself in the set it was given with ``watch``, so that the
gateway looks at those alone each cycle, not at every connection it holds.
"""

from __future__ import annotations

import socket
from typing import Any

import numpy as np

from ringex.gateways.sofh import FrameReader, header

__all__ = ["Connection"]


class Connection:
    def __init__(self, sock: socket.socket, peer: str, max_frame: int, max_backlog: int, now_ns: int,
                 reader: Any = None) -> None:
        """``reader``: the protocol's framer (default: SOFH's ``FrameReader(max_frame)``)."""
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = sock
        self.fd = sock.fileno()
        self.peer = peer
        self.reader = reader if reader is not None else FrameReader(max_frame)
        self.max_backlog = max_backlog
        self._out = bytearray()
        self._sent = 0  # bytes of _out already written
        self.opened_ns = now_ns
        self.last_recv_ns = now_ns
        self.last_send_ns = now_ns
        self.slow = False
        self._closing = False
        self.closed = False
        self._notice: set[Connection] = set()  # the gateway's (``watch``): where it looks each cycle
        self.slot = 0  # its place among the gateway's connections (the receive's round robin)
        self.session = None  # the session it negotiated, established or logged on as, once it has
        self.established = False
        self.bytes_sent = 0

    def watch(self, notice: set[Connection]) -> None:
        """Put this connection in ``notice`` whenever it has something for the duty cycle."""
        self._notice = notice

    @property
    def closing(self) -> bool:
        """A last word (a Terminate, a Logout) was queued: flush it, then close."""
        return self._closing

    @closing.setter
    def closing(self, value: bool) -> None:
        self._closing = value
        if value:
            self._notice.add(self)

    @property
    def backlog(self) -> int:
        """Bytes queued and not yet written."""
        return len(self._out) - self._sent

    def queue(self, payload: bytes | bytearray | memoryview) -> None:
        """Frame (SOFH) and queue one SBE message."""
        if self.closed:
            return
        self._out += header(len(payload))
        self._out += payload
        self._notice.add(self)
        if self.backlog > self.max_backlog:
            self.slow = True

    def queue_framed(self, frames: bytes | bytearray | memoryview | np.ndarray) -> None:
        """Queue bytes that are already SOFH frames."""
        if self.closed:
            return
        self._out += memoryview(frames)
        self._notice.add(self)
        if self.backlog > self.max_backlog:
            self.slow = True

    def discard_output(self) -> None:
        """Forget what is queued (a slow consumer: only the Terminate will be sent)."""
        self._out = bytearray()
        self._sent = 0
        self.slow = False

    def flush(self, now_ns: int) -> int:
        """Write what the socket takes now; returns the bytes written. Raises OSError when
        the connection is broken."""
        if self.closed or self._sent >= len(self._out):
            return 0
        view = memoryview(self._out)[self._sent:]
        try:
            n = self.sock.send(view)
        except (BlockingIOError, InterruptedError):
            n = 0
        finally:
            view.release()
        if n:
            self._sent += n
            self.bytes_sent += n
            self.last_send_ns = now_ns
            if self._sent == len(self._out):
                self._out.clear()
                self._sent = 0
            elif self._sent > (1 << 20):  # drop what went, so the buffer does not creep
                del self._out[:self._sent]
                self._sent = 0
        return n

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._notice.discard(self)  # nothing more to do for it
        try:
            self.sock.close()
        except OSError:
            pass
        self._out = bytearray()
        self._sent = 0

    def __repr__(self) -> str:
        who = f" session {self.session.id}" if self.session is not None else ""
        return f"Connection({self.peer}{who})"

