"""One FIX session's persistent order book: FIX ClOrdID <-> engine clOrdId/orderId, report state.

``OrderBook`` keeps what ``fix_orders`` needs to map engine events back to a session's FIX
orders and requests (``Order``, ``Pending``), in memory and in a file that survives a
restart.

``fix-orders`` file (one per FIX session, path given to ``OrderBook``)::

    header   0  magic     u32  "RXFO"
             4  version   u32  2 (a version 1 file, which has no U records, is read and
                               becomes version 2 when opened for writing)
             8  (reserved to 16)
    record   0  length    u32  payload bytes (1 .. MAX_RECORD)
             4  crc32     u32  of the payload (zlib.crc32)
             8  payload   kind (1 ASCII byte) then compact JSON (ints and ASCII strings only)

    kinds    N  {"next": n}             the next engine clOrdId to allocate (first record
                                        after a compaction)
             O  {order state}           an order's whole state; the last one for its "key"
                                        (its first engine clOrdId) wins
             P  {pending request}       a cancel, replace or mass cancel sent to the engine,
                                        or a cancel or replace held until its order is
                                        accepted ("held": true); the last one for its
                                        "num" wins (a held one is written again when it
                                        is sent: "released", its own "at")
             U  [key, order_id, status, cum_qty, leaves_qty, notional, triggered]
                                        what an engine event changes of an order (its
                                        acceptance, fills, end, trigger): those fields of
                                        the order ``key`` (an O record before it), the
                                        rest as they were (version 2)
             X  {"num": n}              that pending request got its answer (or was
                                        answered by the gateway: a held one whose order
                                        ended first)
             E  {"w": [source, created, position], "r": [[kind, {...}], ...]}
                                        what a run of engine events changed (O, U, P and
                                        X records, in order), and the last event: ring
                                        ``source`` (the session store's SOURCE_*), that
                                        ring's creation time and the event's position in
                                        it (the last one is ``applied_through``); one
                                        record, so applied whole or not at all

Crash semantics. Records are appended, not fsynced, and written together: a request's
records when ``flush`` is called (the gateway does before it publishes the request, counts
the client's message applied or stores a report), an engine event's by ``write_events``. A
process crash loses nothing written, a host crash loses the tail (as the session store's
flow). On open the records are replayed in order and the file is cut at the first torn or
corrupted one (length zero or past the end, CRC mismatch, unreadable JSON): ``cut_bytes``
says how much went. A file with another magic or version raises ``OrderBookError``; a file
shorter than the header that is a prefix of ours (a crash during creation) starts empty.
Compaction writes the ``N`` record, the live orders and the orders a pending request names
(each as its last O record and the U record after it, copied as they were written, or an O
record made now for one read from the file), the pending requests and where each event
source was applied through to ``<path>.tmp``,
fsyncs it, renames it over the file and fsyncs the directory: a crash leaves the old file or
the new one, never a mix. ``compact()`` does it at once. The automatic one (when the file
grows past ``compact_bytes`` and twice its size after the last compaction) keeps the
gateway's duty cycle out of the disk's way: the records are made in the caller (what they
say must be one moment's state, with nothing held back or unwritten), then a thread writes
and fsyncs the new file while records go on being appended to the old one and remembered;
a later ``flush`` or ``write_events`` that finds the thread done appends what was remembered
to the new file, renames it over the old one and leaves the directory's fsync to a thread.
Until that rename the old file holds everything; from it the new one does. A write or
fsync that fails leaves the old file in use (logged; the next compaction is tried once the
file has doubled again); ``close`` and ``compact()`` wait for one in flight first.
Terminal orders (Filled, Canceled, Rejected, Expired) are dropped by it,
from memory as well: afterwards an OrderStatusRequest for one answers "unknown order" and
its ClOrdID (already reusable, being terminal) is forgotten. Losing the file altogether
restarts the engine clOrdId numbering at 1; the engine does not need clOrdIds to be
unique, but events of the session's older live orders could then be attributed wrongly:
do not delete the file while the session has live orders.

Engine events and the reports they give. The gateway stores a session's reports (its
session store's flow) before the book records of the events that gave them
(``begin_event`` / ``end_event`` hold those back until ``write_events``): after a crash
the book may be behind the flow, never ahead of it, and it says how far it got
(``applied_through``), so that a restarted gateway reading the same events again applies
to the book those it had not (without reporting them again when the flow has their
reports) and skips those it had: no event counted twice (a fill's quantity), and none
whose report was lost.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from json.encoder import encode_basestring_ascii  # type: ignore[attr-defined]
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ringex.engine.storage.fsync import fsync_directory
from ringex.gateways.fix_report_state import C_WORDS, ReportState

log = logging.getLogger("ringex.gateway")

__all__ = [
    "Order",
    "OrderBook",
    "OrderBookError",
    "Pending",
]

# OrdStatus 39 values an Order has; Filled, Canceled, Rejected and Expired are terminal
S_NEW, S_PARTIAL, S_FILLED, S_CANCELED, S_REJECTED, S_EXPIRED, S_PENDING_NEW = b"0", b"1", b"2", b"4", b"8", b"C", b"A"
TERMINAL = frozenset({S_FILLED, S_CANCELED, S_REJECTED, S_EXPIRED})
_TERMINAL_CODES = frozenset(s[0] for s in TERMINAL)
_STATUS_OF_CODE = {s[0]: s for s in (S_NEW, S_PARTIAL, S_FILLED, S_CANCELED, S_REJECTED, S_EXPIRED, S_PENDING_NEW)}


class OrderBookError(RuntimeError):
    """The order book file is not ours (wrong magic or version)."""


MAGIC = 0x4F465852  # "RXFO" little-endian
VERSION = 2
_VERSIONS = (1, 2)  # read; 1 is 2 without U records
HEADER = struct.Struct("<II8x")
RECORD = struct.Struct("<II")
MAX_RECORD = 1 << 16
BURY_PER_FLUSH = 256  # entries of replaced maps let go at each flush (~0.2 ms)


_JSON_BOOL = {False: b"false", True: b"true"}


# the bytes JSON writes as they are: printable ASCII but the quote and the backslash
_PLAIN = bytes(b for b in range(0x20, 0x7F) if b not in b'"\\')


def _text(value: bytes) -> bytes:
    """An ASCII string as JSON writes it (quoted, escaped)."""
    if not value.translate(None, _PLAIN):
        return b'"%s"' % value
    return encode_basestring_ascii(value.decode("ascii")).encode("ascii")


def _texts(values: list[bytes]) -> bytes:
    return b"[" + b",".join([_text(v) for v in values]) + b"]" if values else b"[]"


def _ints(values: list[int]) -> bytes:
    if len(values) == 1:
        return b"[%d]" % values[0]
    if len(values) == 2:  # an order's "at"
        return b"[%d,%d]" % (values[0], values[1])
    return b"[" + b",".join([b"%d" % v for v in values]) + b"]"


@dataclass
class Order:
    """What an ExecutionReport needs about one order. Quantities and prices in engine units;
    ``notional`` is the sum of price × qty of the fills (AvgPx = notional / cum, exact)."""

    key: int  # its first engine clOrdId: the order's identity in the file
    num: int  # its current engine clOrdId (a replace gives it the replace's)
    cl_ord_id: bytes  # its current FIX ClOrdID
    chain: list[bytes]  # earlier FIX ClOrdIDs, oldest first (replaces)
    nums: list[int]  # every engine clOrdId it had
    order_id: int  # 0 until OrderAccepted
    account: int
    instrument: int
    symbol: bytes
    price_decimals: int
    qty_decimals: int
    side: int
    ord_type: int
    tif: int
    qty: int
    price: int
    stop_price: int
    display_qty: int
    post_only: bool
    reduce_only: bool
    stp_mode: int
    cum_qty: int = 0
    leaves_qty: int = 0
    notional: int = 0
    status: bytes = S_PENDING_NEW
    triggered: bool = False
    # where its NewOrder came from: the client's MsgSeqNum, and [ring creation time,
    # position] of the gateway's inbound ring slot it was staged for ([]: unknown). A
    # restarted gateway tells by them an order it never published (``unpublished``).
    in_seq: int = 0
    at: list[int] = field(default_factory=list)

    @property
    def live(self) -> bool:
        return self.status not in TERMINAL

    def to_json(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["cl_ord_id"] = self.cl_ord_id.decode("ascii")
        d["chain"] = [c.decode("ascii") for c in self.chain]
        d["symbol"] = self.symbol.decode("ascii")
        d["status"] = self.status.decode("ascii")
        return d

    def json_text(self) -> bytes:
        """``to_json()`` as the file's compact JSON (keys sorted), the same bytes
        ``json.dumps`` writes, without its cost: an order is written at every change."""
        return (b'{"account":%d,"at":%s,"chain":%s,"cl_ord_id":%s,"cum_qty":%d,"display_qty":%d,"in_seq":%d,'
                b'"instrument":%d,"key":%d,"leaves_qty":%d,"notional":%d,"num":%d,"nums":%s,"ord_type":%d,'
                b'"order_id":%d,"post_only":%s,"price":%d,"price_decimals":%d,"qty":%d,"qty_decimals":%d,'
                b'"reduce_only":%s,"side":%d,"status":%s,"stop_price":%d,"stp_mode":%d,"symbol":%s,"tif":%d,'
                b'"triggered":%s}') % (
            self.account, _ints(self.at), _texts(self.chain), _text(self.cl_ord_id), self.cum_qty,
            self.display_qty, self.in_seq, self.instrument, self.key, self.leaves_qty, self.notional, self.num,
            _ints(self.nums), self.ord_type, self.order_id, _JSON_BOOL[self.post_only], self.price,
            self.price_decimals, self.qty, self.qty_decimals, _JSON_BOOL[self.reduce_only], self.side,
            _text(self.status), self.stop_price, self.stp_mode, _text(self.symbol), self.tif,
            _JSON_BOOL[self.triggered])

    def state_text(self) -> bytes:
        """The U record of the book file: what an engine event changes of the order."""
        return b'[%d,%d,"%s",%d,%d,%d,%s]' % (self.key, self.order_id, self.status, self.cum_qty, self.leaves_qty,
                                               self.notional, _JSON_BOOL[self.triggered])

    @staticmethod
    def check_state(state: list[Any]) -> None:
        """Raise ``ValueError`` unless ``state`` is a U record's (``state_text``)."""
        if not (state.__class__ is list and len(state) == 7 and all(v.__class__ is int for v in state[:2] + state[3:6])
                and state[6].__class__ is bool and state[2].__class__ is str and len(state[2]) == 1
                and state[2].isascii()):
            raise ValueError(f"order state {state!r} is not a U record's")

    def set_state(self, state: list[Any]) -> None:
        """Apply a U record's ``state`` (``state_text``), checked first: all or nothing."""
        self.check_state(state)
        _, order_id, status, cum, leaves, notional, triggered = state
        self.order_id, self.status, self.cum_qty, self.leaves_qty, self.notional, self.triggered = (
            order_id, status.encode("ascii"), cum, leaves, notional, triggered)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Order:
        d = dict(d)
        d["cl_ord_id"] = d["cl_ord_id"].encode("ascii")
        d["chain"] = [c.encode("ascii") for c in d["chain"]]
        d["symbol"] = d["symbol"].encode("ascii")
        d["status"] = d["status"].encode("ascii")
        return cls(**d)


@dataclass
class Pending:
    """A cancel, replace or mass cancel sent to the engine and not yet answered, or a cancel
    or replace ``held`` until the engine accepts its order (not sent yet: its order has no
    orderId to name; ``released`` once it is).

    ``in_seq``: the client's MsgSeqNum of the request; ``at``: [creation time, position] of
    the gateway's inbound ring slot it was staged for ([]: unknown, or held). A restarted
    gateway tells by them a request it never published (``OrderBook.unpublished``)."""

    num: int  # the request's engine clOrdId
    kind: str  # "cancel", "replace", "mass"
    cl_ord_id: bytes
    key: int = 0  # the target order's key (cancel, replace)
    params: dict[str, Any] = field(default_factory=dict)
    held: bool = False
    released: bool = False
    in_seq: int = 0
    at: list[int] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        d = {"num": self.num, "kind": self.kind, "cl_ord_id": self.cl_ord_id.decode("ascii"),
             "key": self.key, "params": self.params}
        for k in ("held", "released", "in_seq", "at"):
            v = getattr(self, k)
            if v:
                d[k] = list(v) if k == "at" else v
        return d

    def json_text(self) -> bytes:
        """``to_json()`` as the file's compact JSON (keys sorted), the same bytes ``json.dumps``
        writes, without its cost: a request is written when it is sent."""
        parts = [b'"at":%s' % _ints(self.at)] if self.at else []
        parts.append(b'"cl_ord_id":%s' % _text(self.cl_ord_id))
        if self.held:
            parts.append(b'"held":true')
        if self.in_seq:
            parts.append(b'"in_seq":%d' % self.in_seq)
        parts.append(b'"key":%d,"kind":%s,"num":%d,"params":%s' % (
            self.key, _text(self.kind.encode("ascii")), self.num, _json(self.params) if self.params else b"{}"))
        if self.released:
            parts.append(b'"released":true')
        return b"{%s}" % b",".join(parts)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Pending:
        at = [int(x) for x in d.get("at", [])]
        if at and len(at) != 2:
            raise ValueError(f"pending request {d['num']}: at must be [created, position]")
        return cls(d["num"], d["kind"], d["cl_ord_id"].encode("ascii"), d["key"], d["params"],
                   bool(d.get("held", False)), bool(d.get("released", False)), int(d.get("in_seq", 0)), at)


def _json(obj: dict[str, Any] | bytes) -> bytes:
    """The file's compact JSON of ``obj`` (keys sorted); text already made is kept as it is."""
    if obj.__class__ is bytes:
        return obj  # type: ignore[return-value]
    return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode("ascii")


class OrderBook:
    """One FIX session's orders: FIX ClOrdID <-> engine clOrdId/orderId, and report state.

    Engine clOrdIds are allocated sequentially from 1 for every request the session sends
    (orders, cancels, replaces, mass cancels), so an engine event's clOrdId names exactly one
    of them. Not thread-safe; the gateway's one session task owns it. See the module
    docstring for the file.
    """

    def __init__(self, path: str | os.PathLike[str], *, compact_bytes: int = 16 << 20) -> None:
        self.path = Path(path)
        self.compact_bytes = compact_bytes
        self.cut_bytes = 0  # bytes of torn/corrupted tail cut at open
        self._next = 1
        self._orders: dict[int, Order] = {}
        self._live: set[int] = set()  # keys of the orders not terminal
        # each order's last O record text and last U record text after it (b"": none), as
        # written since the book was opened: what compaction copies instead of writing them
        # again (an order read from the file is written afresh)
        self._texts: dict[int, tuple[bytes, bytes]] = {}
        self._by_num: dict[int, Order] = {}
        self._by_fix: dict[bytes, Order] = {}
        self._pending: dict[int, Pending] = {}
        self._pending_fix: dict[bytes, Pending] = {}
        self._held: set[int] = set()  # nums of the held requests
        self._through: dict[int, tuple[int, int]] = {}  # per event source: (ring created, position) applied
        self._event: list[tuple[bytes, dict[str, Any] | bytes]] | None = None  # the event being applied's records
        self._held_back: list[bytes] = []  # E records not yet written (write_events)
        self._unwritten: list[bytes] = []  # the other records not yet written (flush)
        self._compacting: _Compaction | None = None  # an automatic compaction in flight
        self._graveyard: list[dict[Any, Any]] = []  # maps a compaction replaced, emptied by flush
        #: the orders' report state for the compiled delivery (``fix_report_kernel``), kept by
        #: ``save`` and ``save_state``, what the kernel changed given back by ``apply_reports``
        self.report_state = ReportState()
        self._fd = -1
        self._open()
        self._threshold = max(self.compact_bytes, 2 * self._size)

    # -- queries
    @property
    def next_cl_ord_id(self) -> int:
        return self._next

    def order(self, cl_ord_id: bytes) -> Order | None:
        """The latest order that used this FIX ClOrdID (as its current or an earlier one)."""
        return self._by_fix.get(bytes(cl_ord_id))

    def by_engine_id(self, num: int) -> Order | None:
        return self._by_num.get(num)

    def by_key(self, key: int) -> Order | None:
        """The order whose first engine clOrdId was ``key`` (what a ``Pending`` names)."""
        return self._orders.get(key)

    def live_orders(self) -> list[Order]:
        return [o for o in self._orders.values() if o.live]

    def pending(self, num: int) -> Pending | None:
        return self._pending.get(num)

    def in_use(self, cl_ord_id: bytes) -> bool:
        """Is this FIX ClOrdID taken: by a live order (any in its replace chain) or an
        unanswered request?"""
        o = self._by_fix.get(cl_ord_id)
        return (o is not None and o.live) or cl_ord_id in self._pending_fix

    def pending_for(self, o: Order) -> Pending | None:
        """The cancel or replace of ``o`` pending or held (one at most)."""
        for p in self._pending.values():
            if p.key == o.key and p.kind in ("cancel", "replace"):
                return p
        return None

    def held(self) -> list[Pending]:
        """The held requests (``Pending.held``), oldest first."""
        return [self._pending[n] for n in sorted(self._held)]

    @property
    def has_held(self) -> bool:
        return bool(self._held)

    def applied_through(self, source: int, created: int) -> int:
        """The position of the last event of ring ``source`` (the incarnation created at
        ``created``) whose changes the book has; -1 when none."""
        c, p = self._through.get(source, (0, -1))
        return p if c == created and c != 0 else -1

    # -- engine events: their changes in one record a run of events, written after the reports
    def begin_event(self) -> None:
        """The changes until ``end_event`` are those of one engine event, or of a run of
        consecutive events of one ring (one record: all of them applied, or none)."""
        self._event = []

    @property
    def event_changes(self) -> int:
        """How many changes the open event record holds."""
        return len(self._event or ())

    def drop_event(self) -> None:
        """Close an event record that no event was applied to (it must hold no change)."""
        if self._event:
            raise OrderBookError("an event record with changes cannot be dropped")
        self._event = None

    def end_event(self, source: int, created: int, position: int) -> None:
        """The events of ring ``source`` (created at ``created``) through ``position`` are
        applied; their record is written by the next ``write_events``."""
        changes, self._event = self._event or [], None
        self._through[source] = (created, position)
        self._held_back.append(self._record(b"E", b'{"r":[%s],"w":[%d,%d,%d]}' % (
            b",".join([b'["%s",%s]' % (k, _json(o)) for k, o in changes]), source, created, position)))

    def write_events(self) -> None:
        """Write the events' records held back since the last call (once the reports they
        gave are stored), after the requests' records not written yet (``flush``)."""
        self.flush()
        if not self._held_back:
            return
        self._write(self._held_back)
        self._held_back = []
        self._compact_in_time()

    def flush(self) -> None:
        """Write the records of the changes made since the last call outside engine events
        (requests: orders, cancels, replaces, their holding and release), in one write.
        The gateway calls it before anything a crash could leave behind them: a publish
        of the inbound ring, a count of applied client messages, a store flush."""
        if self._unwritten:
            self._write(self._unwritten)
            self._unwritten = []
            self._compact_in_time()
        elif self._compacting is not None:
            self._finish_compaction(wait=False)
        if self._graveyard:
            self._bury()

    def _write(self, records: list[bytes]) -> None:
        data = b"".join(records)
        if self._compacting is not None:
            self._compacting.after.append(data)  # for the new file too
        view = memoryview(data)
        self._size += len(view)
        while view:
            view = view[os.write(self._fd, view):]

    # -- mutations (fix_orders' functions call these)
    def add_order(self, o: Order) -> None:
        self.save(o)

    def allocate(self) -> int:
        n = self._next
        self._next += 1
        return n

    def save(self, o: Order) -> None:
        self._orders[o.key] = o
        self._index(o)
        self._note_live(o)
        text = o.json_text()
        self._texts[o.key] = (text, b"")
        self._append(b"O", text)
        self.report_state.put(o)

    def save_state(self, o: Order) -> None:
        """``save`` for a change of ``o``'s state alone (order_id, status, cum_qty,
        leaves_qty, notional, triggered: what an engine event changes), in a U record a
        fraction of an O record's size; its ClOrdIDs and engine ids unchanged."""
        self._orders[o.key] = o
        self._note_live(o)
        state = o.state_text()
        texts = self._texts.get(o.key)
        if texts is not None:
            self._texts[o.key] = (texts[0], state)
        self._append(b"U", state)
        self.report_state.put_state(o)

    def apply_reports(self, changes: list[int], dropped: list[int], records: bytes, source: int, created: int,
                      through: int) -> None:
        """What ``fix_report_kernel.deliver_reports`` did to the orders' report state, done to
        the objects: ``changes``, its change rows (``C_WORDS`` each, their U texts lying in
        ``records``), as ``save_state`` would have made them; ``dropped``, the pending
        requests it answered (``drop_pending``'s, their X records among its records);
        ``records``, its E records (the events of ring ``source`` created at ``created``
        applied through ``through``), written by the next ``write_events`` like
        ``end_event``'s."""
        if self._event is not None:
            raise OrderBookError("an event record is open: the compiled delivery's records would go around it")
        orders, live, texts = self.report_state.orders, self._live, self._texts
        for k in range(0, len(changes), C_WORDS):  # in fix_report_state's C_* order
            slot, order_id, status, cum, leaves, notional, triggered, at, n = changes[k:k + C_WORDS]
            o = orders[slot]
            o.order_id, o.status, o.cum_qty, o.leaves_qty, o.notional, o.triggered = (
                order_id, _STATUS_OF_CODE[status], cum, leaves, notional, triggered == 1)
            if status in _TERMINAL_CODES:
                live.discard(o.key)
            else:
                live.add(o.key)
            t = texts.get(o.key)
            if t is not None:
                texts[o.key] = (t[0], records[at:at + n])
        for num in dropped:  # (the kernel cleared them from the report state itself)
            p = self._pending.pop(num)
            if self._pending_fix.get(p.cl_ord_id) is p:
                del self._pending_fix[p.cl_ord_id]
            self._held.discard(num)
        if records:
            self._held_back.append(records)
            self._through[source] = (created, through)

    def _note_live(self, o: Order) -> None:
        # every change of an order's status is saved, so compaction finds the live ones here
        # instead of looking at every order since the last one
        if o.live:
            self._live.add(o.key)
        else:
            self._live.discard(o.key)

    def add_pending(self, p: Pending) -> None:
        """Record a request sent to the engine, or held (``p.held``); also what ``sent``
        and ``hold_again`` use to write a changed one again."""
        self._pending[p.num] = p
        self._pending_fix[p.cl_ord_id] = p
        if p.held:
            self._held.add(p.num)
        else:
            self._held.discard(p.num)
        self._append(b"P", p.json_text())
        self.report_state.add_pending(p)

    def sent(self, num: int, created: int, position: int) -> None:
        """Held request ``num`` was staged for the engine at ``position`` of the inbound
        ring created at ``created``: pending from now on, like any request sent."""
        p = self._pending[num]
        p.held, p.released, p.at = False, True, [created, position]
        self.add_pending(p)

    def hold_again(self, p: Pending) -> None:
        """Released request ``p`` never reached the ring (``unpublished``): held again, to be
        released again."""
        p.held, p.released, p.at = True, False, []
        self.add_pending(p)

    def unpublished(self, created: int, published: int) -> tuple[list[Order], list[Pending]]:
        """After a restart: the orders awaiting acceptance and the requests sent (not held)
        that were staged for a position of the inbound ring created at ``created`` that never
        got published (``published``: the ring's next position), so the engine never saw them.
        What was staged for an earlier incarnation of the ring is not looked at: what became
        of it is not known here."""
        def lost(at: list[int]) -> bool:
            return bool(at) and at[0] == created and at[1] >= published
        return ([o for o in self._orders.values() if o.status == S_PENDING_NEW and lost(o.at)],
                [p for p in self._pending.values() if not p.held and lost(p.at)])

    def drop_pending(self, num: int) -> Pending | None:
        p = self._pending.pop(num, None)
        if p is not None:
            if self._pending_fix.get(p.cl_ord_id) is p:
                del self._pending_fix[p.cl_ord_id]
            self._held.discard(num)
            self._append(b"X", b'{"num":%d}' % num)
            self.report_state.drop_pending(p)
        return p

    def close(self) -> None:
        if self._fd >= 0:
            self.write_events()
            self._finish_compaction(wait=True)
            self._graveyard = []
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> OrderBook:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def settle(self) -> None:
        """Wait for an automatic compaction in flight and put its file in place."""
        self._finish_compaction(wait=True)

    @property
    def compacting(self) -> bool:
        """An automatic compaction is in flight (its thread may be done)."""
        return self._compacting is not None

    def compact(self) -> None:
        """Rewrite the file with only what is still needed (module docstring), at once;
        drops terminal orders that no pending request names, from memory too."""
        self._finish_compaction(wait=True)
        data = self._compacted()
        self._unwritten = []  # what they recorded is in memory, so in the new file
        _write_synced(self._tmp_path, data)
        os.replace(self._tmp_path, self.path)
        fsync_directory(self.path.parent)
        os.close(self._reopen(len(data)))

    def _compacted(self) -> bytes:
        """The compacted file's bytes for the state in memory now; terminal orders that no
        pending request names are dropped from memory."""
        needed = {p.key for p in self._pending.values()}
        keep = [self._orders[k] for k in sorted(self._live | needed) if k in self._orders]
        chunks = [HEADER.pack(MAGIC, VERSION), self._record(b"N", {"next": self._next})]
        texts = self._texts
        for o in keep:  # its O and U records as last written (the same state), or made now
            order, state = texts.get(o.key) or (o.json_text(), b"")
            chunks.append(self._record(b"O", order))
            if state:
                chunks.append(self._record(b"U", state))
        chunks += [self._record(b"P", p.json_text()) for p in self._pending.values()]
        chunks += [self._record(b"E", {"w": [src, c, pos], "r": []}) for src, (c, pos) in sorted(self._through.items())]
        # the maps made again from what is kept; the old ones (the dropped orders' last
        # references) are emptied a little at each flush: freeing thousands of orders at
        # once would hold up the duty cycle for milliseconds
        self._graveyard += [self._orders, self._by_num, self._by_fix, self._texts]
        self._texts = {o.key: texts[o.key] for o in keep if o.key in texts}
        self._orders, self._by_num, self._by_fix = {}, {}, {}
        for o in keep:
            self._orders[o.key] = o
            self._index(o)
        self.report_state.rebuild(keep, self._pending.values())
        return b"".join(chunks)

    def _bury(self, budget: int = BURY_PER_FLUSH) -> None:
        """Let go of up to ``budget`` entries of the maps a compaction replaced."""
        graveyard = self._graveyard
        while graveyard and budget > 0:
            d = graveyard[-1]
            for _ in range(min(budget, len(d))):
                d.popitem()
                budget -= 1
            if not d:
                graveyard.pop()

    @property
    def _tmp_path(self) -> Path:
        return self.path.with_name(self.path.name + ".tmp")

    def _reopen(self, size: int) -> int:
        """The file was replaced by a compacted one of ``size`` bytes: append to it from now
        on. Returns the replaced file's descriptor, still open, for the caller to close."""
        old_fd, self._fd = self._fd, os.open(self.path, os.O_WRONLY | os.O_APPEND)
        self._size = size
        self._threshold = max(self.compact_bytes, 2 * self._size)
        return old_fd

    def _compact_in_time(self) -> None:
        """Finish a compaction whose thread is done, or begin one once the file is past its
        threshold (only with nothing held back or unwritten: the new file must hold exactly
        what the old one does)."""
        if self._compacting is not None:
            self._finish_compaction(wait=False)
        elif self._size > self._threshold and not self._held_back and not self._unwritten:
            self._compacting = _Compaction(self._tmp_path, self._compacted())

    def _finish_compaction(self, wait: bool) -> None:
        """Put the new file of the compaction in flight in place, if its thread is done (or,
        with ``wait``, once it is)."""
        c = self._compacting
        if c is None or not c.done(wait):
            return
        self._compacting = None
        after = b"".join(c.after)
        try:
            if c.error is not None:
                raise c.error
            fd = os.open(self._tmp_path, os.O_WRONLY | os.O_APPEND)
            try:
                _write_all(fd, after)
            finally:
                os.close(fd)
            os.replace(self._tmp_path, self.path)  # (its own records synced; these as the old file's were)
        except OSError as exc:  # the old file holds everything still
            log.error("FIX order book %s: compaction failed (%s); the file stays as it is", self.path, exc.strerror or exc)
            self._threshold = 2 * self._size
            return
        # the old file still open here, so the rename frees none of its blocks: its last
        # close does, on a thread, with the directory's fsync
        old_fd = self._reopen(c.size + len(after))
        threading.Thread(target=_retire, args=(old_fd, self.path.parent), name="fix-book-retire", daemon=True).start()

    # -- internals
    def _index(self, o: Order) -> None:
        if self._by_num.get(o.num) is o and self._by_fix.get(o.cl_ord_id) is o:
            return  # indexed when its ids last changed (new, replaced): most saves change neither
        for n in o.nums:
            self._by_num[n] = o
        for c in (*o.chain, o.cl_ord_id):
            self._by_fix[c] = o

    @staticmethod
    def _record(kind: bytes, obj: dict[str, Any] | bytes) -> bytes:
        """One record of ``kind`` holding ``obj`` (or its JSON text already written)."""
        payload = kind + _json(obj)
        if len(payload) > MAX_RECORD:
            raise OrderBookError(f"record of {len(payload)} bytes is over {MAX_RECORD}")
        return RECORD.pack(len(payload), zlib.crc32(payload)) + payload

    def _append(self, kind: bytes, obj: dict[str, Any] | bytes) -> None:
        if self._event is not None:  # an engine event's: in its E record
            self._event.append((kind, obj))
            return
        self._unwritten.append(self._record(kind, obj))

    def _open(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            with os.fdopen(os.dup(fd), "rb") as f:
                data = f.read()
            header = HEADER.pack(MAGIC, VERSION)
            if len(data) < HEADER.size:
                if not any(data == HEADER.pack(MAGIC, v)[:len(data)] for v in _VERSIONS):
                    raise OrderBookError(f"{self.path} is not a FIX order book file")
                os.ftruncate(fd, 0)
                os.pwrite(fd, header, 0)
                data = header
            magic, version = HEADER.unpack_from(data)
            if magic != MAGIC:
                raise OrderBookError(f"{self.path} is not a FIX order book file (magic {magic:#x})")
            if version not in _VERSIONS:
                raise OrderBookError(f"{self.path}: order book file version {version}, expected {VERSION}")
            if version != VERSION:
                os.pwrite(fd, HEADER.pack(MAGIC, VERSION), 0)  # U records may follow now
            pos = HEADER.size
            while pos + RECORD.size <= len(data):
                length, crc = RECORD.unpack_from(data, pos)
                end = pos + RECORD.size + length
                if not 0 < length <= MAX_RECORD or end > len(data):
                    break
                payload = data[pos + RECORD.size:end]
                if zlib.crc32(payload) != crc:
                    break
                try:
                    self._replay(payload[:1], json.loads(payload[1:]))
                except (ValueError, KeyError, TypeError, AttributeError):
                    break  # a CRC-valid record we cannot read: treat it as corruption, not a crash
                pos = end
            if pos < len(data):
                self.cut_bytes = len(data) - pos
                os.ftruncate(fd, pos)
            self._size = pos
        finally:
            os.close(fd)
        self._live = {k for k, o in self._orders.items() if o.live}
        self.report_state.rebuild(self._orders.values(), self._pending.values())
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)

    def _replay(self, kind: bytes, obj: dict[str, Any]) -> None:
        if kind == b"N":
            self._next = max(self._next, int(obj["next"]))
        elif kind == b"O":
            o = Order.from_json(obj)
            old = self._orders.get(o.key)
            if old is not None and self._by_fix.get(old.cl_ord_id) is old:
                del self._by_fix[old.cl_ord_id]  # re-indexed below: a replace moved it on
            self._orders[o.key] = o
            self._index(o)
            self._next = max(self._next, max(o.nums) + 1)
        elif kind == b"P":
            p = Pending.from_json(obj)
            self._pending[p.num] = p
            self._pending_fix[p.cl_ord_id] = p
            if p.held:
                self._held.add(p.num)
            else:
                self._held.discard(p.num)
            self._next = max(self._next, p.num + 1)
        elif kind == b"U":
            self._orders[int(obj[0])].set_state(obj)  # an unknown order: a KeyError, read as corruption
        elif kind == b"X":
            p = self._pending.pop(int(obj["num"]), None)
            self._held.discard(int(obj["num"]))
            if p is not None and self._pending_fix.get(p.cl_ord_id) is p:
                del self._pending_fix[p.cl_ord_id]
        elif kind == b"E":
            source, created, position = (int(x) for x in obj["w"])
            for k, o in obj["r"]:  # all readable before any is applied: whole or not at all
                if k == "O":
                    Order.from_json(o)
                elif k == "P":
                    Pending.from_json(o)
                elif k == "X":
                    int(o["num"])
                elif k == "U":
                    Order.check_state(o)
                    if o[0] not in self._orders:
                        raise ValueError(f"order state {o!r} of no known order")
                else:
                    raise ValueError(f"record kind {k!r} in an event record")
            for k, o in obj["r"]:
                self._replay(k.encode("ascii"), o)
            self._through[source] = (created, position)
        else:
            raise ValueError(f"unknown record kind {kind!r}")


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _write_synced(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        _write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def _retire(old_fd: int, directory: Path) -> None:
    """After a compaction's rename: close the replaced file (freeing its blocks) and fsync
    the directory (the rename durable)."""
    os.close(old_fd)
    try:
        fsync_directory(directory)
    except OSError as exc:  # the rename stands; only a host crash could undo it now
        log.warning("FIX order book: fsync of %s failed (%s)", directory, exc.strerror)


class _Compaction:
    """An automatic compaction in flight: a thread writes and fsyncs ``data`` to ``tmp``;
    ``after`` collects the records appended to the old file meanwhile."""

    def __init__(self, tmp: Path, data: bytes) -> None:
        self.size = len(data)
        self.after: list[bytes] = []
        self.error: OSError | None = None
        self._thread = threading.Thread(target=self._run, args=(tmp, data), name="fix-book-compaction",
                                        daemon=True)
        self._thread.start()

    def _run(self, tmp: Path, data: bytes) -> None:
        try:
            _write_synced(tmp, data)
        except OSError as exc:
            self.error = exc

    def done(self, wait: bool) -> bool:
        if wait:
            self._thread.join()
        return not self._thread.is_alive()
