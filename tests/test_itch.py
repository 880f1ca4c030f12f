"""ITCH 5.0 messages (``ringex.feeds.itch``) against the specification's tables.

Every offset, length and struct format in this file is copied from the Nasdaq
TotalView-ITCH 5.0 specification (section 4, "Message Formats"), never read from the
module's descriptors: a wrong offset there must fail here.  Integers are big-endian,
Price(4) is a uint32 with four implied decimals, the Timestamp is 6 bytes of nanoseconds
since midnight, Alpha is ASCII left-justified and padded with spaces.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ringex.feeds import itch
from ringex.feeds.itch import ItchError

FAST = settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])

LOCATE = 0x1234
TRACKING = 0xBEEF
TS = 34_200_123_456_789  # 09:30:00.123456789
DAY_NS = 86_400 * 10**9


def be(value: int, size: int) -> bytes:
    return value.to_bytes(size, "big")


def assert_header(msg: bytes, letter: bytes, locate: int = LOCATE, tracking: int = TRACKING, ts: int = TS) -> None:
    assert msg[0:1] == letter          # Message Type     offset 0, 1 byte
    assert msg[1:3] == be(locate, 2)   # Stock Locate     offset 1, 2 bytes
    assert msg[3:5] == be(tracking, 2)  # Tracking Number offset 3, 2 bytes
    assert msg[5:11] == be(ts, 6)      # Timestamp        offset 5, 6 bytes


def assert_round_trip(msg: bytes, expected: itch.ItchMessage) -> None:
    decoded = itch.decode(msg)
    assert decoded == expected and type(decoded) is type(expected)
    assert itch.encode_message(decoded) == msg
    buf = bytearray(len(msg) + 7)
    assert itch.pack_message_into(buf, 7, decoded) == 7 + len(msg)
    assert bytes(buf[7:]) == msg


# --- the spec's table of lengths and offsets -----------------------------------------------
SPEC_LENGTH = {
    b"S": 12, b"R": 39, b"H": 25, b"A": 36, b"F": 40, b"E": 31,
    b"C": 36, b"X": 23, b"D": 19, b"U": 35, b"P": 44,
}
# (field, offset, length) after the common 11-byte header, per the spec.
SPEC_BODY = {
    b"S": [("event_code", 11, 1)],
    b"R": [
        ("stock", 11, 8), ("market_category", 19, 1), ("financial_status_indicator", 20, 1),
        ("round_lot_size", 21, 4), ("round_lots_only", 25, 1), ("issue_classification", 26, 1),
        ("issue_sub_type", 27, 2), ("authenticity", 29, 1), ("short_sale_threshold_indicator", 30, 1),
        ("ipo_flag", 31, 1), ("luld_reference_price_tier", 32, 1), ("etp_flag", 33, 1),
        ("etp_leverage_factor", 34, 4), ("inverse_indicator", 38, 1),
    ],
    b"H": [("stock", 11, 8), ("trading_state", 19, 1), ("reserved", 20, 1), ("reason", 21, 4)],
    b"A": [("order_reference_number", 11, 8), ("buy_sell_indicator", 19, 1), ("shares", 20, 4),
           ("stock", 24, 8), ("price", 32, 4)],
    b"F": [("order_reference_number", 11, 8), ("buy_sell_indicator", 19, 1), ("shares", 20, 4),
           ("stock", 24, 8), ("price", 32, 4), ("attribution", 36, 4)],
    b"E": [("order_reference_number", 11, 8), ("executed_shares", 19, 4), ("match_number", 23, 8)],
    b"C": [("order_reference_number", 11, 8), ("executed_shares", 19, 4), ("match_number", 23, 8),
           ("printable", 31, 1), ("execution_price", 32, 4)],
    b"X": [("order_reference_number", 11, 8), ("canceled_shares", 19, 4)],
    b"D": [("order_reference_number", 11, 8)],
    b"U": [("original_order_reference_number", 11, 8), ("new_order_reference_number", 19, 8),
           ("shares", 27, 4), ("price", 31, 4)],
    b"P": [("order_reference_number", 11, 8), ("buy_sell_indicator", 19, 1), ("shares", 20, 4),
           ("stock", 24, 8), ("price", 32, 4), ("match_number", 36, 8)],
}


def test_message_lengths_are_the_specs() -> None:
    assert itch.MESSAGE_LENGTH == SPEC_LENGTH


@pytest.mark.parametrize("letter", sorted(SPEC_BODY))
def test_descriptors_match_the_spec_table(letter: bytes) -> None:
    layout = itch.LAYOUTS[letter]
    assert layout.length == SPEC_LENGTH[letter]
    header = [("message_type", 0, 1), ("stock_locate", 1, 2), ("tracking_number", 3, 2), ("timestamp", 5, 6)]
    assert [(f.name, f.offset, f.length) for f in layout.fields] == header + SPEC_BODY[letter]


def test_a_gap_in_a_layout_is_refused() -> None:
    fields = itch.LAYOUTS[b"D"].fields
    with pytest.raises(ValueError, match="offset"):
        itch.MessageLayout(b"D", "broken", 19, fields[:4] + (itch.Field("order_reference_number", 12, 8, "u64"),))
    with pytest.raises(ValueError, match="length"):
        itch.MessageLayout(b"D", "broken", 20, fields)


# --- every message type, field by field ----------------------------------------------------
@pytest.mark.parametrize("code", [b"O", b"S", b"Q", b"M", b"E", b"C"])
def test_system_event(code: bytes) -> None:
    msg = itch.system_event(0, TRACKING, TS, code)
    assert len(msg) == 12
    assert_header(msg, b"S", locate=0)
    assert msg[11:12] == code
    assert struct.unpack(">cHH6sc", msg) == (b"S", 0, TRACKING, be(TS, 6), code)
    assert_round_trip(msg, itch.SystemEvent(0, TRACKING, TS, code))


def test_system_event_codes_are_the_specs() -> None:
    assert (itch.EVENT_START_OF_MESSAGES, itch.EVENT_START_OF_SYSTEM_HOURS, itch.EVENT_START_OF_MARKET_HOURS,
            itch.EVENT_END_OF_MARKET_HOURS, itch.EVENT_END_OF_SYSTEM_HOURS, itch.EVENT_END_OF_MESSAGES) == (
        b"O", b"S", b"Q", b"M", b"E", b"C")
    assert (itch.TRADING_STATE_HALTED, itch.TRADING_STATE_PAUSED, itch.TRADING_STATE_QUOTATION_ONLY,
            itch.TRADING_STATE_TRADING) == (b"H", b"P", b"Q", b"T")


def test_stock_directory() -> None:
    msg = itch.stock_directory(
        LOCATE, TRACKING, TS, "ZVZZT", b"Q", b"N", 100, b"N", b"C", "Z", b"P", b"N", b"N", b"1",
        b"Y", 3, b"Y",
    )
    assert len(msg) == 39
    assert_header(msg, b"R")
    assert msg[11:19] == b"ZVZZT   "
    assert msg[19:20] == b"Q"      # Market Category
    assert msg[20:21] == b"N"      # Financial Status Indicator
    assert msg[21:25] == be(100, 4)  # Round Lot Size
    assert msg[25:26] == b"N"      # Round Lots Only
    assert msg[26:27] == b"C"      # Issue Classification
    assert msg[27:29] == b"Z "     # Issue Sub-Type
    assert msg[29:30] == b"P"      # Authenticity
    assert msg[30:31] == b"N"      # Short Sale Threshold Indicator
    assert msg[31:32] == b"N"      # IPO Flag
    assert msg[32:33] == b"1"      # LULD Reference Price Tier
    assert msg[33:34] == b"Y"      # ETP Flag
    assert msg[34:38] == be(3, 4)  # ETP Leverage Factor
    assert msg[38:39] == b"Y"      # Inverse Indicator
    assert struct.unpack(">cHH6s8sccIcc2scccccIc", msg)[4:] == (
        b"ZVZZT   ", b"Q", b"N", 100, b"N", b"C", b"Z ", b"P", b"N", b"N", b"1", b"Y", 3, b"Y")
    assert_round_trip(msg, itch.StockDirectory(
        LOCATE, TRACKING, TS, "ZVZZT", b"Q", b"N", 100, b"N", b"C", "Z", b"P", b"N", b"N", b"1", b"Y", 3, b"Y"))


def test_stock_trading_action() -> None:
    msg = itch.stock_trading_action(LOCATE, TRACKING, TS, "AAPL", b"H", "T1")
    assert len(msg) == 25
    assert_header(msg, b"H")
    assert msg[11:19] == b"AAPL    "
    assert msg[19:20] == b"H"      # Trading State
    assert msg[20:21] == b" "      # Reserved
    assert msg[21:25] == b"T1  "   # Reason, 4 bytes Alpha
    assert struct.unpack(">cHH6s8scc4s", msg)[4:] == (b"AAPL    ", b"H", b" ", b"T1  ")
    assert_round_trip(msg, itch.StockTradingAction(LOCATE, TRACKING, TS, "AAPL", b"H", b" ", "T1"))


# Written out byte by byte from the spec's Add Order table, not produced by our encoder.
GOLDEN_ADD_ORDER = bytes.fromhex(
    "41"                  # 0   Message Type 'A'
    "0102"                # 1   Stock Locate 258
    "0304"                # 3   Tracking Number 772
    "1f1ad635bd15"        # 5   Timestamp 34 200 123 456 789 ns (09:30:00.123456789)
    "0102030405060708"    # 11  Order Reference Number
    "42"                  # 19  Buy/Sell Indicator 'B'
    "00000064"            # 20  Shares 100
    "4141504c20202020"    # 24  Stock 'AAPL    '
    "0012d644"            # 32  Price 123.4500
)


def test_add_order_golden_bytes() -> None:
    msg = itch.add_order(258, 772, TS, 0x0102030405060708, b"B", 100, "AAPL", 1_234_500)
    assert msg == GOLDEN_ADD_ORDER
    assert_round_trip(msg, itch.AddOrder(258, 772, TS, 0x0102030405060708, b"B", 100, "AAPL", 1_234_500))


def test_add_order() -> None:
    msg = itch.add_order(LOCATE, TRACKING, TS, 2**64 - 1, b"S", 2**32 - 1, "BRK.A", 2**32 - 1)
    assert len(msg) == 36
    assert_header(msg, b"A")
    assert msg[11:19] == be(2**64 - 1, 8)
    assert msg[19:20] == b"S"
    assert msg[20:24] == be(2**32 - 1, 4)
    assert msg[24:32] == b"BRK.A   "
    assert msg[32:36] == be(2**32 - 1, 4)
    assert struct.unpack(">cHH6sQcI8sI", msg)[4:] == (2**64 - 1, b"S", 2**32 - 1, b"BRK.A   ", 2**32 - 1)
    assert_round_trip(msg, itch.AddOrder(LOCATE, TRACKING, TS, 2**64 - 1, b"S", 2**32 - 1, "BRK.A", 2**32 - 1))


def test_add_order_with_mpid() -> None:
    msg = itch.add_order_mpid(LOCATE, TRACKING, TS, 77, b"B", 300, "MSFT", 4_100_000, "RNGX")
    assert len(msg) == 40
    assert_header(msg, b"F")
    assert msg[11:19] == be(77, 8)
    assert msg[19:20] == b"B"
    assert msg[20:24] == be(300, 4)
    assert msg[24:32] == b"MSFT    "
    assert msg[32:36] == be(4_100_000, 4)
    assert msg[36:40] == b"RNGX"   # Attribution (MPID)
    assert struct.unpack(">cHH6sQcI8sI4s", msg)[4:] == (77, b"B", 300, b"MSFT    ", 4_100_000, b"RNGX")
    assert_round_trip(msg, itch.AddOrderMpid(LOCATE, TRACKING, TS, 77, b"B", 300, "MSFT", 4_100_000, "RNGX"))


def test_order_executed() -> None:
    msg = itch.order_executed(LOCATE, TRACKING, TS, 77, 25, 9001)
    assert len(msg) == 31
    assert_header(msg, b"E")
    assert msg[11:19] == be(77, 8)
    assert msg[19:23] == be(25, 4)     # Executed Shares
    assert msg[23:31] == be(9001, 8)   # Match Number
    assert struct.unpack(">cHH6sQIQ", msg)[4:] == (77, 25, 9001)
    assert_round_trip(msg, itch.OrderExecuted(LOCATE, TRACKING, TS, 77, 25, 9001))


def test_order_executed_with_price() -> None:
    msg = itch.order_executed_with_price(LOCATE, TRACKING, TS, 77, 25, 9002, b"Y", 4_099_900)
    assert len(msg) == 36
    assert_header(msg, b"C")
    assert msg[11:19] == be(77, 8)
    assert msg[19:23] == be(25, 4)
    assert msg[23:31] == be(9002, 8)
    assert msg[31:32] == b"Y"               # Printable
    assert msg[32:36] == be(4_099_900, 4)   # Execution Price
    assert struct.unpack(">cHH6sQIQcI", msg)[4:] == (77, 25, 9002, b"Y", 4_099_900)
    assert_round_trip(msg, itch.OrderExecutedWithPrice(LOCATE, TRACKING, TS, 77, 25, 9002, b"Y", 4_099_900))


def test_order_cancel() -> None:
    msg = itch.order_cancel(LOCATE, TRACKING, TS, 77, 10)
    assert len(msg) == 23
    assert_header(msg, b"X")
    assert msg[11:19] == be(77, 8)
    assert msg[19:23] == be(10, 4)   # Canceled Shares
    assert struct.unpack(">cHH6sQI", msg)[4:] == (77, 10)
    assert_round_trip(msg, itch.OrderCancel(LOCATE, TRACKING, TS, 77, 10))


def test_order_delete() -> None:
    msg = itch.order_delete(LOCATE, TRACKING, TS, 77)
    assert len(msg) == 19
    assert_header(msg, b"D")
    assert msg[11:19] == be(77, 8)
    assert struct.unpack(">cHH6sQ", msg)[4:] == (77,)
    assert_round_trip(msg, itch.OrderDelete(LOCATE, TRACKING, TS, 77))


def test_order_replace() -> None:
    msg = itch.order_replace(LOCATE, TRACKING, TS, 77, 78, 500, 4_100_100)
    assert len(msg) == 35
    assert_header(msg, b"U")
    assert msg[11:19] == be(77, 8)         # Original Order Reference Number
    assert msg[19:27] == be(78, 8)         # New Order Reference Number
    assert msg[27:31] == be(500, 4)        # Shares
    assert msg[31:35] == be(4_100_100, 4)  # Price
    assert struct.unpack(">cHH6sQQII", msg)[4:] == (77, 78, 500, 4_100_100)
    assert_round_trip(msg, itch.OrderReplace(LOCATE, TRACKING, TS, 77, 78, 500, 4_100_100))


def test_trade() -> None:
    msg = itch.trade(LOCATE, TRACKING, TS, 0, b"B", 200, "QQQ", 3_500_000, 9003)
    assert len(msg) == 44
    assert_header(msg, b"P")
    assert msg[11:19] == be(0, 8)
    assert msg[19:20] == b"B"
    assert msg[20:24] == be(200, 4)
    assert msg[24:32] == b"QQQ     "
    assert msg[32:36] == be(3_500_000, 4)
    assert msg[36:44] == be(9003, 8)   # Match Number
    assert struct.unpack(">cHH6sQcI8sIQ", msg)[4:] == (0, b"B", 200, b"QQQ     ", 3_500_000, 9003)
    assert_round_trip(msg, itch.Trade(LOCATE, TRACKING, TS, 0, b"B", 200, "QQQ", 3_500_000, 9003))


def test_generic_encode_matches_the_typed_encoders() -> None:
    assert itch.encode("A", stock_locate=258, tracking_number=772, timestamp=TS,
                       order_reference_number=0x0102030405060708, buy_sell_indicator="B",
                       shares=100, stock=b"AAPL", price=1_234_500) == GOLDEN_ADD_ORDER
    with pytest.raises(TypeError):
        itch.encode(b"D", stock_locate=1, tracking_number=2, timestamp=3)  # no order_reference_number
    with pytest.raises(ItchError, match="unknown"):
        itch.encode(b"Q", stock_locate=1)


def test_timestamp_bounds() -> None:
    assert itch.order_delete(1, 0, 0, 1)[5:11] == bytes(6)
    assert itch.order_delete(1, 0, DAY_NS - 1, 1)[5:11] == be(DAY_NS - 1, 6)


# --- range and type checks: never truncate -------------------------------------------------
def _add(**over) -> bytes:
    args = dict(locate=1, tracking=2, timestamp_ns=TS, order_ref=3, side=b"B", shares=4, stock="AAPL", price=5)
    args.update(over)
    return itch.add_order(**args)


@pytest.mark.parametrize("field, value", [
    ("price", 2**32), ("price", 2**32 + 5), ("price", -1),
    ("shares", 2**32), ("shares", -1),
    ("order_ref", 2**64), ("order_ref", -1),
    ("locate", 2**16), ("tracking", -1),
    ("timestamp_ns", DAY_NS), ("timestamp_ns", -1), ("timestamp_ns", 2**48 - 1),
    ("side", b"X"), ("side", b"b"), ("side", b"BS"), ("side", b""),
    ("stock", "ABCDEFGHI"), ("stock", ""), ("stock", "    "), ("stock", "ÄPPL"), ("stock", "AP\tL"),
])
def test_out_of_range_values_raise_value_error(field: str, value: object) -> None:
    with pytest.raises(ValueError):
        _add(**{field: value})


def test_price_overflow_names_the_field() -> None:
    with pytest.raises(ItchError, match=r"price must be between 0 and 4294967295"):
        _add(price=2**32)


@pytest.mark.parametrize("field, value", [("price", 1.5), ("shares", "100"), ("stock", 42)])
def test_wrong_types_raise_type_error(field: str, value: object) -> None:
    with pytest.raises(TypeError):
        _add(**{field: value})


def test_eight_character_stock_and_str_side() -> None:
    msg = _add(stock="ABCDEFGH", side="S")
    assert msg[24:32] == b"ABCDEFGH" and msg[19:20] == b"S"


@pytest.mark.parametrize("make", [
    lambda: itch.system_event(0, 0, TS, b"X"),
    lambda: itch.stock_trading_action(1, 0, TS, "AAPL", b"X", ""),
    lambda: itch.order_executed_with_price(1, 0, TS, 1, 1, 1, b"X", 1),
    lambda: itch.trade(1, 0, TS, 0, b"X", 1, "A", 1, 1),
    lambda: itch.add_order_mpid(1, 0, TS, 1, b"B", 1, "A", 1, "TOOLONG"),
    lambda: itch.stock_directory(1, 0, TS, "A", b"Q", b"N", 2**32, b"N", b"C", "Z", b"P", b"N",
                                 b"N", b"1", b"Y", 1, b"N"),
])
def test_invalid_codes_and_overflows_raise(make) -> None:
    with pytest.raises(ItchError):
        make()


# --- the in-place fast path ----------------------------------------------------------------
def test_pack_into_writes_consecutive_messages() -> None:
    buf = bytearray(100)
    end = itch.pack_into(buf, 0, b"A", 258, 772, TS, 0x0102030405060708, b"B", 100, "AAPL", 1_234_500)
    assert end == 36
    end = itch.pack_into(buf, end, "E", LOCATE, TRACKING, TS, 77, 25, 9001)
    assert end == 36 + 31
    assert bytes(buf[:end]) == GOLDEN_ADD_ORDER + itch.order_executed(LOCATE, TRACKING, TS, 77, 25, 9001)
    assert bytes(buf[end:]) == bytes(100 - end)


def test_pack_into_a_memoryview_at_an_offset() -> None:
    backing = bytearray(64)
    view = memoryview(backing)[10:]
    assert itch.pack_into(view, 5, b"D", 1, 2, 3, 4) == 5 + 19
    assert bytes(backing[15:34]) == itch.order_delete(1, 2, 3, 4)


def test_pack_into_refuses_without_writing() -> None:
    buf = bytearray(40)
    with pytest.raises(ItchError, match="needs 36 bytes"):
        itch.pack_into(buf, 5, b"A", 1, 2, 3, 4, b"B", 5, "X", 6)
    with pytest.raises(ItchError):
        itch.pack_into(buf, -36, b"A", 1, 2, 3, 4, b"B", 5, "X", 6)
    with pytest.raises(ItchError, match="price"):
        itch.pack_into(buf, 0, b"A", 1, 2, 3, 4, b"B", 5, "X", 2**32)
    with pytest.raises(TypeError):
        itch.pack_into(buf, 0, b"A", 1, 2, 3)
    assert buf == bytearray(40)


# --- malformed input ------------------------------------------------------------------------
def test_decode_rejects_empty_and_unknown_types() -> None:
    for bad in (b"", b"Q" + bytes(39), b"\x00" * 12, b"a" + bytes(35), b"I" + bytes(49)):
        with pytest.raises(ItchError):
            itch.decode(bad)


@pytest.mark.parametrize("letter", sorted(SPEC_LENGTH))
def test_decode_rejects_wrong_lengths(letter: bytes) -> None:
    if letter in (b"E", b"X", b"D", b"U"):  # all-integer bodies: zeros make a valid message
        itch.decode(letter + bytes(SPEC_LENGTH[letter] - 1))
    for size in (1, SPEC_LENGTH[letter] - 1, SPEC_LENGTH[letter] + 1, 2 * SPEC_LENGTH[letter]):
        with pytest.raises(ItchError, match="bytes"):
            itch.decode(letter + bytes(size - 1))


def test_decode_accepts_bytearray_and_memoryview() -> None:
    assert itch.decode(bytearray(GOLDEN_ADD_ORDER)) == itch.decode(memoryview(GOLDEN_ADD_ORDER))


@pytest.mark.parametrize("offset, value, why", [
    (19, b"X", "Buy/Sell other than B or S"),
    (24, b"\xc4", "non-ASCII stock"),
    (24, b"\x00", "control character in the stock"),
    (24, b"        ", "blank stock"),
    (5, be(DAY_NS, 6), "timestamp past midnight"),
])
def test_decode_rejects_what_no_encoder_produces(offset: int, value: bytes, why: str) -> None:
    bad = bytearray(GOLDEN_ADD_ORDER)
    bad[offset:offset + len(value)] = value
    with pytest.raises(ItchError):
        itch.decode(bytes(bad))


# --- properties ---------------------------------------------------------------------------
def _decode_or_error(data: bytes) -> None:
    try:
        msg = itch.decode(data)
    except ItchError:
        return
    # Whatever the decoder accepts, the encoder reproduces byte for byte.
    assert itch.encode_message(msg) == data


@FAST
@given(st.binary(max_size=60))
def test_random_bytes_raise_only_itch_error(data: bytes) -> None:
    _decode_or_error(data)


@FAST
@given(st.sampled_from(sorted(SPEC_LENGTH)), st.data())
def test_random_bodies_of_the_right_length(letter: bytes, data: st.DataObject) -> None:
    # Exact lengths reach the field checks that random lengths almost never do.
    alphabet = st.sampled_from(b"BSYNQHPTOMEC AZ19\x00\xff")
    body = data.draw(st.lists(alphabet, min_size=SPEC_LENGTH[letter] - 1, max_size=SPEC_LENGTH[letter] - 1)
                     .map(bytes) | st.binary(min_size=SPEC_LENGTH[letter] - 1, max_size=SPEC_LENGTH[letter] - 1))
    _decode_or_error(letter + body)


_printable = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=8)


def _value(field: itch.Field) -> st.SearchStrategy:
    if field.kind == "u48":
        return st.integers(0, DAY_NS - 1)
    if field.kind in ("u16", "u32", "u64", "price4"):
        return st.integers(0, 2 ** (8 * field.length) - 1)
    if field.kind == "char":
        if field.values is not None:
            return st.sampled_from(sorted(field.values))
        return st.integers(0x20, 0x7E).map(lambda c: bytes([c]))
    text = _printable.filter(lambda s: len(s) <= field.length).map(lambda s: s.rstrip(" "))
    return text.filter(lambda s: s.strip(" ")) if field.required else text


@FAST
@given(st.sampled_from(sorted(SPEC_LENGTH)), st.data())
def test_valid_values_round_trip(letter: bytes, data: st.DataObject) -> None:
    layout = itch.LAYOUTS[letter]
    values = [data.draw(_value(f)) for f in layout.fields[1:]]
    msg = itch.pack_into(buf := bytearray(64), 0, letter, *values)
    wire = bytes(buf[:msg])
    assert len(wire) == SPEC_LENGTH[letter]
    assert tuple(itch.decode(wire)) == tuple(values)
