"""What every order-entry gateway does, whatever its protocol: rings, sockets, staging, routing.

A gateway agent serves its TCP connections inside its duty cycle, non-blocking, with no
thread per connection and no event loop: one readiness poll (epoll, not waiting) says which
sockets have something; accept what is waiting; receive once from each ready connection
(round robin, while the staging rows have room); put the staged orders on the gateway's
inbound ring in one publish; read the engine's output and the sequencer's rejections, route
each event to its session (``routing.route_by_session``) and hand each session its share;
write each connection's queue with one ``send``; keep the protocol's timers.

The protocol is a subclass's (``SbeGatewayAgent``: SBE and FIXP; the FIX gateway next): it
makes the sessions, frames and answers what a connection sends (``_receive``), keeps the
session timers (``_timers``) and says goodbye in its own words (``_goodbye``,
``_end_slow``). A session object, whatever its protocol, offers what this class uses:
``id``, ``cfg`` (with ``cancel_on_disconnect``), ``store`` (a ``SessionStore``), ``conn``,
``applied(seq)``, ``recovered(seq)``, ``deliver_events(...)``, ``detach(conn)`` and
``close()``.

The gateway is the single producer of ``<prefix>-in-<name>`` and subscriber ``index`` of
``<prefix>-out`` and ``<prefix>-rej``. Each order it stages carries its client's number in
the stamp's ``seq`` word until the sequencer stamps its copy; a session counts a number as
applied once the order is published. Restarted after a crash, the gateway resumes both
consumers from their cursors and skips the events its session stores already hold, so no
session sees an event twice or misses one, and it reads back from its inbound ring the
client numbers it had published but not yet counted (``_recover_applied``), so no order is
applied twice. If it was untethered meanwhile it rejoins at the head and makes the output
events it missed again from the journal (``_recover_missed``; it notes where it read the
output to, ``OutputPosition``), so the stores miss nothing (docs/binary-protocol.md).
"""

from __future__ import annotations

import abc
import errno
import logging
import select
import socket
import struct
import time
from pathlib import Path
from typing import Any

import numpy as np

from ringex import crash_points
from ringex.engine.storage.output_replay import OutputPosition
from ringex.engine.wire import messages as m
from ringex.gateways.connection import Connection
from ringex.gateways.gateway_config import GatewayConfig
from ringex.gateways.outbound import packed_events
from ringex.gateways.routing import route_by_session
from ringex.gateways.routing import warm_up as warm_up_routing
from ringex.gateways.session_store import SOURCE_OUTPUT, SOURCE_REJECT
from ringex.ringbuffer.agent import Agent
from ringex.ringbuffer.consumer import Consumer
from ringex.ringbuffer.counters import TYPE_BACK_PRESSURE, KeyedCounters
from ringex.ringbuffer.errors import UntetheredError
from ringex.ringbuffer.latency import EgressMarks, LatencyRecorder, latency_name
from ringex.ringbuffer.latency import warm_up as warm_up_recorders
from ringex.ringbuffer.producer import Producer
from ringex.ringbuffer.ring import Ring

log = logging.getLogger("ringex.gateway")

__all__ = ["ADDRESS_FILE", "GatewayAgent", "STAGE_HIGH"]

ADDRESS_FILE = "listening"  # in the gateway's directory: "host:port" it is bound to
TIMER_EVERY_NS = 10_000_000
# With no connection a gateway has no one to answer promptly: it reads its rings (for its
# sessions' stores) this often, draining them each time, instead of on every publish. A
# gateway beside busy ones (the embedded default's edge runs both) spent a tenth of its
# process's CPU reading and routing every event for nobody; alone in a process, woken by
# every publish, 10-15% of a core.
IDLE_READ_NS = 5_000_000
STAGE_HIGH = 1024  # stop receiving while this many orders wait for the ring

_CRASH = crash_points.ARMED
_ORDER_ENTRY = {x.template_id: x for x in m.ORDER_ENTRY}
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_SEQ, _TS, _INGRESS = (m.NewOrder.offset(n) for n in ("seq", "timestampNs", "ingressNs"))
# The Stamp's three words are written with one pack: a schema that moved them apart is
# refused here (an assert would vanish under python -O and leave the stamps written wrong).
if not (_TS == _SEQ + 8 and _INGRESS == _TS + 8):
    raise ImportError(f"schema.xml: the Stamp's seq, timestampNs and ingressNs are not contiguous "
                      f"(offsets {_SEQ}, {_TS}, {_INGRESS})")
_STAMP = struct.Struct("<QQQ")
_SLOT = m.SLOT_SIZE
_ZEROS = bytes(_SLOT)
# per order-entry template: where its sessionId is
_SESSION_AT = {t: x.offset("sessionId") for t, x in _ORDER_ENTRY.items()}


def _highest_by_session(sessions: np.ndarray, seqs: np.ndarray) -> list[tuple[int, int]]:
    """(session, its highest number) of each session among staged messages, by session id.
    A few (the common batch) in Python: numpy's per-call cost is more than the work."""
    if len(sessions) > 32:
        return [(sid, int(seqs[sessions == sid].max())) for sid in np.unique(sessions).tolist()]
    top: dict[int, int] = {}
    for sid, seq in zip(sessions.tolist(), seqs.tolist()):
        if seq >= top.get(sid, 0):
            top[sid] = seq
    return sorted(top.items())


def counter_labels(name: str) -> dict[str, str]:
    """The counters every gateway keeps, by key."""
    g = f"gateway {name}"
    return {
        "accepted": f"{g}: connections accepted",
        "refused_conn": f"{g}: connections refused (max_connections)",
        "slow": f"{g}: slow consumers disconnected",
        "orders_in": f"{g}: orders in",
        "events_out": f"{g}: messages to sessions",
        "cancel_on_disconnect": f"{g}: cancel-on-disconnect sent",
    }


def cancel_on_disconnect(session_id: int) -> bytes:
    """The MassCancel that cancels every working order session ``session_id`` entered."""
    return m.MassCancel.encode(sessionId=session_id, account=0, instrument=0, clOrdId=0,
                               scope=m.MassCancelScope.Session)


class GatewayAgent(Agent, abc.ABC):
    """The protocol-independent part of a gateway (see the module notes)."""

    #: Staging rows: STAGE_HIGH and room for one receive's worth of the smallest orders.
    stage_rows: int = STAGE_HIGH + 1024

    def __init__(self, cfg: GatewayConfig, inbound_ring: str, output_ring: str, reject_ring: str,
                 subscriber_index: int, state_dir: str | Path, batch_limit: int = 1024,
                 latency_prefix: str | None = None, engine_config: Any = None,
                 data_dir: str | Path | None = None) -> None:
        """``latency_prefix``: record the engine-output-to-socket stage latency
        (``ringbuffer/latency.py``) under this exchange prefix; None records none.
        ``engine_config`` and ``data_dir``: the engine's, from whose journal a gateway that
        was untethered from the output ring makes again the events it missed
        (``engine/storage/output_replay.py``); without them it cannot."""
        self.engine_config = engine_config
        self.data_dir = None if data_dir is None else str(data_dir)
        self.latency_prefix = latency_prefix
        self.cfg = cfg
        self.role_name = cfg.name
        self.inbound_ring = inbound_ring
        self.output_ring = output_ring
        self.reject_ring = reject_ring
        self.subscriber_index = subscriber_index
        self.state_dir = str(state_dir)
        self.batch_limit = batch_limit
        self.address: tuple[str, int] | None = None

    def on_start(self) -> None:
        self.warm_up()  # before any ring role: compiling in the duty cycle would look hung
        now = time.monotonic_ns()
        directory = Path(self.state_dir)
        directory.mkdir(parents=True, exist_ok=True)
        self._rings: list[Ring] = []
        inbound = self._attach(self.inbound_ring)
        self._in_ring = inbound
        self._in: Producer = inbound.producer(takeover=True)
        self._sources: list[tuple[Consumer, int, int]] = []
        for name, source in ((self.output_ring, SOURCE_OUTPUT), (self.reject_ring, SOURCE_REJECT)):
            ring = self._attach(name)
            consumer = ring.consumer(self.subscriber_index, takeover=True)
            if consumer.rejoined_at is not None:
                log.warning("gateway %s rejoined %s at %d after being untethered", self.cfg.name, name,
                            consumer.rejoined_at)
            self._sources.append((consumer, source, ring.created_time_ns))
        self.sessions = self._make_sessions(directory, now)
        self._session_ids = np.array(sorted(self.sessions), np.int64)
        self._recover_applied()
        self._read_to = OutputPosition(directory, self._sources[0][2])
        self._to_socket: LatencyRecorder | None = None
        self._published_at: EgressMarks | None = None
        if self.latency_prefix is not None:
            self._to_socket = LatencyRecorder(latency_name(self.latency_prefix, "engine_output_to_socket", self.cfg.name))
            self._published_at = EgressMarks(latency_name(self.latency_prefix, "sequencer_to_engine_output"))
        self._sent_positions: list[int] = []  # output positions of the events queued this cycle
        self._conns: list[Connection] = []
        self._by_fd: dict[int, Connection] = {}  # the open ones by socket, as epoll names them
        self._attention: set[Connection] = set()  # those with something for the cycle (Connection.watch)
        self._dropped = False  # a connection was dropped this cycle: _conns to be made again
        self._stage = np.zeros((self.stage_rows, m.SLOT_SIZE), np.uint8)
        self._stage_bytes = memoryview(self._stage).cast("B")  # the rows as one byte run, for slice writes
        self._stage_session = np.zeros(self.stage_rows, np.int64)  # 0: the gateway's own message
        self._stage_seq = np.zeros(self.stage_rows, np.int64)  # the client's number of each row
        self._staged = 0
        self._holding: set[int] = set()  # sessions with messages staged: their counts held (_hold)
        self._delivered: set[Any] = set()  # sessions given events by the last _outbound (or a rejoin's)
        self._next_timer = now
        self._next_idle_read = now  # when a gateway without connections reads its rings next
        self._counts = KeyedCounters(self.counters, self.counter_labels())
        if self.counters is not None:
            self._back_pressure = self.counters.allocate(f"gateway {self.cfg.name}: back-pressure",
                                                         TYPE_BACK_PRESSURE)
        self._cancel_for_the_connected()  # staged: published in the first duty cycle
        consumer = self._sources[0][0]
        if consumer.rejoined_at is not None:
            self._recover_missed(consumer)
        host, port = self.cfg.address()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._listener = socket.socket(family, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((host, port))
        self._listener.listen(128)
        self._listener.setblocking(False)
        self._listener_fd = self._listener.fileno()
        self._poll = select.epoll()
        self._poll.register(self._listener_fd, select.EPOLLIN)
        self._next_first = 0
        self.address = self._listener.getsockname()[:2]
        (directory / ADDRESS_FILE).write_text(f"{self.address[0]}:{self.address[1]}\n")
        log.info("gateway %s listening on %s:%d with %d session(s)", self.cfg.name, *self.address,
                 len(self.sessions))

    def _attach(self, name: str) -> Ring:
        ring = Ring.attach(name, wait_s=5.0)
        self._rings.append(ring)
        return ring

    def doorbell_sources(self) -> list[object]:
        """Its output and reject consumers, and its epoll object: readable when a socket is
        (a new connection, a client's bytes). Without a connection only the epoll object:
        a publish need not wake it (``IDLE_READ_NS``)."""
        if not self._conns:
            return [self._poll]
        return [c for c, _, _ in self._sources] + [self._poll]

    def _behind(self) -> bool:
        """A ring a quarter full for this gateway: read now, whatever the interval says, so
        that an idle gateway never holds the engine back."""
        for consumer, _, _ in self._sources:
            if consumer.available() * 4 > consumer.capacity:
                return True
        return False

    def on_close(self) -> None:
        for conn in list(getattr(self, "_conns", [])):
            if conn.session is not None:  # a clean stop: no cancel-on-disconnect at the next start
                self._connected_marker(conn.session).unlink(missing_ok=True)
            if not conn.closed:
                self._goodbye(conn)
                try:
                    conn.flush(time.monotonic_ns())
                except OSError:
                    pass
                conn.close()
        if getattr(self, "_staged", 0):
            self._publish_staged()
        if getattr(self, "_read_to", None) is not None:
            self._read_to.close()
        if hasattr(self, "_listener"):
            self._listener.close()
        if hasattr(self, "_poll"):
            self._poll.close()
        for s in getattr(self, "sessions", {}).values():
            s.close()
        if getattr(self, "_to_socket", None) is not None:
            self._to_socket.close()
        if getattr(self, "_published_at", None) is not None:
            self._published_at.close()
        for c, _, _ in getattr(self, "_sources", []):
            c.close()
        if hasattr(self, "_in"):
            self._in.close()
        for r in getattr(self, "_rings", []):
            r.close()

    def do_work(self) -> int:
        now = time.monotonic_ns()
        # one readiness poll a cycle: no system call (and no exception) per idle socket
        ready = {fd for fd, _ in self._poll.poll(0)}
        work = self._accept(now) if self._listener_fd in ready else 0
        if self._staged:
            work += self._publish_staged()
        conns = self._conns
        if ready and conns:
            n = len(conns)
            first = self._next_first % n  # round robin: a full stage never starves the same ones
            self._next_first += 1
            by_fd = self._by_fd
            readable = [c for c in [by_fd.get(fd) for fd in ready] if c is not None]
            if len(readable) > 1:  # in the order of a look at every connection from ``first``
                readable.sort(key=lambda c: (c.slot - first) % n)
            wall = time.time_ns()
            for conn in readable:
                if self._staged >= STAGE_HIGH:
                    self._publish_staged()  # room for one more receive, or none this cycle
                    if self._staged >= STAGE_HIGH:
                        break
                work += self._receive(conn, now, wall)
        if self._staged:
            work += self._publish_staged()
        if conns:
            work += self._outbound()
        elif now >= self._next_idle_read or self._behind():
            read = self._outbound()
            work += read
            if not read:  # drained: the next read after the interval
                self._next_idle_read = now + IDLE_READ_NS
        if now >= self._next_timer:
            self._timers(now)
            self._next_timer = now + TIMER_EVERY_NS
        if self._attention:  # the connections with output queued or a flag set, not every one
            attention = list(self._attention)
            self._attention.clear()
            for conn in attention:
                if conn.closed:
                    continue
                if conn.slow:
                    self._end_slow(conn)
                    self._counts.add("slow")
                if conn.backlog:
                    try:
                        conn.flush(now)
                    except OSError as exc:
                        self._drop(conn, f"send failed: {exc.strerror}")
                        continue
                if conn.closing:
                    self._drop(conn, "terminated")
                elif conn.backlog:
                    self._attention.add(conn)  # what the socket did not take: again next cycle
        if self._dropped:
            self._dropped = False
            self._conns = [c for c in self._conns if not c.closed]
            for i, c in enumerate(self._conns):
                c.slot = i
        if self._sent_positions:
            self._record_to_socket()
        return work

    def _record_to_socket(self) -> None:
        """Engine publish to socket write, for the events this cycle wrote (measured at the
        write: what the kernel did not take yet is counted as written)."""
        positions = np.array(self._sent_positions, np.int64)
        self._sent_positions.clear()
        if self._to_socket is None or self._published_at is None:
            return
        published = self._published_at.published_at(positions)
        known = published > 0
        if known.any():
            self._to_socket.record(time.time_ns() - published[known])

    def _accept(self, now: int) -> int:
        n = 0
        while True:
            try:
                sock, peer = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return n
            except OSError as exc:  # EMFILE and the like: try again next cycle
                if exc.errno not in (errno.EMFILE, errno.ENFILE, errno.ECONNABORTED):
                    log.error("gateway %s: accept failed: %s", self.cfg.name, exc)
                return n
            n += 1
            if len(self._conns) >= self.cfg.max_connections:
                sock.close()
                self._counts.add("refused_conn")
                continue
            conn = self._connection(sock, f"{peer[0]}:{peer[1]}", now)
            self._poll.register(conn.fd, select.EPOLLIN)
            conn.watch(self._attention)
            conn.slot = len(self._conns)
            self._by_fd[conn.fd] = conn
            self._conns.append(conn)
            self._counts.add("accepted")

    def _publish_staged(self) -> int:
        """Publish what is staged (as much as the ring takes), then count each session's
        published messages as applied."""
        k = self._staged
        self._before_publish()
        if _CRASH and any(self.sessions[sid].store.holding_back for sid in self._holding):
            crash_points.hit("gateway.before_publish")
        done = self._in.offer_batch(self._stage[:k])
        if done and _CRASH:
            crash_points.hit("gateway.after_publish")
        if done:
            for sid, seq in _highest_by_session(self._stage_session[:done], self._stage_seq[:done]):
                if sid:
                    self.sessions[sid].applied(seq)
        if done < k:
            for a in (self._stage, self._stage_session, self._stage_seq):
                a[:k - done] = a[done:k].copy()
            if hasattr(self, "_back_pressure"):
                self._back_pressure.increment()
        self._staged = k - done
        if self._holding:
            self._release_holds()
        return done

    def _hold(self, s: Any, seq: int) -> None:
        """Client message ``seq`` of session ``s`` is staged: its count on disk waits for the
        publish (``SessionStore.hold``)."""
        if s.id not in self._holding:
            s.store.hold(seq)
            self._holding.add(s.id)

    def _release_holds(self) -> None:
        """After a publish: each held session's count moves on, up to its lowest message
        still staged (the ring was full), which it holds at."""
        still: dict[int, int] = {}
        if self._staged:
            for sid, seq in zip(self._stage_session[:self._staged].tolist(), self._stage_seq[:self._staged].tolist()):
                if seq and (sid not in still or seq < still[sid]):
                    still[sid] = seq
        for sid in sorted(self._holding):
            self.sessions[sid].store.release(still.get(sid, 0))
        self._holding = {sid for sid in self._holding if sid in still}

    def _recover_applied(self) -> None:
        """After a crash: the client numbers of messages this gateway published to its ring
        but had not yet counted in their session's store (the stamp's seq word of each of
        the ring's last ``capacity`` slots), from each identity's first message on."""
        ring, top = self._in_ring, self._in.position
        slots, mask, created = ring.slots(), ring.capacity - 1, ring.created_time_ns
        found: dict[int, int] = {}
        for position in range(max(0, top - ring.capacity), top):
            row = slots[position & mask]
            tid = int(row[2]) | int(row[3]) << 8
            at = _SESSION_AT.get(tid)
            if at is None:
                continue
            sid = _U32.unpack_from(row, at)[0]
            seq = _U64.unpack_from(row, _SEQ)[0]
            s = self.sessions.get(sid)
            if s is None or not seq or s.store.inbound_start[0] != created or position < s.store.inbound_start[1]:
                continue
            found[sid] = max(found.get(sid, 0), seq)
        for sid, seq in sorted(found.items()):
            if seq >= self.sessions[sid].store.next_in:
                log.info("gateway %s: session %d's messages up to %d were published before a restart",
                         self.cfg.name, sid, seq)
            self.sessions[sid].recovered(seq)

    def _outbound(self) -> int:
        total = 0
        self._delivered.clear()
        for i, (consumer, source, created) in enumerate(self._sources):
            try:
                head, tail = consumer.read(self.batch_limit)
            except UntetheredError:
                consumer = self._rejoin(i)
                head, tail = consumer.read(self.batch_limit)
            k = len(head) + len(tail)
            if not k:
                continue
            base = consumer.position
            touched: set[Any] = set()  # sessions given events: stored before the commit
            for region, at in ((head, base), (tail, base + len(head))):
                if len(region):
                    self._deliver(region, at, source, created, touched)
            for s in touched:  # what they stored is written before the cursor moves past it
                s.store.flush()
            if _CRASH and touched:
                crash_points.hit("gateway.after_store")
            consumer.commit(k)
            if source == SOURCE_OUTPUT:
                self._read_to.advance(np.concatenate((head, tail)) if len(tail) else head, base + k)
            total += k
        return total

    # -- where the output was read to, for a rejoin after an untether -------------------------

    def _recover_missed(self, consumer: Consumer) -> None:
        """Rejoined at the head of the output ring after an untether: the events between where
        this gateway had read to (``OutputPosition``) and where it rejoined are made again from
        the journal and delivered as if read, at their ring positions (the stores skip what
        they hold)."""
        at, joined = self._read_to.position, consumer.position
        if at < 0 or at >= joined:
            return
        events = None
        if self.engine_config is not None and self.data_dir is not None:
            events = self._read_to.missed(self.engine_config, self.data_dir, joined)
        if events is None:
            log.error("gateway %s: the %d events it missed (from input %d) cannot be made again: they are not "
                      "in its sessions' flows", self.cfg.name, joined - at, self._read_to.seq)
            return
        touched: set[Any] = set()
        created = self._sources[0][2]
        for i in range(0, len(events), self.batch_limit):
            self._deliver(events[i:i + self.batch_limit], at + i, SOURCE_OUTPUT, created, touched)
        for s in touched:
            s.store.flush()
        self._read_to.advance(events, joined)
        log.warning("gateway %s: made again the %d events it missed from the journal (positions %d..%d)",
                    self.cfg.name, len(events), at, joined - 1)

    def _deliver(self, region: np.ndarray, at: int, source: int, created: int, touched: set) -> None:
        """Route ``region`` (ring slots from position ``at``) to the sessions, each session's
        share stored and framed in one compiled pass."""
        d = route_by_session(region, self._session_ids, at)
        bounds = d.bounds
        delivered = 0
        for i, sid in enumerate(d.sessions):
            a, b = bounds[i], bounds[i + 1]
            s = self.sessions[sid]
            positions = d.positions[a:b]
            through = s.store.stored_through(source, created)
            if positions[0] <= through:  # stored before a restart: a prefix (ascending)
                a += int(np.searchsorted(positions, through, side="right"))
                if a == b:
                    continue
                positions = d.positions[a:b]
            s.deliver_events(region, d.rows[a:b], d.sizes[a:b], positions, source, created)
            touched.add(s)
            self._delivered.add(s)
            delivered += b - a
            if source == SOURCE_OUTPUT and s.conn is not None:
                self._sent_positions.extend(positions.tolist())
        if delivered:
            self._counts.add("events_out", delivered)

    def _rejoin(self, i: int) -> Consumer:
        consumer, source, created = self._sources[i]
        name = self.output_ring if source == SOURCE_OUTPUT else self.reject_ring
        consumer.close()
        ring = self._rings[1 + i]  # inbound first, then output and reject, as attached
        fresh = ring.consumer(self.subscriber_index, takeover=True)
        log.warning("gateway %s was untethered from %s; rejoined at %s", self.cfg.name, name, fresh.rejoined_at)
        self._sources[i] = (fresh, source, created)
        if source == SOURCE_OUTPUT:
            self._recover_missed(fresh)
        return fresh

    def _connected_marker(self, s: Any) -> Path:
        return Path(self.state_dir) / f"session-{s.id}.connected"

    def _established(self, s: Any) -> None:
        """Session ``s`` is established (logged on) on a connection: noted on disk, so that a
        gateway that dies with it connected cancels its orders when it starts again."""
        self._connected_marker(s).touch()

    def _cancel_for_the_connected(self) -> None:
        """At start: the sessions that were connected when the gateway died lost their
        connection as surely as if their clients had gone; those with cancel-on-disconnect
        have their orders canceled (a clean stop forgets the marks: see ``on_close``)."""
        for s in self.sessions.values():
            marker = self._connected_marker(s)
            if not marker.exists():
                continue
            marker.unlink()  # first: whatever happens next, never a start that fails on it again
            if s.cfg.cancel_on_disconnect:
                log.warning("gateway %s: session %d was connected when the gateway stopped: cancel-on-disconnect",
                            self.cfg.name, s.id)
                self._stage_message(cancel_on_disconnect(s.id))
                self._counts.add("cancel_on_disconnect")

    def _drop(self, conn: Connection, why: str) -> None:
        """``conn`` is gone: close it, and cancel its session's orders if it was established
        and the session asks for that."""
        if conn.closed:
            return
        try:
            self._poll.unregister(conn.fd)
        except (OSError, ValueError):
            pass
        if self._by_fd.get(conn.fd) is conn:
            del self._by_fd[conn.fd]
        self._dropped = True
        conn.close()
        s = conn.session
        if s is not None and s.detach(conn):
            log.info("gateway %s: session %d disconnected (%s)", self.cfg.name, s.id, why)
            if s.cfg.cancel_on_disconnect:
                self._stage_message(cancel_on_disconnect(s.id))
                self._counts.add("cancel_on_disconnect")
            self._connected_marker(s).unlink(missing_ok=True)

    def _stage_message(self, message: bytes, session_id: int = 0, seq: int = 0, wall: int | None = None) -> None:
        """Stage one encoded engine message of session ``session_id`` (0: the gateway's own,
        e.g. a cancel-on-disconnect), its client number ``seq`` in the stamp's seq word until
        the sequencer stamps its copy: what a restarted gateway reads back (_recover_applied)."""
        if self._staged >= self.stage_rows:
            self._publish_staged()
        at, n = self._staged * _SLOT, len(message)
        rows = self._stage_bytes
        rows[at:at + n] = message
        rows[at + n:at + _SLOT] = _ZEROS[n:]
        _STAMP.pack_into(rows, at + _SEQ, seq, 0, time.time_ns() if wall is None else wall)
        self._stage_session[self._staged] = session_id
        self._stage_seq[self._staged] = seq
        self._staged += 1
        if seq and session_id:
            self._hold(self.sessions[session_id], seq)

    # ---------------------------------------------------------------- protocol hooks

    def _before_publish(self) -> None:
        """Called before each publish of the staged messages: what the protocol must have
        written before the engine may see them."""

    def warm_up(self) -> None:
        """Compile (or load from numba's cache) every compiled path of the duty cycle, before
        any ring role: compiled lazily, the first events after a cold start would stall the
        duty cycle long enough for the supervisor to judge the gateway hung."""
        slots = np.zeros((1, m.SLOT_SIZE), np.uint8)
        slots.flags.writeable = False  # what a ring consumer's read gives
        none = np.zeros(0, np.int64)
        warm_up_routing()
        packed_events(slots, none, none, none, 1, 0, 0, 0)
        warm_up_recorders()

    def counter_labels(self) -> dict[str, str]:
        """Every counter this gateway keeps, by key (a protocol adds its own)."""
        return counter_labels(self.cfg.name)

    @abc.abstractmethod
    def _make_sessions(self, directory: Path, now: int) -> dict[int, Any]:
        """The configured sessions by id, their state read from ``directory``."""

    @abc.abstractmethod
    def _connection(self, sock: socket.socket, peer: str, now: int) -> Connection:
        """A new accepted connection, with the protocol's framing."""

    @abc.abstractmethod
    def _receive(self, conn: Connection, now: int, wall: int) -> int:
        """Read once from ``conn`` and handle what came; returns the messages handled."""

    @abc.abstractmethod
    def _timers(self, now: int) -> None:
        """The protocol's session timers (keepalives, handshake limits)."""

    @abc.abstractmethod
    def _goodbye(self, conn: Connection) -> None:
        """Queue the protocol's last word on ``conn``: the gateway is stopping."""

    @abc.abstractmethod
    def _end_slow(self, conn: Connection) -> None:
        """End ``conn``: it has not read more than ``max_backlog_bytes`` of its output."""

