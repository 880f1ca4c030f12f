"""The market-data publisher: engine events out as ITCH 5.0 in MoldUDP64 packets over UDP.

One agent, ``md-publisher`` (any ``[[feed]]`` name), subscriber ``index`` of ``<prefix>-out``
(and of ``<prefix>-rej``, which it only drains: rejections are not market data). Each duty
cycle: read a batch of engine events, translate the book's changes to ITCH messages
(``itch_translate``), store them (``message_store``: numbered, before anything is sent, so a
retransmission can always serve what was sent), send them packed into MoldUDP64 packets of at
most ``max_payload`` bytes, then commit the ring; answer retransmission requests
(``retransmit``) and serve snapshot clients (``snapshot_server``) on non-blocking sockets
inside the same cycle; send a heartbeat after ``heartbeat_ms`` without a packet.

Sessions. A MoldUDP64 session is ``<session prefix><run number>`` (10 characters). A clean stop
ends it (System Events M, E, C, then an End of Session packet); the next start opens a new
session from sequence number 1 whose first messages describe the market as it is (directory,
trading states, every resting order). A crash does not end it: the restarted publisher
recovers its book and numbering from the store and resumes the same session where the store
ends, skipping the events it had already published (the store records the ring position each
append covered), so no message is sent twice under two numbers and none is skipped.

A publisher untethered from the output ring (dead or hung for half a ring) rejoins at the
head and makes the events it missed again from the journal (``OutputPosition``: where it had
read to), publishing them in the same session. One that cannot, or that starts without its
store on an exchange with a history, takes its book from the engine's own state
(``engine_book``), ends its session and opens the next with that book, skipping the ring's
events the book includes.
"""

from __future__ import annotations

import ipaddress
import logging
import select
import socket
import time
from pathlib import Path

import numpy as np

from ringex import crash_points
from ringex.engine.config import EngineConfig
from ringex.engine.storage.data_dir import journal_last_seq
from ringex.engine.storage.output_replay import OutputPosition
from ringex.engine.wire import messages as m
from ringex.feeds import itch
from ringex.feeds.engine_book import book_from_engine
from ringex.feeds import moldudp64 as mold
from ringex.feeds.feed_book import FeedBook
from ringex.feeds.feed_config import FeedConfig
from ringex.feeds.itch_instrument import ItchInstrument
from ringex.feeds.itch_translate import Translator
from ringex.feeds.itch_translate import warm_up as warm_up_translator
from ringex.feeds.mold_packer import packets
from ringex.feeds.packet_book import replay
from ringex.feeds.packet_book import warm_up as warm_up_packet_book
from ringex.feeds.mold_packer import warm_up as warm_up_packer
from ringex.feeds.message_store import SEGMENT_MESSAGES, SESSION_LEN, MessageStore
from ringex.feeds.message_store import warm_up as warm_up_store
from ringex.feeds.retransmit import answer
from ringex.feeds.snapshot_server import SnapshotConnection, end_of_snapshot
from ringex.ringbuffer.agent import Agent
from ringex.ringbuffer.consumer import Consumer
from ringex.ringbuffer.counters import KeyedCounters
from ringex.ringbuffer.errors import UntetheredError
from ringex.ringbuffer.ring import Ring

log = logging.getLogger("ringex.feed")

__all__ = ["ADDRESS_FILE", "MdPublisherAgent", "session_name"]

ADDRESS_FILE = "listening"  # in the feed's directory: the addresses it is bound to
TIMER_EVERY_NS = 10_000_000
MAX_REQUESTS_PER_CYCLE = 64
RECV_BYTES = 65536
_SEQ = m.BookAdd.offset("seq")  # the stamp's seq, where every ring message has it
_CRASH = crash_points.ARMED


def session_name(prefix: str, run: int) -> str:
    """The MoldUDP64 session of run ``run``: the prefix, then the run number in the rest of
    the 10 characters."""
    digits = SESSION_LEN - len(prefix)
    if not 0 < run < 10**digits:
        raise ValueError(f"run {run} does not fit {digits} digits after {prefix!r}")
    return f"{prefix}{run:0{digits}d}"


def _run_of(session: str) -> int:
    tail = ""
    for c in reversed(session):
        if not c.isdigit():
            break
        tail = c + tail
    return int(tail) if tail else 0


def counter_labels(name: str) -> dict[str, str]:
    f = f"feed {name}"
    return {
        "messages": f"{f}: ITCH messages published",
        "packets": f"{f}: MoldUDP64 packets sent",
        "send_errors": f"{f}: packets the socket refused",
        "requests": f"{f}: retransmission requests answered",
        "bad_requests": f"{f}: malformed retransmission requests",
        "snapshots": f"{f}: snapshots served",
        "logins_refused": f"{f}: snapshot logins refused",
    }


class MdPublisherAgent(Agent):
    """The ITCH/MoldUDP64 publisher (see the module notes)."""

    def __init__(self, cfg: FeedConfig, output_ring: str, reject_ring: str, subscriber_index: int,
                 state_dir: str | Path, instruments: dict[int, ItchInstrument], batch_limit: int = 1024,
                 capacity: int = 1 << 16, engine_config: EngineConfig | None = None,
                 data_dir: str | Path | None = None) -> None:
        """``capacity``: orders the feed can show at once (the engine's ``max_orders``, and
        room for the orders one input ends). ``engine_config`` and ``data_dir``: the engine's,
        from which the publisher takes its book when it missed events (``engine_book``); without
        them it cannot resync."""
        self.cfg = cfg
        self.role_name = cfg.name
        self.output_ring = output_ring
        self.reject_ring = reject_ring
        self.subscriber_index = subscriber_index
        self.state_dir = str(state_dir)
        self.instruments = dict(sorted(instruments.items()))
        self.batch_limit = batch_limit
        self.capacity = capacity
        self.engine_config = engine_config
        self.data_dir = Path(data_dir) if data_dir is not None else None
        self.addresses: dict[str, tuple[str, int]] = {}

    # -- lifecycle --------------------------------------------------------------------------

    def on_start(self) -> None:
        # compiled before any ring role: compiling in the duty cycle would look hung
        warm_up_translator()
        warm_up_packer()
        warm_up_store()
        warm_up_packet_book()
        now = time.monotonic_ns()
        self._counts = KeyedCounters(self.counters, counter_labels(self.cfg.name))
        self._rings: list[Ring] = []
        out = self._attach(self.output_ring)
        self._out: Consumer = out.consumer(self.subscriber_index, takeover=True)
        self._ring_id = out.created_time_ns
        rej = self._attach(self.reject_ring)
        self._rej: Consumer = rej.consumer(self.subscriber_index, takeover=True)
        # segments of a quarter of what is retained: retention drops whole segments
        self.store = MessageStore(self.state_dir, self.cfg.retain_messages,
                                  segment_messages=max(256, min(SEGMENT_MESSAGES, self.cfg.retain_messages // 4)))
        rec = self.store.recovered
        if rec.cut_bytes:
            log.warning("feed %s: cut %d bytes of a torn tail from its store", self.cfg.name, rec.cut_bytes)
        # the newest segment's checkpoint, then its messages (up to a segment's worth: compiled)
        self.book: FeedBook = replay(rec.book, rec.book_messages) if rec.book_messages else rec.book
        self.translator = Translator(self.instruments, self.book, capacity=self.capacity)
        self._skip_below = -1
        if rec.session and not rec.ended:
            self.session = rec.session
            self.translator.resume(rec.emptied, rec.emptied_seq)
            if rec.ring_id == self._ring_id:
                self._skip_below = rec.position
            log.info("feed %s resumes session %s at sequence number %d", self.cfg.name, self.session,
                     self.store.next_seq)
        else:
            self.session = session_name(self.cfg.session, _run_of(rec.session) + 1 if rec.session else 1)
            self.store.start_session(self.session, self.book)
            log.info("feed %s opens session %s", self.cfg.name, self.session)
        self._session_bytes = mold.encode_session(self.session)
        self._open_sockets()
        self._last_send = 0
        self._next_timer = now
        self._snapshot_conns: dict[int, tuple[socket.socket, SnapshotConnection]] = {}
        self._skip_seq_through = -1  # after a resync: events of inputs up to here are in its book
        self._read_to = OutputPosition(self.state_dir, self._ring_id)
        last = rec.book_messages[-1] if rec.book_messages else b""
        self._stamp = int.from_bytes(last[5:11], "big") if len(last) >= 11 else 0
        if self._out.rejoined_at is not None:
            self._untethered(self._out.rejoined_at)
        elif not rec.session and self.data_dir is not None and journal_last_seq(self.data_dir) > 0:
            log.warning("feed %s has no store, and the engine has a history: its book comes from the engine",
                        self.cfg.name)
            self._resync()
        elif rec.session and rec.ended:
            # The session after a clean stop opens now, with the market as the last one left it
            # (stamped as that one's last message): its subscribers need not wait for an event.
            self._publish(self.translator.open_session(self._stamp), self._out.position)

    def _attach(self, name: str) -> Ring:
        ring = Ring.attach(name, wait_s=5.0)
        self._rings.append(ring)
        return ring

    def _open_sockets(self) -> None:
        cfg = self.cfg
        host, port = cfg.destination_address()
        self._dest = (host, port)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._send_sock = socket.socket(family, socket.SOCK_DGRAM)
        self._send_sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        if ipaddress.ip_address(host).is_multicast and family == socket.AF_INET:
            self._send_sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, cfg.ttl)
            self._send_sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
            if cfg.interface:
                self._send_sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF,
                                           socket.inet_aton(cfg.interface))
        rhost, rport = cfg.retransmit_address()
        self._rtx = socket.socket(socket.AF_INET6 if ":" in rhost else socket.AF_INET, socket.SOCK_DGRAM)
        self._rtx.bind((rhost, rport))
        self._rtx.setblocking(False)
        shost, sport = cfg.snapshot_address()
        self._listener = socket.socket(socket.AF_INET6 if ":" in shost else socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((shost, sport))
        self._listener.listen(16)
        self._listener.setblocking(False)
        self._poll = select.epoll()
        self._poll.register(self._rtx.fileno(), select.EPOLLIN)
        self._poll.register(self._listener.fileno(), select.EPOLLIN)
        self.addresses = {"destination": self._dest, "retransmit": self._rtx.getsockname()[:2],
                          "snapshot": self._listener.getsockname()[:2]}
        self._write_address()
        log.info("feed %s: session %s to %s:%d, retransmission on %s:%d, snapshots on %s:%d", self.cfg.name,
                 self.session, *self._dest, *self.addresses["retransmit"], *self.addresses["snapshot"])

    def _write_address(self) -> None:
        Path(self.state_dir, ADDRESS_FILE).write_text(
            "".join(f"{k} {h}:{p}\n" for k, (h, p) in self.addresses.items()) + f"session {self.session}\n")

    def doorbell_sources(self) -> list[object]:
        return [self._out, self._rej, self._poll]

    def on_close(self) -> None:
        if hasattr(self, "store") and hasattr(self, "_send_sock"):
            try:
                self._end_session()
            except OSError as exc:
                log.warning("feed %s: ending session %s: %s", self.cfg.name, self.session, exc)
        for sock, conn in getattr(self, "_snapshot_conns", {}).values():
            conn.end_of_session(time.monotonic_ns())
            try:
                sock.setblocking(True)
                sock.settimeout(0.5)
                sock.sendall(conn.outgoing)
            except OSError:
                pass
            sock.close()
        for name in ("_listener", "_rtx", "_send_sock", "_poll"):
            if hasattr(self, name):
                getattr(self, name).close()
        if hasattr(self, "store"):
            self.store.close()
        if getattr(self, "_read_to", None) is not None:
            self._read_to.close()
        for c in (getattr(self, "_out", None), getattr(self, "_rej", None)):
            if c is not None:
                c.close()
        for r in getattr(self, "_rings", []):
            r.close()

    def _end_session(self) -> None:
        if self.translator.opened:
            self._publish(self.translator.close_session(), self._out.position)
        self.store.end_session()
        self._sendto(mold.encode_end_of_session(self._session_bytes, self.store.next_seq))
        log.info("feed %s ended session %s at sequence number %d", self.cfg.name, self.session, self.store.next_seq)

    # -- duty cycle -------------------------------------------------------------------------

    def do_work(self) -> int:
        now = time.monotonic_ns()
        work = self._drain_rejections()
        work += self._events()
        ready = self._poll.poll(0)
        if ready:
            work += self._sockets(ready, now)
        if now >= self._next_timer:
            self._timers(now)
            self._next_timer = now + TIMER_EVERY_NS
        return work

    def _drain_rejections(self) -> int:
        """Read and drop the reject ring's messages (a read also keeps this consumer's
        heartbeat fresh: the supervisor kills a subscriber whose heartbeat stops)."""
        try:
            head, tail = self._rej.read(self.batch_limit)
        except UntetheredError:
            self._rej.close()
            self._rej = self._rings[1].consumer(self.subscriber_index, takeover=True)
            return 0
        k = len(head) + len(tail)
        if k:
            self._rej.commit(k)
        return k

    def _events(self) -> int:
        try:
            head, tail = self._out.read(self.batch_limit)
        except UntetheredError:
            self._out.close()
            self._out = self._rings[0].consumer(self.subscriber_index, takeover=True)
            self._untethered(self._out.rejoined_at)
            head, tail = self._out.read(self.batch_limit)
        k = len(head) + len(tail)
        if not k:
            return 0
        at = self._out.position
        batch = head if not len(tail) else np.concatenate((head, tail))  # a wrapped batch: one copy
        self._translate(batch, at)
        if _CRASH:
            crash_points.hit("feed.after_send")
        self._out.commit(k)
        self._read_to.advance(batch, at + k)
        return k

    def _translate(self, batch: np.ndarray, at: int) -> None:
        """Publish what ``batch`` (events from ring position ``at``) says, but for the events
        published before a restart and those a resync's book includes."""
        region = batch
        if at < self._skip_below:  # published before a restart
            region = region[self._skip_below - at:]
        if self._skip_seq_through >= 0 and len(region):  # in the book a resync took from the engine
            later = region[:, _SEQ:_SEQ + 8].copy().view("<u8")[:, 0] > self._skip_seq_through
            region = region[later]
            if len(region):
                self._skip_seq_through = -1
        if len(region):
            buf, offsets, opening = self.translator.translate_into(region)
            if opening:
                self._publish(opening, at)  # the session opens before the batch's first event
            if len(offsets) > 1:
                self._publish_packed(buf, offsets, at + len(batch))

    def _untethered(self, position: int | None) -> None:
        """Rejoined at the head after an untether: the events it missed are made again from
        the journal (``OutputPosition``) and published as if read, in the same session; when
        they cannot be, the book comes from the engine's state in a new session (``_resync``)."""
        if self.engine_config is None or self.data_dir is None:
            log.error("feed %s was untethered from %s and rejoined at %s: the events it missed are not on the "
                      "feed, and without the engine's state it cannot resync", self.cfg.name, self.output_ring,
                      position)
            return
        joined = self._out.position
        at = self._read_to.position
        events = self._read_to.missed(self.engine_config, self.data_dir, joined)
        if events is not None and at >= 0:
            for i in range(0, len(events), self.batch_limit):
                self._translate(events[i:i + self.batch_limit], at + i)
            if len(events):
                self._read_to.advance(events, joined)
            log.warning("feed %s was untethered from %s and rejoined at %s: made again the %d events it missed "
                        "from the journal", self.cfg.name, self.output_ring, position, len(events))
            return
        log.warning("feed %s was untethered from %s and rejoined at %s: it missed events; its book comes from "
                    "the engine, in a new session", self.cfg.name, self.output_ring, position)
        self._resync()

    def _resync(self) -> None:
        """The book from the engine's state (``engine_book``): the current session ends, and
        the next opens at once with that book; the ring's events for the inputs it includes
        are skipped."""
        assert self.engine_config is not None and self.data_dir is not None
        book, through = book_from_engine(self.engine_config, self.data_dir, self.instruments)
        if self.translator.opened:  # a session that said anything ends; one that did not just goes
            self._publish(self.translator.close_session(), self._out.position)
            self.store.end_session()
            self._sendto(mold.encode_end_of_session(self._session_bytes, self.store.next_seq))
        self.session = session_name(self.cfg.session, _run_of(self.session) + 1)
        self._session_bytes = mold.encode_session(self.session)
        self.store.start_session(self.session, book)
        self.translator = Translator(self.instruments, book, capacity=self.capacity)
        self._skip_below = -1
        self._skip_seq_through = through
        self._publish(self.translator.open_session(max(self._stamp, self.translator.last_timestamp)),
                      self._out.position)
        self._write_address()
        log.info("feed %s opens session %s with the engine's book through input %d (%d orders)", self.cfg.name,
                 self.session, through, len(book))

    def _publish(self, msgs: list[bytes], position: int) -> None:
        """Store ``msgs`` (covering ring events before ``position``), then send them."""
        t = self.translator
        seq = self.store.append(msgs, self._ring_id, position, t.emptied, t.emptied_seq, lambda: t.book)
        for packet in mold.encode_packets(self._session_bytes, seq, msgs, self.cfg.max_payload):
            self._sendto(packet)
        self._counts.add("messages", len(msgs))

    def _publish_packed(self, buf: np.ndarray, offsets: np.ndarray, position: int) -> None:
        """``_publish`` for a translated batch, messages back to back in ``buf``."""
        t = self.translator
        seq = self.store.append_packed(buf, offsets, self._ring_id, position, t.emptied, t.emptied_seq,
                                       lambda: t.book)
        if _CRASH:
            crash_points.hit("feed.after_store")
        for packet in packets(buf, offsets, self._session_bytes, seq, self.cfg.max_payload):
            self._sendto(packet)
        self._counts.add("messages", len(offsets) - 1)

    def _sendto(self, packet: bytes) -> None:
        try:
            self._send_sock.sendto(packet, self._dest)
            self._counts.add("packets")
        except OSError as exc:  # a full buffer or an unreachable group: the receivers re-request
            self._counts.add("send_errors")
            log.debug("feed %s: send failed: %s", self.cfg.name, exc)
        self._last_send = time.monotonic_ns()

    # -- retransmission and snapshots ---------------------------------------------------------

    def _sockets(self, ready: list[tuple[int, int]], now: int) -> int:
        work = 0
        fds = {fd for fd, _ in ready}
        if self._rtx.fileno() in fds:
            work += self._requests()
        if self._listener.fileno() in fds:
            work += self._accept(now)
        for fd in fds:
            entry = self._snapshot_conns.get(fd)
            if entry is not None:
                work += self._serve(fd, *entry, now)
        return work

    def _requests(self) -> int:
        n = 0
        for _ in range(MAX_REQUESTS_PER_CYCLE):
            try:
                data, peer = self._rtx.recvfrom(RECV_BYTES)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                break
            n += 1
            packets = answer(data, self.store, self._session_bytes, self.cfg.max_payload)
            if packets is None:
                self._counts.add("bad_requests")
                continue
            self._counts.add("requests")
            for p in packets:
                try:
                    self._rtx.sendto(p, peer)
                except OSError:
                    break
        return n

    def _accept(self, now: int) -> int:
        n = 0
        while True:
            try:
                sock, peer = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return n
            except OSError:
                return n
            n += 1
            if len(self._snapshot_conns) >= self.cfg.max_snapshot_clients:
                sock.close()
                continue
            sock.setblocking(False)
            conn = SnapshotConnection(f"{peer[0]}:{peer[1]}", self.cfg.username, self.cfg.password,
                                      lambda: self.session, self._snapshot, now)
            self._snapshot_conns[sock.fileno()] = (sock, conn)
            self._poll.register(sock.fileno(), select.EPOLLIN)

    def _snapshot(self) -> list[bytes]:
        """The book as it is after the last message published, then End of Snapshot."""
        self._counts.add("snapshots")
        directory, orders = self.translator.market(self.translator.last_timestamp)
        return directory + orders + [end_of_snapshot(self.store.next_seq)]

    def _serve(self, fd: int, sock: socket.socket, conn: SnapshotConnection, now: int) -> int:
        try:
            data = sock.recv(RECV_BYTES)
        except (BlockingIOError, InterruptedError):
            return 0
        except OSError:
            data = b""
        if not data:
            self._close_conn(fd, "closed by the client")
            return 1
        conn.receive(data, now)
        if conn.rejected:
            self._counts.add("logins_refused")
            conn.rejected = False
        self._flush(fd, sock, conn)
        return 1

    def _flush(self, fd: int, sock: socket.socket, conn: SnapshotConnection) -> None:
        if conn.outgoing:
            try:
                sent = sock.send(conn.outgoing)
                del conn.outgoing[:sent]
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:
                self._close_conn(fd, "send failed")
                return
        if conn.closed and not conn.outgoing:
            self._close_conn(fd, conn.why)

    def _close_conn(self, fd: int, why: str) -> None:
        entry = self._snapshot_conns.pop(fd, None)
        if entry is None:
            return
        sock, conn = entry
        try:
            self._poll.unregister(fd)
        except (OSError, ValueError):
            pass
        sock.close()
        log.info("feed %s: snapshot client %s gone: %s", self.cfg.name, conn.peer, why)

    def _timers(self, now: int) -> None:
        if now - self._last_send >= self.cfg.heartbeat_ms * 1_000_000:
            self._sendto(mold.encode_heartbeat(self._session_bytes, self.store.next_seq))
        for fd, (sock, conn) in list(self._snapshot_conns.items()):
            conn.timers(now)
            self._flush(fd, sock, conn)
