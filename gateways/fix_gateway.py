"""The FIX 4.4 order-entry gateway: tag=value over TCP, a FIX session per counterparty.

The duty cycle, the rings, staging, routing and crash recovery are every gateway's
(``gateway_agent.GatewayAgent``); this is the FIX front end on them:

* a connection is bound to a session by its Logon: SenderCompID names the counterparty
  (``[[gateway.session]] target_comp_id``), TargetCompID must be the gateway's ``comp_id``;
  an unknown CompID is logged out with the reason and counted, and so is a Logon for a
  session that is logged on from another connection;
* what a connection sends is framed and checked by ``fix_scan`` in compiled code, a read
  at a time; an application message that is valid, the session's and the next expected
  (``FixSession.take_in_order``) goes straight to the order mapping, anything else is
  made a ``FixMessage`` and goes through the session layer as before;
* each session's FIX rules (numbers, gaps, resends, heartbeats, validation) are
  ``fix_session.FixSession``'s, on the same persistent flow store as the binary gateway's,
  so an ExecutionReport sent while the counterparty was away is resent when it asks;
* an application message becomes an engine message through ``fix_orders`` (ClOrdIDs kept in
  the session's ``OrderBook`` file), is throttled and staged with its MsgSeqNum in the
  stamp's seq word (so a restarted gateway finds what it had published), or is answered at
  once with the report ``fix_orders.refusal_report`` makes, never sequenced;
* a cancel or replace of an order the engine has not accepted yet (sent right after the
  NewOrderSingle) is held in the session's book, not sent: once the engine events of a
  batch are reported (the order's ExecutionReport New among them), ``fix_orders.release``
  says which held requests to stage now, with the order's orderId, and which to answer
  with an OrderCancelReject because the order ended first (rejected, or filled or expired
  on entry);
* what the book records for a request says where its engine message was staged (the
  client's MsgSeqNum, the inbound ring position, ``fix_orders.Origin``): the book is
  written before the publish, so a gateway killed in between finds at restart
  (``fix_orders.recover``) the orders and requests the engine never saw, forgets those
  the counterparty will send again and refuses those it will not (counted as applied
  already), and sends again the released held requests;
* each engine event routed to the session becomes its ExecutionReport, OrderCancelReject or
  OrderMassCancelReport (``fix_orders.execution_report``), stored under its MsgSeqNum with
  the ring position it came from, and sent when the session is logged on. What the event
  changed in the book is written after the reports are stored, with the event's position
  (``OrderBook.begin_event``): a gateway killed in between reads the event again at restart
  and applies it to the book, without reporting it again; one killed before storing the
  reports makes them again (the book, behind too, had not counted the event).

ExecIDs are the engine's input sequence number and the event's rank among that input's
events for the session (``<seq>.<k>``): unique for the life of the data directory and the
same when a replay regenerates the events.
"""

from __future__ import annotations

import socket
import struct
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ringex.engine.wire import messages as m
from ringex.engine.wire.codec import HEADER
from ringex.engine.wire.rejections import rejection_for
from ringex.gateways import fix_orders as fo
from ringex.gateways.connection import Connection
from ringex.gateways.fix_codec import SCAN_MESSAGES, FixMessage, FixReader, Garbled, utc_timestamp
from ringex.gateways.fix_instrument import FixInstrument, FixRefusal
from ringex.gateways.fix_dictionary import MESSAGES
from ringex.gateways.fix_new_order import (O_CL_END, O_CL_START, O_INSTRUMENT, O_OK, ORDER_WORDS, account_array,
                                           instrument_table, orders_of)
from ringex.gateways.fix_new_order import warm_up as warm_up_new_order
from ringex.gateways.fix_outbound import warm_up as warm_up_outbound
from ringex.gateways.fix_order_book import OrderBook
from ringex.gateways.fix_report_kernel import O_WORDS, deliver_reports
from ringex.gateways.fix_report_kernel import warm_up as warm_up_reports
from ringex.gateways.fix_report_state import C_WORDS
from ringex.gateways.fix_scan import (M_COMP_OK, M_END, M_FIELD_COUNT, M_FIELD_FROM, M_POSS_DUP, M_SENT_NS, M_SEQ,
                                      M_START, M_TYPE, M_VALID, MESSAGE_WORDS, MSG_TYPES)
from ringex.gateways.fix_scan import warm_up as warm_up_scan
from ringex.gateways.fix_session import FixSession, FixSessionConfig
from ringex.gateways.gateway_agent import GatewayAgent, log
from ringex.gateways.gateway_config import GatewayConfig, SessionConfig
from ringex.gateways.session_store import MAX_PAYLOAD, SessionStore
from ringex.gateways.throttle import Throttle

__all__ = ["FixGatewayAgent", "FixGatewaySession"]

MAX_MESSAGE = 8192  # the largest FIX message a counterparty may send
EVENT_RECORD_CHANGES = 64  # a run of events' book record closes at this many changes (records <= 64 KiB)
READ_SIZE = 1 << 16
NS = 1_000_000_000

_THROTTLED = int(m.RejectReason.Throttled)
_NO_COMP_IDS = (np.frombuffer(b"", np.uint8),) * 2  # not logged on: no scanned message is a session's yet
# _receive makes a read's scanned rows lists in one tolist() and unpacks each in fix_scan's
# word order, the rows taken whole (a basic slice: picking the words in another order by
# fancy indexing cost 1.5 us a read)
if (M_START, M_END, M_FIELD_FROM, M_FIELD_COUNT, M_TYPE, M_VALID, M_SEQ, M_SENT_NS, M_POSS_DUP,
        M_COMP_OK) != tuple(range(10)) or MESSAGE_WORDS != 10:
    raise ImportError("fix_scan's message words moved: FixGatewayAgent._receive unpacks them in order")
# by fix_scan's MsgType index: an application message (the session's fast lane may take it)
_APPLICATION = [not MESSAGES[t].admin for t in MSG_TYPES] + [False]  # [-1]: not a dictionary type
_SCHEMA = m.SCHEMA


class FixSessionStore(SessionStore):
    """A FIX session's ``SessionStore``, which knows where its identity's messages begin in
    the gateway's inbound ring (``inbound_start``).

    A restarted gateway reads back from its ring the client numbers it had published but
    not yet counted (``GatewayAgent._recover_applied``), and only for an identity whose
    start there it knows. FIXP records it at Negotiate; FIX starts a new identity inside
    its session layer (a Logon with ResetSeqNumFlag=Y: ``FixSession`` calls ``reset(hi,
    lo)``, knowing nothing of rings), so ``reset`` here asks ``inbound_mark`` (the
    gateway's) where the ring is; and ``adopt_inbound`` gives an identity begun before the
    current incarnation of the ring every position of it. Without them a FIX session's
    start was never known: a gateway killed between publishing orders and counting them
    had the counterparty resend them, and they were applied twice."""

    inbound_mark: Callable[[], tuple[int, int]] | None = None
    book: OrderBook | None = None  # the session's, whose events may lag the flow's

    def stored_through(self, source: int, created: int) -> int:
        """Where the events to read again after a restart begin: after the last one both in
        the flow (its reports) and in the session's book (its changes). The book is written
        after the flow, so it may be behind: the events it lacks are read again (and
        ``FixGatewaySession.deliver_events`` does not report them twice)."""
        flow = super().stored_through(source, created)
        return flow if self.book is None else min(flow, self.book.applied_through(source, created))

    def in_flow_through(self, source: int, created: int) -> int:
        """The newest position of ring ``source`` whose reports the flow holds (-1: none)."""
        return super().stored_through(source, created)

    def reset(self, hi: int, lo: int, in_created: int = 0, in_from: int = 0) -> None:
        if not in_created and self.inbound_mark is not None:
            in_created, in_from = self.inbound_mark()
        super().reset(hi, lo, in_created, in_from)

    def adopt_inbound(self, created: int) -> None:
        """At start, with the inbound ring created at ``created`` (``time.time_ns()``): an
        identity begun before it owns every message in it (a reset since would have been
        recorded in it). Begun before: its recorded start is in an earlier incarnation, or
        unknown (a store written before starts were recorded) and the identity is the
        store's first (UUID 0) or a FIX reset's (UUID ``(reset time, 0)``) older than the
        ring. Otherwise its start stays unknown, and nothing is read back for it."""
        start = self.inbound_start[0]
        hi, lo = self.uuid
        if start == created or (start == 0 and (hi, lo) != (0, 0) and not (lo == 0 and hi < created)):
            return
        self.set_inbound_start(created, 0)


# What ``_event`` reads without the schema codec: every ring message without text fields
_HEADER_SIZE = HEADER.size
_U16 = struct.Struct("<H")
_PLAIN_EVENTS = {x.template_id: (x.name, x.body_struct, x.field_names) for x in m.RING
                 if not any(f.is_char for f in x.fields)}


def _event(row: np.ndarray) -> tuple[str, dict[str, Any]]:
    """An engine event's name and fields (enumerations as their numbers), as the schema
    codec decodes them, at a fraction of its cost: the engine wrote it, the router read its
    template; a text field or an unknown template goes through the codec after all."""
    plain = _PLAIN_EVENTS.get(_U16.unpack_from(row, 2)[0])
    if plain is None:
        d = _SCHEMA.decode(row)
        return d.name, d.fields
    name, body, names = plain
    return name, dict(zip(names, body.unpack_from(row, _HEADER_SIZE)))


#: How a session sends the engine a message of its own (a held request released): stages
#: the encoded message and returns (creation time, position) of the inbound ring slot it
#: will be published at.
Stage = Callable[[bytes, int], tuple[int, int]]


class FixGatewaySession:
    """One configured FIX counterparty: its session layer, ClOrdID book, throttle and store,
    and the connection it is logged on from (None while away). ``stage``: how it sends the
    engine what it releases (``release_held``); ``inbound_mark``: where the gateway's
    inbound ring is now (``FixSessionStore``)."""

    def __init__(self, cfg: SessionConfig, gateway: GatewayConfig, directory: Path,
                 instruments: dict[bytes, FixInstrument], now_ns: int, stage: Stage | None = None,
                 inbound_mark: Callable[[], tuple[int, int]] | None = None) -> None:
        self.cfg = cfg
        self.stage = stage
        self.id = cfg.id
        self.accounts = frozenset(cfg.accounts)
        self.store = FixSessionStore(directory, cfg.id)
        self.store.inbound_mark = inbound_mark
        self.book = OrderBook(directory / f"session-{cfg.id}.orders")
        self.store.book = self.book
        self.fix = FixSession(FixSessionConfig(
            sender_comp_id=gateway.comp_id, target_comp_id=cfg.target_comp_id, password=cfg.credentials,
            min_heartbeat_s=max(1, gateway.keepalive_min_ms // 1000),
            max_heartbeat_s=max(1, gateway.keepalive_max_ms // 1000)), self.store)
        self.throttle = Throttle(cfg.max_msgs_per_s, cfg.bucket(), now_ns)
        self.instruments = instruments
        self.by_id = {i.id: i for i in instruments.values()}
        self.conn: Connection | None = None
        self.account_array = account_array(cfg.accounts)  # as fix_new_order reads them
        #: what a message from the counterparty carries: SenderCompID, TargetCompID (as fix_scan
        #: compares them)
        self.comp_ids = (np.frombuffer(cfg.target_comp_id.encode(), np.uint8),
                         np.frombuffer(gateway.comp_id.encode(), np.uint8))
        self._exec_seq = -1  # the engine input whose events are being numbered, and how many so far
        self._exec_k = 0

    def account_ok(self, account: int) -> bool:
        return account in self.accounts

    # --------------------------------------------------------------- what the gateway calls

    def applied(self, seq: int) -> None:
        """Counterparty message ``seq`` is published (or answered): counted in the store,
        after the book has written what it recorded for it."""
        self.book.flush()
        self.store.applied(seq)

    def recovered(self, seq: int) -> None:
        """A restarted gateway found message ``seq`` already in its inbound ring."""
        self.applied(seq)

    def deliver_events(self, region: np.ndarray, rows: np.ndarray, sizes: np.ndarray, positions: np.ndarray,
                       source: int, created: int) -> None:
        """Each routed engine event as the FIX messages it gives this session, stored under
        the ring position it came from and sent if the session is logged on; then what the
        events changed in the book, a run of events a record (``OrderBook.begin_event``,
        at most ``EVENT_RECORD_CHANGES`` changes in one). After a restart the same
        events may come again: one the book has is skipped, one whose reports the flow has
        is applied to the book only.

        The common events (an acceptance, a fill, an order's end) go through
        ``fix_report_kernel`` a run at a time; each event it leaves (``_deliver_python``)
        comes between two runs, its reports stored after those of the run before it."""
        now, wall = time.monotonic_ns(), time.time_ns()
        book = self.book
        booked = book.applied_through(source, created)
        reported = self.store.in_flow_through(source, created)
        n = len(rows)
        compiled = self.compiled_reports and self.fix.plain_header
        i = 0
        while i < n:
            if compiled:
                i = self._deliver_compiled(region, rows, positions, i, booked, reported, source, created, wall, now)
                if i >= n:
                    break
            end = i + 1 if compiled else n
            self._deliver_python(region, rows[i:end], positions[i:end], booked, reported, source, created, wall,
                                 now)
            i = end
        self.flush_to_connection()  # the reports stored first,
        self.book.write_events()  # then the book

    #: Whether the common events' reports are made by ``fix_report_kernel`` (False: all by
    #: ``fix_orders.execution_report``, as a test compares them).
    compiled_reports = True

    def _deliver_compiled(self, region: np.ndarray, rows: np.ndarray, positions: np.ndarray, start: int, booked: int,
                          reported: int, source: int, created: int, wall: int, now: int) -> int:
        """``fix_report_kernel.deliver_reports`` from event ``start``: the reports stored and
        queued, the changes given to the book; returns the event it stopped at."""
        rs, fix = self.book.report_state, self.fix
        head, middle = fix.report_header(wall)
        ints = np.array((start, self.id, booked, reported, self._exec_seq, self._exec_k, wall, rs.base, source,
                         created, EVENT_RECORD_CHANGES, rs.longest, fix.store.next_seq, fix.store.end, MAX_PAYLOAD,
                         middle), np.int64)
        state = np.frombuffer(rs.state, np.int64)
        slot_of = np.frombuffer(rs.slot_of, np.int64)
        arena = np.frombuffer(rs.arena, np.uint8)
        try:
            out, words, wire, records, offsets = deliver_reports(region, rows, positions, state, slot_of, arena, head,
                                                                 ints)
        finally:
            del state, slot_of, arena  # (the mirror's buffers cannot grow while viewed)
        stop, count, body_bytes, record_bytes, changes, self._exec_seq, self._exec_k, through, framed, dropped = \
            words[:O_WORDS].tolist()
        if stop == start:
            return stop
        if count:
            positions_sent = words[O_WORDS + count:O_WORDS + 2 * count].tolist()
            if framed:
                fix.sent_framed(wire, records, offsets, source, created, positions_sent[-1], now)
            else:
                fix.send_reports(out[:body_bytes], words[O_WORDS:O_WORDS + count].tolist(), positions_sent, wall, now,
                                 source, created)
        if changes or record_bytes:
            rows_at = O_WORDS + 2 * count
            drops_at = rows_at + changes * C_WORDS
            self.book.apply_reports(words[rows_at:drops_at].tolist(), words[drops_at:drops_at + dropped].tolist(),
                                    out[body_bytes:].tobytes(), source, created, through)
        return stop

    def _deliver_python(self, region: np.ndarray, rows: np.ndarray, positions: np.ndarray, booked: int,
                        reported: int, source: int, created: int, wall: int, now: int) -> None:
        """``deliver_events`` of ``rows`` through ``fix_orders.execution_report``."""
        book = self.book
        last = -1  # the last event whose changes the open event record holds
        sends: list[tuple[bytes, list[tuple[int, bytes]] | bytes, int]] = []  # framed together at the end
        book.begin_event()
        try:
            for row, position in zip(rows.tolist(), positions.tolist()):
                name, ev = _event(region[row])
                seq = int(ev.get("seq", 0))
                if seq != self._exec_seq:
                    self._exec_seq, self._exec_k = seq, 0
                self._exec_k += 1
                if position <= booked:
                    continue
                exec_id = b"%d.%d" % (seq, self._exec_k)
                last = position  # (its changes, even those of a report that fails, are in the record)
                outs = fo.execution_report(name, ev, book, self.by_id, self.id, exec_id)
                if book.event_changes >= EVENT_RECORD_CHANGES:  # one record per run, kept small
                    book.end_event(source, created, last)
                    book.begin_event()
                    last = -1
                if position <= reported:
                    continue
                transact = utc_timestamp(int(ev.get("timestampNs", 0)) or wall)
                for out in outs:  # TransactTime goes on the end of each
                    sends.append((out.msg_type, fo.with_fields(out.body, [(60, transact)]), position))
        finally:
            self.fix.send_batch(sends, wall, now, source, created)  # (stored before the book's records are written)
            if last >= 0:
                book.end_event(source, created, last)
            else:
                book.drop_event()

    def release_held(self, wall: int, now: int) -> int:
        """Send the engine the held cancels and replaces whose order is accepted now, and
        answer those whose order ended first (``fix_orders.release``), after the events of
        a duty cycle are delivered; returns how many were sent. Each is recorded as sent
        (``OrderBook.sent``) after it is staged: a crash in between leaves it held, to be
        released again."""
        sent = 0
        for item in fo.release(self.book, self.id):
            if isinstance(item, fo.Outgoing):
                self.fix.send(item.msg_type, fo.with_fields(item.body, [(60, utc_timestamp(wall))]), wall, now)
                continue
            if self.stage is None:
                raise RuntimeError(f"session {self.id} has a held request to send and no way to stage it")
            name, kw = item
            created, position = self.stage(getattr(m, name).encode(**kw), self.id)
            self.book.sent(kw["clOrdId"], created, position)
            sent += 1
        self.flush_to_connection()
        return sent

    def detach(self, conn: Connection) -> bool:
        """``conn`` ended; True if it was this session's logged-on connection."""
        if self.conn is conn:
            self.conn = None
            self.fix.disconnected()
            return True
        return False

    def flush_to_connection(self) -> None:
        """Queue what the session layer produced on the connection (stored already: with no
        connection it waits in the store for a ResendRequest)."""
        if self.fix.out:
            # stored before written: a number the counterparty saw is never given again; the
            # book's records of the requests they answer before either
            self.book.flush()
            self.store.flush()
            if self.conn is not None:
                self.conn.queue_framed(bytes(self.fix.out))
            self.fix.out.clear()
        if self.conn is not None and self.fix.closing:
            self.conn.closing = True

    def close(self) -> None:
        self.store.close()
        self.book.close()


class FixGatewayAgent(GatewayAgent):
    """FIX 4.4 order entry for the configured counterparties over one listening socket."""

    def __init__(self, cfg: GatewayConfig, inbound_ring: str, output_ring: str, reject_ring: str,
                 subscriber_index: int, state_dir: str | Path, instruments: list[FixInstrument],
                 batch_limit: int = 1024, latency_prefix: str | None = None, engine_config: Any = None,
                 data_dir: str | Path | None = None) -> None:
        self._releasing: set[int] = set()  # sessions with a released held request staged (_stage_request)
        super().__init__(cfg, inbound_ring, output_ring, reject_ring, subscriber_index, state_dir,
                         batch_limit=batch_limit, latency_prefix=latency_prefix, engine_config=engine_config,
                         data_dir=data_dir)
        self.instruments = {i.symbol: i for i in instruments}
        self._instrument_rows = list(self.instruments.values())  # fix_new_order's rows, in its table's order
        self._instrument_table = instrument_table(self._instrument_rows)
        self._order_rows = np.zeros((SCAN_MESSAGES, ORDER_WORDS), np.int64)

    # ---------------------------------------------------------------- protocol hooks

    def counter_labels(self) -> dict[str, str]:
        g = f"gateway {self.cfg.name}"
        return super().counter_labels() | {
            "logons": f"{g}: logons",
            "bad_logons": f"{g}: logons refused",
            "garbled": f"{g}: garbled messages ignored",
            "rejects": f"{g}: session Rejects sent",
            "refused": f"{g}: orders refused by the gateway",
            "throttled": f"{g}: orders refused (throttle)",
            "held": f"{g}: cancels/replaces held until their order was accepted",
        }

    def warm_up(self) -> None:
        super().warm_up()
        warm_up_scan()
        warm_up_new_order()
        warm_up_outbound()
        warm_up_reports()

    def _make_sessions(self, directory: Path, now: int) -> dict[int, FixGatewaySession]:
        sessions = {s.id: FixGatewaySession(s, self.cfg, directory, self.instruments, now, self._stage_request,
                                            self._inbound_mark)
                    for s in self.cfg.session}
        created = self._in_ring.created_time_ns
        for s in sessions.values():
            s.store.adopt_inbound(created)  # before _recover_applied reads the ring for them
        self._by_comp = {s.cfg.target_comp_id.encode(): s for s in sessions.values()}
        return sessions

    def _inbound_mark(self) -> tuple[int, int]:
        """Where the next message staged will be in the inbound ring (creation time, position;
        a publish, in _stage_message or elsewhere, moves position and staged alike)."""
        return self._in_ring.created_time_ns, self._in.position + getattr(self, "_staged", 0)

    def on_start(self) -> None:
        super().on_start()
        # After a crash: what the books hold for messages never published (fix_orders.recover),
        # then every held request whose order the engine accepted (or ended) meanwhile.
        created, top = self._in_ring.created_time_ns, self._in.position
        wall, now = time.time_ns(), time.monotonic_ns()
        for s in self.sessions.values():
            lost = s.book.unpublished(created, top)
            if lost[0] or lost[1]:
                log.warning("gateway %s: session %d: %d order(s) and %d request(s) were not published before a "
                            "restart", self.cfg.name, s.id, len(lost[0]), len(lost[1]))
            for out in fo.recover(s.book, created, top, s.store.next_in):
                s.fix.send(out.msg_type, fo.with_fields(out.body, [(60, utc_timestamp(wall))]), wall, now)
            if s.book.has_held:
                s.release_held(wall, now)
            s.flush_to_connection()
            s.book.flush()  # what recovery wrote, whatever is staged
        if self._staged:
            self._publish_staged()

    def _before_publish(self) -> None:
        """What the books recorded for the requests staged is written before they are
        published (``fix_orders.recover`` reads it after a crash): the books of the sessions
        with messages staged, their client's (``_holding``) or their own (``_releasing``),
        not every configured session's (a session with nothing staged has nothing of its
        own to write for this publish; its book's housekeeping, a compaction to finish or
        maps to let go, waits for its own next flush)."""
        sessions = self.sessions
        for sid in self._holding:
            sessions[sid].book.flush()
        if self._releasing:
            for sid in self._releasing:
                sessions[sid].book.flush()
            self._releasing.clear()  # (written: a partial publish leaves nothing of theirs unwritten)

    def _stage_request(self, message: bytes, session_id: int) -> tuple[int, int]:
        """Stage a session's own engine message (a released held request: no client number
        of its own, that of its FIX message being counted when it was held); returns where
        in the inbound ring it will be published."""
        mark = self._inbound_mark()
        self._stage_message(message, session_id)
        self._releasing.add(session_id)
        self._counts.add("orders_in")
        return mark

    def _outbound(self) -> int:
        """Every gateway's, then the held requests: released once the events of the cycle
        (all of an order's events on entry, as a rule: its acceptance and what it traded)
        are reported, and published in this duty cycle."""
        work = super()._outbound()
        if work and self._delivered:
            wall, now = time.time_ns(), time.monotonic_ns()
            # only a session given events can have a held request to release: what frees one
            # is its order's acceptance or end, an event of that session
            for s in sorted(self._delivered, key=_session_id):
                if s.book.has_held:
                    s.release_held(wall, now)
            if self._staged:
                self._publish_staged()
        return work

    def _connection(self, sock: socket.socket, peer: str, now: int) -> Connection:
        return Connection(sock, peer, MAX_MESSAGE, self.cfg.max_backlog_bytes, now, reader=FixReader(MAX_MESSAGE))

    def _goodbye(self, conn: Connection) -> None:
        s = conn.session
        if s is not None:
            s.fix.logout("the gateway is stopping", time.time_ns(), time.monotonic_ns())
            s.flush_to_connection()

    def _end_slow(self, conn: Connection) -> None:
        conn.discard_output()
        conn.closing = True
        log.info("gateway %s: %r did not read %d bytes of its output: disconnected", self.cfg.name, conn,
                 self.cfg.max_backlog_bytes)

    def _timers(self, now: int) -> None:
        wall = time.time_ns()
        for conn in self._conns:
            if conn.closed:
                continue
            s = conn.session
            if s is None:
                if now - conn.opened_ns > 10 * NS:  # no Logon
                    conn.closing = True
                continue
            s.fix.on_timer(now, wall)
            s.flush_to_connection()

    # ---------------------------------------------------------------- receiving

    def _receive(self, conn: Connection, now: int, wall: int) -> int:
        if conn.closing or conn.closed:
            return 0
        try:
            data = conn.sock.recv(READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return 0
        except OSError as exc:
            self._drop(conn, f"receive failed: {exc.strerror}")
            return 1
        if not data:
            self._drop(conn, "closed by the counterparty")
            return 1
        conn.last_recv_ns = now
        s = conn.session
        scanned = conn.reader.feed_scanned(data, *(s.comp_ids if s is not None else _NO_COMP_IDS))
        data, n = scanned.data, scanned.count
        rows = scanned.messages[:n].tolist() if n else ()  # (one conversion for the read)
        fields = scanned.fields  # a message's rows made Python lists only where they are read
        orders: list[list[int]] | tuple[()] = ()
        if n and s is not None:  # the NewOrderSingles checked in compiled code too
            table = self._instrument_table
            orders_of(np.frombuffer(data, np.uint8), scanned.messages, n, scanned.fields, table.symbols,
                      table.lengths, table.numbers, s.account_array, self._order_rows)
            orders = self._order_rows[:n].tolist()
        for i, (start, end, first, count, kind, valid, seq, sent, dup, comp_ok) in enumerate(rows):
            if conn.closing or conn.closed:
                return n
            s = conn.session
            if (valid and comp_ok and not dup and _APPLICATION[kind] and s is not None
                    and s.fix.take_in_order(seq, sent, now, wall)):
                # framed and checked by fix_scan, taken by the session: no FixMessage needed
                if orders and orders[i][O_OK]:
                    self._new_order(s, seq, data, orders[i], fields[first:first + count], wall, now)
                else:
                    self._application(s, seq, MSG_TYPES[kind], _by_tag(data, fields[first:first + count]), wall,
                                      now)
                s.flush_to_connection()
            else:
                self._message(conn, FixMessage(data[start:end]), now, wall)
        for item in scanned.rest:
            if conn.closing or conn.closed:
                break
            if isinstance(item, Garbled):
                self._counts.add("garbled")
                if conn.session is not None:
                    conn.session.fix.on_garbled(item)
                continue
            self._message(conn, item, now, wall)
        return scanned.count + len(scanned.rest) or 1

    def _message(self, conn: Connection, msg: FixMessage, now: int, wall: int) -> None:
        """One framed message through the session layer (the Logon binds the connection)."""
        s = conn.session if conn.session is not None else self._logon(conn, msg, now)
        if s is None:
            return
        rejects = s.fix.stats.rejects_sent
        for app in s.fix.on_message(msg, now, wall):
            self._application(s, app.seq_num or 0, app.msg_type, app.fields_by_tag, wall, now)
        if s.fix.stats.rejects_sent > rejects:
            self._counts.add("rejects", s.fix.stats.rejects_sent - rejects)
        s.flush_to_connection()

    def _logon(self, conn: Connection, msg: FixMessage, now: int) -> FixGatewaySession | None:
        """Bind ``conn`` to the session its first message names, or end it."""
        s = self._by_comp.get(msg.get(49) or b"")
        if s is None or msg.msg_type != b"A":
            self._counts.add("bad_logons")
            why = "first message not a Logon" if msg.msg_type != b"A" else "unknown SenderCompID"
            log.info("gateway %s: %r refused: %s", self.cfg.name, conn, why)
            conn.closing = True  # we do not know whom to answer, so no Logout
            return None
        if s.conn is not None and not s.conn.closed:
            self._counts.add("bad_logons")
            log.info("gateway %s: %r refused: session %d is logged on from %r", self.cfg.name, conn, s.id, s.conn)
            conn.closing = True
            return None
        s.fix.connected(now)
        logons = s.fix.stats.logons
        conn.session = s
        s.conn = conn
        apps = s.fix.on_message(msg, now, time.time_ns())
        if s.fix.stats.logons > logons:
            conn.established = True
            self._established(s)
            self._counts.add("logons")
        else:
            self._counts.add("bad_logons")
            s.flush_to_connection()
            s.conn = None
            conn.session = None
            conn.closing = True
            return None
        for app in apps:
            self._application(s, app.seq_num or 0, app.msg_type, app.fields_by_tag, time.time_ns(), now)
        s.flush_to_connection()
        return None  # the Logon itself is handled

    # ---------------------------------------------------------------- application messages

    def _application(self, s: FixGatewaySession, seq: int, t: bytes, fields: dict[int, bytes], wall: int,
                     now: int) -> None:
        """Application message ``seq`` of type ``t``, in sequence: staged for the engine, or
        answered here."""
        origin = fo.Origin(seq, *self._inbound_mark())  # where its engine message goes, if it goes
        try:
            if t == b"D":
                name, kw = "NewOrder", fo.new_order(fields, s.book, self.instruments, s.account_ok, s.id, origin)
            elif t == b"F":
                name, kw = "CancelOrder", fo.cancel(fields, s.book, s.id, origin)
            elif t == b"G":
                name, kw = "ReplaceOrder", fo.replace(fields, s.book, self.instruments, s.id, origin)
            elif t == b"q":
                name, kw = "MassCancel", fo.mass_cancel(fields, s.book, self.instruments, s.account_ok, s.id,
                                                        origin)
            elif t == b"H":
                body = fo.status(fields, s.book, b"%d.0" % seq)
                s.fix.send(b"8", fo.with_fields(body, [(60, utc_timestamp(wall))]), wall, now)
                return s.applied(seq)
            else:  # a message type the dictionary knows and no one here serves
                raise FixRefusal("business", f"{t.decode()} is not served by this gateway", 35,
                                 business_reason=3)
        except FixRefusal as refusal:
            self._counts.add("refused")
            answer = fo.refusal_report(t, fields, refusal, b"%d.0" % seq, s.book)
            last = [(45, seq)] if answer.msg_type == b"j" else [(60, utc_timestamp(wall))]
            body = fo.with_fields(answer.body, last)
            s.fix.send(answer.msg_type, body, wall, now)
            return s.applied(seq)
        self._request(s, seq, t, name, kw, wall, now)

    def _request(self, s: FixGatewaySession, seq: int, t: bytes, name: str, kw: dict[str, Any], wall: int,
                 now: int) -> None:
        """Application message ``seq`` (type ``t``) mapped to engine message ``name`` (``kw``):
        throttled, held (a cancel or replace of an order not accepted yet) or staged."""
        payload = fo.engine_message(name, kw)
        if not s.throttle.take(now):
            self._counts.add("throttled")
            self._refuse_throttled(s, payload, wall, now)
            return s.applied(seq)
        if t in (b"F", b"G") and fo.is_held(s.book, kw):
            self._counts.add("held")  # in the book: sent by release_held once the order is accepted
            return s.applied(seq)
        self._stage_message(payload, s.id, seq, wall)
        self._counts.add("orders_in")

    def _new_order(self, s: FixGatewaySession, seq: int, data: bytes, values: list[int], fields: np.ndarray,
                   wall: int, now: int) -> None:
        """A NewOrderSingle ``fix_new_order`` checked (``values``): entered and packed without
        the Python mapping (``_request``'s throttle and staging, for a new order); one whose
        ClOrdID is in use goes through ``_application``, which refuses it."""
        origin = fo.Origin(seq, *self._inbound_mark())
        payload = fo.new_order_values(s.book, data[values[O_CL_START]:values[O_CL_END]],
                                      self._instrument_rows[values[O_INSTRUMENT]], values, s.id, origin)
        if payload is None:
            return self._application(s, seq, b"D", _by_tag(data, fields), wall, now)
        if not s.throttle.take(now):
            self._counts.add("throttled")
            self._refuse_throttled(s, payload, wall, now)
            return s.applied(seq)
        self._stage_message(payload, s.id, seq, wall)
        self._counts.add("orders_in")

    def _refuse_throttled(self, s: FixGatewaySession, payload: bytes, wall: int, now: int) -> None:
        """What the engine would answer a refused order with, as this session's report."""
        row = np.zeros(m.SLOT_SIZE, np.uint8)
        row[:len(payload)] = np.frombuffer(payload, np.uint8)
        answer = rejection_for(row[:len(payload)], _THROTTLED, wall)
        d = _SCHEMA.decode(np.frombuffer(answer, np.uint8))
        for out in fo.execution_report(d.name, d.fields, s.book, s.by_id, s.id, b"T%d" % s.store.next_seq):
            s.fix.send(out.msg_type, fo.with_fields(out.body, [(60, utc_timestamp(wall))]), wall, now)



def _session_id(s: FixGatewaySession) -> int:
    return s.id


def _by_tag(data: bytes, fields: np.ndarray) -> dict[int, bytes]:
    """A scanned message's fields (``fix_scan``'s rows over ``data``) by tag, as
    ``FixMessage.fields_by_tag`` gives them (a valid message has no tag twice)."""
    return {t: data[a:b] for t, a, b in fields.tolist()}  # (F_TAG, F_START, F_END: a row's three words)


def instruments_for(instruments: list[Any]) -> list[FixInstrument]:
    """The FIX view of the configured instruments (their decimals from the configuration)."""
    return [FixInstrument.from_config(i, i.price_decimals, i.qty_decimals) for i in instruments]
