"""The SBE wire in plain ints, as the reference model and its tests handle it.

A message is bytes; an event is ``(name, fields)`` where ``fields`` holds *every* field of
the event's layout (stamp included) as plain ints: exactly what ``SCHEMA.decode`` gives for
the engine's output (``IntEnum`` members compare equal to ints), so comparing the model's
events with the engine's is a plain ``==``. ``encode_event`` turns one into bytes,
``event_of`` makes one of a ``Decoded``.

Inbound bytes are encoded and decoded by hand (header, then ``body_struct``) rather than with
``SCHEMA.encode``/``SCHEMA.decode``: the engine must answer messages with invalid enum values
(an ``InvalidSide`` rejection, ...) and the schema's codecs refuse those. For the same
reason the enum values are plain ints here (``BUY``, ``LIMIT``, ``VALID_SIDE``, ...).
"""

from __future__ import annotations

import struct
from typing import Any

from ringex.engine.wire.codec import HEADER
from ringex.engine.wire.messages import (
    INBOUND,
    SCHEMA,
    CancelReason,
    FundsAction,
    HaltPolicy,
    InstrumentKind,
    MassCancelScope,
    OrdType,
    RejectReason,
    Side,
    StpMode,
    TimeInForce,
    TradingStatus,
)

Event = tuple[str, dict[str, int]]

INBOUND_IDS = frozenset(m.template_id for m in INBOUND)
STAMP = struct.Struct("<QQQ")
STAMP_FIELDS = ("seq", "timestampNs", "ingressNs")

BUY, SELL = int(Side.Buy), int(Side.Sell)
MARKET, LIMIT, STOP, STOP_LIMIT = (int(OrdType.Market), int(OrdType.Limit), int(OrdType.Stop),
                                   int(OrdType.StopLimit))
DAY, GTC, IOC, FOK = (int(TimeInForce.Day), int(TimeInForce.GTC), int(TimeInForce.IOC),
                      int(TimeInForce.FOK))
TRADING, HALTED, CLOSED = int(TradingStatus.Trading), int(TradingStatus.Halted), int(TradingStatus.Closed)
R = RejectReason
C = CancelReason

_valid = lambda enum: frozenset(int(v) for v in enum)  # noqa: E731
VALID_SIDE = _valid(Side)
VALID_ORD_TYPE = _valid(OrdType)
VALID_TIF = _valid(TimeInForce)
VALID_STP = _valid(StpMode)
VALID_SCOPE = _valid(MassCancelScope)
VALID_KIND = _valid(InstrumentKind)
VALID_HALT_POLICY = _valid(HaltPolicy)
VALID_STATUS = _valid(TradingStatus)
ACCOUNT_DEFAULTS = VALID_STP - {int(StpMode.AccountDefault)}
SPOT, PERPETUAL = int(InstrumentKind.Spot), int(InstrumentKind.Perpetual)
DEPOSIT, WITHDRAW = int(FundsAction.Deposit), int(FundsAction.Withdraw)


def raw_encode(name: str, **fields: Any) -> bytes:
    """Encode an inbound message without validating enums (so invalid values can be sent).

    Missing fields are 0 (blank text)."""
    layout = SCHEMA.message(name)
    unknown = set(fields) - set(layout.field_names)
    if unknown:
        raise KeyError(f"{name} has no field(s) {sorted(unknown)}")
    values = []
    for f in layout.fields:
        v = fields.get(f.name, b"" if f.is_char else 0)
        values.append(v.encode("ascii") if isinstance(v, str) else int(v) if not f.is_char else v)
    return layout.header_bytes + layout.body_struct.pack(*values)


def raw_decode(buf: bytes) -> tuple[int, dict[str, Any] | None, tuple[int, int, int]]:
    """``(templateId, fields or None when the engine does not take it, stamp)``."""
    buf = bytes(buf)
    padded = buf.ljust(HEADER.size + STAMP.size, b"\0")
    block, tid, sid, ver = HEADER.unpack_from(padded, 0)
    stamp = STAMP.unpack_from(padded, HEADER.size)
    if sid != SCHEMA.schema_id or ver != SCHEMA.version or tid not in INBOUND_IDS:
        return tid, None, stamp
    layout = SCHEMA.messages[tid]
    body = layout.body_struct.unpack_from(buf.ljust(layout.size, b"\0"), HEADER.size)
    return tid, dict(zip(layout.field_names, body)), stamp


def encode_event(event: Event) -> bytes:
    name, fields = event
    return SCHEMA.message(name).encode(**fields)


def event_of(decoded: Any) -> Event:
    """A ``Decoded`` (the engine's output) as the model's ``(name, {field: int})``."""
    return decoded.name, {k: int(v) for k, v in decoded.fields.items()}


def describe(event: Event) -> str:
    """One readable line: enum fields by name, zero fields and the stamp left out."""
    name, fields = event
    layout = SCHEMA.message(name)
    parts = []
    for f in layout.fields:
        v = fields.get(f.name, 0)
        if f.name in STAMP_FIELDS:
            continue
        if f.enum is not None:
            try:
                v = f.enum(v).name
            except ValueError:
                pass
        elif v == 0:
            continue
        parts.append(f"{f.name}={v}")
    return f"{name}(seq={fields.get('seq')}, " + ", ".join(parts) + ")"


def describe_input(buf: bytes) -> str:
    tid, fields, stamp = raw_decode(buf)
    if fields is None:
        block, tid, sid, ver = HEADER.unpack_from(bytes(buf).ljust(8, b"\0"), 0)
        return f"<unsupported templateId={tid} schemaId={sid} version={ver} seq={stamp[0]}>"
    layout = SCHEMA.messages[tid]
    parts = []
    for f in layout.fields:
        v = fields[f.name]
        if f.name in ("timestampNs", "ingressNs"):
            continue
        if f.enum is not None:
            try:
                v = f.enum(v).name
            except ValueError:
                v = f"{v}(invalid)"
        parts.append(f"{f.name}={v}")
    return f"{layout.name}(" + ", ".join(parts) + ")"
