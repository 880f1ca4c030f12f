"""A feed subscriber: joins by snapshot, applies the live feed, fills gaps by retransmission.

``FeedSubscriber`` is what a feed handler does with ringex's market data, built on the same
protocol modules any ITCH 5.0 / MoldUDP64 / SoupBinTCP implementation would use:

1. It binds the feed's UDP address (joining the group when it is multicast) first, so that
   nothing published while it takes a snapshot is missed.
2. ``join()``: logs in to the snapshot service (SoupBinTCP), applies the snapshot's messages
   to an empty book and learns the MoldUDP64 session and the sequence number to continue
   from (End of Snapshot). Without a snapshot service (``snapshot=None``) it starts at
   sequence number 1 of whatever session it hears first and asks for everything before.
3. ``poll()``: receives live packets (and retransmissions). A packet that is next in line
   (nothing missing before it) is applied straight from its bytes by one compiled call
   (``packet_book.apply_packet``: the book's messages; Python takes the rare others);
   anything else goes through ``MoldReceiver`` (order, duplicates, gaps), which says what to
   ask the re-request server for, and its messages are applied, in order, the same way. A gap
   the server no longer retains, or a new session (the publisher restarted cleanly), makes it
   join again by snapshot.

The book is ``packet_book`` (arrays); ``book`` gives it as a ``FeedBook`` for views. Every
message applied is also handed to ``on_message(seq, msg)`` when one is given (the ``ringex feed``
command writes the ITCH file from it), each execution to ``on_trade``; stock directory entries
are kept in ``stocks`` (locate -> symbol); ``record_latency`` keeps each message's latency.
"""

from __future__ import annotations

import ipaddress
import select
import socket
import struct
import time
from collections.abc import Callable

import numpy as np

from ringex.feeds import itch
from ringex.feeds import moldudp64 as mold
from ringex.feeds import soupbintcp as soup
from ringex.feeds.feed_book import FeedBook
from ringex.feeds.mold_receiver import MoldReceiver
from ringex.feeds.packet_book import OK, STATUS_TEXT, STOP, PacketBook, apply_packet
from ringex.feeds.packet_book import warm_up as warm_up_book
from ringex.feeds.snapshot_server import parse_end_of_snapshot

__all__ = ["FeedSubscriber", "SubscriberError"]

RECV_BYTES = 65536
DAY_NS = itch.NS_PER_DAY


class SubscriberError(RuntimeError):
    """The feed cannot be followed (login refused, snapshot incomplete, a message the book
    cannot take)."""


class FeedSubscriber:
    def __init__(self, feed: tuple[str, int], retransmit: tuple[str, int],
                 snapshot: tuple[str, int] | None = None, username: str = "", password: str = "",
                 interface: str = "0.0.0.0", on_message: Callable[[int, bytes], None] | None = None,
                 on_trade: Callable[[int, int, int, int], None] | None = None, rcvbuf: int = 8 << 20,
                 capacity: int = 1 << 16) -> None:
        """``on_message(seq, msg)``: every message applied (seq 0: a snapshot's);
        ``on_trade(locate, shares, price, match number)``: every execution, at the resting
        order's price (or the execution price of an Order Executed With Price). ``capacity``:
        orders (and price levels) the book can hold: the exchange's ``[engine] max_orders``
        is always enough (a fuller book is a SubscriberError, never a wrong one)."""
        self.feed = feed
        self.retransmit = retransmit
        self.snapshot_address = snapshot
        self.username = username
        self.password = password
        self.on_message = on_message
        self.on_trade = on_trade
        warm_up_book()  # compiled (or loaded from numba's cache) before the first packet
        self.packet_book = PacketBook(capacity)
        self.stocks: dict[int, str] = {}
        self.latencies: np.ndarray | None = None  # record_latency(): ns from the ITCH timestamp to applied
        self.latency_count = 0
        self._fills = np.zeros((4096, 4), np.int64)
        self._no_latency = np.zeros(0, np.int64)
        self.messages = 0
        self.snapshots = 0
        self.requests = 0  # retransmission requests sent
        self.bytes_received = 0  # UDP payload bytes, live and retransmitted
        self.receiver: MoldReceiver | None = None
        host, port = feed
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        if ipaddress.ip_address(host).is_multicast:
            self._sock.bind(("", port))
            mreq = struct.pack("4s4s", socket.inet_aton(host), socket.inet_aton(interface))
            self._sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
        else:
            self._sock.bind((host, port))
        self._sock.setblocking(False)
        self._rtx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._rtx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self._rtx.bind(("127.0.0.1" if ipaddress.ip_address(retransmit[0]).is_loopback else "0.0.0.0", 0))
        self._rtx.setblocking(False)
        self._poll = select.epoll()
        self._poll.register(self._sock.fileno(), select.EPOLLIN)
        self._poll.register(self._rtx.fileno(), select.EPOLLIN)

    @property
    def address(self) -> tuple[str, int]:
        """Where it receives the feed (its port, when the feed address asked for port 0)."""
        return self._sock.getsockname()[:2]

    def close(self) -> None:
        self._poll.close()
        self._sock.close()
        self._rtx.close()

    def __enter__(self) -> FeedSubscriber:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- joining ------------------------------------------------------------------------------

    def join(self, timeout_s: float = 10.0) -> int:
        """Join: by snapshot when there is a snapshot service, else from sequence number 1.
        Returns the sequence number the live feed continues from."""
        if self.snapshot_address is None:
            self.receiver = MoldReceiver(None, 1)
            self.receiver.known_end = 2  # ask for message 1 until it comes
            return 1
        session, next_seq, msgs = self._take_snapshot(timeout_s)
        self.packet_book.clear()
        self.stocks.clear()
        for msg in msgs:
            self._apply(0, msg)
        self.receiver = MoldReceiver(session.encode("ascii").ljust(mold.SESSION_LENGTH), next_seq)
        self.snapshots += 1
        return next_seq

    def _take_snapshot(self, timeout_s: float) -> tuple[str, int, list[bytes]]:
        deadline = time.monotonic() + timeout_s
        with socket.create_connection(self.snapshot_address, timeout=timeout_s) as s:
            s.sendall(soup.login_request(self.username, self.password, "", 1))
            reader = soup.SoupReader(0xFFFF, accept=soup.SERVER_PACKET_TYPES)
            session = ""
            msgs: list[bytes] = []
            while time.monotonic() < deadline:
                s.settimeout(max(0.01, deadline - time.monotonic()))
                data = s.recv(1 << 20)
                if not data:
                    raise SubscriberError("the snapshot service closed the connection before End of Snapshot")
                for p in reader.feed(data):
                    if p.packet_type == soup.LOGIN_REJECTED:
                        code = soup.decode_login_rejected(p).reject_reason_code
                        raise SubscriberError(f"snapshot login rejected ({code.decode()}: "
                                              f"{'not authorized' if code == b'A' else 'session not available'})")
                    if p.packet_type == soup.LOGIN_ACCEPTED:
                        session = soup.decode_login_accepted(p).session
                    elif p.packet_type == soup.SEQUENCED_DATA:
                        nxt = parse_end_of_snapshot(p.payload)
                        if nxt is None:
                            msgs.append(p.payload)
                            continue
                        try:
                            s.sendall(soup.logout_request())
                        except OSError:
                            pass
                        return session, nxt, msgs
                    elif p.packet_type == soup.END_OF_SESSION:
                        raise SubscriberError("the snapshot service ended the session before End of Snapshot")
        raise SubscriberError(f"no End of Snapshot within {timeout_s} s")

    # -- following ----------------------------------------------------------------------------

    def poll(self, timeout_s: float = 0.0) -> int:
        """Receive and apply what has arrived (waiting up to ``timeout_s`` for something);
        returns the number of messages applied."""
        if self.receiver is None:
            raise SubscriberError("join() first")
        applied = 0
        events = self._poll.poll(timeout_s)
        for fd, _ in events:
            live = fd == self._sock.fileno()
            sock = self._sock if live else self._rtx
            for _ in range(256):
                try:
                    data = sock.recv(RECV_BYTES)
                except (BlockingIOError, InterruptedError):
                    break
                self.bytes_received += len(data)
                if live and self._in_line(data):
                    applied += self._apply_packet(data)
                    continue
                try:
                    p = mold.parse_packet(data)
                except mold.MoldError:
                    continue
                if live and self.receiver.session is not None and p.session != self.receiver.session \
                        and not p.is_end_of_session and (self.snapshot_address is not None or self.receiver.ended):
                    self._new_session()  # the publisher restarted cleanly
                    return applied
                msgs = self.receiver.packet(p) if live else self.receiver.answer(p)
                first = self.receiver.expected - len(msgs)
                for i, msg in enumerate(msgs):
                    self._apply(first + i, msg)
                applied += len(msgs)
        if self.receiver.lost:
            if self.snapshot_address is None:
                raise SubscriberError("messages were lost and are no longer retained, and there is no snapshot service")
            self.join()
            return applied
        want = self.receiver.request(time.monotonic_ns()) if self.receiver.session is not None else None
        if want is not None:
            seq, count = want
            self.requests += 1
            try:
                self._rtx.sendto(mold.encode_request(self.receiver.session, seq, count), self.retransmit)
            except OSError:
                pass
        return applied

    def _new_session(self) -> None:
        """A new session: by snapshot when there is a snapshot service; else from its first
        message, whose opening messages carry the book as it is (docs/market-data.md)."""
        if self.snapshot_address is not None:
            self.join()
            return
        self.packet_book.clear()
        self.stocks.clear()
        self.receiver = MoldReceiver(None, 1)
        self.receiver.known_end = 2

    def run_until(self, done: Callable[[], bool], timeout_s: float) -> bool:
        """Poll until ``done()`` or ``timeout_s``; True when done."""
        deadline = time.monotonic() + timeout_s
        while not done():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.poll(min(left, 0.05))
        return True

    @property
    def session(self) -> bytes | None:
        """The MoldUDP64 session followed (None until a packet or a snapshot named it)."""
        return self.receiver.session if self.receiver is not None else None

    @property
    def next_seq(self) -> int:
        return self.receiver.expected if self.receiver is not None else 1

    @property
    def ended(self) -> bool:
        return self.receiver is not None and self.receiver.ended

    # -- applying -------------------------------------------------------------------------------

    def record_latency(self, count: int) -> None:
        """Keep, for the next ``count`` messages applied, now minus each one's ITCH timestamp
        (ns since midnight, both), in ``latencies`` (``latency_count`` of them)."""
        self.latencies = np.zeros(count, np.int64)
        self.latency_count = 0

    def _in_line(self, data: bytes) -> bool:
        """A live packet of our session that carries the next expected message, with no gap
        pending: applied straight from its bytes (``_apply_packet``)."""
        r = self.receiver
        if len(data) < 20 or r is None or r.session is None or data[:10] != r.session or r.holding:
            return False
        seq = int.from_bytes(data[10:18], "big")
        count = int.from_bytes(data[18:20], "big")
        return 0 < count < 0xFFFF and seq <= r.expected < seq + count

    def _apply_packet(self, data: bytes, start: int = 20) -> int:
        """Apply a packet's messages from the next expected one on, in compiled code; the
        messages the kernel leaves to Python (not the book's) in ``_apply_other``."""
        r = self.receiver
        pkt = np.frombuffer(data, np.uint8)
        applied = 0
        want_fills = self.on_trade is not None
        want_lat = self.latencies is not None
        lat = self.latencies if want_lat else self._no_latency
        at = start
        while True:
            before, at0 = r.expected, at
            now_day = time.time_ns() % DAY_NS if want_lat else 0
            status, expected, at, nfill, self.latency_count = apply_packet(
                pkt, len(pkt), at, r.expected, *self.packet_book.args(), self._fills, want_fills, lat, want_lat,
                self.latency_count, now_day)
            applied += expected - before
            r.expected = expected
            for i in range(nfill):
                self.on_trade(*self._fills[i].tolist())
            if self.on_message is not None and expected > before:
                self._replay_callbacks(pkt, at0, at, before)
            if status == OK:
                break
            length = int.from_bytes(data[at:at + 2], "big")
            msg = data[at + 2:at + 2 + length]
            if status != STOP:
                raise SubscriberError(f"message {r.expected} ({msg[:1]!r}) {STATUS_TEXT.get(status, status)}")
            self._apply_other(r.expected, msg)
            r.expected += 1
            applied += 1
            at += 2 + length
        r.known_end = max(r.known_end, r.expected)
        self.messages += applied
        return applied

    def _replay_callbacks(self, pkt: np.ndarray, at: int, end: int, seq: int) -> None:
        data = pkt.tobytes()
        while at < end:
            length = int.from_bytes(data[at:at + 2], "big")
            msg = data[at + 2:at + 2 + length]
            if seq >= 0:
                self.on_message(seq, msg)
            seq += 1
            at += 2 + length

    def _apply(self, seq: int, msg: bytes) -> None:
        """One message, in order (a snapshot's, or one the receiver held), through the same
        kernel as a packet of its own."""
        r = self.receiver
        if r is None:  # a snapshot's messages, before the session is followed
            r = self.receiver = MoldReceiver(b"SNAPSHOT  ", 1)
            temporary = True
        else:
            temporary = False
        saved = r.expected
        r.expected = max(seq, 1)
        data = mold.encode_packet(r.session or b"SNAPSHOT  ", r.expected, [msg])
        try:
            self._apply_packet(data)
        finally:
            if temporary:
                self.receiver = None
            else:
                r.expected = saved

    def _apply_other(self, seq: int, msg: bytes) -> None:
        """A message that is not one of the book's fast five: decoded whole (every field
        checked) and applied here."""
        try:
            m = itch.decode(msg)
        except itch.ItchError as exc:
            raise SubscriberError(f"message {seq}: {exc}") from None
        t = type(m)
        if t is itch.StockDirectory:
            self.stocks[m.stock_locate] = m.stock
        elif t is itch.StockTradingAction:
            self.packet_book.states[m.stock_locate] = m.trading_state
        elif t is itch.AddOrderMpid:  # the book keeps no attribution: as the Add Order it is
            self._apply_book(seq, itch.add_order(m.stock_locate, m.tracking_number, m.timestamp,
                                                 m.order_reference_number, m.buy_sell_indicator, m.shares, m.stock,
                                                 m.price))
        elif t is itch.OrderExecutedWithPrice:  # the book's change is an execution's; the trade's price is its own
            trade = self.on_trade
            self.on_trade = None
            try:
                self._apply_book(seq, itch.order_executed(m.stock_locate, m.tracking_number, m.timestamp,
                                                          m.order_reference_number, m.executed_shares,
                                                          m.match_number))
            finally:
                self.on_trade = trade
            if trade is not None:
                trade(m.stock_locate, m.executed_shares, m.execution_price, m.match_number)
        if self.on_message is not None:
            self.on_message(seq, msg)

    def _apply_book(self, seq: int, msg: bytes) -> None:
        pkt = np.frombuffer(mold.encode_packet(b"X", 1, [msg]), np.uint8)
        status, _, _, nfill, _ = apply_packet(pkt, len(pkt), 20, 1, *self.packet_book.args(), self._fills,
                                              self.on_trade is not None, self._no_latency, False, 0, 0)
        if status != OK:
            raise SubscriberError(f"message {seq} ({msg[:1]!r}) {STATUS_TEXT.get(status, status)}")
        for i in range(nfill):
            self.on_trade(*self._fills[i].tolist())

    @property
    def executions(self) -> int:
        return self.packet_book.executions

    @property
    def book(self) -> FeedBook:
        """The book as a ``FeedBook`` (built from the arrays on each call: for views)."""
        return self.packet_book.to_feed_book()
