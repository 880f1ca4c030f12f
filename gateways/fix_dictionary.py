"""The FIX 4.4 data dictionary of the FIX gateway: the fields and messages it speaks, nothing more.

Tags, names, types and required flags are those of the FIX 4.4 specification (as QuickFIX's
``spec/FIX44.xml`` data dictionary states them), restricted to the messages below and to the
fields of theirs that the exchange uses. Repeating groups are not supported, so a field the
specification allows only inside a group (OrigClOrdID in OrderMassCancelReport's
AffectedOrdGrp, RefMsgType in Logon's NoMsgTypes) is not allowed here.

Two deliberate departures, both stricter than the specification:

* ``Field.values`` lists the enumerated values *we accept*, a subset of the specification's
  where the exchange supports only some (Side buy/sell, OrdType market/limit/stop/stop-limit,
  ...). A value outside it is ValueIsIncorrect. Fields whose values we only send, or whose
  values the gateway interprets itself, carry no list.
* Symbol (55) is required wherever the specification requires the Instrument component: the
  specification lets SecurityID stand in for it, and SecurityID is not in this dictionary.

Tag 7928, SelfTradePreventionMode, is ours (FIX 4.4 reserves 5000-9999 for user-defined
fields): how an order meets a resting order of the same account, as the engine's StpMode.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class FieldType(enum.Enum):
    """How a field's value is written (FIX 4.4 "Data Types"), as far as validation cares."""

    INT = "int"
    SEQNUM = "SeqNum"
    LENGTH = "Length"
    NUMINGROUP = "NumInGroup"
    #: float, and the float-based Price, Qty, Amt and Percentage
    FLOAT = "float"
    CHAR = "char"
    BOOLEAN = "Boolean"
    STRING = "String"
    UTCTIMESTAMP = "UTCTimestamp"
    #: single characters separated by spaces (FIX 4.4 calls ExecInst's type MultipleValueString)
    MULTIPLECHARVALUE = "MultipleCharValue"


@dataclass(frozen=True)
class Field:
    tag: int
    name: str
    type: FieldType
    #: the enumerated values accepted, or None where any well-formed value is
    values: frozenset[bytes] | None = None


@dataclass(frozen=True)
class MessageSpec:
    msg_type: bytes
    name: str
    admin: bool
    #: body tags that must be present (the header's are HEADER_REQUIRED)
    required: tuple[int, ...]
    #: every body tag the message may carry, required ones included
    allowed: frozenset[int]


class SessionRejectReason(enum.IntEnum):
    """SessionRejectReason (373) of a Reject (35=3)."""

    InvalidTagNumber = 0
    RequiredTagMissing = 1
    TagNotDefinedForMessageType = 2
    UndefinedTag = 3
    TagSpecifiedWithoutValue = 4
    ValueIsIncorrect = 5
    IncorrectDataFormat = 6
    CompIdProblem = 9
    SendingTimeAccuracyProblem = 10
    InvalidMsgType = 11
    TagAppearsMoreThanOnce = 13
    TagSpecifiedOutOfRequiredOrder = 14
    Other = 99


class BusinessRejectReason(enum.IntEnum):
    """BusinessRejectReason (380) of a BusinessMessageReject (35=j)."""

    Other = 0
    UnknownId = 1
    UnknownSecurity = 2
    UnsupportedMessageType = 3
    ApplicationNotAvailable = 4
    ConditionallyRequiredFieldMissing = 5
    NotAuthorized = 6


_T = FieldType
_YN = frozenset({b"Y", b"N"})


def _values(*v: str) -> frozenset[bytes]:
    return frozenset(x.encode() for x in v)


_FIELD_LIST = (
    # standard header and trailer
    Field(8, "BeginString", _T.STRING),
    Field(9, "BodyLength", _T.LENGTH),
    Field(35, "MsgType", _T.STRING),
    Field(49, "SenderCompID", _T.STRING),
    Field(56, "TargetCompID", _T.STRING),
    Field(50, "SenderSubID", _T.STRING),
    Field(57, "TargetSubID", _T.STRING),
    Field(34, "MsgSeqNum", _T.SEQNUM),
    Field(43, "PossDupFlag", _T.BOOLEAN, _YN),
    Field(97, "PossResend", _T.BOOLEAN, _YN),
    Field(52, "SendingTime", _T.UTCTIMESTAMP),
    Field(122, "OrigSendingTime", _T.UTCTIMESTAMP),
    Field(10, "CheckSum", _T.STRING),
    # session messages
    Field(98, "EncryptMethod", _T.INT, _values("0")),  # 0 = None: we do not encrypt
    Field(108, "HeartBtInt", _T.INT),
    Field(141, "ResetSeqNumFlag", _T.BOOLEAN, _YN),
    Field(553, "Username", _T.STRING),
    Field(554, "Password", _T.STRING),
    Field(112, "TestReqID", _T.STRING),
    Field(7, "BeginSeqNo", _T.SEQNUM),
    Field(16, "EndSeqNo", _T.SEQNUM),
    Field(36, "NewSeqNo", _T.SEQNUM),
    Field(123, "GapFillFlag", _T.BOOLEAN, _YN),
    Field(45, "RefSeqNum", _T.SEQNUM),
    Field(371, "RefTagID", _T.INT),
    Field(372, "RefMsgType", _T.STRING),
    Field(373, "SessionRejectReason", _T.INT),
    Field(58, "Text", _T.STRING),
    Field(380, "BusinessRejectReason", _T.INT),
    Field(379, "BusinessRejectRefID", _T.STRING),
    # application messages
    Field(1, "Account", _T.STRING),
    Field(11, "ClOrdID", _T.STRING),
    Field(41, "OrigClOrdID", _T.STRING),
    Field(37, "OrderID", _T.STRING),
    Field(17, "ExecID", _T.STRING),
    Field(150, "ExecType", _T.CHAR),
    Field(39, "OrdStatus", _T.CHAR),
    Field(55, "Symbol", _T.STRING),
    Field(54, "Side", _T.CHAR, _values("1", "2")),  # buy, sell
    Field(38, "OrderQty", _T.FLOAT),
    Field(40, "OrdType", _T.CHAR, _values("1", "2", "3", "4")),  # market, limit, stop, stop limit
    Field(44, "Price", _T.FLOAT),
    Field(99, "StopPx", _T.FLOAT),
    Field(59, "TimeInForce", _T.CHAR, _values("0", "1", "3", "4")),  # day, GTC, IOC, FOK
    Field(18, "ExecInst", _T.MULTIPLECHARVALUE, _values("6", "E")),  # post only, do not increase
    Field(111, "MaxFloor", _T.FLOAT),
    Field(60, "TransactTime", _T.UTCTIMESTAMP),
    Field(14, "CumQty", _T.FLOAT),
    Field(151, "LeavesQty", _T.FLOAT),
    Field(6, "AvgPx", _T.FLOAT),
    Field(31, "LastPx", _T.FLOAT),
    Field(32, "LastQty", _T.FLOAT),
    Field(103, "OrdRejReason", _T.INT),
    Field(102, "CxlRejReason", _T.INT),
    Field(434, "CxlRejResponseTo", _T.CHAR),
    Field(530, "MassCancelRequestType", _T.CHAR, _values("1", "2", "3", "4", "5", "6", "7")),
    Field(531, "MassCancelResponse", _T.CHAR),
    Field(532, "MassCancelRejectReason", _T.STRING),  # String in QuickFIX's FIX44.xml
    Field(533, "TotalAffectedOrders", _T.INT),
    Field(584, "MassStatusReqID", _T.STRING),
    Field(790, "OrdStatusReqID", _T.STRING),
    Field(7928, "SelfTradePreventionMode", _T.INT),  # ours: user-defined range
)

FIELDS: dict[int, Field] = {f.tag: f for f in _FIELD_LIST}

#: Standard header tags every message carries, in the order the first three must have.
HEADER_REQUIRED: tuple[int, ...] = (8, 9, 35, 49, 56, 34, 52)
HEADER_ALLOWED: frozenset[int] = frozenset(HEADER_REQUIRED) | {50, 57, 43, 97, 122}
TRAILER: tuple[int, ...] = (10,)


def _message(msg_type: str, name: str, admin: bool, required: tuple[int, ...],
             optional: tuple[int, ...] = ()) -> MessageSpec:
    return MessageSpec(msg_type.encode(), name, admin, required, frozenset(required + optional))


_MESSAGE_LIST = (
    _message("0", "Heartbeat", True, (), (112,)),
    _message("1", "TestRequest", True, (112,)),
    _message("2", "ResendRequest", True, (7, 16)),
    _message("3", "Reject", True, (45,), (371, 372, 373, 58)),
    _message("4", "SequenceReset", True, (36,), (123,)),
    _message("5", "Logout", True, (), (58,)),
    _message("A", "Logon", True, (98, 108), (141, 553, 554)),
    _message("D", "NewOrderSingle", False, (11, 55, 54, 60, 40),
             (1, 18, 111, 38, 44, 99, 59, 58, 7928)),
    _message("F", "OrderCancelRequest", False, (41, 11, 55, 54, 60), (37, 1, 38, 58)),
    _message("G", "OrderCancelReplaceRequest", False, (41, 11, 55, 54, 60, 40),
             (37, 1, 18, 111, 38, 44, 99, 59, 58, 7928)),
    _message("H", "OrderStatusRequest", False, (11, 55, 54), (37, 790, 1)),
    # Account (1) on q is ours (FIX 4.4's q has none): a by-symbol cancel names the account
    _message("q", "OrderMassCancelRequest", False, (11, 530, 60), (1, 55, 54, 58)),
    _message("r", "OrderMassCancelReport", False, (37, 530, 531), (11, 532, 533, 55, 54, 60, 58)),
    _message("8", "ExecutionReport", False, (37, 17, 150, 39, 55, 54, 151, 14, 6),
             (11, 41, 790, 584, 103, 1, 38, 40, 44, 99, 59, 18, 32, 31, 60, 111, 58)),
    _message("9", "OrderCancelReject", False, (37, 11, 41, 39, 434), (1, 60, 102, 58)),
    _message("j", "BusinessMessageReject", False, (372, 380), (45, 379, 58)),
)

MESSAGES: dict[bytes, MessageSpec] = {m.msg_type: m for m in _MESSAGE_LIST}
