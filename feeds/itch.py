"""Nasdaq TotalView-ITCH 5.0 messages: encode, pack in place, decode.  Pure: no I/O.

Every message opens with the same 11 bytes (offset, length, field)::

    0   1  Message Type       Alpha    the letter that names the layout
    1   2  Stock Locate       uint16   the security's locate code (0 for System Event)
    3   2  Tracking Number    uint16   Nasdaq internal tracking number
    5   6  Timestamp          uint48   nanoseconds since midnight

and the body that follows depends on the type (the spec's offsets, from the message start)::

    'S' System Event (12)               'R' Stock Directory (39)
        11  1  Event Code                   11  8  Stock
                                            19  1  Market Category
    'H' Stock Trading Action (25)           20  1  Financial Status Indicator
        11  8  Stock                        21  4  Round Lot Size             uint32
        19  1  Trading State                25  1  Round Lots Only
        20  1  Reserved                     26  1  Issue Classification
        21  4  Reason                       27  2  Issue Sub-Type
                                            29  1  Authenticity
    'A' Add Order, no MPID (36)             30  1  Short Sale Threshold Indicator
        11  8  Order Reference Number       31  1  IPO Flag
        19  1  Buy/Sell Indicator           32  1  LULD Reference Price Tier
        20  4  Shares                       33  1  ETP Flag
        24  8  Stock                        34  4  ETP Leverage Factor        uint32
        32  4  Price                        38  1  Inverse Indicator

    'F' Add Order with MPID (40)        'E' Order Executed (31)
        11..35 as 'A'                       11  8  Order Reference Number
        36  4  Attribution                  19  4  Executed Shares
                                            23  8  Match Number
    'C' Order Executed With Price (36)
        11..30 as 'E'                   'X' Order Cancel (23)
        31  1  Printable                    11  8  Order Reference Number
        32  4  Execution Price              19  4  Canceled Shares

    'D' Order Delete (19)               'U' Order Replace (35)
        11  8  Order Reference Number       11  8  Original Order Reference Number
                                            19  8  New Order Reference Number
    'P' Trade, non-cross (44)               27  4  Shares
        11  8  Order Reference Number       31  4  Price
        19  1  Buy/Sell Indicator
        20  4  Shares
        24  8  Stock
        32  4  Price
        36  8  Match Number

Data types (spec section 3): integers are unsigned big-endian; Order Reference and Match
Numbers are 8 bytes, Shares 4; Price(4) is a uint32 with four implied decimal places
(``1234500`` is 123.45, kept here as the raw integer: never a float); the Timestamp is a
6-byte unsigned count of nanoseconds since midnight; Alpha fields are ASCII, left-justified
and padded on the right with spaces.

The layouts below are :class:`MessageLayout` descriptors that state each field's offset as
the spec's tables do; import-time checks prove every layout contiguous, of the spec's total
length and opening with the common header, and the ``struct`` formats are derived from them.

Encoders validate and never truncate: a value that does not fit its field raises
:class:`ItchError` (a ``ValueError``) naming the field, a non-integer where an integer
belongs raises ``TypeError``.  :func:`decode` is their inverse and exactly as strict: it
accepts only bytes that some encoder call produces, so ``encode_message(decode(b)) == b`` for
every ``b`` it accepts, and anything else (unknown type, wrong length, non-ASCII text, a side
other than B/S, a timestamp past midnight) raises :class:`ItchError`, never another error.

MoldUDP64 framing is :mod:`ringex.feeds.moldudp64`'s business; here a message is the bytes of
one ITCH message.
"""

from __future__ import annotations

import operator
import struct
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple, Union

__all__ = [
    "ItchError", "Field", "MessageLayout", "LAYOUTS", "MESSAGE_LENGTH", "ItchMessage",
    "NS_PER_DAY", "PRICE_SCALE", "MESSAGE_TYPE_OFFSET", "STOCK_LOCATE_OFFSET",
    "TRACKING_NUMBER_OFFSET", "TIMESTAMP_OFFSET", "HEADER_LENGTH",
    "EVENT_START_OF_MESSAGES", "EVENT_START_OF_SYSTEM_HOURS", "EVENT_START_OF_MARKET_HOURS",
    "EVENT_END_OF_MARKET_HOURS", "EVENT_END_OF_SYSTEM_HOURS", "EVENT_END_OF_MESSAGES",
    "SYSTEM_EVENT_CODES", "TRADING_STATE_HALTED", "TRADING_STATE_PAUSED",
    "TRADING_STATE_QUOTATION_ONLY", "TRADING_STATE_TRADING", "TRADING_STATES", "BUY", "SELL",
    "SIDES", "PRINTABLE_YES", "PRINTABLE_NO", "PRINTABLE_CODES",
    "SystemEvent", "StockDirectory", "StockTradingAction", "AddOrder", "AddOrderMpid",
    "OrderExecuted", "OrderExecutedWithPrice", "OrderCancel", "OrderDelete", "OrderReplace",
    "Trade", "encode", "encode_message", "pack_into", "pack_message_into", "decode",
    "system_event", "stock_directory", "stock_trading_action", "add_order", "add_order_mpid",
    "order_executed", "order_executed_with_price", "order_cancel", "order_delete",
    "order_replace", "trade", "wire_struct", "alpha",
]


class ItchError(ValueError):
    """An ITCH message that is not what the spec allows (unknown type, wrong length, a value
    that does not fit its field)."""


# --- data types -----------------------------------------------------------------------------
NS_PER_DAY = 86_400 * 1_000_000_000
#: Price(4): the wire integer is the price times this.
PRICE_SCALE = 10_000

#: Wire length of each field kind (``alpha`` takes its length from the field).
KIND_LENGTH = {
    "type": 1,     # the Message Type letter
    "u16": 2,
    "u32": 4,
    "u48": 6,      # the Timestamp; struct has no 6-byte code, so it travels as H + I
    "u64": 8,
    "price4": 4,   # Price(4)
    "char": 1,     # a one-letter Alpha code
    "alpha": None,
}
_STRUCT_CODE = {"type": "c", "u16": "H", "u32": "I", "u48": "HI", "u64": "Q", "price4": "I", "char": "c"}

# --- the common header (the same in every layout; checked below) ---------------------------
MESSAGE_TYPE_OFFSET = 0
STOCK_LOCATE_OFFSET = 1
TRACKING_NUMBER_OFFSET = 3
TIMESTAMP_OFFSET = 5
HEADER_LENGTH = 11

# --- code values ----------------------------------------------------------------------------
# System Event codes (spec 4.1).
EVENT_START_OF_MESSAGES = b"O"
EVENT_START_OF_SYSTEM_HOURS = b"S"
EVENT_START_OF_MARKET_HOURS = b"Q"
EVENT_END_OF_MARKET_HOURS = b"M"
EVENT_END_OF_SYSTEM_HOURS = b"E"
EVENT_END_OF_MESSAGES = b"C"
SYSTEM_EVENT_CODES = frozenset({
    EVENT_START_OF_MESSAGES, EVENT_START_OF_SYSTEM_HOURS, EVENT_START_OF_MARKET_HOURS,
    EVENT_END_OF_MARKET_HOURS, EVENT_END_OF_SYSTEM_HOURS, EVENT_END_OF_MESSAGES,
})
# Trading State of Stock Trading Action (spec 4.2.2).
TRADING_STATE_HALTED = b"H"
TRADING_STATE_PAUSED = b"P"
TRADING_STATE_QUOTATION_ONLY = b"Q"
TRADING_STATE_TRADING = b"T"
TRADING_STATES = frozenset({
    TRADING_STATE_HALTED, TRADING_STATE_PAUSED, TRADING_STATE_QUOTATION_ONLY, TRADING_STATE_TRADING,
})
BUY = b"B"
SELL = b"S"
SIDES = frozenset({BUY, SELL})
PRINTABLE_YES = b"Y"
PRINTABLE_NO = b"N"
PRINTABLE_CODES = frozenset({PRINTABLE_YES, PRINTABLE_NO})

_PRINTABLE_ASCII = bytes(range(0x20, 0x7F))


# --- descriptors ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Field:
    """One field of a message as the spec's table gives it."""

    name: str
    offset: int
    length: int
    kind: str
    #: The only values a one-letter code may take (``None``: any printable ASCII letter).
    values: frozenset[bytes] | None = None
    #: An alpha field that may not be all blanks (a message about no stock is no message).
    required: bool = False

    @property
    def end(self) -> int:
        return self.offset + self.length


@dataclass(frozen=True)
class MessageLayout:
    """One message type's layout; construction checks it against the spec's rules."""

    message_type: bytes
    name: str
    length: int
    fields: tuple[Field, ...]

    def __post_init__(self) -> None:
        problem = self.problem()
        if problem:
            raise ValueError(f"ITCH layout {self.name!r}: {problem}")

    def problem(self) -> str | None:
        """Why this is not a well-formed ITCH 5.0 layout, or ``None``."""
        if len(self.message_type) != 1:
            return f"message type must be one byte, got {self.message_type!r}"
        at = 0
        for f in self.fields:
            if f.kind not in KIND_LENGTH:
                return f"field {f.name!r} has unknown kind {f.kind!r}"
            if f.offset != at:
                # A gap or an overlap means a mistyped offset or length in the table.
                return f"field {f.name!r} at offset {f.offset}, expected {at}"
            expected = KIND_LENGTH[f.kind]
            if f.length < 1 or expected is not None and f.length != expected:
                return f"field {f.name!r} of kind {f.kind} cannot be {f.length} bytes long"
            at = f.end
        if at != self.length:
            return f"fields end at {at}, the spec's length is {self.length}"
        header = [(f.name, f.offset, f.length, f.kind) for f in self.fields[:4]]
        if header != _COMMON_HEADER:
            return f"does not open with the common header: {header}"
        return None

    def field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(f"{self.name} has no field {name!r}")

    def offset(self, name: str) -> int:
        return self.field(name).offset

    @property
    def struct_format(self) -> str:
        return ">" + "".join(
            f"{f.length}s" if f.kind == "alpha" else _STRUCT_CODE[f.kind] for f in self.fields
        )


_COMMON_HEADER = [
    ("message_type", MESSAGE_TYPE_OFFSET, 1, "type"),
    ("stock_locate", STOCK_LOCATE_OFFSET, 2, "u16"),
    ("tracking_number", TRACKING_NUMBER_OFFSET, 2, "u16"),
    ("timestamp", TIMESTAMP_OFFSET, 6, "u48"),
]


def _layout(message_type: bytes, name: str, length: int, *body: Field) -> MessageLayout:
    head = tuple(Field(n, o, ln, k) for n, o, ln, k in _COMMON_HEADER)
    return MessageLayout(message_type, name, length, head + body)


F = Field
SYSTEM_EVENT = _layout(b"S", "System Event", 12,
    F("event_code", 11, 1, "char", SYSTEM_EVENT_CODES),
)
STOCK_DIRECTORY = _layout(b"R", "Stock Directory", 39,
    F("stock", 11, 8, "alpha", required=True),
    F("market_category", 19, 1, "char"),
    F("financial_status_indicator", 20, 1, "char"),
    F("round_lot_size", 21, 4, "u32"),
    F("round_lots_only", 25, 1, "char"),
    F("issue_classification", 26, 1, "char"),
    F("issue_sub_type", 27, 2, "alpha"),
    F("authenticity", 29, 1, "char"),
    F("short_sale_threshold_indicator", 30, 1, "char"),
    F("ipo_flag", 31, 1, "char"),
    F("luld_reference_price_tier", 32, 1, "char"),
    F("etp_flag", 33, 1, "char"),
    F("etp_leverage_factor", 34, 4, "u32"),
    F("inverse_indicator", 38, 1, "char"),
)
STOCK_TRADING_ACTION = _layout(b"H", "Stock Trading Action", 25,
    F("stock", 11, 8, "alpha", required=True),
    F("trading_state", 19, 1, "char", TRADING_STATES),
    F("reserved", 20, 1, "char"),
    F("reason", 21, 4, "alpha"),
)
ADD_ORDER = _layout(b"A", "Add Order", 36,
    F("order_reference_number", 11, 8, "u64"),
    F("buy_sell_indicator", 19, 1, "char", SIDES),
    F("shares", 20, 4, "u32"),
    F("stock", 24, 8, "alpha", required=True),
    F("price", 32, 4, "price4"),
)
ADD_ORDER_MPID = _layout(b"F", "Add Order with MPID Attribution", 40,
    *ADD_ORDER.fields[4:],
    F("attribution", 36, 4, "alpha"),
)
ORDER_EXECUTED = _layout(b"E", "Order Executed", 31,
    F("order_reference_number", 11, 8, "u64"),
    F("executed_shares", 19, 4, "u32"),
    F("match_number", 23, 8, "u64"),
)
ORDER_EXECUTED_WITH_PRICE = _layout(b"C", "Order Executed With Price", 36,
    *ORDER_EXECUTED.fields[4:],
    F("printable", 31, 1, "char", PRINTABLE_CODES),
    F("execution_price", 32, 4, "price4"),
)
ORDER_CANCEL = _layout(b"X", "Order Cancel", 23,
    F("order_reference_number", 11, 8, "u64"),
    F("canceled_shares", 19, 4, "u32"),
)
ORDER_DELETE = _layout(b"D", "Order Delete", 19,
    F("order_reference_number", 11, 8, "u64"),
)
ORDER_REPLACE = _layout(b"U", "Order Replace", 35,
    F("original_order_reference_number", 11, 8, "u64"),
    F("new_order_reference_number", 19, 8, "u64"),
    F("shares", 27, 4, "u32"),
    F("price", 31, 4, "price4"),
)
TRADE = _layout(b"P", "Trade (non-cross)", 44,
    F("order_reference_number", 11, 8, "u64"),
    F("buy_sell_indicator", 19, 1, "char", SIDES),
    F("shares", 20, 4, "u32"),
    F("stock", 24, 8, "alpha", required=True),
    F("price", 32, 4, "price4"),
    F("match_number", 36, 8, "u64"),
)
del F

LAYOUTS: dict[bytes, MessageLayout] = {
    layout.message_type: layout
    for layout in (
        SYSTEM_EVENT, STOCK_DIRECTORY, STOCK_TRADING_ACTION, ADD_ORDER, ADD_ORDER_MPID,
        ORDER_EXECUTED, ORDER_EXECUTED_WITH_PRICE, ORDER_CANCEL, ORDER_DELETE, ORDER_REPLACE,
        TRADE,
    )
}
#: Total length in bytes of each supported message type, Message Type byte included.
MESSAGE_LENGTH: dict[bytes, int] = {t: layout.length for t, layout in LAYOUTS.items()}


# --- decoded records (field names: the spec's, in snake_case; Message Type is the class) ----
class SystemEvent(NamedTuple):
    stock_locate: int
    tracking_number: int
    timestamp: int
    event_code: bytes
    MESSAGE_TYPE = b"S"


class StockDirectory(NamedTuple):
    stock_locate: int
    tracking_number: int
    timestamp: int
    stock: str
    market_category: bytes
    financial_status_indicator: bytes
    round_lot_size: int
    round_lots_only: bytes
    issue_classification: bytes
    issue_sub_type: str
    authenticity: bytes
    short_sale_threshold_indicator: bytes
    ipo_flag: bytes
    luld_reference_price_tier: bytes
    etp_flag: bytes
    etp_leverage_factor: int
    inverse_indicator: bytes
    MESSAGE_TYPE = b"R"


class StockTradingAction(NamedTuple):
    stock_locate: int
    tracking_number: int
    timestamp: int
    stock: str
    trading_state: bytes
    reserved: bytes
    reason: str
    MESSAGE_TYPE = b"H"


class AddOrder(NamedTuple):
    stock_locate: int
    tracking_number: int
    timestamp: int
    order_reference_number: int
    buy_sell_indicator: bytes
    shares: int
    stock: str
    price: int
    MESSAGE_TYPE = b"A"


class AddOrderMpid(NamedTuple):
    stock_locate: int
    tracking_number: int
    timestamp: int
    order_reference_number: int
    buy_sell_indicator: bytes
    shares: int
    stock: str
    price: int
    attribution: str
    MESSAGE_TYPE = b"F"


class OrderExecuted(NamedTuple):
    stock_locate: int
    tracking_number: int
    timestamp: int
    order_reference_number: int
    executed_shares: int
    match_number: int
    MESSAGE_TYPE = b"E"


class OrderExecutedWithPrice(NamedTuple):
    stock_locate: int
    tracking_number: int
    timestamp: int
    order_reference_number: int
    executed_shares: int
    match_number: int
    printable: bytes
    execution_price: int
    MESSAGE_TYPE = b"C"


class OrderCancel(NamedTuple):
    stock_locate: int
    tracking_number: int
    timestamp: int
    order_reference_number: int
    canceled_shares: int
    MESSAGE_TYPE = b"X"


class OrderDelete(NamedTuple):
    stock_locate: int
    tracking_number: int
    timestamp: int
    order_reference_number: int
    MESSAGE_TYPE = b"D"


class OrderReplace(NamedTuple):
    stock_locate: int
    tracking_number: int
    timestamp: int
    original_order_reference_number: int
    new_order_reference_number: int
    shares: int
    price: int
    MESSAGE_TYPE = b"U"


class Trade(NamedTuple):
    stock_locate: int
    tracking_number: int
    timestamp: int
    order_reference_number: int
    buy_sell_indicator: bytes
    shares: int
    stock: str
    price: int
    match_number: int
    MESSAGE_TYPE = b"P"


ItchMessage = Union[
    SystemEvent, StockDirectory, StockTradingAction, AddOrder, AddOrderMpid, OrderExecuted,
    OrderExecutedWithPrice, OrderCancel, OrderDelete, OrderReplace, Trade,
]
_RECORDS: dict[bytes, type] = {
    cls.MESSAGE_TYPE: cls
    for cls in (
        SystemEvent, StockDirectory, StockTradingAction, AddOrder, AddOrderMpid, OrderExecuted,
        OrderExecutedWithPrice, OrderCancel, OrderDelete, OrderReplace, Trade,
    )
}


# --- field codecs ---------------------------------------------------------------------------
# An encoder checks one value and appends its struct argument(s) to a list; a decoder turns
# the struct value(s) back, raising ItchError for anything an encoder would have refused.

def _as_int(name: str, value: Any) -> int:
    try:
        return operator.index(value)  # ints and numpy integers; never a float or a str
    except TypeError:
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}") from None


def _uint_encoder(name: str, bits: int) -> Callable[[Any, list], None]:
    top = (1 << bits) - 1

    def encode(value: Any, out: list) -> None:
        v = _as_int(name, value)
        if not 0 <= v <= top:
            raise ItchError(f"{name} must be between 0 and {top} (uint{bits}), got {v}")
        out.append(v)

    return encode


def _timestamp_encoder(name: str) -> Callable[[Any, list], None]:
    def encode(value: Any, out: list) -> None:
        v = _as_int(name, value)
        if not 0 <= v < NS_PER_DAY:
            raise ItchError(f"{name} must be nanoseconds since midnight, 0 <= t < {NS_PER_DAY}, got {v}")
        out.append(v >> 32)
        out.append(v & 0xFFFF_FFFF)

    return encode


def _ascii(name: str, value: Any) -> bytes:
    if isinstance(value, str):
        try:
            raw = value.encode("ascii")
        except UnicodeEncodeError:
            raise ItchError(f"{name} must be ASCII, got {value!r}") from None
    elif isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value)
    else:
        raise TypeError(f"{name} must be str or bytes, got {type(value).__name__}")
    if raw.translate(None, _PRINTABLE_ASCII):
        raise ItchError(f"{name} must be printable ASCII, got {value!r}")
    return raw


def _char_encoder(f: Field) -> Callable[[Any, list], None]:
    def encode(value: Any, out: list) -> None:
        raw = _ascii(f.name, value)
        if len(raw) != 1:
            raise ItchError(f"{f.name} must be exactly one character, got {value!r}")
        if f.values is not None and raw not in f.values:
            raise ItchError(f"{f.name} must be one of {sorted(f.values)}, got {raw!r}")
        out.append(raw)

    return encode


def _alpha_encoder(f: Field) -> Callable[[Any, list], None]:
    def encode(value: Any, out: list) -> None:
        raw = _ascii(f.name, value)
        if len(raw) > f.length:
            raise ItchError(f"{f.name} must be at most {f.length} characters, got {value!r}")
        if f.required and not raw.strip(b" "):
            raise ItchError(f"{f.name} must not be blank")
        out.append(raw.ljust(f.length, b" "))

    return encode


def _encoder(f: Field) -> Callable[[Any, list], None]:
    if f.kind == "u48":
        return _timestamp_encoder(f.name)
    if f.kind == "char":
        return _char_encoder(f)
    if f.kind == "alpha":
        return _alpha_encoder(f)
    return _uint_encoder(f.name, 8 * f.length)


def _decode_error(layout: MessageLayout, f: Field, why: str) -> ItchError:
    return ItchError(f"{layout.name} ({layout.message_type.decode()}): {f.name} at offset {f.offset}: {why}")


def _decoder(layout: MessageLayout, f: Field) -> tuple[int, Callable[..., Any]]:
    """``(number of struct values it consumes, function of them)``."""
    if f.kind == "u48":
        def timestamp(hi: int, lo: int) -> int:
            v = hi << 32 | lo
            if v >= NS_PER_DAY:
                raise _decode_error(layout, f, f"{v} ns is not a time of day")
            return v
        return 2, timestamp
    if f.kind in ("char", "alpha"):
        def text(raw: bytes) -> Any:
            if raw.translate(None, _PRINTABLE_ASCII):
                raise _decode_error(layout, f, f"{raw!r} is not printable ASCII")
            if f.kind == "char":
                if f.values is not None and raw not in f.values:
                    raise _decode_error(layout, f, f"{raw!r} is not one of {sorted(f.values)}")
                return raw
            s = raw.decode("ascii").rstrip(" ")
            if f.required and not s.strip(" "):
                raise _decode_error(layout, f, "blank")
            return s
        return 1, text
    return 1, None  # an integer: the struct value as it is


class _Codec:
    """Everything derived from one layout to pack and unpack it."""

    __slots__ = ("layout", "record", "struct", "encoders", "decoders", "length", "type_byte")

    def __init__(self, layout: MessageLayout, record: type) -> None:
        body = layout.fields[1:]  # the Message Type is the record's class, not a field
        if record._fields != tuple(f.name for f in body):
            raise ValueError(f"{record.__name__} fields do not match the {layout.name} layout")
        self.layout = layout
        self.record = record
        self.struct = struct.Struct(layout.struct_format)
        if self.struct.size != layout.length:
            raise ValueError(f"{layout.name}: struct {layout.struct_format} is {self.struct.size} bytes")
        self.encoders = tuple(_encoder(f) for f in body)
        self.decoders = tuple(_decoder(layout, f) for f in layout.fields[1:])
        self.length = layout.length
        self.type_byte = layout.message_type

    def args(self, values: tuple) -> list:
        if len(values) != len(self.encoders):
            raise TypeError(
                f"{self.layout.name} takes {len(self.encoders)} field values, got {len(values)}"
            )
        out: list = [self.type_byte]
        for encode, value in zip(self.encoders, values):
            encode(value, out)
        return out

    def decode(self, buf: Any) -> Any:
        raw = self.struct.unpack(buf)
        values = []
        i = 1  # raw[0] is the Message Type
        for width, convert in self.decoders:
            if convert is None:
                values.append(raw[i])
            else:
                values.append(convert(*raw[i:i + width]))
            i += width
        return self.record._make(values)


_CODECS: dict[bytes, _Codec] = {t: _Codec(layout, _RECORDS[t]) for t, layout in LAYOUTS.items()}
assert set(_CODECS) == set(_RECORDS)


def _codec(msg_type: bytes | str) -> _Codec:
    key = msg_type.encode("ascii", "replace") if isinstance(msg_type, str) else bytes(msg_type)
    codec = _CODECS.get(key)
    if codec is None:
        raise ItchError(f"unknown or unsupported ITCH message type {msg_type!r}")
    return codec


# --- generic API ----------------------------------------------------------------------------
def encode(msg_type: bytes | str, **fields: Any) -> bytes:
    """The bytes of a message of ``msg_type`` whose fields (the record's names) are given."""
    codec = _codec(msg_type)
    return codec.struct.pack(*codec.args(tuple(codec.record(**fields))))


def encode_message(msg: ItchMessage) -> bytes:
    """The bytes of a decoded record (the inverse of :func:`decode`)."""
    codec = _codec(type(msg).MESSAGE_TYPE)
    return codec.struct.pack(*codec.args(tuple(msg)))


def pack_into(buf: bytearray | memoryview, offset: int, msg_type: bytes | str, *values: Any) -> int:
    """Write one message at ``buf[offset:]`` from its field values in spec order (Message Type
    excluded) and return the offset just past it.  The publisher's hot path: no bytes object
    per message, the same validation as :func:`encode`."""
    codec = _codec(msg_type)
    args = codec.args(values)
    # struct would count a negative offset from the end; a short buffer is our error.
    if offset < 0 or offset + codec.length > len(buf):
        raise ItchError(
            f"{codec.layout.name} needs {codec.length} bytes at offset {offset}, buffer has {len(buf)}"
        )
    codec.struct.pack_into(buf, offset, *args)
    return offset + codec.length


def pack_message_into(buf: bytearray | memoryview, offset: int, msg: ItchMessage) -> int:
    """:func:`pack_into` for a decoded record."""
    return pack_into(buf, offset, type(msg).MESSAGE_TYPE, *msg)


def decode(buf: bytes | bytearray | memoryview) -> ItchMessage:
    """The record of exactly one ITCH message; :class:`ItchError` if ``buf`` is not one."""
    view = memoryview(buf).cast("B") if not isinstance(buf, (bytes, bytearray)) else buf
    if len(view) == 0:
        raise ItchError("empty ITCH message")
    codec = _CODECS.get(bytes(view[:1]))
    if codec is None:
        raise ItchError(f"unknown or unsupported ITCH message type {bytes(view[:1])!r}")
    if len(view) != codec.length:
        raise ItchError(
            f"{codec.layout.name} ({codec.type_byte.decode()}) is {codec.length} bytes, got {len(view)}"
        )
    return codec.decode(view)


def wire_struct(msg_type: bytes) -> struct.Struct:
    """The raw ``struct.Struct`` of one layout, for a hot path whose values are in wire form
    already: the Message Type byte first, the Timestamp as two values (its high 16 bits, its
    low 32), Alpha fields as their padded bytes. It checks nothing but what ``struct`` checks:
    an integer out of its field's range raises ``struct.error``, never truncates."""
    return struct.Struct(LAYOUTS[bytes(msg_type)].struct_format)


def alpha(value: str, length: int) -> bytes:
    """An Alpha field's wire bytes (left-justified, space-padded; ValueError if too long or
    not printable ASCII)."""
    raw = value.encode("ascii")
    if len(raw) > length or raw.translate(None, _PRINTABLE_ASCII):
        raise ItchError(f"{value!r} is not at most {length} printable ASCII characters")
    return raw.ljust(length, b" ")


# --- one encoder per message type (arguments in spec order) ---------------------------------
def _pack(msg_type: bytes, *values: Any) -> bytes:
    codec = _CODECS[msg_type]
    return codec.struct.pack(*codec.args(values))


def system_event(locate: int, tracking: int, timestamp_ns: int, event_code: bytes) -> bytes:
    return _pack(b"S", locate, tracking, timestamp_ns, event_code)


def stock_directory(
    locate: int, tracking: int, timestamp_ns: int, stock: str, market_category: bytes,
    financial_status_indicator: bytes, round_lot_size: int, round_lots_only: bytes,
    issue_classification: bytes, issue_sub_type: str, authenticity: bytes,
    short_sale_threshold_indicator: bytes, ipo_flag: bytes, luld_reference_price_tier: bytes,
    etp_flag: bytes, etp_leverage_factor: int, inverse_indicator: bytes,
) -> bytes:
    return _pack(
        b"R", locate, tracking, timestamp_ns, stock, market_category, financial_status_indicator,
        round_lot_size, round_lots_only, issue_classification, issue_sub_type, authenticity,
        short_sale_threshold_indicator, ipo_flag, luld_reference_price_tier, etp_flag,
        etp_leverage_factor, inverse_indicator,
    )


def stock_trading_action(
    locate: int, tracking: int, timestamp_ns: int, stock: str, trading_state: bytes,
    reason: str, *, reserved: bytes = b" ",
) -> bytes:
    # Reserved sits between Trading State and Reason on the wire; as an Alpha it is a blank.
    return _pack(b"H", locate, tracking, timestamp_ns, stock, trading_state, reserved, reason)


def add_order(
    locate: int, tracking: int, timestamp_ns: int, order_ref: int, side: bytes, shares: int,
    stock: str, price: int,
) -> bytes:
    return _pack(b"A", locate, tracking, timestamp_ns, order_ref, side, shares, stock, price)


def add_order_mpid(
    locate: int, tracking: int, timestamp_ns: int, order_ref: int, side: bytes, shares: int,
    stock: str, price: int, attribution: str,
) -> bytes:
    return _pack(b"F", locate, tracking, timestamp_ns, order_ref, side, shares, stock, price, attribution)


def order_executed(
    locate: int, tracking: int, timestamp_ns: int, order_ref: int, executed_shares: int,
    match_number: int,
) -> bytes:
    return _pack(b"E", locate, tracking, timestamp_ns, order_ref, executed_shares, match_number)


def order_executed_with_price(
    locate: int, tracking: int, timestamp_ns: int, order_ref: int, executed_shares: int,
    match_number: int, printable: bytes, execution_price: int,
) -> bytes:
    return _pack(
        b"C", locate, tracking, timestamp_ns, order_ref, executed_shares, match_number,
        printable, execution_price,
    )


def order_cancel(locate: int, tracking: int, timestamp_ns: int, order_ref: int, canceled_shares: int) -> bytes:
    return _pack(b"X", locate, tracking, timestamp_ns, order_ref, canceled_shares)


def order_delete(locate: int, tracking: int, timestamp_ns: int, order_ref: int) -> bytes:
    return _pack(b"D", locate, tracking, timestamp_ns, order_ref)


def order_replace(
    locate: int, tracking: int, timestamp_ns: int, original_order_ref: int, new_order_ref: int,
    shares: int, price: int,
) -> bytes:
    return _pack(b"U", locate, tracking, timestamp_ns, original_order_ref, new_order_ref, shares, price)


def trade(
    locate: int, tracking: int, timestamp_ns: int, order_ref: int, side: bytes, shares: int,
    stock: str, price: int, match_number: int,
) -> bytes:
    return _pack(b"P", locate, tracking, timestamp_ns, order_ref, side, shares, stock, price, match_number)
