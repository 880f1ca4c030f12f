"""Helpers for the market-data tests: a lossy UDP relay, and the engine's book read back.

``Relay`` stands between the publisher and the subscribers: the publisher sends to its port,
and it forwards each packet to every subscriber, dropping and reordering some on purpose for
the subscribers that ask for it (seeded, so a failure repeats). ``engine_replay`` rebuilds the
engine from a data directory's journal (as ``ringex replay`` does) and keeps its output, so
a test can compare a subscriber's book with the engine's, order by order, and the feed's
store with what a fresh translator makes of the same events.
"""

from __future__ import annotations

import random
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ringex.engine.engine import MatchingEngine
from ringex.engine.storage.data_dir import journal_dir
from ringex.engine.storage.journal_reader import JournalReader
from ringex.engine.storage.recovery import record_slots
from ringex.engine.pipeline.engine_agent import read_engine_file
from ringex.engine.wire import messages as m
from ringex.feeds.feed_book import FeedBook
from ringex.feeds.itch_instrument import ItchInstrument
from ringex.feeds.itch_translate import engine_order_id
from ringex.feeds.message_store import MessageStore


@dataclass
class Target:
    address: tuple[str, int]
    drop: float = 0.0  # probability of dropping a packet
    reorder: float = 0.0  # probability of holding a packet back until after the next one
    held: list[bytes] = field(default_factory=list)
    dropped: int = 0


class Relay:
    """A UDP relay on 127.0.0.1 (its ``port``), forwarding to ``targets`` on a thread."""

    def __init__(self, seed: int = 7) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.targets: list[Target] = []
        self.random = random.Random(seed)
        self.packets = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def add(self, address: tuple[str, int], drop: float = 0.0, reorder: float = 0.0) -> Target:
        t = Target(address, drop, reorder)
        with self._lock:
            self.targets.append(t)
        return t

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            self.packets += 1
            with self._lock:
                for t in self.targets:
                    self._forward(t, data)

    def _forward(self, t: Target, data: bytes) -> None:
        r = self.random.random()
        if r < t.drop:
            t.dropped += 1
            return
        if r < t.drop + t.reorder and not t.held:
            t.held.append(data)
            return
        self.out.sendto(data, t.address)
        for h in t.held:
            self.out.sendto(h, t.address)
        t.held.clear()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()
        self.out.close()


def engine_replay(data_dir: Path) -> tuple[MatchingEngine, list[np.ndarray]]:
    """The engine rebuilt from ``data_dir``'s whole journal, and its output, batch by batch."""
    engine = MatchingEngine(read_engine_file(data_dir))
    outputs = [engine.process(record_slots(rec)).copy() for rec in JournalReader(journal_dir(data_dir)).records()]
    return engine, outputs


def engine_book(engine: MatchingEngine, instruments: dict[int, ItchInstrument]) -> list[tuple]:
    """Every resting order as (locate, side, ITCH price, engine orderId, displayed), sorted as
    ``feed_book_rows`` sorts: by stock, side, price, then queue position."""
    rows = []
    for inst, ins in sorted(instruments.items()):
        for side, letter in ((m.Side.Buy, ord("B")), (m.Side.Sell, ord("S"))):
            levels = engine.book(inst, int(side))
            for level in sorted(levels, key=lambda lv: engine.order(lv[0][0])["price"]):
                price = ins.itch_price(engine.order(level[0][0])["price"])
                for oid, displayed, _leaves in level:
                    rows.append((ins.locate, letter, price, oid, displayed))
    return rows


def feed_book_rows(book: FeedBook) -> list[tuple]:
    """A feed book as ``engine_book`` rows (the reference number read back as its orderId)."""
    return [(loc, side, price, engine_order_id(ref), shares) for loc, side, price, ref, shares in book.canonical()]


def store_messages(directory: Path) -> tuple[int, list[bytes]]:
    """The sequence number of the oldest message a feed's store holds, and every message it
    holds from there, in order."""
    store = MessageStore(directory, retain_messages=1 << 40)
    try:
        return store.first_seq, store.read(store.first_seq, store.next_seq - store.first_seq, 1 << 62)
    finally:
        store.close()
