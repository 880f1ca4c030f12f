"""The command language of ``ringex fix-client``: the lines a person types, turned into FIX
requests (``Commands``).

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

``describe_order`` writes an order back in this language (what is printed as an order is sent,
and the order in an execution report's line); the name tables (``SIDES``, ``EXEC_TYPES``, the
reject reasons, ...) give the FIX codes that requests and answers carry their words.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ringex.gateways.fix_codec import FixMessage

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


def _s(msg: FixMessage, tag: int) -> str | None:
    value = msg.get(tag)
    return None if value is None else value.decode("ascii", "replace")


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
