"""A MoldUDP64 receiver's sequencing: every message once, in order, gaps found and asked for.

Sans I/O: it takes parsed packets (``moldudp64.parse_packet``) from the live stream and from
the re-request server, and gives back the messages that are now next in line. UDP loses and
reorders packets; this is where that stops:

- a packet's messages below the next expected number are duplicates and dropped;
- messages above it are held (up to ``max_held``; beyond that the furthest are dropped and
  asked for again later) until the gap before them is filled;
- a gap is known from a later packet, or from a heartbeat whose next number is ahead of us;
  ``request(now)`` says what to ask for (the first missing number and how many, at most
  ``max_request`` at a time) at most once per ``retry_ns`` while the gap lasts;
- an answer from the re-request server that is a heartbeat numbered above the first message
  we asked for means those messages are no longer retained: ``lost`` is set, and the
  receiver must join again by snapshot;
- End of Session (count 0xFFFF) sets ``ended`` once everything before its number arrived.

A packet of another session than the one joined is ignored (counted in ``foreign``).
"""

from __future__ import annotations

from ringex.feeds.moldudp64 import MoldPacket

__all__ = ["MoldReceiver"]

RETRY_NS = 50_000_000
MAX_REQUEST = 0xFFFE


class MoldReceiver:
    def __init__(self, session: bytes | None = None, next_seq: int = 1, max_held: int = 1_000_000,
                 retry_ns: int = RETRY_NS, max_request: int = 1024) -> None:
        self.session = session  # None: the first packet's
        self.expected = next_seq
        self.max_held = max_held
        self.retry_ns = retry_ns
        self.max_request = min(max_request, MAX_REQUEST)
        self._held: dict[int, bytes] = {}
        self.known_end = next_seq  # one past the highest number known to exist
        self.end_at: int | None = None  # End of Session's number
        self.ended = False
        self.lost = False
        self.foreign = 0
        self.duplicates = 0
        self.requests = 0
        self._asked_at = -(1 << 62)
        self._asked_from = 0

    def _mine(self, p: MoldPacket) -> bool:
        if self.session is None:
            self.session = p.session
        if p.session != self.session:
            self.foreign += 1
            return False
        return True

    def packet(self, p: MoldPacket) -> list[bytes]:
        """A live packet: the messages now deliverable, in order."""
        if not self._mine(p):
            return []
        out: list[bytes] = []
        if p.is_end_of_session:
            self.end_at = p.sequence_number
            self.known_end = max(self.known_end, p.sequence_number)
        elif p.is_heartbeat:
            self.known_end = max(self.known_end, p.sequence_number)
        else:
            self._take(p, out)
        self._deliver(out)
        return out

    def answer(self, p: MoldPacket) -> list[bytes]:
        """A packet from the re-request server."""
        if not self._mine(p):
            return []
        if (p.is_heartbeat or p.is_end_of_session) and self._asked_from and p.sequence_number > self._asked_from \
                and self.expected < p.sequence_number:
            self.lost = True  # what we asked for is no longer retained
            return []
        return self.packet(p)

    def _take(self, p: MoldPacket, out: list[bytes]) -> None:
        """The next expected message goes straight out (with whatever held ones it joins up
        to); a later one is held, and when the holding is full the furthest gives way to a
        nearer one (it will be asked for again)."""
        seq = p.sequence_number
        held = self._held
        for msg in p.messages:
            if seq < self.expected or seq in held:
                self.duplicates += 1
            elif seq == self.expected:
                out.append(msg)
                self.expected += 1
                self._deliver(out)
            elif len(held) < self.max_held:
                held[seq] = msg
            else:
                furthest = max(held)
                if seq < furthest:
                    del held[furthest]
                    held[seq] = msg
            seq += 1
        self.known_end = max(self.known_end, seq)

    def _deliver(self, out: list[bytes]) -> None:
        held = self._held
        while self.expected in held:
            out.append(held.pop(self.expected))
            self.expected += 1
        if self.end_at is not None and self.expected >= self.end_at:
            self.ended = True

    @property
    def holding(self) -> bool:
        """Messages are held waiting for a gap before them to fill."""
        return bool(self._held)

    def gap(self) -> tuple[int, int] | None:
        """(first missing number, how many) when messages are known to be missing."""
        if self.expected >= self.known_end:
            return None
        upto = min(self._held) if self._held else self.known_end
        return self.expected, min(upto - self.expected, self.max_request)

    def request(self, now: int) -> tuple[int, int] | None:
        """What to ask the re-request server for now (None: nothing, or asked too recently)."""
        g = self.gap()
        if g is None or self.lost:
            return None
        if g[0] == self._asked_from and now - self._asked_at < self.retry_ns:
            return None
        self._asked_at, self._asked_from = now, g[0]
        self.requests += 1
        return g
