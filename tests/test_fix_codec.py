"""The FIX 4.4 tag=value codec against the specification's rules, not against itself.

Hand-written messages get their BodyLength and CheckSum from ``frame`` below, which applies the
specification's definitions directly (and is itself checked on a published example); the
independent ``simplefix`` library encodes and parses the same messages both ways.
"""

from __future__ import annotations

import datetime

import pytest
import simplefix

from ringex.gateways.fix_codec import (
    BEGIN_STRING,
    SOH,
    FixMessage,
    FixReader,
    Garbled,
    Invalid,
    encode,
    parse_utc_timestamp,
    utc_timestamp,
    validate,
)
from ringex.gateways.fix_dictionary import FIELDS, MESSAGES, SessionRejectReason as R

Fields = list[tuple[int | bytes, bytes | str]]


def _b(x: int | bytes | str) -> bytes:
    return x if isinstance(x, bytes) else str(x).encode()


def frame(body_fields: Fields, begin: bytes = b"FIX.4.4", body_length: bytes | None = None,
          checksum: bytes | None = None) -> bytes:
    """8=, 9=, the fields, 10=: BodyLength counts from the byte after 9='s SOH through the SOH
    before 10=; CheckSum is the sum of every byte before 10= modulo 256, three digits."""
    return frame_body(b"".join(_b(t) + b"=" + _b(v) + SOH for t, v in body_fields), begin, body_length, checksum)


def frame_body(body: bytes, begin: bytes = b"FIX.4.4", body_length: bytes | None = None,
               checksum: bytes | None = None) -> bytes:
    """``frame`` for a body given as bytes (which need not be well-formed fields)."""
    head = b"8=" + begin + SOH + b"9=" + (body_length if body_length is not None else _b(len(body))) + SOH
    message = head + body
    return message + b"10=" + (checksum if checksum is not None else b"%03d" % (sum(message) % 256)) + SOH


def header(msg_type: str, seq: int = 1) -> Fields:
    return [(35, msg_type), (49, "CLIENT"), (56, "RINGEX"), (34, seq), (52, "20240102-03:04:05.678")]


def heartbeat(seq: int = 1) -> bytes:
    return frame(header("0", seq))


def new_order(*extra: tuple[int | bytes, bytes | str], seq: int = 7) -> Fields:
    return header("D", seq) + [(11, "ord-1"), (55, "BTC-USD"), (54, "1"), (60, "20240102-03:04:05.600"),
                               (40, "2"), (38, "1.5"), (44, "42000.25"), (59, "1"), *extra]


def messages(items: list) -> list[FixMessage]:
    assert all(isinstance(m, FixMessage) for m in items), items
    return items


# --- the frame helper itself -------------------------------------------------------------

def test_frame_helper_on_the_published_example() -> None:
    # The example message of Wikipedia's "Financial Information eXchange" article (FIX 4.2):
    # 9=178 and 10=128 as published.
    fields = [(35, "8"), (49, "PHLX"), (56, "PERS"), (52, "20071123-05:30:00.000"), (11, "ATOMNOCCC9990900"),
              (20, "3"), (150, "E"), (39, "E"), (55, "MSFT"), (167, "CS"), (54, "1"), (38, "15"), (40, "2"),
              (44, "15"), (58, "PHLX EQUITY TESTING"), (59, "0"), (47, "C"), (32, "0"), (31, "0"),
              (151, "15"), (14, "0"), (6, "0")]
    raw = frame(fields, begin=b"FIX.4.2")
    assert b"\x019=178\x01" in raw and raw.endswith(b"\x0110=128\x01")
    # a FIX 4.2 message is not ours
    [g] = FixReader().feed(raw)
    assert isinstance(g, Garbled) and "BeginString" in g.reason and g.raw == raw


def test_frame_helper_agrees_with_simplefix() -> None:
    m = simplefix.FixMessage()
    m.append_pair(8, "FIX.4.4", header=True)
    for tag, value in new_order():
        m.append_pair(tag, value, header=tag in (35, 49, 56, 34, 52))
    assert m.encode() == frame(new_order())


# --- framing ------------------------------------------------------------------------------

def test_one_message_fields_and_accessors() -> None:
    raw = frame(header("1", seq=12) + [(112, "ping")])
    [msg] = messages(FixReader().feed(raw))
    assert msg.raw == raw
    assert msg.msg_type == b"1"
    body = raw[raw.index(b"\x0135=") + 1:raw.rindex(b"10=")]
    assert msg.fields[:3] == [(8, b"FIX.4.4"), (9, _b(len(body))), (35, b"1")]
    assert [t for t, _ in msg.fields] == [8, 9, 35, 49, 56, 34, 52, 112, 10]
    assert msg.fields[-1] == (10, raw[-4:-1])
    assert msg.get(112) == b"ping" and msg.get(58) is None
    assert msg.has(49) and not msg.has(58)
    assert msg.int(34) == 12 and msg.seq_num == 12
    with pytest.raises(ValueError, match="49"):
        msg.int(49)
    with pytest.raises(ValueError, match="58"):
        msg.int(58)
    assert "|35=1|" in repr(msg) and "\x01" not in repr(msg)
    assert validate(msg) is None


def test_several_messages_in_one_feed() -> None:
    raws = [heartbeat(1), frame(new_order(seq=2)), frame(header("1", 3) + [(112, "x")])]
    reader = FixReader()
    got = messages(reader.feed(b"".join(raws)))
    assert [m.raw for m in got] == raws
    assert [m.seq_num for m in got] == [1, 2, 3]
    assert reader.pending == 0


def test_message_split_byte_by_byte() -> None:
    raws = [frame(new_order(seq=1)), heartbeat(2)]
    stream = b"".join(raws)
    reader = FixReader()
    got = []
    for i in range(len(stream)):
        got += reader.feed(stream[i:i + 1])
        if i < len(raws[0]) - 1:
            assert got == [] and reader.pending == i + 1
    assert [m.raw for m in messages(got)] == raws
    assert reader.pending == 0


def test_tail_waits_for_the_rest() -> None:
    raw = heartbeat()
    for cut in (1, 5, 11, 13, len(raw) - 1):
        reader = FixReader()
        assert reader.feed(raw[:cut]) == [] and reader.pending == cut
        assert [m.raw for m in messages(reader.feed(raw[cut:]))] == [raw]


def _bad_checksum() -> bytes:
    good = heartbeat()
    wrong = (int(good[-4:-1]) + 1) % 256
    return good[:-4] + b"%03d" % wrong + SOH


GARBLED = {
    "bad checksum": (_bad_checksum(), "CheckSum"),
    "checksum of two digits": (heartbeat()[:-4] + heartbeat()[-3:], "CheckSum"),
    "checksum not digits": (frame(header("0"), checksum=b"1x3"), "CheckSum"),
    "body length too short": (frame(header("0"), body_length=b"20"), "BodyLength"),
    "body length too long": (frame(header("0"), body_length=b"70"), "BodyLength"),
    "body length not a number": (frame(header("0"), body_length=b"6x"), "BodyLength"),
    "body length negative": (frame(header("0"), body_length=b"-5"), "BodyLength"),
    "wrong begin string": (frame(header("0"), begin=b"FIX.4.2"), "BeginString"),
    "body length not second": (b"8=FIX.4.4\x0135=0\x019=5\x0110=000\x01", "BodyLength"),
    "field without '='": (frame_body(b"35=0\x0149\x01"), "="),
    "empty field": (frame_body(b"35=0\x01\x0149=A\x01"), "="),
}


@pytest.mark.parametrize("name", list(GARBLED))
def test_garbled_is_reported_and_the_next_message_survives(name: str) -> None:
    bad, why = GARBLED[name]
    good = heartbeat(2)
    reader = FixReader()
    got = reader.feed(bad + good)
    assert isinstance(got[0], Garbled) and why in got[0].reason, got
    assert all(isinstance(g, Garbled) for g in got[:-1])
    assert b"".join(g.raw for g in got[:-1]) == bad
    assert isinstance(got[-1], FixMessage) and got[-1].raw == good
    assert reader.pending == 0


def test_body_length_too_long_waits_then_resyncs_on_the_next_message() -> None:
    bad, _ = GARBLED["body length too long"]
    reader = FixReader()
    assert reader.feed(bad) == []  # it may yet be a long message
    got = reader.feed(heartbeat(2))
    assert isinstance(got[0], Garbled) and got[0].raw == bad
    assert [m.raw for m in messages(got[1:])] == [heartbeat(2)]


def test_oversized_message_is_garbled() -> None:
    big = frame(header("0") + [(58, "x" * 500)])
    reader = FixReader(max_message=256)
    got = reader.feed(big[:100])
    assert len(got) == 1 and isinstance(got[0], Garbled) and "maximum" in got[0].reason
    got += reader.feed(big[100:] + heartbeat(2))
    assert all(isinstance(g, Garbled) for g in got[:-1])
    assert b"".join(g.raw for g in got[:-1]) == big
    assert isinstance(got[-1], FixMessage) and got[-1].raw == heartbeat(2)
    # the largest accepted size still frames
    exact = frame(header("0") + [(58, "x" * 10)])
    assert messages(FixReader(max_message=len(exact)).feed(exact))[0].raw == exact


def test_garbage_then_good_message() -> None:
    good = heartbeat(3)
    for garbage in (b"hello\x01", b"\x01\x01junk=1\x01", b"58=FIX.4.4\x01zz\x01", b"8=\x01"):
        got = FixReader().feed(garbage + good)
        assert [type(g) for g in got] == [Garbled, FixMessage], (garbage, got)
        assert got[0].raw == garbage and got[1].raw == good
    # garbage without a SOH before the message: the message starts the next read
    reader = FixReader()
    got = reader.feed(b"noise")
    assert [g.raw for g in got] == [b"noise"] and reader.pending == 0
    assert [m.raw for m in messages(reader.feed(good))] == [good]
    # ... and when the SOH ending the garbage comes with it
    assert reader.feed(b"noise") != []
    got = reader.feed(SOH + good)
    assert [type(g) for g in got] == [Garbled, FixMessage] and got[0].raw == SOH and got[1].raw == good


def test_huge_numbers_are_not_integers() -> None:
    msg = _msg(_replace(header("0"), 34, "9" * 5000))
    assert msg.seq_num is None
    with pytest.raises(ValueError, match="34"):
        msg.int(34)


def test_resync_does_not_start_inside_a_field() -> None:
    # "8=FIX" inside tag 58's field is not a message start; the real one after it is.
    good = heartbeat(4)
    got = FixReader().feed(b"xx\x0158=FIX.4.4\x019=1\x01" + good)
    assert isinstance(got[-1], FixMessage) and got[-1].raw == good
    assert b"".join(g.raw for g in got[:-1]) == b"xx\x0158=FIX.4.4\x019=1\x01"


def test_garbage_without_begin_string_keeps_the_buffer_bounded() -> None:
    reader = FixReader(max_message=1024)
    chunk = bytes(range(2, 256)) * 16  # no SOH, no "8="
    dropped = 0
    for _ in range(200):
        got = reader.feed(chunk)
        assert all(isinstance(g, Garbled) for g in got) and len(got) == 1
        dropped += sum(len(g.raw) for g in got)
        assert reader.pending <= 1024
    assert dropped == 200 * len(chunk)
    # a tail that may begin a message is kept, and completes
    good = heartbeat(5)
    got = reader.feed(b"junk\x01" + good[:3])
    assert [g.raw for g in got] == [b"junk\x01"] and reader.pending == 3
    assert [m.raw for m in messages(reader.feed(good[3:]))] == [good]


def test_claimed_length_within_limit_never_grows_the_buffer_past_it() -> None:
    reader = FixReader(max_message=300)
    reader.feed(b"8=FIX.4.4\x019=250\x01")
    for _ in range(50):
        reader.feed(b"A" * 64)
        assert reader.pending <= 300


# --- validation ---------------------------------------------------------------------------

def _msg(fields: Fields) -> FixMessage:
    [m] = messages(FixReader().feed(frame(fields)))
    return m


VALID = [
    header("0"),
    header("0") + [(112, "t1")],
    header("1") + [(112, "t1")],
    header("2") + [(7, 1), (16, 0)],
    header("3") + [(45, 3), (371, 44), (372, "D"), (373, 5), (58, "bad price")],
    header("4") + [(123, "Y"), (36, 10)],
    header("5") + [(58, "bye")],
    header("A") + [(98, 0), (108, 30), (141, "Y"), (553, "user"), (554, "secret")],
    new_order((18, "6 E"), (7928, "2"), (1, "acct"), (111, "0.5"), (99, "-1.25")),
    header("F") + [(41, "o1"), (11, "o2"), (55, "X"), (54, "2"), (60, "20240102-03:04:05")],
    header("G") + [(41, "o1"), (11, "o2"), (55, "X"), (54, "2"), (60, "20240102-03:04:05.123456"), (40, "1")],
    header("H") + [(11, "o1"), (55, "X"), (54, "1")],
    header("q") + [(11, "m1"), (530, "7"), (60, "20240102-03:04:05")],
    header("q") + [(11, "m1"), (530, "1"), (60, "20240102-03:04:05"), (1, "3"), (55, "X")],  # Account: ours
    header("r") + [(37, "m1"), (530, "7"), (531, "0"), (532, "0")],
    header("8") + [(37, "1"), (17, "e1"), (150, "F"), (39, "1"), (55, "X"), (54, "1"), (151, "1"), (14, "2"),
                   (6, "10.5"), (32, "2"), (31, "10.5")],
    header("9") + [(37, "1"), (11, "o2"), (41, "o1"), (39, "8"), (434, "1"), (102, "1")],
    header("j") + [(372, "E"), (380, 3), (45, 9)],
    header("0")[:4] + [(43, "Y"), (52, "20240102-03:04:05.678"), (122, "20240102-03:04:04.000"), (97, "N")],
]


@pytest.mark.parametrize("fields", VALID, ids=lambda f: f[0][1])
def test_valid_messages_pass(fields: Fields) -> None:
    assert validate(_msg(fields)) is None


def _replace(fields: Fields, tag: int, value: bytes | str) -> Fields:
    return [(t, value if t == tag else v) for t, v in fields]


def _without(fields: Fields, tag: int) -> Fields:
    return [(t, v) for t, v in fields if t != tag]


INVALID = [
    ("35 not third", [(49, "CLIENT"), (35, "0")] + header("0")[2:], R.TagSpecifiedOutOfRequiredOrder, 35),
    ("35 missing", header("0")[1:], R.TagSpecifiedOutOfRequiredOrder, 35),
    ("tag not a number", header("0") + [(b"abc", "1")], R.InvalidTagNumber, None),
    ("tag zero", header("0") + [(0, "1")], R.InvalidTagNumber, 0),
    ("tag negative", header("0") + [(-5, "1")], R.InvalidTagNumber, -5),
    ("empty value", header("5") + [(58, "")], R.TagSpecifiedWithoutValue, 58),
    ("unknown msg type", header("Z"), R.InvalidMsgType, 35),
    ("undefined tag", header("0") + [(9999, "1")], R.UndefinedTag, 9999),
    ("tag not for this message", header("0") + [(44, "1")], R.TagNotDefinedForMessageType, 44),
    ("group-only tag", header("A") + [(98, 0), (108, 30), (372, "D")], R.TagNotDefinedForMessageType, 372),
    ("tag twice", header("0") + [(112, "a"), (112, "b")], R.TagAppearsMoreThanOnce, 112),
    ("header tag twice", header("0") + [(49, "OTHER")], R.TagAppearsMoreThanOnce, 49),
    ("header tag missing", _without(header("0"), 49), R.RequiredTagMissing, 49),
    ("sending time missing", _without(header("0"), 52), R.RequiredTagMissing, 52),
    ("body tag missing", header("A") + [(98, 0)], R.RequiredTagMissing, 108),
    ("symbol missing", _without(new_order(), 55), R.RequiredTagMissing, 55),
    ("seqnum not digits", _replace(header("0"), 34, "1a"), R.IncorrectDataFormat, 34),
    ("seqnum signed", _replace(header("0"), 34, "-1"), R.IncorrectDataFormat, 34),
    ("int with a point", header("A") + [(98, 0), (108, "1.5")], R.IncorrectDataFormat, 108),
    ("int with a space", header("A") + [(98, 0), (108, " 30")], R.IncorrectDataFormat, 108),
    ("float exponent", _replace(new_order(), 44, "1e5"), R.IncorrectDataFormat, 44),
    ("float two points", _replace(new_order(), 44, "1.2.3"), R.IncorrectDataFormat, 44),
    ("float sign only", _replace(new_order(), 38, "-"), R.IncorrectDataFormat, 38),
    ("char two bytes", _replace(new_order(), 54, "12"), R.IncorrectDataFormat, 54),
    ("boolean", header("4") + [(123, "y"), (36, 10)], R.IncorrectDataFormat, 123),
    ("timestamp", _replace(header("0"), 52, "2024-01-02 03:04:05"), R.IncorrectDataFormat, 52),
    ("multiple char", new_order((18, "6E")), R.IncorrectDataFormat, 18),
    ("side unsupported", _replace(new_order(), 54, "5"), R.ValueIsIncorrect, 54),
    ("ord type unsupported", _replace(new_order(), 40, "P"), R.ValueIsIncorrect, 40),
    ("tif unsupported", _replace(new_order(), 59, "6"), R.ValueIsIncorrect, 59),
    ("exec inst unsupported", new_order((18, "6 1")), R.ValueIsIncorrect, 18),
    ("encrypt method", header("A") + [(98, 1), (108, 30)], R.ValueIsIncorrect, 98),
    ("poss dup flag", header("0") + [(43, "X")], R.IncorrectDataFormat, 43),
]


@pytest.mark.parametrize("name,fields,reason,ref", INVALID, ids=[c[0] for c in INVALID])
def test_invalid_messages(name: str, fields: Fields, reason: R, ref: int | None) -> None:
    got = validate(_msg(fields))
    assert isinstance(got, Invalid)
    assert (got.reason, got.ref_tag) == (reason, ref), got
    assert got.text


def test_checks_run_in_the_specified_order() -> None:
    # undefined tag and a missing required tag: the undefined tag is reported first
    assert validate(_msg(header("A") + [(9999, "1")])).reason == R.UndefinedTag
    # empty value on an unknown message type: the empty value first
    assert validate(_msg(header("Z") + [(58, "")])).reason == R.TagSpecifiedWithoutValue
    # duplicate before format: a duplicated bad value reports the duplicate
    assert validate(_msg(header("0") + [(112, "a"), (112, "b")] + [(43, "X")])).reason == R.TagAppearsMoreThanOnce


def test_dictionary_is_consistent() -> None:
    for spec in MESSAGES.values():
        assert set(spec.required) <= spec.allowed
        assert all(tag in FIELDS for tag in spec.allowed), spec.name
    assert FIELDS[7928].name == "SelfTradePreventionMode"


# --- timestamps ---------------------------------------------------------------------------

def _ns(*args: int, micro: int = 0) -> int:
    dt = datetime.datetime(*args, microsecond=micro, tzinfo=datetime.timezone.utc)
    epoch = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
    return (dt - epoch) // datetime.timedelta(microseconds=1) * 1000


def test_parse_timestamps() -> None:
    assert parse_utc_timestamp(b"19700101-00:00:00") == 0
    assert parse_utc_timestamp(b"20240229-23:59:59.123") == _ns(2024, 2, 29, 23, 59, 59, micro=123000)
    assert parse_utc_timestamp(b"20240102-03:04:05.123456") == _ns(2024, 1, 2, 3, 4, 5, micro=123456)
    assert parse_utc_timestamp(b"19691231-23:59:59.999") == -1_000_000


def test_format_timestamps() -> None:
    assert utc_timestamp(0) == b"19700101-00:00:00.000"
    assert utc_timestamp(_ns(2024, 2, 29, 23, 59, 59, micro=123999) + 999) == b"20240229-23:59:59.123"


@pytest.mark.parametrize("ns", [0, 1, 999_999, 1_000_000, 1_704_164_645_678_901_234, 4_102_444_799_999_999_999,
                                951_782_400_000_000_000])
def test_timestamp_round_trip(ns: int) -> None:
    assert parse_utc_timestamp(utc_timestamp(ns)) == ns - ns % 1_000_000


@pytest.mark.parametrize("bad", [b"20241301-00:00:00", b"20240101-25:00:00", b"20240101-23:60:00",
                                 b"20230229-00:00:00", b"20240100-00:00:00", b"2024010a-00:00:00",
                                 b"abcdefgh-ij:kl:mn", b"20240101-00:00", b"20240101-00:00:00.12",
                                 b"20240101-00:00:00.1234", b"20240101-00:00:00Z", b"20240101T00:00:00", b""])
def test_invalid_timestamps(bad: bytes) -> None:
    with pytest.raises(ValueError):
        parse_utc_timestamp(bad)


# --- encoding -----------------------------------------------------------------------------

def _simplefix_parse(raw: bytes) -> list[tuple[bytes, bytes]]:
    parser = simplefix.FixParser()
    parser.append_buffer(raw)
    m = parser.get_message()
    assert m is not None and parser.get_message() is None
    return list(m.pairs)


def test_encode_parsed_by_simplefix() -> None:
    body = [(11, "ord-1"), (55, b"BTC-USD"), (54, 1), (60, "20240102-03:04:05.600"), (40, "2"), (38, "1.5"),
            (44, "42000.25"), (7928, 2)]
    raw = encode(b"D", b"CLIENT", b"RINGEX", 7, b"20240102-03:04:05.678", body)
    pairs = _simplefix_parse(raw)
    expected_body = [(b"35", b"D"), (b"49", b"CLIENT"), (b"56", b"RINGEX"), (b"34", b"7"),
                     (b"52", b"20240102-03:04:05.678")] + [(_b(t), _b(v)) for t, v in body]
    assert pairs[0] == (b"8", BEGIN_STRING)
    assert pairs[2:-1] == expected_body
    # BodyLength and CheckSum by the spec's rule (our helper), and by simplefix's own encoder
    assert raw == frame([(int(t), v) for t, v in expected_body])
    m = simplefix.FixMessage()
    m.append_pair(8, "FIX.4.4", header=True)
    for t, v in expected_body:
        m.append_pair(t, v, header=t in (b"35", b"49", b"56", b"34", b"52"))
    assert m.encode() == raw
    # and our reader takes it back exactly
    [msg] = messages(FixReader().feed(raw))
    assert msg.fields[2:-1] == [(int(t), v) for t, v in expected_body]
    assert validate(msg) is None


def test_simplefix_message_read_by_us() -> None:
    m = simplefix.FixMessage()
    m.append_pair(8, "FIX.4.4", header=True)
    m.append_pair(35, "A", header=True)
    m.append_pair(49, "CLIENT", header=True)
    m.append_pair(56, "RINGEX", header=True)
    m.append_pair(34, 1, header=True)
    m.append_pair(52, "20240102-03:04:05.678", header=True)
    m.append_pair(98, 0)
    m.append_pair(108, 30)
    m.append_pair(141, "Y")
    raw = m.encode()
    [msg] = messages(FixReader().feed(raw))
    assert [(_b(t), v) for t, v in msg.fields] == _simplefix_parse(raw)
    assert validate(msg) is None and msg.msg_type == b"A" and msg.int(108) == 30


def test_encode_header_order_with_poss_dup() -> None:
    raw = encode(b"0", b"RINGEX", b"CLIENT", 9, b"20240102-03:04:05.678", [(112, "t")], poss_dup=True,
                 orig_sending_time=b"20240102-03:00:00.000")
    tags = [int(t) for t, _ in _simplefix_parse(raw)]
    assert tags == [8, 9, 35, 49, 56, 34, 43, 52, 122, 112, 10]
    assert _simplefix_parse(raw)[6] == (b"43", b"Y")
    assert validate(_msg_raw(raw)) is None


def _msg_raw(raw: bytes) -> FixMessage:
    [m] = messages(FixReader().feed(raw))
    return m


def test_encode_refuses_bad_values() -> None:
    args = (b"0", b"A", b"B", 1, b"20240102-03:04:05.678")
    with pytest.raises(ValueError, match="SOH"):
        encode(*args, [(58, "a\x01b")])
    with pytest.raises(ValueError, match="SOH"):
        encode(*args, [(58, b"a\x01")])
    with pytest.raises(ValueError):
        encode(b"0", b"A\x01", b"B", 1, b"20240102-03:04:05.678", [])
    with pytest.raises(ValueError):
        encode(*args, [(58, "")])
    with pytest.raises(ValueError):
        encode(*args, [(58, "é")])
    with pytest.raises(TypeError):
        encode(*args, [(141, True)])


@pytest.mark.parametrize("name", list(GARBLED))
def test_garbled_byte_by_byte(name: str) -> None:
    bad, _ = GARBLED[name]
    good = heartbeat(2)
    reader = FixReader()
    got = []
    for byte in bad + good:
        got += reader.feed(bytes([byte]))
    assert all(isinstance(g, Garbled) for g in got[:-1]) and got
    assert b"".join(g.raw for g in got[:-1]) == bad
    assert isinstance(got[-1], FixMessage) and got[-1].raw == good


# --- the fast paths agree with the step-by-step ones ----------------------------------------


def _mutations(raw: bytes, rng: "random.Random", n: int) -> list[bytes]:
    """``raw`` with one small change each: a byte replaced, dropped or doubled, a field
    repeated or dropped, SOH moved."""
    out = []
    fields = raw[:-1].split(SOH)
    for _ in range(n):
        k = rng.randrange(5)
        if k == 0:
            i = rng.randrange(len(raw))
            out.append(raw[:i] + bytes([rng.choice(b"0123456789=\x01ABZ-.: ")]) + raw[i + 1:])
        elif k == 1:
            i = rng.randrange(len(raw))
            out.append(raw[:i] + raw[i + 1:])
        elif k == 2:
            i = rng.randrange(len(raw))
            out.append(raw[:i] + raw[i:i + 1] + raw[i:])
        elif k == 3:
            i = rng.randrange(len(fields))
            out.append(SOH.join(fields[:i + 1] + fields[i:]) + SOH)
        else:
            i = rng.randrange(len(fields))
            out.append(SOH.join(fields[:i] + fields[i + 1:]) + SOH)
    return out


def test_validate_fast_path_agrees_with_every_check_one_by_one() -> None:
    """``validate`` answers a message that passes ``_passes`` at once; for thousands of
    damaged messages it must say exactly what the checks one by one say."""
    import random

    from ringex.gateways.fix_codec import _why_invalid, passes_validation as _passes

    rng = random.Random(5)
    seen_invalid = seen_valid = 0
    for fields in VALID:
        raw = b"".join(_b(t) + b"=" + _b(v) + SOH for t, v in [(8, "FIX.4.4"), (9, "1"), *fields])
        assert _passes(FixMessage(raw))  # the fast path serves the well-formed message
        for body in [raw, *_mutations(raw, rng, 400)]:
            try:
                msg = FixMessage(body)
            except ValueError:
                continue
            slow = _why_invalid(msg)
            assert validate(msg) == slow
            assert not _passes(msg) or slow is None, body
            seen_invalid += slow is not None
            seen_valid += slow is None
    assert seen_invalid > 1000 and seen_valid > 50


class _StepByStepReader(FixReader):
    """The reader without its fast path: every message through ``_next``."""

    def _take_good(self, out: list) -> None:
        return None


def damaged_stream(rng, goods: list[bytes], good_share: float = 0.8) -> bytes:
    """Up to 12 messages back to back, each good or (``1 - good_share`` of them) damaged."""
    return b"".join(rng.choice(goods) if rng.random() < good_share else rng.choice(_mutations(rng.choice(goods), rng, 1))
                    for _ in range(rng.randint(1, 12)))


def pieces(stream: bytes, rng) -> list[bytes]:
    """``stream`` cut as reads might return it: 1 to 5,000 bytes at a time."""
    out, at = [], 0
    while at < len(stream):
        out.append(stream[at:at + rng.choice((1, 7, 60, 500, 5000))])
        at += len(out[-1])
    return out


def reader_key(x: FixMessage | Garbled) -> tuple:
    """What a reader gave, comparable: a message's bytes, a drop's reason and bytes."""
    return ("m", x.raw) if isinstance(x, FixMessage) else ("g", x.reason, x.raw)


def test_reader_fast_path_frames_exactly_as_step_by_step() -> None:
    """Good messages back to back, damaged ones among them, in random pieces: the same
    messages and drops, in the same order, from the reader with and without its fast path."""
    import random

    rng = random.Random(11)
    goods = [frame(f) for f in VALID] + [heartbeat(i) for i in range(1, 20)]
    for _ in range(300):
        fast, slow = FixReader(400), _StepByStepReader(400)
        got_fast, got_slow = [], []
        for piece in pieces(damaged_stream(rng, goods), rng):
            got_fast += fast.feed(piece)
            got_slow += slow.feed(piece)
        assert [reader_key(x) for x in got_fast] == [reader_key(x) for x in got_slow]
        assert fast.pending == slow.pending


def test_timestamps_remembered_by_the_second_are_still_checked() -> None:
    assert parse_utc_timestamp(b"20240101-00:00:00.500") == _ns(2024, 1, 1, 0, 0, 0, micro=500_000)
    for bad in (b"20240101-00:00:00.12", b"20240101-00:00:00x123", b"20240101-00:00:00.-12",
                b"20240101-00:00:00.1234", b"20240101-00:00:00.12345x"):
        with pytest.raises(ValueError):
            parse_utc_timestamp(bad)
    assert parse_utc_timestamp(b"20240101-00:00:00") == _ns(2024, 1, 1, 0, 0, 0)
    assert parse_utc_timestamp(b"20240101-00:00:00.000007") == _ns(2024, 1, 1, 0, 0, 0, micro=7)
    assert parse_utc_timestamp(b"20231231-23:59:60.001") == _ns(2024, 1, 1, 0, 0, 0, micro=1000)  # leap second


def test_timestamps_written_by_the_second_match_the_calendar() -> None:
    from ringex.gateways.fix_codec import _utc_timestamp

    ns = 1_704_164_645_000_000_000
    for step in (1, 999_999, 1_000_000, 250_000_000, 999_999_999, 10**9, 86_400 * 10**9 - 1):
        for _ in range(20):
            ns += step
            assert utc_timestamp(ns) == _utc_timestamp(ns)


def test_encode_writes_each_shape_as_the_fields_one_by_one() -> None:
    from ringex.gateways.fix_codec import encode_fields, _fields_one_by_one

    items = [(35, b"8"), (49, b"RINGEX"), (34, 12), (58, b"a=b"), (44, -5), (11, b"x")]
    assert encode_fields(items) == _fields_one_by_one(items)
    assert encode_fields(items) == encode_fields(list(items))  # the remembered shape
    for bad in ([(58, b"")], [(58, b"a\x01b")], [(58, True)], [(True, b"x")], [(0, b"x")], [(58, 1.5)]):
        with pytest.raises((ValueError, TypeError)):
            encode_fields(items + bad)
    assert encode_fields([(58, "text")]) == b"58=text\x01"  # str values: one by one


def test_encode_of_written_fields_is_encode_of_the_pairs() -> None:
    """A body of fields already written takes a shorter way through ``encode``: the same
    bytes as the pairs, and anything doubtful in the header still refused as before."""
    pairs = [(37, b"7"), (11, b"c1"), (17, b"3.1"), (150, b"0"), (39, b"0"), (55, b"BTC-USD"), (60, b"x")]
    written = b"".join(b"%d=%s\x01" % p for p in pairs)
    for seq, ts in ((1, b"20240102-03:04:05.678"), (10**9, b"20240102-03:04:05")):
        assert encode(b"8", b"RINGEX", b"CLIENT", seq, ts, written) == encode(b"8", b"RINGEX", b"CLIENT", seq, ts, pairs)
    assert encode(b"8", b"RINGEX", b"CLIENT", 5, b"t", written, poss_dup=True, orig_sending_time=b"o") == \
        encode(b"8", b"RINGEX", b"CLIENT", 5, b"t", pairs, poss_dup=True, orig_sending_time=b"o")
    for bad in ((b"8", b"RIN\x01GEX", b"CLIENT"), (b"8", b"", b"CLIENT"), (b"", b"RINGEX", b"CLIENT")):
        with pytest.raises(ValueError):
            encode(*bad, 5, b"t", written)
    with pytest.raises(ValueError):
        encode(b"8", b"RINGEX", b"CLIENT", 5, b"t", written[:-1])  # not ended by SOH
