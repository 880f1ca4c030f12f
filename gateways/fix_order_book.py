"""One FIX session's persistent order book: FIX ClOrdID <-> engine clOrdId/orderId, report state.

``OrderBook`` keeps what ``fix_orders`` needs to map engine events back to a session's FIX
orders and requests (``Order``, ``Pending``), in memory and in a file that survives a
restart.

``fix-orders`` file (one per FIX session, path given to ``OrderBook``)::

    header   0  magic     u32  "RXFO"
             4  version   u32  1
             8  (reserved to 16)
    record   0  length    u32  payload bytes (1 .. MAX_RECORD)
             4  crc32     u32  of the payload (zlib.crc32)
             8  payload   kind (1 ASCII byte) then compact JSON (ints and ASCII strings only)

    kinds    N  {"next": n}             the next engine clOrdId to allocate (first record
                                        after a compaction)
             O  {order state}           an order's whole state; the last one for its "key"
                                        (its first engine clOrdId) wins
             P  {pending request}       a cancel, replace or mass cancel sent to the engine
             X  {"num": n}              that pending request got its answer

Crash semantics. Records are appended with one ``write`` each and not fsynced: a process
crash loses nothing the kernel has, a host crash loses the tail (as the session store's
flow). On open the records are replayed in order and the file is cut at the first torn or
corrupted one (length zero or past the end, CRC mismatch, unreadable JSON): ``cut_bytes``
says how much went. A file with another magic or version raises ``OrderBookError``; a file
shorter than the header that is a prefix of ours (a crash during creation) starts empty.
Compaction (``compact()``, also automatic when the file grows past ``compact_bytes`` and
twice its size after the last compaction) writes the ``N`` record, the live orders, the
orders a pending request names, and the pending requests to ``<path>.tmp``, fsyncs it,
renames it over the file and fsyncs the directory: a crash leaves the old file or the new
one, never a mix. Terminal orders (Filled, Canceled, Rejected, Expired) are dropped by it,
from memory as well: afterwards an OrderStatusRequest for one answers "unknown order" and
its ClOrdID (already reusable, being terminal) is forgotten. Losing the file altogether
restarts the engine clOrdId numbering at 1; the engine does not need clOrdIds to be
unique, but events of the session's older live orders could then be attributed wrongly:
do not delete the file while the session has live orders.
"""

from __future__ import annotations

import json
import os
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ringex.engine.storage.fsync import fsync_directory

__all__ = [
    "Order",
    "OrderBook",
    "OrderBookError",
    "Pending",
]

# OrdStatus 39 values an Order has; Filled, Canceled, Rejected and Expired are terminal
S_NEW, S_PARTIAL, S_FILLED, S_CANCELED, S_REJECTED, S_EXPIRED, S_PENDING_NEW = b"0", b"1", b"2", b"4", b"8", b"C", b"A"
TERMINAL = frozenset({S_FILLED, S_CANCELED, S_REJECTED, S_EXPIRED})


class OrderBookError(RuntimeError):
    """The order book file is not ours (wrong magic or version)."""


MAGIC = 0x4F465852  # "RXFO" little-endian
VERSION = 1
HEADER = struct.Struct("<II8x")
RECORD = struct.Struct("<II")
MAX_RECORD = 1 << 16


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
    """A cancel, replace or mass cancel sent to the engine and not yet answered."""

    num: int  # the request's engine clOrdId
    kind: str  # "cancel", "replace", "mass"
    cl_ord_id: bytes
    key: int = 0  # the target order's key (cancel, replace)
    params: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"num": self.num, "kind": self.kind, "cl_ord_id": self.cl_ord_id.decode("ascii"),
                "key": self.key, "params": self.params}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Pending:
        return cls(d["num"], d["kind"], d["cl_ord_id"].encode("ascii"), d["key"], d["params"])


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
        self._by_num: dict[int, Order] = {}
        self._by_fix: dict[bytes, Order] = {}
        self._pending: dict[int, Pending] = {}
        self._pending_fix: dict[bytes, Pending] = {}
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
        for p in self._pending.values():
            if p.key == o.key and p.kind in ("cancel", "replace"):
                return p
        return None

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
        self._append(b"O", o.to_json())

    def add_pending(self, p: Pending) -> None:
        self._pending[p.num] = p
        self._pending_fix[p.cl_ord_id] = p
        self._append(b"P", p.to_json())

    def drop_pending(self, num: int) -> Pending | None:
        p = self._pending.pop(num, None)
        if p is not None:
            if self._pending_fix.get(p.cl_ord_id) is p:
                del self._pending_fix[p.cl_ord_id]
            self._append(b"X", {"num": num})
        return p

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> OrderBook:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def compact(self) -> None:
        """Rewrite the file with only what is still needed (module docstring); drops terminal
        orders that no pending request names, from memory too."""
        needed = {p.key for p in self._pending.values()}
        keep = [o for o in self._orders.values() if o.live or o.key in needed]
        tmp = self.path.with_name(self.path.name + ".tmp")
        chunks = [HEADER.pack(MAGIC, VERSION), self._record(b"N", {"next": self._next})]
        chunks += [self._record(b"O", o.to_json()) for o in keep]
        chunks += [self._record(b"P", p.to_json()) for p in self._pending.values()]
        data = b"".join(chunks)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        fsync_directory(self.path.parent)
        self.close()
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        self._size = len(data)
        self._threshold = max(self.compact_bytes, 2 * self._size)
        self._orders, self._by_num, self._by_fix = {}, {}, {}
        for o in keep:
            self._orders[o.key] = o
            self._index(o)

    # -- internals
    def _index(self, o: Order) -> None:
        for n in o.nums:
            self._by_num[n] = o
        for c in (*o.chain, o.cl_ord_id):
            self._by_fix[c] = o

    @staticmethod
    def _record(kind: bytes, obj: dict[str, Any]) -> bytes:
        payload = kind + json.dumps(obj, separators=(",", ":"), sort_keys=True).encode("ascii")
        if len(payload) > MAX_RECORD:
            raise OrderBookError(f"record of {len(payload)} bytes is over {MAX_RECORD}")
        return RECORD.pack(len(payload), zlib.crc32(payload)) + payload

    def _append(self, kind: bytes, obj: dict[str, Any]) -> None:
        rec = self._record(kind, obj)
        os.write(self._fd, rec)
        self._size += len(rec)
        if self._size > self._threshold:
            self.compact()

    def _open(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            with os.fdopen(os.dup(fd), "rb") as f:
                data = f.read()
            header = HEADER.pack(MAGIC, VERSION)
            if len(data) < HEADER.size:
                if data != header[: len(data)]:
                    raise OrderBookError(f"{self.path} is not a FIX order book file")
                os.ftruncate(fd, 0)
                os.pwrite(fd, header, 0)
                data = header
            magic, version = HEADER.unpack_from(data)
            if magic != MAGIC:
                raise OrderBookError(f"{self.path} is not a FIX order book file (magic {magic:#x})")
            if version != VERSION:
                raise OrderBookError(f"{self.path}: order book file version {version}, expected {VERSION}")
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
            self._next = max(self._next, p.num + 1)
        elif kind == b"X":
            p = self._pending.pop(int(obj["num"]), None)
            if p is not None and self._pending_fix.get(p.cl_ord_id) is p:
                del self._pending_fix[p.cl_ord_id]
        else:
            raise ValueError(f"unknown record kind {kind!r}")
