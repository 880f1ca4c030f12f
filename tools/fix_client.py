"""``ringex fix-client``: a FIX 4.4 order-entry client for people.

It logs on to a FIX gateway with the given CompIDs, sends the orders, cancels and replaces it
is told (on the command line or typed, one per line) and prints every answer as one readable
line::

    13:02:11.123 -> fc-3      buy 2 DEMO @ 1000
    13:02:11.125 FILLED    buy 2 DEMO @ 1000  last 2 @ 1000  cum 2  leaves 0  avg 1000  order 17  clordid fc-3

Commands (``help`` lists them)::

    buy 2 DEMO @ 1000 [ioc|fok|gtc|day] [post-only] [reduce-only] [iceberg N] [account N]
    sell ...
    market buy 1 DEMO                     (market orders: no price)
    stop sell 1 DEMO stop 990 [@ 985]     (stop, or stop-limit with a price)
    cancel <ClOrdID> [buy|sell SYMBOL]    (side and symbol: only for an order this client never saw)
    replace <ClOrdID> <qty> @ <price> [iceberg N]
    cancel-all [SYMBOL]                   (all of this session's orders; by symbol: the account's)
    status <ClOrdID> [buy|sell SYMBOL]
    quit                                  (or end of input, or Ctrl-C: log out and exit)
    ('last' in place of a ClOrdID: the last order sent; '#' starts a comment line)

ClOrdIDs are ``<prefix>-<n>`` (``--prefix``; by default ``fc`` and the time, so that runs do
not reuse them), each printed as it is sent. Commands given on the command line are all
checked before anything is sent, then sent in order, each after the answer to the one before
(or ``--wait`` seconds), and the client listens until every answer is in and the line is quiet
(bounded by ``--wait`` again) before it logs out. Without commands it reads them from standard
input: interactive on a terminal; a script otherwise (each line after the answer to the one
before; a bad line is reported and the exit status is 2).

The session is small and blocking, built on ``ringex.gateways.fix_codec`` (``FixReader``
frames, ``encode`` writes): Logon (EncryptMethod 0, HeartBtInt, Password, ResetSeqNumFlag=Y
with ``--reset``), a Heartbeat after HeartBtInt seconds without sending, a TestRequest after
HeartBtInt plus a fifth without receiving (and the connection given up after as long again),
a Heartbeat for every TestRequest, a gap fill for every ResendRequest (the client keeps no
store of what it sent), and a Logout, answered or timed out, on the way out (end of input,
``quit``, Ctrl-C). Without ``--reset``, a Logout saying the gateway expects a higher MsgSeqNum
is answered by logging on again once with that number.

One thread reads the connection (and keeps the session alive), the other sends commands.
"""

from __future__ import annotations

import argparse
import re
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Iterable, TextIO

from ringex.gateways.fix_codec import SOH, FixMessage, FixReader, Garbled, encode, utc_timestamp
from ringex.gateways.fix_dictionary import FIELDS, MESSAGES

#: After the last answer expected, how long the client keeps listening for what follows it
#: (an IOC's expiry after its fill, the maker's side of a cross) before it exits.
QUIET_S = 0.3
LOGON_TIMEOUT_S = 10.0
LOGOUT_TIMEOUT_S = 2.0
MAX_MESSAGE = 1 << 16

HELP = __doc__.split("Commands (``help`` lists them)::\n\n", 1)[1].split("\n\n", 1)[0]


class CommandError(ValueError):
    """A command that cannot be sent: the message says what is wrong and how to write it."""


# -- names ------------------------------------------------------------------------------------

SIDES = {"1": "buy", "2": "sell"}
ORD_TYPES = {"1": "market", "2": "limit", "3": "stop", "4": "stop limit"}
TIFS = {"0": "day", "1": "gtc", "3": "ioc", "4": "fok"}
#: ExecType (150): the word that heads a report line (a Trade is FILLED or PARTIAL by OrdStatus)
EXEC_TYPES = {
    "0": "NEW", "3": "DONE", "4": "CANCELED", "5": "REPLACED", "6": "PENDING-CXL", "7": "STOPPED",
    "8": "REJECTED", "9": "SUSPENDED", "A": "PENDING", "B": "CALCULATED", "C": "EXPIRED", "D": "RESTATED",
    "E": "PENDING-RPL", "F": "TRADE", "G": "TRADE-CORR", "H": "TRADE-CXL", "I": "STATUS", "L": "TRIGGERED",
}
ORD_STATUSES = {
    "0": "new", "1": "partially filled", "2": "filled", "3": "done for day", "4": "canceled", "5": "replaced",
    "6": "pending cancel", "7": "stopped", "8": "rejected", "9": "suspended", "A": "pending new",
    "B": "calculated", "C": "expired", "D": "accepted for bidding", "E": "pending replace",
}
ORD_REJ_REASONS = {
    "0": "broker / exchange option", "1": "unknown symbol", "2": "exchange closed", "3": "order exceeds limit",
    "4": "too late to enter", "5": "unknown order", "6": "duplicate order", "7": "duplicate verbal order",
    "8": "stale order", "9": "trade along required", "10": "invalid investor ID",
    "11": "unsupported order characteristic", "12": "surveillance option", "13": "incorrect quantity",
    "14": "incorrect allocated quantity", "15": "unknown account", "99": "other",
}
CXL_REJ_REASONS = {
    "0": "too late to cancel", "1": "unknown order", "2": "broker / exchange option",
    "3": "a cancel or replace is already pending", "4": "unable to process mass cancel",
    "5": "OrigOrdModTime did not match", "6": "duplicate ClOrdID", "99": "other",
}
MASS_RESPONSES = {
    "0": "rejected", "1": "by symbol", "2": "by underlying", "3": "by product", "4": "by CFICode",
    "5": "by security type", "6": "by trading session", "7": "all orders",
}
#: MassCancelRejectReason (532), FIX 4.4
MASS_REJECT_REASONS = {
    "0": "mass cancel not supported", "1": "invalid or unknown security", "2": "invalid or unknown underlying",
    "3": "invalid or unknown product", "4": "invalid or unknown CFICode", "5": "invalid or unknown security type",
    "6": "invalid or unknown trading session", "99": "other",
}
SESSION_REJECT_REASONS = {
    "0": "invalid tag number", "1": "required tag missing", "2": "tag not defined for this message type",
    "3": "undefined tag", "4": "tag specified without a value", "5": "value is incorrect",
    "6": "incorrect data format", "7": "decryption problem", "8": "signature problem", "9": "CompID problem",
    "10": "SendingTime accuracy problem", "11": "invalid MsgType", "12": "XML validation error",
    "13": "tag appears more than once", "14": "tag specified out of required order",
    "15": "repeating group fields out of order", "16": "incorrect NumInGroup count",
    "17": "non-data value includes field delimiter", "99": "other",
}
BUSINESS_REJECT_REASONS = {
    "0": "other", "1": "unknown ID", "2": "unknown security", "3": "unsupported message type",
    "4": "application not available", "5": "conditionally required field missing", "6": "not authorized",
    "7": "DeliverTo firm not available",
}


def _name(table: dict[str, str], code: str | None) -> str:
    if code is None:
        return "?"
    return table.get(code, f"code {code}")


# -- commands ---------------------------------------------------------------------------------

_NUMBER = re.compile(r"[0-9]+(?:\.[0-9]+)?|\.[0-9]+")
_ACCOUNT = re.compile(r"[0-9]{1,10}")
_KEYWORDS = {"@", "stop", "ioc", "fok", "gtc", "day", "post-only", "reduce-only", "iceberg", "account"}
_TIF_CODES = {"day": "0", "gtc": "1", "ioc": "3", "fok": "4"}


@dataclass
class Request:
    """One command, ready to send: its MsgType and body (no TransactTime: stamped when sent)."""

    kind: str  # order, cancel, replace, cancel-all, status, quit, help
    msg_type: bytes = b""
    fields: list[tuple[int, str]] = field(default_factory=list)
    cl_ord_id: str = ""
    text: str = ""  # what it asks, in the command syntax


@dataclass
class KnownOrder:
    side: str  # "1" / "2"
    symbol: str
    ord_type: str = "2"
    display: str | None = None  # MaxFloor 111, an iceberg's shown quantity


def _quantity(text: str, what: str) -> str:
    if not _NUMBER.fullmatch(text):
        raise CommandError(f"{what} must be a positive number, got {text!r}")
    if float(text) <= 0:
        raise CommandError(f"{what} must be more than 0, got {text!r}")
    return text


def _price(text: str, what: str = "price") -> str:
    if not _NUMBER.fullmatch(text):
        raise CommandError(f"{what} must be a positive number, got {text!r}")
    return text


class Commands:
    """Turns command lines into FIX requests; numbers the ClOrdIDs and remembers each order's
    side and symbol (a cancel, replace or status must repeat them)."""

    def __init__(self, prefix: str, account: int | None) -> None:
        if not prefix or len(prefix) > 40 or any(not 0x21 <= ord(c) <= 0x7E for c in prefix):
            raise ValueError(f"a ClOrdID prefix is 1..40 printable characters without spaces: {prefix!r}")
        self.prefix = prefix
        self.account = account
        self.counter = 0
        self.orders: dict[str, KnownOrder] = {}
        self.last = ""

    def next_id(self) -> str:
        self.counter += 1
        return f"{self.prefix}-{self.counter}"

    def remember(self, cl_ord_id: str, side: str, symbol: str, ord_type: str | None = None,
                 display: str | None = None) -> None:
        known = self.orders.get(cl_ord_id)
        if known is None:
            self.orders[cl_ord_id] = KnownOrder(side, symbol, ord_type or "2", display)
        else:
            known.side, known.symbol = side, symbol
            if ord_type:
                known.ord_type = ord_type
            known.display = display

    def learn(self, msg: FixMessage) -> None:
        """What an ExecutionReport says about one of our orders (its ClOrdID, and after a
        replace its new one)."""
        side, symbol = _s(msg, 54), _s(msg, 55)
        if side not in SIDES or not symbol:
            return
        for tag in (11, 41):
            cl = _s(msg, tag)
            if cl and (tag == 11 or cl in self.orders):
                self.remember(cl, side, symbol, _s(msg, 40), _s(msg, 111))

    def parse(self, line: str) -> Request | None:
        """The request ``line`` asks for; None for a blank line or a ``#`` comment."""
        line = line.strip()
        if not line or line.startswith("#"):
            return None
        words = line.replace("@", " @ ").split()
        head = words[0].lower()
        if head in ("quit", "exit", "bye", "q"):
            if len(words) > 1:
                raise CommandError("quit takes nothing after it")
            return Request("quit")
        if head in ("help", "?"):
            return Request("help")
        if head in ("buy", "sell", "market", "stop", "limit"):
            return self._order(words)
        if head == "cancel":
            return self._cancel(words)
        if head == "replace":
            return self._replace(words)
        if head in ("cancel-all", "cancelall"):
            return self._cancel_all(words)
        if head == "status":
            return self._status(words)
        raise CommandError(f"unknown command {words[0]!r}: buy, sell, market, stop, cancel, replace, cancel-all, "
                           "status, quit (help lists their forms)")

    # ---------------------------------------------------------------- forms

    def _order(self, words: list[str]) -> Request:
        usage = "e.g. buy 2 DEMO @ 1000, market sell 1 DEMO, stop sell 1 DEMO stop 990 [@ 985]"
        words = list(words)
        kind = "limit"
        if words[0].lower() in ("market", "stop", "limit"):
            kind = words.pop(0).lower()
        if not words or words[0].lower() not in ("buy", "sell"):
            raise CommandError(f"buy or sell expected after {kind!r} ({usage})")
        side = "1" if words.pop(0).lower() == "buy" else "2"
        if len(words) < 2:
            raise CommandError(f"an order needs a quantity and a symbol ({usage})")
        qty = _quantity(words.pop(0), "the quantity")
        symbol = words.pop(0)
        if symbol.lower() in _KEYWORDS:
            raise CommandError(f"a symbol expected after the quantity, got {symbol!r} ({usage})")
        price = stop = tif = iceberg = None
        account = self.account
        post = reduce = False
        while words:
            w = words.pop(0)
            lw = w.lower()
            if lw in ("@", "stop", "iceberg", "account"):
                if not words:
                    raise CommandError(f"{w!r} needs a value after it")
                value = words.pop(0)
                if lw == "@":
                    if price is not None:
                        raise CommandError("two prices given")
                    price = _price(value)
                elif lw == "stop":
                    if stop is not None:
                        raise CommandError("two stop prices given")
                    stop = _price(value, "the stop price")
                elif lw == "iceberg":
                    iceberg = _quantity(value, "the iceberg's shown quantity")
                else:
                    if not _ACCOUNT.fullmatch(value):
                        raise CommandError(f"an account is a number, got {value!r}")
                    account = int(value)
            elif lw in _TIF_CODES:
                if tif is not None:
                    raise CommandError("two times in force given")
                tif = _TIF_CODES[lw]
            elif lw == "post-only":
                post = True
            elif lw == "reduce-only":
                reduce = True
            else:
                raise CommandError(f"unexpected {w!r} ({usage}; options: ioc fok gtc day post-only reduce-only "
                                   "iceberg N account N)")
        if kind == "market":
            if price is not None or stop is not None:
                raise CommandError("a market order has no price: market buy 1 DEMO")
            ord_type = "1"
        elif kind == "stop" or stop is not None:
            if stop is None:
                raise CommandError("a stop order needs its stop price: stop sell 1 DEMO stop 990 [@ 985]")
            ord_type = "4" if price is not None else "3"
        else:
            if price is None:
                raise CommandError("a limit order needs a price: buy 1 DEMO @ 1000 (or market buy 1 DEMO)")
            ord_type = "2"
        if iceberg is not None and float(iceberg) > float(qty):
            raise CommandError("the iceberg's shown quantity is more than the order's")
        if account is None:
            raise CommandError("no account: give --account N or 'account N'")
        cl = self.next_id()
        fields = [(11, cl), (1, str(account)), (55, symbol), (54, side), (38, qty), (40, ord_type)]
        if price is not None:
            fields.append((44, price))
        if stop is not None:
            fields.append((99, stop))
        if tif is not None:
            fields.append((59, tif))
        flags = [code for code, on in (("6", post), ("E", reduce)) if on]
        if flags:
            fields.append((18, " ".join(flags)))
        if iceberg is not None:
            fields.append((111, iceberg))
        self.remember(cl, side, symbol, ord_type, iceberg)
        self.last = cl
        return Request("order", b"D", fields, cl, describe_order(dict(fields)))

    def _target(self, words: list[str], form: str) -> tuple[str, KnownOrder, list[str]]:
        """The order a cancel, replace or status names (``last``: the last one sent), and the
        words after it. An order this client has not seen needs its side and symbol."""
        if len(words) < 2:
            raise CommandError(f"which order? {form}")
        orig = words[1]
        if orig.lower() == "last":
            if not self.last:
                raise CommandError("no order sent yet: 'last' names none")
            orig = self.last
        rest = words[2:]
        known = self.orders.get(orig)
        if rest and rest[0].lower() in ("buy", "sell"):
            if len(rest) < 2:
                raise CommandError(f"a symbol expected after {rest[0]!r}")
            known = KnownOrder("1" if rest[0].lower() == "buy" else "2", rest[1],
                               known.ord_type if known else "2", known.display if known else None)
            rest = rest[2:]
        if known is None:
            raise CommandError(f"this client has not seen order {orig}: give its side and symbol, "
                               f"e.g. {words[0]} {orig} buy DEMO{' ' + ' '.join(rest) if rest else ''}")
        return orig, known, rest

    def _cancel(self, words: list[str]) -> Request:
        orig, known, rest = self._target(words, "cancel <ClOrdID> [buy|sell SYMBOL]")
        if rest:
            raise CommandError(f"unexpected {rest[0]!r}: cancel <ClOrdID> [buy|sell SYMBOL]")
        cl = self.next_id()
        fields = [(11, cl), (41, orig), (55, known.symbol), (54, known.side)]
        return Request("cancel", b"F", fields, cl, f"cancel {orig}")

    def _replace(self, words: list[str]) -> Request:
        form = "replace <ClOrdID> <qty> @ <price> [iceberg N]"
        if len(words) >= 3 and words[2].lower() in ("buy", "sell"):  # replace X buy DEMO 3 @ 1000
            orig, known, rest = self._target(words, form)
        else:
            orig, known, rest = self._target(words[:2], form)
            rest = words[2:]
        if len(rest) < 3 or rest[1] != "@":
            raise CommandError(f"the new quantity and price: {form}")
        qty = _quantity(rest[0], "the quantity")
        price = _price(rest[2])
        display = known.display
        extra = rest[3:]
        if extra:
            if len(extra) != 2 or extra[0].lower() != "iceberg":
                raise CommandError(f"unexpected {extra[0]!r}: {form}")
            display = _quantity(extra[1], "the iceberg's shown quantity")
        if display is not None and float(display) > float(qty):
            raise CommandError(f"order {orig} shows {display} (iceberg): the new quantity must be at least "
                               "that, or give 'iceberg N'")
        cl = self.next_id()
        ord_type = known.ord_type if known.ord_type in ("2", "4") else "2"
        fields = [(11, cl), (41, orig), (55, known.symbol), (54, known.side), (38, qty), (40, ord_type),
                  (44, price)]
        if display is not None:
            fields.append((111, display))
        self.remember(cl, known.side, known.symbol, ord_type, display)
        return Request("replace", b"G", fields, cl, f"replace {orig} with {qty} @ {price}")

    def _cancel_all(self, words: list[str]) -> Request:
        if len(words) > 2:
            raise CommandError("cancel-all [SYMBOL]")
        cl = self.next_id()
        if len(words) == 1:
            return Request("cancel-all", b"q", [(11, cl), (530, "7")], cl, "cancel all orders")
        if self.account is None:
            raise CommandError("cancel-all by symbol cancels an account's orders: give --account N")
        fields = [(11, cl), (530, "1"), (55, words[1]), (1, str(self.account))]
        return Request("cancel-all", b"q", fields, cl, f"cancel all {words[1]} orders of account {self.account}")

    def _status(self, words: list[str]) -> Request:
        orig, known, rest = self._target(words, "status <ClOrdID> [buy|sell SYMBOL]")
        if rest:
            raise CommandError(f"unexpected {rest[0]!r}: status <ClOrdID> [buy|sell SYMBOL]")
        return Request("status", b"H", [(11, orig), (55, known.symbol), (54, known.side)], orig, f"status {orig}")


# -- formatting -------------------------------------------------------------------------------

def _s(msg: FixMessage, tag: int) -> str | None:
    value = msg.get(tag)
    return None if value is None else value.decode("ascii", "replace")


def describe_order(f: dict[int, str]) -> str:
    """``buy 2 DEMO @ 1000 gtc post-only iceberg 1``: an order as the command that enters it."""
    side = f.get(54)
    parts = [SIDES.get(side, f"side {side}") if side else "?", f.get(38) or "?", f.get(55) or "?"]
    if f.get(40) == "1":
        parts.append("@ market")
    if f.get(99):
        parts.append(f"stop {f[99]}")
    if f.get(44):
        parts.append(f"@ {f[44]}")
    if f.get(59) and f[59] != "0":
        parts.append(TIFS.get(f[59], f"tif {f[59]}"))
    for code in (f.get(18) or "").split():
        parts.append({"6": "post-only", "E": "reduce-only"}.get(code, f"execinst {code}"))
    if f.get(111):
        parts.append(f"iceberg {f[111]}")
    return " ".join(parts)


def _clock(when: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(when)) + f".{int(when * 1000) % 1000:03d}"


def _tag_name(tag: str | None) -> str:
    if tag is None:
        return ""
    try:
        return f"tag {tag} ({FIELDS[int(tag)].name})"
    except (KeyError, ValueError):
        return f"tag {tag}"


def _msg_type_name(t: str | None) -> str:
    spec = MESSAGES.get((t or "").encode())
    return f"{spec.name} ({t})" if spec is not None else f"MsgType {t}"


def _execution_report(msg: FixMessage) -> str:
    g = lambda tag: _s(msg, tag)  # noqa: E731
    exec_type, status = g(150), g(39)
    if exec_type == "F":
        word = "FILLED" if status == "2" else "PARTIAL"
    else:
        word = EXEC_TYPES.get(exec_type or "", f"EXEC {exec_type}")
    parts = [describe_order({t: v.decode("ascii", "replace") for t, v in msg.fields})]
    if exec_type in ("I", "D", "L", "5") or (exec_type == "8" and status != "8"):
        parts.append(f"status {_name(ORD_STATUSES, status)}")
    if g(32) is not None:
        parts.append(f"last {g(32)} @ {g(31) or '?'}")
    parts.append(f"cum {g(14) or '?'}")
    parts.append(f"leaves {g(151) or '?'}")
    if g(14) not in (None, "0") and g(6) is not None:
        parts.append(f"avg {g(6)}")
    if g(37) not in (None, "NONE"):
        parts.append(f"order {g(37)}")
    parts.append(f"clordid {g(11) or '?'}")
    if g(41):
        parts.append(f"orig {g(41)}")
    if g(103) is not None:
        parts.append(f"reason {_name(ORD_REJ_REASONS, g(103))}")
    if g(58):
        parts.append(f"text {g(58)}")
    if msg.get(43) == b"Y":
        parts.append("(resent)")
    return f"{word:<9} " + "  ".join(parts)


def _cancel_reject(msg: FixMessage) -> str:
    g = lambda tag: _s(msg, tag)  # noqa: E731
    what = "replace" if g(434) == "2" else "cancel"
    parts = [f"{what} of {g(41) or '?'} refused", f"reason {_name(CXL_REJ_REASONS, g(102))}",
             f"status {_name(ORD_STATUSES, g(39))}"]
    if g(37) not in (None, "NONE"):
        parts.append(f"order {g(37)}")
    parts.append(f"clordid {g(11) or '?'}")
    if g(58):
        parts.append(f"text {g(58)}")
    return f"{'CXL-REJ':<9} " + "  ".join(parts)


def _mass_cancel_report(msg: FixMessage) -> str:
    g = lambda tag: _s(msg, tag)  # noqa: E731
    if g(531) == "0":
        parts = ["cancel-all refused", f"reason {_name(MASS_REJECT_REASONS, g(532))}"]
    else:
        scope = _name(MASS_RESPONSES, g(531)) + (f" {g(55)}" if g(55) else "")
        parts = [f"cancel-all ({scope})", f"{g(533) or '?'} canceled"]
    parts.append(f"clordid {g(11) or '?'}")
    if g(58):
        parts.append(f"text {g(58)}")
    return f"{'MASS-CXL':<9} " + "  ".join(parts)


def _session_reject(msg: FixMessage) -> str:
    g = lambda tag: _s(msg, tag)  # noqa: E731
    parts = [f"message {g(45) or '?'}" + (f" {_msg_type_name(g(372))}" if g(372) else "") + " refused by the session",
             f"reason {_name(SESSION_REJECT_REASONS, g(373))}"]
    if g(371):
        parts.append(_tag_name(g(371)))
    if g(58):
        parts.append(f"text {g(58)}")
    return f"{'REJECT':<9} " + "  ".join(parts)


def _business_reject(msg: FixMessage) -> str:
    g = lambda tag: _s(msg, tag)  # noqa: E731
    parts = [f"{_msg_type_name(g(372))} refused", f"reason {_name(BUSINESS_REJECT_REASONS, g(380))}"]
    if g(379):
        parts.append(f"ref {g(379)}")
    if g(45):
        parts.append(f"message {g(45)}")
    if g(58):
        parts.append(f"text {g(58)}")
    return f"{'BIZ-REJ':<9} " + "  ".join(parts)


def format_message(msg: FixMessage, when: float | None = None) -> str | None:
    """One readable line for a message received (prefixed by the local time ``when``, a
    ``time.time()``); None for those a person need not see (Heartbeat, TestRequest, ...)."""
    when = time.time() if when is None else when
    t = msg.msg_type
    if t == b"8":
        text = _execution_report(msg)
    elif t == b"9":
        text = _cancel_reject(msg)
    elif t == b"r":
        text = _mass_cancel_report(msg)
    elif t == b"3":
        text = _session_reject(msg)
    elif t == b"j":
        text = _business_reject(msg)
    elif t == b"5":
        text = f"{'LOGOUT':<9} " + (_s(msg, 58) or "logged out")
    elif t == b"A":
        text = (f"{'LOGON':<9} logged on as {_s(msg, 56)} to {_s(msg, 49)}, heartbeat {_s(msg, 108)} s"
                + (", sequence numbers reset" if msg.get(141) == b"Y" else ""))
    else:
        return None
    return f"{_clock(when)} {text}"


def format_raw(data: bytes) -> str:
    return data.replace(SOH, b"|").decode("ascii", "backslashreplace")


# -- the session ------------------------------------------------------------------------------

class LogonRefused(Exception):
    def __init__(self, text: str, expected_seq: int | None = None) -> None:
        super().__init__(text)
        self.expected_seq = expected_seq


class Printer:
    """Lines to ``out``, whole and flushed, from either thread."""

    def __init__(self, out: TextIO, raw: bool) -> None:
        self.out = out
        self.raw = raw
        self._lock = threading.Lock()

    def line(self, text: str) -> None:
        with self._lock:
            self.out.write(text + "\n")
            self.out.flush()


class FixClient:
    """A blocking FIX 4.4 initiator: ``logon``, then ``request`` from one thread while another
    (started by ``logon``) reads, answers the session's needs and prints; ``logout`` at the end."""

    def __init__(self, host: str, port: int, sender: str, target: str, password: str, heartbeat: int,
                 printer: Printer, commands: Commands, reset: bool = False, next_seq: int = 1) -> None:
        self.host, self.port = host, port
        self.sender, self.target = sender.encode(), target.encode()
        self.password = password
        self.heartbeat = heartbeat
        self.reset = reset
        self.printer = printer
        self.commands = commands
        self.seq = next_seq  # the next MsgSeqNum to send
        self.expected: int | None = None  # the next MsgSeqNum to receive
        self.sock: socket.socket | None = None
        self.reader = FixReader(MAX_MESSAGE)
        self._send_lock = threading.Lock()
        self._cond = threading.Condition()
        self._pending: dict[int, str] = {}  # our MsgSeqNum -> the ClOrdID whose answer is awaited
        self._last_send = self._last_recv = time.monotonic()
        self._test_req_at = 0.0
        self._test_req_id = 0
        self.logged_on = False
        self.closed = False  # the connection is gone (or going)
        self.logout_text: str | None = None  # why the gateway logged us out, if it did
        self._logout_sent = False
        self.ended_by_gateway = False  # the gateway sent the first Logout
        self._thread: threading.Thread | None = None

    # ---------------------------------------------------------------- sending

    def _send(self, msg_type: bytes, body: Iterable[tuple[int, bytes | str | int]], *, seq: int | None = None,
              poss_dup: bool = False) -> int:
        with self._send_lock:
            number = self.seq if seq is None else seq
            now = utc_timestamp(time.time_ns())
            data = encode(msg_type, self.sender, self.target, number, now, list(body), poss_dup=poss_dup,
                          orig_sending_time=now if poss_dup else None)
            if seq is None:
                self.seq += 1
            if self.printer.raw:
                self.printer.line(f"{_clock(time.time())} > {format_raw(data)}")
            assert self.sock is not None
            self.sock.sendall(data)
            self._last_send = time.monotonic()
            return number

    def request(self, req: Request) -> None:
        """Send ``req`` (stamped with TransactTime where the message has one) and await its answer."""
        body: list[tuple[int, bytes | str | int]] = list(req.fields)
        if req.msg_type in (b"D", b"F", b"G", b"q"):
            body.append((60, utc_timestamp(time.time_ns())))
        with self._cond:
            if self.closed:
                raise ConnectionError("not connected")
            number = self._send(req.msg_type, body)
            if req.cl_ord_id:
                self._pending[number] = req.cl_ord_id
        if not self.printer.raw:
            self.printer.line(f"{_clock(time.time())} -> {req.cl_ord_id:<9} {req.text}")

    # ---------------------------------------------------------------- logon / logout

    def connect(self, timeout: float = LOGON_TIMEOUT_S) -> None:
        self.sock = socket.create_connection((self.host, self.port), timeout=timeout)

    def logon(self, timeout: float = LOGON_TIMEOUT_S) -> None:
        """Log on and start the reading thread; ``LogonRefused`` with the gateway's reason."""
        if self.sock is None:
            self.connect(timeout)
        assert self.sock is not None
        body: list[tuple[int, bytes | str | int]] = [(98, 0), (108, self.heartbeat)]
        if self.password:
            body.append((554, self.password))
        if self.reset:
            body.append((141, b"Y"))
            self.seq = 1
        self._send(b"A", body)
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                self._close()
                raise LogonRefused(f"no answer to the Logon within {timeout:g} s")
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(MAX_MESSAGE)
            except socket.timeout:
                continue
            except OSError as exc:
                self._close()
                raise LogonRefused(f"connection failed: {exc}") from None
            if not data:
                self._close()
                raise LogonRefused("the gateway closed the connection without an answer "
                                   "(unknown SenderCompID, or this session is logged on elsewhere)")
            for item in self.reader.feed(data):
                if isinstance(item, Garbled):
                    continue
                self._show(item)
                if item.msg_type == b"5":
                    text = _s(item, 58) or "logged out"
                    self._close()
                    m = re.search(r"expecting (\d+)", text)
                    raise LogonRefused(text, int(m.group(1)) if m and "too low" in text else None)
                if item.msg_type == b"A":
                    self.logged_on = True
                    self.expected = (item.seq_num or 0) + 1
                    self._last_recv = time.monotonic()
                    pending = self.reader.feed(b"")
                    self._thread = threading.Thread(target=self._run, args=(pending,), name="fix-client-reader",
                                                    daemon=True)
                    self._thread.start()
                    return

    def logout(self, timeout: float = LOGOUT_TIMEOUT_S) -> None:
        """Send a Logout (unless the connection is gone), wait for the answer (bounded), close."""
        with self._cond:
            if not self.closed and not self._logout_sent:
                self._logout_sent = True
                try:
                    self._send(b"5", [])
                except OSError:
                    self.closed = True
            self._cond.wait_for(lambda: self.closed, timeout)
        self._close()
        if self._thread is not None:
            self._thread.join(timeout)

    def _close(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify_all()
        if self.sock is not None:
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self.sock.close()

    # ---------------------------------------------------------------- waiting

    def wait_answers(self, timeout: float, quiet: float = QUIET_S) -> bool:
        """Until every request sent has an answer and nothing more came for ``quiet`` seconds,
        or ``timeout``; True if all were answered."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self.closed:
                now = time.monotonic()
                if now >= deadline:
                    break
                if not self._pending:
                    since = now - self._last_recv
                    if since >= quiet:
                        break
                    self._cond.wait(min(quiet - since, deadline - now))
                else:
                    self._cond.wait(deadline - now)
            return not self._pending

    # ---------------------------------------------------------------- receiving

    def _run(self, first: list) -> None:
        """The reading thread: every message received, and the session's timers between them."""
        items = first
        hb = float(self.heartbeat)
        while True:
            for item in items:
                if not isinstance(item, Garbled):
                    self._on_message(item)
                elif self.printer.raw:
                    self.printer.line(f"{_clock(time.time())} ? garbled ({item.reason}): {format_raw(item.raw)}")
            if self.closed:
                return
            now = time.monotonic()
            if self._test_req_at and now - self._test_req_at > hb * 1.2:
                self.printer.line(f"{_clock(time.time())} {'LOST':<9} no answer to a TestRequest: disconnected")
                self._close()
                return
            try:
                if not self._test_req_at and now - self._last_recv > hb * 1.2:
                    self._test_req_id += 1
                    self._send(b"1", [(112, f"TEST{self._test_req_id}")])
                    self._test_req_at = now
                if now - self._last_send >= hb:
                    self._send(b"0", [])
            except OSError:
                pass
            wake = min(self._last_send + hb, (self._test_req_at or self._last_recv) + hb * 1.2 + 0.01)
            sock = self.sock
            if sock is None:
                return
            try:
                sock.settimeout(max(0.05, wake - time.monotonic()))
                data = sock.recv(MAX_MESSAGE)
            except socket.timeout:
                items = []
                continue
            except OSError:
                data = b""
            if not data:
                if not self.closed and not self._logout_sent:
                    self.printer.line(f"{_clock(time.time())} {'LOST':<9} the gateway closed the connection")
                self._close()
                return
            items = self.reader.feed(data)

    def _on_message(self, msg: FixMessage) -> None:
        self._last_recv = time.monotonic()
        self._test_req_at = 0.0
        seq = msg.seq_num
        if seq is not None and self.expected is not None:
            if seq > self.expected and msg.msg_type != b"4":
                self.printer.line(f"{_clock(time.time())} {'GAP':<9} messages {self.expected}..{seq - 1} "
                                  "of the gateway not received")
            if seq >= self.expected:
                self.expected = seq + 1
        t = msg.msg_type
        if t == b"8":
            self.commands.learn(msg)
        self._show(msg)
        try:
            if t == b"1":
                self._send(b"0", [(112, msg.get(112) or b"TEST")])
            elif t == b"2":  # we keep no store: everything asked for is replaced by one gap fill
                begin = msg.int(7)
                if begin < self.seq:
                    self._send(b"4", [(123, b"Y"), (36, self.seq)], seq=begin, poss_dup=True)
            elif t == b"4":
                try:
                    self.expected = msg.int(36)
                except ValueError:
                    pass
            elif t == b"5":
                self.logout_text = _s(msg, 58)
                if not self._logout_sent:
                    self.ended_by_gateway = True
                    self._logout_sent = True
                    self._send(b"5", [])
                self._close()
        except OSError:
            self._close()
        ids = {_s(msg, 11), _s(msg, 379)} - {None} if t in (b"8", b"9", b"r", b"j") else set()
        ref = _s(msg, 45) if t in (b"3", b"j") else None
        with self._cond:
            for n, cl in list(self._pending.items()):
                if cl in ids or str(n) == ref:
                    del self._pending[n]
            self._cond.notify_all()

    def _show(self, msg: FixMessage) -> None:
        if self.printer.raw:
            self.printer.line(f"{_clock(time.time())} < {format_raw(msg.raw)}")
            return
        line = format_message(msg)
        if line is not None:
            self.printer.line(line)


# -- the command ------------------------------------------------------------------------------

def default_prefix() -> str:
    """``fc`` and the time in milliseconds, base 36: ClOrdIDs unique across runs."""
    n = time.time_ns() // 1_000_000
    digits = ""
    while n:
        n, d = divmod(n, 36)
        digits = "0123456789abcdefghijklmnopqrstuvwxyz"[d] + digits
    return "fc" + digits


def default_account(sender: str) -> int:
    """The embedded default's DEMO<n> trades account n; any other sender account 1."""
    m = re.fullmatch(r"DEMO([0-9]{1,9})", sender)
    return int(m.group(1)) if m else 1


def _stdin_lines(stdin: TextIO, interactive: bool) -> Iterable[str]:
    while True:
        if interactive:
            try:
                line = input("fix> ")
            except EOFError:
                return
        else:
            line = stdin.readline()
            if not line:
                return
        yield line


def run(args: argparse.Namespace, stdin: TextIO | None = None, out: TextIO | None = None,
        err: TextIO | None = None) -> int:
    """``ringex fix-client``: 0 when every request was answered, 1 when the logon or the
    connection failed or answers are missing, 2 for a command that cannot be sent."""
    stdin = sys.stdin if stdin is None else stdin
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    account = args.account if args.account is not None else default_account(args.sender)
    try:
        commands = Commands(args.prefix or default_prefix(), account)
    except ValueError as exc:
        print(f"ringex fix-client: {exc}", file=err)
        return 2
    if args.heartbeat <= 0:
        print("ringex fix-client: --heartbeat must be at least 1 second", file=err)
        return 2
    batch: list[Request] = []
    for text in args.commands:  # all checked before anything is sent
        try:
            req = commands.parse(text)
        except CommandError as exc:
            print(f"ringex fix-client: {text!r}: {exc}", file=err)
            return 2
        if req is not None and req.kind != "help":
            batch.append(req)
            if req.kind == "quit":
                break
    printer = Printer(out, args.raw)
    client = _logged_on_client(args, printer, commands, err)
    if client is None:
        return 1
    status = 0
    interactive = not args.commands and stdin.isatty()
    try:
        if args.commands:
            answered = True
            for req in batch:  # each after the answer to the one before (a cancel needs its order acknowledged)
                if req.kind == "quit" or client.closed:
                    break
                client.request(req)
                answered = client.wait_answers(args.wait, quiet=0.0) and answered
            if not (client.wait_answers(args.wait) and answered):
                print(f"ringex fix-client: not every request was answered within {args.wait:g} s", file=err)
                status = 1
        else:
            if interactive:
                printer.line("type commands, 'help' for their forms, 'quit' or Ctrl-D to log out")
            for line in _stdin_lines(stdin, interactive):
                if client.closed:
                    break
                try:
                    req = commands.parse(line)
                except CommandError as exc:
                    printer.line(f"error: {exc}")
                    if not interactive:
                        status = 2
                    continue
                if req is None:
                    continue
                if req.kind == "help":
                    printer.line(HELP)
                    continue
                if req.kind == "quit":
                    break
                client.request(req)
                if not interactive and not client.wait_answers(args.wait, quiet=0.0):
                    status = status or 1  # a script's next line may depend on this one's answer
            if not client.closed and not client.wait_answers(args.wait) and not interactive:
                print(f"ringex fix-client: not every request was answered within {args.wait:g} s", file=err)
                status = status or 1
    except KeyboardInterrupt:
        status = 0 if interactive else 130
    except (ConnectionError, OSError) as exc:
        print(f"ringex fix-client: connection lost: {exc}", file=err)
        status = 1
    finally:
        lost = client.closed and not client._logout_sent
        client.logout()
    if (lost or client.ended_by_gateway) and status == 0:
        status = 1  # the connection was lost, or the gateway ended the session
    return status


def _logged_on_client(args: argparse.Namespace, printer: Printer, commands: Commands,
                      err: TextIO) -> FixClient | None:
    next_seq = 1
    for attempt in (1, 2):
        client = FixClient(args.host, args.port, args.sender, args.target, args.password, args.heartbeat, printer,
                           commands, reset=args.reset, next_seq=next_seq)
        try:
            client.logon()
            return client
        except LogonRefused as exc:
            if attempt == 1 and not args.reset and exc.expected_seq is not None:
                next_seq = exc.expected_seq
                printer.line(f"{_clock(time.time())} {'':<9} logging on again with MsgSeqNum {next_seq}")
                continue
            print(f"ringex fix-client: logon refused: {exc}", file=err)
            return None
        except OSError as exc:
            print(f"ringex fix-client: cannot connect to {args.host}:{args.port}: {exc}", file=err)
            return None
    return None


def main(argv: list[str] | None = None) -> int:
    """``python -m ringex.tools.fix_client ...``, the same as ``ringex fix-client ...`` (whose
    options ``ringex.tools.cli`` declares)."""
    from ringex.tools.cli import main as cli_main

    return cli_main(["fix-client", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
