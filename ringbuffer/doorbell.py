"""Doorbells: a parked consumer is woken by its producer's publish, not by its park's end.

On a small host the agents cannot spin: they park (``idle.py``), and a message published
while its consumer parks waits out the rest of the park, up to a millisecond at every hop.
A doorbell removes that wait without a spinning core, in the manner of the Disruptor's
blocking wait strategy but across processes:

* each consumer index of a ring may own a **bell**: a Unix datagram socket in the abstract
  namespace (nothing on disk to leak; it vanishes with its process), named for the ring and
  the index (:func:`bell_address`);
* a consumer about to park sets its **waiting word** (``descriptor.consumer_waiting_offset``,
  in lines of their own that only parking and waking write), looks once more for published messages,
  and only then sleeps in ``select`` on its bells (and on any other descriptor its agent
  waits on, a gateway's sockets) for at most the park's length; awake, it clears the word;
* a producer, after the cursor store of each publish, loads the waiting words of the ring's
  consumers and sends one byte to the bell of each that is set (:class:`BellRinger`).

Nothing here is needed for correctness: a wake that is lost (no fence orders the waiting
word's store before the cursor's load, nor the cursor's store before the waiting word's
load, so on rare interleavings both sides miss each other; a bell that could not be bound;
a full socket buffer) costs what parking cost without bells, the rest of one park. A
producer finds a set word with no bell behind it (its consumer died parked) by the send's
``ECONNREFUSED``, and clears it, so a dead consumer costs no system call per publish.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import select
import socket
from collections.abc import Callable, Iterable

from . import descriptor as d

__all__ = ["Bell", "BellRinger", "Doorbell", "bell_address", "open_bell"]

log = logging.getLogger("ringex.ringbuffer")

_PREFIX = b"\0ringex-bell:"
_MAX_ABSTRACT = 107  # sun_path is 108 bytes; the leading NUL is part of it


def bell_address(ring_name: str, index: int) -> bytes:
    """The abstract socket address of consumer ``index``'s bell on ring ``ring_name``."""
    addr = _PREFIX + ring_name.encode() + b":" + str(index).encode()
    if len(addr) > _MAX_ABSTRACT:  # a long shm name: a digest names it just as uniquely
        addr = _PREFIX + hashlib.sha256(addr).hexdigest().encode()
    return addr


class Bell:
    """Consumer ``index``'s bell: its bound socket and its waiting word."""

    __slots__ = ("_sock", "_q", "_waiting", "_cursor", "_producer", "address")

    def __init__(self, sock: socket.socket, q: memoryview, index: int, address: bytes) -> None:
        self._sock = sock
        self._q = q
        self._waiting = d.word(d.consumer_waiting_offset(index))
        self._cursor = d.word(d.consumer_cursor_offset(index))
        self._producer = d.word(d.PRODUCER_CURSOR_OFFSET)
        self.address = address

    def fileno(self) -> int:
        return self._sock.fileno()

    def arm(self) -> bool:
        """Ask to be rung; False (and not armed) when a message is already waiting."""
        q = self._q
        q[self._waiting] = 1
        if q[self._producer] > q[self._cursor]:  # an untethered cursor reads as ahead: no wait
            q[self._waiting] = 0
            return False
        return True

    def disarm(self) -> None:
        self._q[self._waiting] = 0

    def drain(self) -> None:
        """Read every ring pending (one park may have been rung several times)."""
        recv = self._sock.recv
        try:
            while recv(64):
                pass
        except OSError:  # BlockingIOError: empty
            pass

    def close(self) -> None:
        q = self._q
        if q is not None:
            self._q = None
            q[self._waiting] = 0
            self._sock.close()


def open_bell(ring_name: str, q: memoryview, index: int) -> Bell | None:
    """Bind consumer ``index``'s bell; None when its address is taken (the consumer this one
    took over from still runs, stopped): then it parks without one, as before bells."""
    address = bell_address(ring_name, index)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        log.debug("ring %s consumer %d: no doorbell (%s)", ring_name, index, exc)
        return None
    q[d.word(d.consumer_waiting_offset(index))] = 0
    return Bell(sock, q, index, address)


class BellRinger:
    """The producer's side: ring the bell of every consumer that waits."""

    __slots__ = ("_q", "_words", "_addresses", "_sock")

    def __init__(self, ring_name: str, q: memoryview, consumers: int) -> None:
        self._q = q
        self._words = tuple(d.word(d.consumer_waiting_offset(i)) for i in range(consumers))
        self._addresses = tuple(bell_address(ring_name, i) for i in range(consumers))
        self._sock: socket.socket | None = None

    @property
    def words(self) -> tuple[int, ...]:
        """The waiting words' indexes, for the producer's own check after a publish."""
        return self._words

    def ring(self) -> None:
        """Send to every consumer whose waiting word is set."""
        q = self._q
        for i, w in enumerate(self._words):
            if q[w]:
                self._send(i, w)

    def _send(self, i: int, w: int) -> None:
        sock = self._sock
        if sock is None:
            sock = self._sock = socket.socket(
                socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
        try:
            sock.sendto(b"\1", self._addresses[i])
        except OSError as exc:
            if exc.errno in (errno.ECONNREFUSED, errno.ENOENT):
                self._q[w] = 0  # nobody listens: no one to wake, stop trying
            # EAGAIN: the bell already holds rings it has not read; it will wake

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


class Doorbell:
    """What a parked runner sleeps on: its agent's bells and descriptors, asked afresh for
    every park (an agent replaces a consumer when it rejoins a ring)."""

    def __init__(self, sources: Callable[[], Iterable[object]]) -> None:
        self._sources = sources

    def park(self, timeout_s: float) -> None:
        """Sleep at most ``timeout_s``, less when a bell rings or a descriptor is readable;
        return at once when a consumer already has messages."""
        bells: list[Bell] = []
        fds: list[object] = []
        for source in self._sources():
            bell = getattr(source, "bell", None)
            if bell is not None:
                b = bell()
                if b is None:
                    continue
                if not b.arm():
                    for armed in bells:
                        armed.disarm()
                    return
                bells.append(b)
            else:
                fds.append(source)
        try:
            readable, _, _ = select.select(bells + fds, [], [], timeout_s)
        except InterruptedError:
            readable = ()
        finally:
            for b in bells:
                b.disarm()
        for r in readable:
            if isinstance(r, Bell):
                r.drain()

