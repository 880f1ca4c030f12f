"""The compiled FIX framing and validation (``fix_scan.scan``) against the Python path it
stands in for: ``FixReader``'s framing and ``passes_validation``, on thousands of valid,
damaged and re-framed messages. The messages are written here field by field, as the
specification lays them out (test_fix_codec's ``frame``), not by our encoder."""

from __future__ import annotations

import random

import numpy as np
import pytest

from ringex.gateways import fix_scan as fs
from ringex.gateways.fix_codec import FixMessage, FixReader, parse_utc_timestamp, passes_validation
from test_fix_codec import VALID, Fields, damaged_stream, frame, frame_body, pieces, reader_key

SENDER, TARGET = b"CLIENT", b"RINGEX"

# values that test each check's edges: formats, sets, timestamps (leap years, seconds)
ODD_VALUES = [b"", b"0", b"-0", b"00", b"-", b".", b"-.5", b"5.", b"1.2.3", b"1e5", b" 1", b"+1", b"Y", b"N",
              b"y", b"6", b"E", b"6 E", b"6  E", b"E ", b" E", b"6E", b"1", b"2", b"3", b"4", b"5", b"7", b"8",
              b"A", b"12", b"\xff", b"20240229-12:00:00", b"20230229-12:00:00", b"21000229-00:00:00",
              b"20000229-00:00:00", b"20240102-24:00:00", b"20240102-23:60:00", b"20231231-23:59:60",
              b"20231231-23:59:61", b"20240102-03:04:05.1", b"20240102-03:04:05.12345", b"20240102-03:04:05.000007",
              b"00000101-00:00:00", b"20241301-00:00:00", b"20240100-00:00:00", b"20240431-00:00:00",
              b"2024010203:04:05", b"20240102-03-04-05", b"99999999999999999999", b"123456789012345678"]
ODD_TAGS = [0, 1, 8, 9, 10, 11, 34, 35, 43, 49, 52, 56, 99, 122, 9999, 7928, 123456789]


def _scan(data: bytes, limit: int = 8192, sender: bytes = SENDER, target: bytes = TARGET,
          rows: int = 64, fields: int = 4096) -> tuple[int, int, np.ndarray, np.ndarray]:
    msgs = np.zeros((rows, fs.MESSAGE_WORDS), np.int64)
    flds = np.zeros((fields, fs.FIELD_WORDS), np.int64)
    buf = np.frombuffer(data, np.uint8)
    n, used = fs.scan(buf, len(buf), limit, np.frombuffer(sender, np.uint8), np.frombuffer(target, np.uint8),
                      msgs, flds)
    return n, used, msgs, flds


def _python(data: bytes, limit: int = 8192) -> tuple[list[FixMessage], int]:
    """What FixReader's run of good messages takes from the front of ``data``."""
    reader = FixReader(limit)
    out: list = []
    reader._buf += data
    reader._take_good(out)
    return out, len(data) - reader.pending


def _same(data: bytes, limit: int = 8192) -> tuple[int, int]:
    """Assert that scan and the Python path agree on ``data``; returns (messages, valid)."""
    n, used, msgs, flds = _scan(data, limit)
    expected, taken = _python(data, limit)
    assert (n, used) == (len(expected), taken), data
    valid = 0
    for row, msg in zip(msgs[:n], expected):
        raw = data[row[fs.M_START]:row[fs.M_END]]
        assert raw == msg.raw
        fields = [(int(t), raw[a - row[fs.M_START]:b - row[fs.M_START]])
                  for t, a, b in flds[row[fs.M_FIELD_FROM]:row[fs.M_FIELD_FROM] + row[fs.M_FIELD_COUNT]]]
        texts = [f.partition(b"=")[0] for f in raw[:-1].split(b"\x01")]
        assert [v for _, v in fields] == [v for _, v in msg.fields]
        assert [t for t, _ in fields] == [t if x.isdigit() and len(x) <= 18 else -1
                                          for (t, _), x in zip(msg.fields, texts)]
        ok = passes_validation(msg)
        huge_seq = len(msg.get(34) or b"") > 18  # the one case left to the Python path to call valid
        assert bool(row[fs.M_VALID]) == (ok and not huge_seq), raw
        t = msg.msg_type
        assert row[fs.M_TYPE] == (fs.MSG_TYPES.index(t) if t in fs.MSG_TYPES and fields[2][0] == 35 else -1) \
            or not ok
        if row[fs.M_VALID]:
            valid += 1
            first = msg.fields_by_tag
            assert row[fs.M_SEQ] == msg.seq_num
            assert row[fs.M_SENT_NS] == parse_utc_timestamp(first[52])
            assert row[fs.M_POSS_DUP] == (43 in first)
            assert row[fs.M_COMP_OK] == (first[49] == SENDER and first[56] == TARGET)
    return n, valid


def _refield(fields: Fields, rng: random.Random) -> Fields:
    """One field-level change: a value, a tag, a field dropped, repeated or moved."""
    out = list(fields)
    k = rng.randrange(6)
    i = rng.randrange(len(out))
    if k == 0:
        out[i] = (out[i][0], rng.choice(ODD_VALUES))
    elif k == 1:
        out[i] = (rng.choice(ODD_TAGS), out[i][1])
    elif k == 2:
        del out[i]
    elif k == 3:
        out.insert(rng.randrange(len(out) + 1), out[i])
    elif k == 4:
        out.insert(rng.randrange(len(out) + 1), out.pop(i))
    else:
        out.insert(rng.randrange(len(out) + 1), (rng.choice(ODD_TAGS), rng.choice(ODD_VALUES)))
    return out


def test_every_valid_message_is_known_valid() -> None:
    for fields in VALID:
        n, valid = _same(frame(fields))
        assert (n, valid) == (1, 1), fields


def test_validation_agrees_with_the_python_checks() -> None:
    """Thousands of messages with fields changed, then framed properly: the compiled checks
    say valid exactly where passes_validation does (and read MsgSeqNum, SendingTime,
    PossDupFlag and the CompIDs as the Python path would)."""
    rng = random.Random(7)
    framed = valid = 0
    for _ in range(6000):
        fields = rng.choice(VALID)
        for _ in range(rng.choice((1, 1, 2, 3))):
            if len(fields) > 1:
                fields = _refield(fields, rng)
        try:
            data = frame(fields)
        except Exception:
            continue
        n, v = _same(data)
        framed += n
        valid += v
    assert framed > 5000 and 300 < valid < framed - 1000


def test_framing_agrees_with_the_reader_on_damaged_streams() -> None:
    """Good and damaged messages back to back (bytes flipped, cut, doubled; fields dropped
    or repeated without framing again): the same run of messages, to the same byte."""
    rng = random.Random(11)
    goods = [frame(f) for f in VALID]
    for _ in range(2000):
        stream = damaged_stream(rng, goods, 0.85)
        _same(stream, limit=rng.choice((400, 8192)))
        _same(stream[:rng.randrange(len(stream) + 1)])


@pytest.mark.parametrize("body_length,checksum", [(b"9999", None), (b"x1", None), (b"", None), (None, b"999"),
                                                   (None, b"1a3"), (None, b"12"), (b"0000000001", None)])
def test_badly_framed_messages_are_left_to_the_reader(body_length: bytes | None, checksum: bytes | None) -> None:
    good = frame(VALID[0])
    bad = frame(VALID[1], body_length=body_length, checksum=checksum)
    n, used, _, _ = _scan(good + bad + good)
    assert (n, used) == (1, len(good))
    _same(good + bad + good)


def test_a_message_hiding_a_second_one_is_left_to_the_reader() -> None:
    # a BodyLength that claims the next message too: a checksum field, then "8=FIX", inside it
    outer = frame_body(b"35=0\x0149=CLIENT\x0156=RINGEX\x0134=1\x0152=20240102-03:04:05\x0110=000\x01"
                       + frame(VALID[0]))
    assert _scan(outer)[:2] == (0, 0)
    _same(outer)


def test_a_field_without_equals_stops_the_run() -> None:
    good = frame(VALID[0])
    bad = frame_body(b"35=0\x0149=CLIENT\x0156=RINGEX\x0134=2\x01junk\x0152=20240102-03:04:05\x01")
    assert _scan(good + bad)[:2] == (1, len(good))
    _same(good + bad)


def test_rows_and_fields_bound_one_call() -> None:
    stream = b"".join(frame(VALID[0]) for _ in range(10))
    assert _scan(stream, rows=3)[0] == 3
    per = len(FixMessage(frame(VALID[0])).fields)
    n, used, _, _ = _scan(stream, fields=per * 4 + per - 1)
    assert n == 4 and used == 4 * len(frame(VALID[0]))


def test_comp_ids_must_be_the_sessions() -> None:
    data = frame(VALID[0])
    assert _scan(data)[2][0, fs.M_COMP_OK] == 1
    assert _scan(data, sender=b"OTHER")[2][0, fs.M_COMP_OK] == 0
    assert _scan(data, target=b"RINGEX2")[2][0, fs.M_COMP_OK] == 0
    assert _scan(data, sender=b"", target=b"")[2][0, fs.M_COMP_OK] == 0


def test_timestamps_as_the_python_parser_reads_them() -> None:
    rng = random.Random(3)
    base = 1_704_164_645_000_000_000
    for _ in range(500):
        ns = base + rng.randrange(-10**17, 10**17)
        second, sub = divmod(ns, 10**9)
        import datetime
        d = datetime.datetime.fromtimestamp(second, datetime.timezone.utc)
        text = d.strftime("%Y%m%d-%H:%M:%S").encode() + rng.choice([b"", b".%03d" % (sub // 10**6),
                                                                      b".%06d" % (sub // 1000)])
        fields = [(35, "0"), (49, "CLIENT"), (56, "RINGEX"), (34, 1), (52, text)]
        n, _, msgs, _ = _scan(frame(fields))
        assert n == 1 and msgs[0, fs.M_VALID] == 1
        assert msgs[0, fs.M_SENT_NS] == parse_utc_timestamp(text)


def test_feed_scanned_gives_what_feed_gives() -> None:
    """The reader's scanned feed, its scanned rows made into messages then its rest, equals
    the plain feed message for message and drop for drop, a stream in random pieces (good,
    damaged and unfinished messages), its tables too small for some reads."""
    from ringex.gateways import fix_codec

    rng = random.Random(13)
    goods = [frame(f) for f in VALID]
    sender, target = np.frombuffer(SENDER, np.uint8), np.frombuffer(TARGET, np.uint8)
    for trial in range(300):
        plain, scanned = FixReader(400), FixReader(400)
        if trial % 3 == 0:  # tables that fill up: the rest of the run through the Python path
            scanned._scan_rows = np.zeros((2, fs.MESSAGE_WORDS), np.int64)
            scanned._scan_fields = np.zeros((40, fs.FIELD_WORDS), np.int64)
        got_plain, got_scanned = [], []
        for piece in pieces(damaged_stream(rng, goods, 0.85), rng):
            got_plain += plain.feed(piece)
            found = scanned.feed_scanned(piece, sender, target)
            got_scanned += [FixMessage(found.data[r[fs.M_START]:r[fs.M_END]]) for r in found.messages[:found.count]]
            got_scanned += found.rest
        assert [reader_key(x) for x in got_scanned] == [reader_key(x) for x in got_plain]
        assert scanned.pending == plain.pending
    assert fix_codec._SCAN is fs.scan
