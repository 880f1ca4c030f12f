"""The snapshot service for late joiners: SoupBinTCP 4.0 in the style of Nasdaq GLIMPSE 5.0.

A client connects, logs in (Login Request: the feed's username and password; requested
session blank or the feed's current MoldUDP64 session), and receives, as Sequenced Data
packets numbered from 1: a Stock Directory (R) and Stock Trading Action (H) per instrument,
an Add Order (A) per resting order in time priority, then End of Snapshot (below) carrying
the MoldUDP64 sequence number to continue the live feed from. The book it describes is the
book after every message before that number, exactly; a subscriber applies it, then the live
feed's messages from that number on (asking for retransmission of those it missed meanwhile).

End of Snapshot (GLIMPSE 5.0's 'G', not an ITCH 5.0 message)::

    0   1   Message Type      'G'
    1   20  Sequence Number   Numeric: ASCII digits, right-justified, space-padded on the left

Session rules (SoupBinTCP 4.0): a client that sends no Login Request within ``LOGIN_TIMEOUT_NS``
or stays silent (no packet, heartbeat included) for ``CLIENT_TIMEOUT_NS`` is disconnected;
the server sends a Server Heartbeat after a second without sending; wrong credentials get
Login Rejected 'A' (not authorized), another session Login Rejected 'S' (session not
available), then the connection closes; a Logout Request ends it; a malformed packet ends it
(a SoupBinTCP stream cannot resynchronise). At shutdown every client gets End of Session.

``SnapshotConnection`` is the protocol without I/O (bytes in, bytes out); the publisher owns
the sockets.
"""

from __future__ import annotations

from collections.abc import Callable

from ringex.feeds import soupbintcp as soup

__all__ = ["END_OF_SNAPSHOT", "SnapshotConnection", "end_of_snapshot", "parse_end_of_snapshot"]

END_OF_SNAPSHOT = b"G"
END_OF_SNAPSHOT_LENGTH = 21
LOGIN_TIMEOUT_NS = 30_000_000_000
CLIENT_TIMEOUT_NS = 15_000_000_000
HEARTBEAT_NS = 1_000_000_000
MAX_CLIENT_PACKET = 256  # a client sends nothing longer than a Login Request


def end_of_snapshot(next_sequence_number: int) -> bytes:
    if not 0 < next_sequence_number < 10**20:
        raise ValueError(f"sequence number {next_sequence_number} does not fit 20 digits")
    return END_OF_SNAPSHOT + str(next_sequence_number).rjust(20).encode("ascii")


def parse_end_of_snapshot(msg: bytes) -> int | None:
    """The sequence number an End of Snapshot carries; None when ``msg`` is not one."""
    if len(msg) != END_OF_SNAPSHOT_LENGTH or msg[:1] != END_OF_SNAPSHOT:
        return None
    digits = msg[1:].lstrip(b" ")
    if not digits.isdigit() or int(digits) == 0:  # numbering starts at 1
        return None
    return int(digits)


class SnapshotConnection:
    """One snapshot client's session; ``outgoing`` holds what to send, ``closed`` says when
    to close (after sending what is left)."""

    def __init__(self, peer: str, username: str, password: str, session: Callable[[], str],
                 snapshot: Callable[[], list[bytes]], now: int) -> None:
        self.peer = peer
        self._username = username
        self._password = password
        self._session = session
        self._snapshot = snapshot
        self._reader = soup.SoupReader(MAX_CLIENT_PACKET, accept=soup.CLIENT_PACKET_TYPES)
        self.outgoing = bytearray()
        self.logged_in = False
        self.closed = False  # no more input; close once ``outgoing`` is written
        self.why = ""
        self.rejected = False
        self._since = now
        self._heard = now
        self._sent = now

    def _end(self, why: str) -> None:
        self.closed = True
        self.why = why

    def receive(self, data: bytes, now: int) -> None:
        if self.closed:
            return
        self._heard = now
        try:
            packets = self._reader.feed(data)
        except soup.SoupError as exc:
            self._end(f"malformed packet: {exc}")
            return
        for p in packets:
            if self.closed:
                return
            if p.packet_type == soup.LOGIN_REQUEST and not self.logged_in:
                self._login(p, now)
            elif p.packet_type == soup.LOGOUT_REQUEST:
                self._end("logout")
            elif p.packet_type in (soup.CLIENT_HEARTBEAT, soup.DEBUG):
                pass
            elif p.packet_type == soup.LOGIN_REQUEST:
                self._end("second Login Request")
            else:  # Unsequenced Data: this service takes no requests
                self._end(f"unexpected packet {p.packet_type!r}")

    def _login(self, p: soup.SoupPacket, now: int) -> None:
        try:
            req = soup.decode_login_request(p)
        except soup.SoupError as exc:
            self._end(f"malformed Login Request: {exc}")
            return
        if req.username != self._username or req.password != self._password:
            self._send(soup.login_rejected(soup.REJECT_NOT_AUTHORIZED), now)
            self.rejected = True
            self._end("not authorized")
            return
        session = self._session()
        if req.requested_session not in ("", session):
            self._send(soup.login_rejected(soup.REJECT_SESSION_NOT_AVAILABLE), now)
            self.rejected = True
            self._end(f"session {req.requested_session!r} not available (current: {session!r})")
            return
        self.logged_in = True
        self._send(soup.login_accepted(session, 1), now)
        self._send(b"".join(soup.sequenced_data(msg) for msg in self._snapshot()), now)

    def _send(self, data: bytes, now: int) -> None:
        self.outgoing += data
        self._sent = now

    def timers(self, now: int) -> None:
        if self.closed:
            return
        if not self.logged_in and now - self._since > LOGIN_TIMEOUT_NS:
            self._end("no Login Request")
        elif now - self._heard > CLIENT_TIMEOUT_NS:
            self._end("client silent")
        elif self.logged_in and now - self._sent >= HEARTBEAT_NS and not self.outgoing:
            self._send(soup.server_heartbeat(), now)

    def end_of_session(self, now: int) -> None:
        if not self.closed and self.logged_in:
            self._send(soup.end_of_session(), now)
        self._end("end of session")
