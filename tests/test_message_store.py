"""MessageStore: the publisher's segmented, bounded, file-backed store (ringex.feeds.message_store).

Record layout, from the module docstring: kind u8, length u16 little-endian, payload. A
segment opens with H (session 10 bytes, first sequence number u64), then its checkpoint (T per
stock's trading state, O per resting order in time priority), then M records (one ITCH message
each) closed by a P per append, and Z when the session ended.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from ringex.feeds import itch
from ringex.feeds.feed_book import FeedBook
from ringex.feeds.message_store import MessageStore

S1 = "FEEDA00001"
S2 = "FEEDA00002"
B, S = ord("B"), ord("S")


def records(path: Path) -> list[tuple[bytes, bytes]]:
    """(kind, payload) of every record of a segment file, read from the documented layout."""
    data = path.read_bytes()
    out, at = [], 0
    while at < len(data):
        kind = data[at:at + 1]
        length = int.from_bytes(data[at + 1:at + 3], "little")
        out.append((kind, data[at + 3:at + 3 + length]))
        at += 3 + length
    assert at == len(data)
    return out


def segment_files(d: Path) -> list[str]:
    return sorted(p.name for p in d.glob("store-*.log"))


class Feed:
    """Drives a store as the publisher does: a live book, ITCH messages applied then appended."""

    def __init__(self, store: MessageStore, seed: int = 1) -> None:
        self.store = store
        self.book = FeedBook()
        self.rng = random.Random(seed)
        self.next_ref = 1
        self.ts = 0
        self.position = 0
        self.sent: list[bytes] = []  # every message appended, index = seq - 1

    def message(self) -> bytes:
        rng, book = self.rng, self.book
        self.ts += 1
        live = list(book.orders)
        r = rng.random()
        loc = rng.choice((1, 2))
        if r < 0.05:
            return itch.stock_trading_action(loc, 0, self.ts, "AAA" if loc == 1 else "BBB",
                                             rng.choice((b"T", b"H", b"Q")), "")
        if not live or r < 0.5:
            ref = self.next_ref
            self.next_ref += 1
            return itch.add_order(loc, 0, self.ts, ref, rng.choice((b"B", b"S")), rng.randint(1, 900),
                                  "AAA", rng.choice((9_900, 10_000, 10_100)))
        ref = rng.choice(live)
        o = book.orders[ref]
        if r < 0.65:
            return itch.order_executed(o.locate, 0, self.ts, ref, rng.randint(1, o.shares), self.ts)
        if r < 0.75:
            return itch.order_cancel(o.locate, 0, self.ts, ref, rng.randint(1, o.shares))
        if r < 0.85:
            return itch.order_delete(o.locate, 0, self.ts, ref)
        new = self.next_ref
        self.next_ref += 1
        return itch.order_replace(o.locate, 0, self.ts, ref, new, rng.randint(1, 900),
                                  rng.choice((9_900, 10_000, 10_100)))

    def append(self, n: int, emptied: dict[int, int] | None = None) -> int:
        batch = []
        for _ in range(n):
            m = self.message()
            self.book.apply(itch.decode(m))
            batch.append(m)
        self.position += 7
        first = self.store.append(batch, 3, self.position, emptied or {}, self.position * 10, self.book)
        assert first == len(self.sent) + 1
        self.sent += batch
        return first


def replayed(rec) -> FeedBook:
    book = rec.book
    for m in rec.book_messages:
        book.apply(itch.decode(m))
    return book


def assert_same_book(a: FeedBook, b: FeedBook) -> None:
    assert a.canonical() == b.canonical()
    assert a.states == b.states
    for loc in (1, 2):
        for side in (B, S):
            assert a.depth(loc, side, 100) == b.depth(loc, side, 100)


@pytest.fixture
def stores():
    opened: list[MessageStore] = []

    def open_store(d: Path, retain: int = 1_000_000, segment: int = 1 << 20) -> MessageStore:
        s = MessageStore(d, retain, segment_messages=segment)
        opened.append(s)
        return s

    yield open_store
    for s in opened:
        s.close()


# -- append / read -------------------------------------------------------------------------------

def test_empty_store(tmp_path, stores):
    s = stores(tmp_path)
    rec = s.recovered
    assert (rec.session, rec.next_seq, rec.ended, rec.position, rec.cut_bytes) == ("", 1, False, -1, 0)
    assert s.next_seq == 1 and s.first_seq == 1 and s.session == ""
    assert s.read(1, 10, 10_000) == []


def test_start_session_then_append_and_read_back(tmp_path, stores):
    s = stores(tmp_path)
    s.start_session(S1, FeedBook())
    assert s.session == S1 and s.next_seq == 1
    batches = [[b"a" * 3, b"bb"], [b"c" * 10], [b"", b"dd", b"e" * 40]]
    seq = 1
    for b in batches:
        assert s.append(b, 1, seq, {}, 0, FeedBook()) == seq
        seq += len(b)
    flat = [m for b in batches for m in b]
    assert s.next_seq == len(flat) + 1
    for first in range(1, len(flat) + 1):
        assert s.read(first, 100, 10_000) == flat[first - 1:]
    assert s.read(2, 3, 10_000) == flat[1:4]
    assert s.read(1, 1, 10_000) == flat[:1]
    assert s.read(1, 0, 10_000) == []


def test_read_respects_max_bytes_counting_two_length_bytes_each(tmp_path, stores):
    s = stores(tmp_path)
    s.start_session(S1, FeedBook())
    m = [b"x" * 10, b"y" * 20, b"z" * 5, b"w" * 1]  # sizes on the wire: 12, 22, 7, 3
    s.append(m, 1, 1, {}, 0, FeedBook())
    assert s.read(1, 10, 12) == m[:1]
    assert s.read(1, 10, 11) == []
    assert s.read(1, 10, 33) == m[:1]
    assert s.read(1, 10, 34) == m[:2]
    assert s.read(1, 10, 41) == m[:3]
    assert s.read(1, 10, 44) == m
    assert s.read(1, 10, 43) == m[:3]
    assert s.read(2, 2, 1000) == m[1:3]
    assert s.read(3, 10, 10) == m[2:4]
    assert s.read(3, 10, 9) == m[2:3]


def test_read_outside_the_retained_range_is_empty(tmp_path, stores):
    s = stores(tmp_path)
    s.start_session(S1, FeedBook())
    s.append([b"a", b"b"], 1, 1, {}, 0, FeedBook())
    assert s.read(3, 1, 1000) == []
    assert s.read(100, 1, 1000) == []
    assert s.read(0, 1, 1000) == []
    assert s.read(-5, 1, 1000) == []


def test_read_spans_segments(tmp_path, stores):
    s = stores(tmp_path, segment=3)
    feed = Feed(s)
    s.start_session(S1, feed.book)
    for _ in range(5):
        feed.append(2)
    assert len(segment_files(tmp_path)) > 2
    assert s.read(1, 100, 100_000) == feed.sent
    assert s.read(2, 6, 100_000) == feed.sent[1:7]


# -- reopen ----------------------------------------------------------------------------------------

def test_reopen_recovers_where_the_last_append_left_off(tmp_path, stores):
    s = stores(tmp_path)
    feed = Feed(s)
    s.start_session(S1, feed.book)
    for n in (3, 1, 5, 2):
        feed.append(n, emptied={10: 1, 20: 2})
    feed.append(4, emptied={5: 9, 6: 8, 7: 7})
    s.close()
    r = stores(tmp_path)
    rec = r.recovered
    assert rec.session == S1 and r.session == S1
    assert rec.next_seq == r.next_seq == len(feed.sent) + 1
    assert rec.ring_id == 3 and rec.position == feed.position
    assert rec.emptied == {5: 9, 6: 8, 7: 7}
    assert rec.emptied_seq == feed.position * 10
    assert not rec.ended and rec.cut_bytes == 0
    assert rec.book_messages == feed.sent
    assert_same_book(replayed(rec), feed.book)
    assert r.read(1, 1000, 1 << 20) == feed.sent
    # Appending after the reopen continues the numbering.
    feed.store = r
    assert feed.append(2) == rec.next_seq
    assert r.read(rec.next_seq, 10, 10_000) == feed.sent[-2:]


def test_reopen_right_after_start_session(tmp_path, stores):
    s = stores(tmp_path)
    book = FeedBook()
    book.add(5, 1, B, 100, 10_000)
    book.add(6, 2, S, 50, 10_100)
    book.states[1] = b"H"
    s.start_session(S1, book)
    s.close()
    rec = stores(tmp_path).recovered
    assert rec.session == S1 and rec.next_seq == 1 and rec.position == -1 and rec.book_messages == []
    assert_same_book(rec.book, book)


def test_reopen_recovers_the_book_across_segment_rolls(tmp_path, stores):
    s = stores(tmp_path, segment=7)
    feed = Feed(s, seed=5)
    s.start_session(S1, feed.book)
    for i in range(20):
        feed.append(1 + i % 4)
    s.close()
    r = stores(tmp_path, segment=7)
    rec = r.recovered
    assert rec.next_seq == len(feed.sent) + 1 and rec.position == feed.position
    # The newest segment's messages only, on top of its checkpoint.
    newest = r.segments[-1]
    assert rec.book_messages == feed.sent[newest.first_seq - 1:]
    assert_same_book(replayed(rec), feed.book)
    assert r.read(1, 10_000, 1 << 20) == feed.sent


def test_reopen_right_after_a_roll(tmp_path, stores):
    s = stores(tmp_path, segment=4)
    feed = Feed(s, seed=9)
    s.start_session(S1, feed.book)
    feed.append(4, emptied={1: 2})  # fills the segment: the next one starts now
    assert len(segment_files(tmp_path)) == 2
    s.close()
    rec = stores(tmp_path, segment=4).recovered
    assert rec.next_seq == 5 and rec.book_messages == []
    assert rec.position == feed.position and rec.emptied == {1: 2} and rec.ring_id == 3
    assert_same_book(rec.book, feed.book)


def test_end_session_is_recovered_as_ended(tmp_path, stores):
    s = stores(tmp_path)
    feed = Feed(s)
    s.start_session(S1, feed.book)
    feed.append(3)
    s.end_session()
    s.close()
    r = stores(tmp_path)
    rec = r.recovered
    assert rec.ended and rec.session == S1 and rec.next_seq == 4 and rec.cut_bytes == 0
    assert rec.position == feed.position
    assert r.read(1, 10, 10_000) == feed.sent


# -- torn tails ------------------------------------------------------------------------------------

def torn_setup(tmp_path, stores):
    s = stores(tmp_path)
    feed = Feed(s, seed=3)
    s.start_session(S1, feed.book)
    path = tmp_path / "store-000000000001.log"
    sizes, books, positions, counts = [], [], [], []
    for n in (2, 3, 4):
        feed.append(n)
        sizes.append(path.stat().st_size)
        snap = FeedBook()
        for ref, o in feed.book.in_priority():
            snap.add(ref, o.locate, o.side, o.shares, o.price)
        snap.states.update(feed.book.states)
        books.append(snap)
        positions.append(feed.position)
        counts.append(len(feed.sent))
    s.close()
    return feed, path, sizes, books, positions, counts


@pytest.mark.parametrize("cut", [1, 5, 13, 30])
def test_truncated_tail_is_cut_on_reopen(tmp_path, stores, cut):
    feed, path, sizes, books, positions, counts = torn_setup(tmp_path, stores)
    with open(path, "r+b") as f:
        f.truncate(sizes[-1] - cut)  # mid-record of the last append
    r = stores(tmp_path)
    rec = r.recovered
    assert rec.cut_bytes == sizes[-1] - cut - sizes[-2] > 0
    assert path.stat().st_size == sizes[-2]
    assert rec.next_seq == r.next_seq == counts[-2] + 1
    assert rec.position == positions[-2]
    assert rec.book_messages == feed.sent[:counts[-2]]
    assert_same_book(replayed(rec), books[-2])
    assert r.read(1, 100, 100_000) == feed.sent[:counts[-2]]
    assert r.read(counts[-2] + 1, 100, 100_000) == []
    # Appending after the cut works, and survives another reopen.
    again = [itch.system_event(0, 0, 1, b"O"), itch.system_event(0, 0, 2, b"S")]
    assert r.append(again, 4, 999, {}, 0, FeedBook()) == counts[-2] + 1
    r.close()
    r2 = stores(tmp_path)
    assert r2.recovered.cut_bytes == 0
    assert r2.recovered.next_seq == counts[-2] + 3 and r2.recovered.position == 999
    assert r2.read(1, 100, 100_000) == feed.sent[:counts[-2]] + again


def test_corrupt_last_batch_fails_its_crc_and_is_cut(tmp_path, stores):
    feed, path, sizes, books, positions, counts = torn_setup(tmp_path, stores)
    data = bytearray(path.read_bytes())
    # The last batch starts at sizes[-2] with an M record: kind, length(2), then the message.
    assert data[sizes[-2]:sizes[-2] + 1] == b"M"
    data[sizes[-2] + 3 + 5] ^= 0x40  # a byte inside its first message
    path.write_bytes(bytes(data))
    r = stores(tmp_path)
    rec = r.recovered
    assert rec.cut_bytes == sizes[-1] - sizes[-2]
    assert path.stat().st_size == sizes[-2]
    assert rec.next_seq == counts[-2] + 1 and rec.position == positions[-2]
    assert_same_book(replayed(rec), books[-2])
    assert r.read(1, 100, 100_000) == feed.sent[:counts[-2]]
    feed.store = r
    feed.sent = feed.sent[:counts[-2]]
    feed.book = rec.book  # replayed above: the book as of the last complete append
    assert feed.append(1) == counts[-2] + 1
    assert r.read(1, 100, 100_000) == feed.sent


def test_corrupt_middle_batch_cuts_from_there(tmp_path, stores):
    feed, path, sizes, books, positions, counts = torn_setup(tmp_path, stores)
    data = bytearray(path.read_bytes())
    data[sizes[0] + 3 + 2] ^= 0x01
    path.write_bytes(bytes(data))
    rec = stores(tmp_path).recovered
    assert rec.cut_bytes == sizes[-1] - sizes[0]
    assert rec.next_seq == counts[0] + 1 and rec.position == positions[0]
    assert_same_book(replayed(rec), books[0])


def test_trailing_garbage_after_a_complete_append_is_cut(tmp_path, stores):
    feed, path, sizes, books, positions, counts = torn_setup(tmp_path, stores)
    with open(path, "ab") as f:
        f.write(b"M\x05\x00ab")  # a record that claims more than is there
    rec = stores(tmp_path).recovered
    assert rec.cut_bytes == 5
    assert rec.next_seq == counts[-1] + 1
    assert path.stat().st_size == sizes[-1]


# -- segments and retention -----------------------------------------------------------------------

def test_each_segment_opens_with_a_header_and_a_checkpoint_of_the_book(tmp_path, stores):
    s = stores(tmp_path, segment=5)
    feed = Feed(s, seed=11)
    start = FeedBook()
    start.add(1000, 1, B, 10, 10_000)
    start.states[2] = b"H"
    feed.book = start
    feed.next_ref = 1001
    s.start_session(S1, start)
    checkpoints: dict[int, tuple[list, dict]] = {
        1: ([(r, o.locate, o.side, o.shares, o.price) for r, o in start.in_priority()], dict(start.states))}
    for i in range(12):
        feed.append(1 + i % 3)
        if s.segments[-1].first_seq not in checkpoints:
            checkpoints[s.segments[-1].first_seq] = (
                [(r, o.locate, o.side, o.shares, o.price) for r, o in feed.book.in_priority()],
                dict(feed.book.states))
    files = segment_files(tmp_path)
    assert files == [f"store-{first:012d}.log" for first in sorted(checkpoints)]
    for first, (orders, states) in checkpoints.items():
        recs = records(tmp_path / f"store-{first:012d}.log")
        kind, payload = recs[0]
        assert kind == b"H" and len(payload) == 18
        assert payload[:10] == S1.encode() and int.from_bytes(payload[10:18], "little") == first
        i = 1
        got_states = {}
        while recs[i][0] == b"T":
            p = recs[i][1]
            assert len(p) == 3
            got_states[int.from_bytes(p[0:2], "little")] = p[2:3]
            i += 1
        got_orders = []
        while recs[i][0] == b"O":
            p = recs[i][1]
            assert len(p) == 8 + 2 + 1 + 4 + 4
            got_orders.append((int.from_bytes(p[0:8], "little"), int.from_bytes(p[8:10], "little"), p[10],
                               int.from_bytes(p[11:15], "little"), int.from_bytes(p[15:19], "little")))
            i += 1
        assert got_orders == orders
        assert got_states == states
        # Then messages, numbered from the segment's first.
        ms = [p for k, p in recs[i:] if k == b"M"]
        assert ms == feed.sent[first - 1:first - 1 + len(ms)]
        assert all(k in (b"M", b"P") for k, _ in recs[i:])
        assert recs[-1][0] == b"P"


def test_retention_drops_whole_oldest_segments_keeping_at_least_retain(tmp_path, stores):
    seg, retain = 4, 10
    s = stores(tmp_path, retain=retain, segment=seg)
    feed = Feed(s, seed=2)
    s.start_session(S1, feed.book)
    dropped_any = False
    for _ in range(60):
        feed.append(1)
        total = s.next_seq - 1
        first = s.first_seq
        retained = s.next_seq - first
        assert retained >= min(retain, total)
        assert (first - 1) % seg == 0  # whole segments only
        # No more than needed: without the oldest segment, fewer than retain would be left.
        if len(s.segments) > 1:
            assert s.next_seq - s.segments[1].first_seq < retain + seg
        if first > 1:
            dropped_any = True
            assert s.read(first - 1, 1, 10_000) == []
            assert s.read(1, 1, 10_000) == []
        assert s.read(first, 10_000, 1 << 20) == feed.sent[first - 1:]
        assert segment_files(tmp_path) == [f"store-{x.first_seq:012d}.log" for x in s.segments]
    assert dropped_any
    assert len(s.segments) <= (retain + 2 * seg) // seg + 1
    s.close()
    r = stores(tmp_path, retain=retain, segment=seg)
    assert r.first_seq == s.first_seq and r.next_seq == s.next_seq
    assert r.read(r.first_seq, 10_000, 1 << 20) == feed.sent[r.first_seq - 1:]
    assert_same_book(replayed(r.recovered), feed.book)


def test_retention_keeps_a_retain_sized_window_at_each_roll(tmp_path, stores):
    s = stores(tmp_path, retain=8, segment=4)
    s.start_session(S1, FeedBook())
    for i in range(1, 41):
        s.append([bytes([i])], 1, i, {}, 0, FeedBook())
        if i % 4 == 0:  # just rolled: segments [.., i+1 (empty)]
            # Messages 1..i exist; at least 8 retained, and dropping the oldest would leave < 8.
            assert s.next_seq - s.first_seq >= min(8, i)
            assert s.first_seq == max(1, i - 8 + 1)


def test_start_session_removes_the_previous_sessions_segments(tmp_path, stores):
    s = stores(tmp_path, segment=2)
    feed = Feed(s)
    s.start_session(S1, feed.book)
    for _ in range(3):
        feed.append(2)
    assert len(segment_files(tmp_path)) == 4
    s.end_session()
    s.start_session(S2, feed.book)
    assert s.session == S2 and s.next_seq == 1 and s.first_seq == 1
    assert segment_files(tmp_path) == ["store-000000000001.log"]
    recs = records(tmp_path / "store-000000000001.log")
    assert recs[0] == (b"H", S2.encode() + (1).to_bytes(8, "little"))
    assert s.read(1, 10, 10_000) == []
    m = [itch.system_event(0, 0, 5, b"O")]
    assert s.append(m, 9, 1, {}, 0, feed.book) == 1
    assert s.read(1, 10, 10_000) == m
    s.close()
    r = stores(tmp_path, segment=2)
    rec = r.recovered
    assert rec.session == S2 and rec.next_seq == 2 and not rec.ended and rec.position == 1
    assert r.read(1, 10, 10_000) == m
    assert_same_book(replayed(rec), feed.book)


def test_start_session_when_retention_already_dropped_the_first_segment(tmp_path, stores):
    s = stores(tmp_path, retain=2, segment=2)
    feed = Feed(s)
    s.start_session(S1, feed.book)
    for _ in range(4):
        feed.append(2)
    assert "store-000000000001.log" not in segment_files(tmp_path)
    s.start_session(S2, feed.book)
    assert segment_files(tmp_path) == ["store-000000000001.log"]
    assert s.session == S2 and s.next_seq == 1
    assert s.append([b"x"], 1, 1, {}, 0, feed.book) == 1
    assert s.read(1, 10, 1000) == [b"x"]


def test_start_session_after_reopen_of_an_ended_session(tmp_path, stores):
    """The publisher's restart after a clean stop: reopen, see ``ended``, start the next session."""
    s = stores(tmp_path)
    s.start_session(S1, FeedBook())
    s.append([b"one", b"two"], 1, 2, {}, 0, FeedBook())
    s.end_session()
    s.close()
    r = stores(tmp_path)
    assert r.recovered.ended
    r.start_session(S2, FeedBook())
    assert r.append([b"new"], 1, 3, {}, 0, FeedBook()) == 1
    assert r.read(1, 10, 10_000) == [b"new"]
    r.close()
    r2 = stores(tmp_path)
    assert r2.recovered.session == S2 and r2.recovered.next_seq == 2 and not r2.recovered.ended
    assert r2.read(1, 10, 10_000) == [b"new"]


def test_start_session_rejects_a_session_that_is_not_ten_bytes(tmp_path, stores):
    s = stores(tmp_path)
    with pytest.raises(ValueError):
        s.start_session("SHORT", FeedBook())


# -- segments that are not whole -------------------------------------------------------------------

@pytest.mark.parametrize("content", [b"", b"garbage", b"H\x05\x00abcde", b"M\x01\x00x"])
def test_a_segment_without_a_valid_header_is_removed_on_open(tmp_path, stores, content):
    s = stores(tmp_path)
    feed = Feed(s)
    s.start_session(S1, feed.book)
    feed.append(3)
    s.close()
    bad = tmp_path / "store-000000000000.log"  # sorts first
    bad.write_bytes(content)
    r = stores(tmp_path)
    assert not bad.exists()
    assert segment_files(tmp_path) == ["store-000000000001.log"]
    rec = r.recovered
    assert rec.session == S1 and rec.next_seq == 4 and rec.position == feed.position
    assert r.read(1, 10, 10_000) == feed.sent
    assert_same_book(replayed(rec), feed.book)


@pytest.mark.parametrize("content", [b"", b"garbage"])
def test_a_newest_segment_without_a_valid_header_is_removed_and_the_book_recovered(tmp_path, stores, content):
    """E.g. a segment file left empty by a host crash right after a roll: it goes, and the
    segment before it (now the newest) is the recovery point: its checkpoint and messages."""
    s = stores(tmp_path, segment=3)
    feed = Feed(s, seed=4)
    s.start_session(S1, feed.book)
    for _ in range(4):
        feed.append(2)
    s.close()
    names = segment_files(tmp_path)
    bad = tmp_path / "store-999999999999.log"  # sorts last
    bad.write_bytes(content)
    r = stores(tmp_path, segment=3)
    assert not bad.exists()
    assert segment_files(tmp_path) == names
    rec = r.recovered
    assert rec.session == S1 and rec.next_seq == len(feed.sent) + 1 and rec.position == feed.position
    assert rec.book_messages == feed.sent[r.segments[-1].first_seq - 1:]
    assert_same_book(replayed(rec), feed.book)
