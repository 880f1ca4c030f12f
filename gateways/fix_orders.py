"""FIX 4.4 application mapping: order entry to engine messages, engine events to FIX reports.

Pure functions over ``dict[int, bytes]`` (tag -> raw value, as the codec gives them) and
``list[tuple[int, bytes]]`` bodies (no header, no trailer: the session layer adds them, and
TransactTime 60 too: nothing here reads a clock). The only I/O is the ``OrderBook``'s file.

Prices and quantities convert exactly through ``fix_instrument.FixInstrument``, which also
defines ``FixRefusal``, what every function here raises for a refused request
(``refusal_report`` builds its answer). A session's orders and pending requests, and their
file, are ``fix_order_book.OrderBook``'s.

A cancel or replace of an order the engine has not accepted yet is held in the book, not
sent (``cancel``); ``release``, called after each batch of engine events is reported, sends
it with the order's orderId once the order is accepted, or answers it with an
OrderCancelReject when the order ended first.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, NamedTuple

from ringex.engine.wire import messages as m
from ringex.gateways.fix_codec import SOH, encode_fields
from ringex.gateways.fix_new_order import (
    ORD_TYPES,
    SIDES,
    STP_MODES,
    TIFS,
    UINT32_MAX,
    O_ACCOUNT,
    O_DISPLAY,
    O_ORD_TYPE,
    O_POST,
    O_PRICE,
    O_QTY,
    O_REDUCE,
    O_SIDE,
    O_STOP,
    O_STP,
    O_TIF,
)
from ringex.gateways.fix_tags import (
    T_ACCOUNT,
    T_AFFECTED,
    T_AVG_PX,
    T_BIZ_REJECT_REASON,
    T_BIZ_REJECT_REF_ID,
    T_CL_ORD_ID,
    T_CUM_QTY,
    T_CXL_REJ_REASON,
    T_CXL_REJ_RESPONSE_TO,
    T_EXEC_ID,
    T_EXEC_INST,
    T_EXEC_RESTATEMENT_REASON,
    T_EXEC_TYPE,
    T_LAST_LIQUIDITY_IND,
    T_LAST_PX,
    T_LAST_QTY,
    T_LEAVES_QTY,
    T_MASS_REJECT_REASON,
    T_MASS_RESPONSE,
    T_MASS_TYPE,
    T_MAX_FLOOR,
    T_ORDER_ID,
    T_ORDER_QTY,
    T_ORD_REJ_REASON,
    T_ORD_STATUS,
    T_ORD_STATUS_REQ_ID,
    T_ORD_TYPE,
    T_ORIG_CL_ORD_ID,
    T_PRICE,
    T_REF_MSG_TYPE,
    T_SECONDARY_EXEC_ID,
    T_SIDE,
    T_STOP_PX,
    T_STP_MODE,
    T_SYMBOL,
    T_TEXT,
    T_TIF,
)
from ringex.gateways.fix_instrument import (
    ORD_REJ_REASON,
    FixInstrument,
    FixRefusal,
    _avg_px,
    _refuse,
    _render,
)
from ringex.gateways.fix_report_state import order_fields
from ringex.gateways.fix_order_book import (
    S_CANCELED,
    S_EXPIRED,
    S_FILLED,
    S_NEW,
    S_PARTIAL,
    S_PENDING_NEW,
    S_REJECTED,
    Order,
    OrderBook,
    Pending,
)

__all__ = [
    "BUSINESS_REJECT",
    "CANCEL_REJECT",
    "CANCEL_REASON_EXEC",
    "EXECUTION_REPORT",
    "MASS_CANCEL_REPORT",
    "Outgoing",
    "engine_message",
    "with_fields",
    "cancel",
    "execution_report",
    "mass_cancel",
    "new_order",
    "new_order_values",
    "Origin",
    "is_held",
    "recover",
    "refusal_report",
    "release",
    "replace",
    "status",
]


EXECUTION_REPORT = b"8"
CANCEL_REJECT = b"9"
MASS_CANCEL_REPORT = b"r"
BUSINESS_REJECT = b"j"

# FIX tags used here (and fix_instrument's T_ORDER_QTY, T_PRICE, T_STOP_PX, T_MAX_FLOOR)

_PRINTABLE = bytes(range(0x20, 0x7F))
_BOOL = {False: m.Bool(0), True: m.Bool(1)}
_PRICED = (m.OrdType.Limit, m.OrdType.StopLimit)
_STOPS = (m.OrdType.Stop, m.OrdType.StopLimit)

R = m.RejectReason
C = m.CancelReason
#: engine CancelReason -> (ExecType 150, OrdStatus 39) of the ExecutionReport, when the cancel
#: ends the order. A remainder the order's own instructions gave up (IOC/FOK, a market
#: order's unfilled rest) or a Day order at the close is Expired; the rest are Canceled. A
#: SelfTrade cancel that leaves the order live (STP DecrementBoth) is a Restatement instead:
#: ExecType D, ExecRestatementReason 5 (partial decline of OrderQty), OrdStatus 0/1.
CANCEL_REASON_EXEC: dict[m.CancelReason, tuple[bytes, bytes]] = {
    C.User: (b"4", S_CANCELED),
    C.IocRemainder: (b"C", S_EXPIRED),
    C.MarketRemainder: (b"C", S_EXPIRED),
    C.SelfTrade: (b"4", S_CANCELED),
    C.MassCancel: (b"4", S_CANCELED),
    C.Expired: (b"C", S_EXPIRED),
    C.KillSwitch: (b"4", S_CANCELED),
    C.Liquidation: (b"4", S_CANCELED),
    C.Halted: (b"4", S_CANCELED),
    C.ReduceOnly: (b"4", S_CANCELED),
}


class Origin(NamedTuple):
    """Where a request comes from, kept with what the book records for it: the client's
    MsgSeqNum, and the gateway's inbound ring (its creation time) and position its engine
    message is staged for. A restarted gateway tells by them what it never published
    (``recover``)."""

    in_seq: int
    created: int
    position: int


class Outgoing(NamedTuple):
    """One FIX application message to send: its MsgType 35 and its body (no header/trailer):
    ``(tag, value)`` pairs, or the fields already written (``tag=value<SOH>`` each, as
    ``_report`` writes an ExecutionReport's). (Not ``fix_codec.FixMessage``, which is a
    message received and parsed.)"""

    msg_type: bytes
    body: list[tuple[int, bytes]] | bytes


def with_fields(body: list[tuple[int, bytes]] | bytes, items: list[tuple[int, bytes | int]]
                ) -> list[tuple[int, bytes]] | bytes:
    """``body`` (an ``Outgoing``'s) with ``items`` after it, in the body's own form."""
    if body.__class__ is not bytes:
        return body + items  # type: ignore[operator]
    if len(items) == 1:  # the common case, a TransactTime: written at once where encode_fields would take it
        tag, value = items[0]
        if (tag.__class__ is int and tag > 0 and value.__class__ is bytes and value
                and SOH not in value):  # type: ignore[operator]
            return body + b"%d=%s\x01" % (tag, value)  # type: ignore[operator]
    return body + encode_fields(items)  # type: ignore[operator]


# -- inbound: FIX -> engine -------------------------------------------------------------

def _cl_ord_id(fields: Mapping[int, bytes], tag: int = T_CL_ORD_ID) -> bytes:
    v = fields.get(tag)
    if v is None:
        raise FixRefusal("business", f"ClOrdID ({tag}) missing", tag, business_reason=5)
    v = bytes(v)
    if not 1 <= len(v) <= 64 or v.translate(None, _PRINTABLE):
        # without a usable ClOrdID the client could not match an ExecutionReport to it
        raise FixRefusal("business", f"ClOrdID ({tag}) must be 1..64 printable ASCII characters", tag,
                         business_reason=0)
    return v


def _required(fields: Mapping[int, bytes], tag: int, name: str) -> bytes:
    v = fields.get(tag)
    if v is None or v == b"":
        raise _refuse(f"{name} ({tag}) missing", tag)
    return bytes(v)


def _choice(fields: Mapping[int, bytes], tag: int, name: str, table: Mapping[bytes, Any],
            reason: m.RejectReason, default: Any = None) -> Any:
    v = fields.get(tag)
    if v is None:
        if default is None:
            raise _refuse(f"{name} ({tag}) missing", tag, reason)
        return default
    try:
        return table[bytes(v)]
    except KeyError:
        raise _refuse(f"{name} ({tag}) {bytes(v)!r} not supported", tag, reason) from None


def _account(fields: Mapping[int, bytes], account_ok: Callable[[int], bool], required: bool = True) -> int | None:
    v = fields.get(T_ACCOUNT)
    if v is None:
        if required:
            raise _refuse("Account (1) missing", T_ACCOUNT, R.UnknownAccount)
        return None
    v = bytes(v)
    if not v.isdigit() or len(v) > 10 or int(v) > UINT32_MAX:
        raise _refuse(f"Account (1) {v!r} is not an account number", T_ACCOUNT, R.UnknownAccount)
    acct = int(v)
    if not account_ok(acct):
        raise _refuse(f"this session may not trade account {acct}", T_ACCOUNT, R.AccountNotPermitted)
    return acct


def _exec_inst(fields: Mapping[int, bytes]) -> tuple[bool, bool]:
    """ExecInst 18 -> (postOnly, reduceOnly): "6" participate don't initiate, "E" do not increase."""
    v = fields.get(T_EXEC_INST)
    if v is None:
        return False, False
    values = bytes(v).split()
    if not values or any(x not in (b"6", b"E") for x in values):
        raise _refuse(f"ExecInst (18) {bytes(v)!r}: only 6 (post-only) and E (reduce-only) are supported",
                      T_EXEC_INST, R.InvalidFlags)
    return b"6" in values, b"E" in values


def _instrument(fields: Mapping[int, bytes], instruments: Mapping[bytes, FixInstrument]) -> FixInstrument:
    sym = _required(fields, T_SYMBOL, "Symbol")
    inst = instruments.get(sym)
    if inst is None:
        raise _refuse(f"unknown symbol {sym!r}", T_SYMBOL, R.UnknownInstrument)
    return inst


def new_order(fields: Mapping[int, bytes], book: OrderBook, instruments: Mapping[bytes, FixInstrument],
              account_ok: Callable[[int], bool], session_id: int, origin: Origin | None = None) -> dict[str, Any]:
    """NewOrderSingle D -> engine ``NewOrder`` keyword arguments (or ``FixRefusal``).

    ======================  ==========================================================
    FIX                     engine
    ======================  ==========================================================
    ClOrdID 11              clOrdId: the book's next number (11 kept in the book)
    Side 54  1 / 2          side Buy / Sell
    OrdType 40  1 2 3 4     ordType Market, Limit, Stop, StopLimit
    Price 44                price: required for 2 and 4, refused for 1 and 3
    StopPx 99               stopPrice: required for 3 and 4, refused for 1 and 2
    TimeInForce 59          0 Day (default), 1 GTC, 3 IOC, 4 FOK; others refused
    ExecInst 18             "6" postOnly, "E" reduceOnly (space-separated); others refused
    MaxFloor 111            displayQty (iceberg; <= OrderQty, on the lot); absent: 0
    Account 1               account (required, a number ``account_ok`` allows)
    Symbol 55               instrument (a configured symbol)
    OrderQty 38             qty
    7928 (ours)             stpMode: 0..5, the engine's StpMode values; absent: 0
    ======================  ==========================================================

    The engine repeats every check the instrument allows (and those it alone can make:
    book bounds, post-only crossing, risk): those come back as OrderRejected. ``origin``
    (the gateway's) is kept with the order (``recover``).
    """
    cl = _cl_ord_id(fields)
    if book.in_use(cl):
        raise _refuse(f"duplicate ClOrdID {cl.decode()}", T_CL_ORD_ID, ord_rej=6)
    inst = _instrument(fields, instruments)
    side = _choice(fields, T_SIDE, "Side", SIDES, R.InvalidSide)
    ord_type = _choice(fields, T_ORD_TYPE, "OrdType", ORD_TYPES, R.InvalidOrdType)
    tif = _choice(fields, T_TIF, "TimeInForce", TIFS, R.InvalidTimeInForce, m.TimeInForce.Day)
    account = _account(fields, account_ok)
    qty = inst.engine_qty(_required(fields, T_ORDER_QTY, "OrderQty"))
    price = 0
    if ord_type in _PRICED:
        price = inst.engine_price(_required(fields, T_PRICE, "Price"))
    elif T_PRICE in fields:
        raise _refuse(f"Price (44) not allowed on a {ord_type.name} order", T_PRICE, R.PriceOutOfRange)
    stop = 0
    if ord_type in _STOPS:
        stop = inst.engine_price(_required(fields, T_STOP_PX, "StopPx"), T_STOP_PX)
    elif T_STOP_PX in fields:
        raise _refuse(f"StopPx (99) not allowed on a {ord_type.name} order", T_STOP_PX, R.InvalidStopPrice)
    post, reduce = _exec_inst(fields)
    display = 0
    if T_MAX_FLOOR in fields:
        display = inst.engine_qty(fields[T_MAX_FLOOR], T_MAX_FLOOR)
        if display > qty:
            raise _refuse("MaxFloor (111) is over OrderQty", T_MAX_FLOOR, R.InvalidDisplayQty)
    stp = _choice(fields, T_STP_MODE, "SelfTradePreventionMode", STP_MODES, R.InvalidStpMode,
                  m.StpMode.AccountDefault)
    return _enter(book, cl, inst, account, side, ord_type, tif, qty, price, stop, display, post, reduce, stp,
                  session_id, origin)


def new_order_values(book: OrderBook, cl: bytes, inst: FixInstrument, values: list[int], session_id: int,
                     origin: Origin | None = None) -> bytes | None:
    """``new_order`` of a NewOrderSingle whose checks ``fix_new_order.order_values`` made
    already (``values``: its row, ``O_*``), but the one only the book can make, all the way to
    the engine NewOrder's bytes (``engine_message``'s, packed here without its keywords: this
    is every order's path). None, with nothing entered, when ClOrdID ``cl`` is in use
    (``new_order`` gives the refusal)."""
    if book.in_use(cl):
        return None
    _, _, _, price, qty, display, stop, account, _, side, ord_type, tif, post, reduce, stp = values[:O_STP + 1]
    num = _enter_order(book, cl, inst, account, side, ord_type, tif, qty, price, stop, display, bool(post),
                       bool(reduce), stp, origin)
    return _NEW_ORDER_HEADER + _NEW_ORDER_BODY.pack(0, 0, 0, num, price, qty, display, stop, session_id, account,
                                                    inst.id, side, ord_type, tif, post, reduce, stp)


def _enter(book: OrderBook, cl: bytes, inst: FixInstrument, account: int, side: int, ord_type: int, tif: int,
           qty: int, price: int, stop: int, display: int, post: bool, reduce: bool, stp: int, session_id: int,
           origin: Origin | None) -> dict[str, Any]:
    """Enter a checked order in the book; its engine NewOrder's keywords."""
    num = _enter_order(book, cl, inst, account, int(side), int(ord_type), int(tif), qty, price, stop, display, post,
                       reduce, int(stp), origin)
    return dict(clOrdId=num, price=price, qty=qty, displayQty=display, stopPrice=stop, sessionId=session_id,
                account=account, instrument=inst.id, side=side, ordType=ord_type, timeInForce=tif,
                postOnly=_BOOL[post], reduceOnly=_BOOL[reduce], stpMode=stp)


def _enter_order(book: OrderBook, cl: bytes, inst: FixInstrument, account: int, side: int, ord_type: int, tif: int,
                 qty: int, price: int, stop: int, display: int, post: bool, reduce: bool, stp: int,
                 origin: Origin | None) -> int:
    """Enter a checked order in the book (its enumerations as plain ints); its engine clOrdId."""
    num = book.allocate()
    book.add_order(Order(
        key=num, num=num, cl_ord_id=cl, chain=[], nums=[num], order_id=0, account=account, instrument=inst.id,
        symbol=inst.symbol, price_decimals=inst.price_decimals, qty_decimals=inst.qty_decimals, side=side,
        ord_type=ord_type, tif=tif, qty=qty, price=price, stop_price=stop, display_qty=display,
        post_only=post, reduce_only=reduce, stp_mode=stp, leaves_qty=qty,
        in_seq=origin.in_seq if origin else 0, at=[origin.created, origin.position] if origin else []))
    return num


def engine_message(name: str, kw: Mapping[str, Any]) -> bytes:
    """The engine message ``name`` of the keywords ``new_order``, ``cancel``, ``replace`` or
    ``mass_cancel`` made: the values they checked (every number in range, every choice a
    member of its enumeration) packed in the layout's order, without the schema codec
    checking each again (struct still refuses a number its field cannot hold); the same
    bytes as ``getattr(m, name).encode(**kw)``, which any other name goes through."""
    packing = _PACKING.get(name)
    if packing is None:
        return getattr(m, name).encode(**kw)
    body, header, names = packing
    return header + body.pack(*[kw.get(n, 0) for n in names])


_PACKING = {x.name: (x.body_struct, x.header_bytes, x.field_names) for x in (m.NewOrder, m.CancelOrder)
            if not any(f.is_char for f in x.fields)}

# new_order_values packs a NewOrder's fields by position: the layout's order, checked here
_NEW_ORDER_BODY, _NEW_ORDER_HEADER = m.NewOrder.body_struct, m.NewOrder.header_bytes
if m.NewOrder.field_names != ("seq", "timestampNs", "ingressNs", "clOrdId", "price", "qty", "displayQty", "stopPrice",
                              "sessionId", "account", "instrument", "side", "ordType", "timeInForce", "postOnly",
                              "reduceOnly", "stpMode"):
    raise ImportError(f"NewOrder's fields changed ({m.NewOrder.field_names}): update new_order_values")
if (O_PRICE, O_QTY, O_DISPLAY, O_STOP, O_ACCOUNT, O_SIDE, O_ORD_TYPE, O_TIF, O_POST, O_REDUCE, O_STP) != (
        3, 4, 5, 6, 7, 9, 10, 11, 12, 13, 14):
    raise ImportError("fix_new_order's row changed: update new_order_values")


def _cxl(text: str, tag: int | None, code: int) -> FixRefusal:
    return FixRefusal("reject", text, tag, cxl_rej_reason=code)


def _target(fields: Mapping[int, bytes], book: OrderBook, cl: bytes) -> Order:
    """The live order OrigClOrdID 41 names, for a cancel or replace (OrderCancelReject
    CxlRejReason: 0 too late, 1 unknown, 3 already pending or held, 6 duplicate ClOrdID, 99
    other). It may not be accepted yet (``order_id`` 0): the caller then holds the request."""
    if book.in_use(cl):
        raise _cxl(f"duplicate ClOrdID {cl.decode()}", T_CL_ORD_ID, 6)
    orig = fields.get(T_ORIG_CL_ORD_ID)
    if orig is None:
        raise _cxl("OrigClOrdID (41) missing", T_ORIG_CL_ORD_ID, 1)
    o = book.order(bytes(orig))
    if o is None:
        raise _cxl("Unknown order", T_ORIG_CL_ORD_ID, 1)
    if not o.live:
        raise _cxl("Too late to cancel: the order is no longer live", T_ORIG_CL_ORD_ID, 0)
    if book.pending_for(o) is not None:
        raise _cxl("a cancel or replace of this order is pending", T_ORIG_CL_ORD_ID, 3)
    for tag, mine in ((T_SYMBOL, o.symbol), (T_SIDE, str(o.side).encode())):
        if tag in fields and bytes(fields[tag]) != mine:
            raise _cxl(f"tag {tag} does not match the order's", tag, 99)
    return o


def _request(p: Pending, o: Order, session_id: int) -> dict[str, Any]:
    """The engine ``CancelOrder`` / ``ReplaceOrder`` kwargs of cancel or replace ``p`` of ``o``."""
    kw = dict(clOrdId=p.num, orderId=o.order_id, origClOrdId=o.num, sessionId=session_id, account=o.account,
              instrument=o.instrument)
    if p.kind == "replace":
        kw.update(price=p.params["price"], qty=p.params["qty"], displayQty=p.params["display"])
    return kw


def _pending(num: int, kind: str, cl: bytes, key: int, params: dict[str, Any], held: bool,
             origin: Origin | None) -> Pending:
    return Pending(num, kind, cl, key, params, held=held, in_seq=origin.in_seq if origin else 0,
                   at=[origin.created, origin.position] if origin and not held else [])


def cancel(fields: Mapping[int, bytes], book: OrderBook, session_id: int,
           origin: Origin | None = None) -> dict[str, Any]:
    """OrderCancelRequest F -> engine ``CancelOrder`` kwargs (or ``FixRefusal`` for an
    OrderCancelReject). OrigClOrdID 41 (the order's current ClOrdID or any earlier one of its
    replace chain) -> orderId and origClOrdId; ClOrdID 11 -> clOrdId, the book's next number.
    Symbol 55 and Side 54, when present, must match the order.

    An order the engine has not accepted yet (its NewOrder is on its way: no orderId to
    name) gets its cancel held: recorded in the book as ``Pending.held`` and returned with
    orderId 0 (``is_held``), which the caller throttles but does not send. ``release``
    sends it once the order's OrderAccepted is in, or answers it if the order ended first."""
    cl = _cl_ord_id(fields)
    o = _target(fields, book, cl)
    p = _pending(book.allocate(), "cancel", cl, o.key, {}, o.order_id == 0, origin)
    book.add_pending(p)
    return _request(p, o, session_id)


def replace(fields: Mapping[int, bytes], book: OrderBook, instruments: Mapping[bytes, FixInstrument],
            session_id: int, origin: Origin | None = None) -> dict[str, Any]:
    """OrderCancelReplaceRequest G -> engine ``ReplaceOrder`` kwargs (or ``FixRefusal`` for an
    OrderCancelReject). Checked against the order as the book has it now, and held like a
    cancel (``cancel``) when the engine has not accepted the order yet.

    OrderQty 38 (required) is the new total quantity (FIX semantics, as the engine's); it
    must exceed CumQty. Price 44 is required (only a resting Limit or triggered StopLimit can
    be replaced: the engine refuses the rest with StopNotAllowed). MaxFloor 111 is restated
    as FIX asks: absent means fully displayed. OrdType 40, Side 54, Symbol 55, TimeInForce
    59, ExecInst 18, StopPx 99 and Account 1, when present, must equal the order's: the
    engine cannot change them. The new ClOrdID is reserved now and becomes the order's when
    OrderReplaced arrives.
    """
    cl = _cl_ord_id(fields)
    o = _target(fields, book, cl)
    inst = _instrument(fields, instruments) if T_SYMBOL in fields else None
    if inst is None or inst.id != o.instrument:
        inst = next((i for i in instruments.values() if i.id == o.instrument), None)
        if inst is None:
            raise _cxl("the order's instrument is no longer configured", T_SYMBOL, 99)
    same = {T_ORD_TYPE: str(o.ord_type).encode(), T_TIF: str(o.tif).encode(), T_ACCOUNT: str(o.account).encode()}
    for tag, mine in same.items():
        if tag in fields and bytes(fields[tag]) != mine:
            raise _cxl(f"tag {tag} cannot be changed by a replace", tag, 99)
    try:
        if T_EXEC_INST in fields and _exec_inst(fields) != (o.post_only, o.reduce_only):
            raise _cxl("ExecInst (18) cannot be changed by a replace", T_EXEC_INST, 99)
        if T_STOP_PX in fields and inst.engine_price(fields[T_STOP_PX], T_STOP_PX) != o.stop_price:
            raise _cxl("StopPx (99) cannot be changed by a replace", T_STOP_PX, 99)
        qty = inst.engine_qty(_required(fields, T_ORDER_QTY, "OrderQty"))
        if qty <= o.cum_qty:
            raise _refuse("OrderQty (38) must exceed the quantity already filled", T_ORDER_QTY, R.QtyOutOfRange)
        price = inst.engine_price(_required(fields, T_PRICE, "Price"))
        display = 0
        if T_MAX_FLOOR in fields:
            display = inst.engine_qty(fields[T_MAX_FLOOR], T_MAX_FLOOR)
            if display > qty:
                raise _refuse("MaxFloor (111) is over OrderQty", T_MAX_FLOOR, R.InvalidDisplayQty)
    except FixRefusal as e:
        if e.cxl_rej_reason is None:
            e.cxl_rej_reason = 99  # an OrderCancelReject answers a replace, whatever went wrong
        raise
    p = _pending(book.allocate(), "replace", cl, o.key, {"price": price, "qty": qty, "display": display},
                 o.order_id == 0, origin)
    book.add_pending(p)
    return _request(p, o, session_id)


def is_held(book: OrderBook, kw: Mapping[str, Any]) -> bool:
    """Are ``cancel``'s or ``replace``'s kwargs ``kw`` a held request (not to be sent now)?"""
    p = book.pending(int(kw["clOrdId"]))
    return p is not None and p.held


def release(book: OrderBook, session_id: int) -> list[tuple[str, dict[str, Any]] | Outgoing]:
    """What becomes of the held cancels and replaces (``cancel``) now. Call it after the
    engine events at hand are reported, so that a request goes after its order's
    ExecutionReport New, and only if the events that followed the acceptance (the trades of
    an order that executed on entry) left the order live. For each, oldest first:

    * order accepted and live: ``("CancelOrder" | "ReplaceOrder", kwargs)``, now with the
      orderId: the caller sends it, then records it with ``OrderBook.sent`` (until then it
      stays held in the book, so a crash before it is staged does not lose it);
    * order ended (Rejected; or Filled, Canceled, Expired, e.g. an IOC that traded at
      once): an OrderCancelReject (9), CxlRejReason 1 (unknown order) for a rejected order,
      0 (too late) for the rest; the request is dropped from the book;
    * order not accepted yet: kept held; nothing.

    An order that ends after its request went (its events split between two batches) gets
    the engine's CancelRejected (UnknownOrder): an OrderCancelReject with CxlRejReason 0.
    """
    out: list[tuple[str, dict[str, Any]] | Outgoing] = []
    for p in book.held():
        o = book.by_key(p.key)
        if o is None:  # cannot happen (compaction keeps the orders pendings name): no one to answer about
            book.drop_pending(p.num)
        elif not o.live:
            book.drop_pending(p.num)
            rejected = o.status == S_REJECTED
            text = (b"Unknown order: the order was rejected" if rejected
                    else b"Too late: the order ended before the engine had accepted it")
            out.append(_cancel_reject(o, p, b"1" if rejected else b"0", text))
        elif o.order_id:
            out.append(("CancelOrder" if p.kind == "cancel" else "ReplaceOrder", _request(p, o, session_id)))
    return out


def mass_cancel(fields: Mapping[int, bytes], book: OrderBook, instruments: Mapping[bytes, FixInstrument],
                account_ok: Callable[[int], bool], session_id: int, origin: Origin | None = None) -> dict[str, Any]:
    """OrderMassCancelRequest q -> engine ``MassCancel`` kwargs (or ``FixRefusal`` for an
    OrderMassCancelReport with MassCancelResponse 0).

    =========================  ==============================  ===========================
    MassCancelRequestType 530  Account 1                       engine scope
    =========================  ==============================  ===========================
    7 all orders               absent                          Session (this session's)
    7 all orders               present (``account_ok``)        Account (any session's)
    1 by symbol (55 needed)    required (``account_ok``)       AccountInstrument
    others                     refused (MassCancelRejectReason 99)
    =========================  ==============================  ===========================

    The engine has no session-and-instrument scope: a by-symbol cancel names an account and
    also cancels that account's orders entered by other sessions. Scope Instrument (every
    owner) is an operator's action and never sent from here. The brief's signature
    ``mass_cancel(fields, session_id)`` could neither resolve a symbol nor give the request
    an engine clOrdId (MassCancelDone must be matched), hence the book and instruments.
    """
    cl = _cl_ord_id(fields)
    if book.in_use(cl):
        raise FixRefusal("reject", f"duplicate ClOrdID {cl.decode()}", T_CL_ORD_ID, mass_cancel_reject_reason=99)
    kind = fields.get(T_MASS_TYPE)
    try:
        if kind == b"7":
            acct = _account(fields, account_ok, required=False)
            inst_id, scope = 0, (m.MassCancelScope.Session if acct is None else m.MassCancelScope.Account)
            sym = b""
        elif kind == b"1":
            inst = _instrument(fields, instruments)
            acct = _account(fields, account_ok, required=True)
            inst_id, scope, sym = inst.id, m.MassCancelScope.AccountInstrument, inst.symbol
        else:
            raise FixRefusal("reject", f"MassCancelRequestType (530) {kind!r} not supported: 1 or 7", T_MASS_TYPE)
    except FixRefusal as e:
        if e.mass_cancel_reject_reason is None:
            e.mass_cancel_reject_reason = 1 if e.tag == T_SYMBOL else 99  # 1 = invalid or unknown security
        raise
    num = book.allocate()
    book.add_pending(_pending(num, "mass", cl, 0, {"type": kind.decode(), "symbol": sym.decode()}, False, origin))
    return dict(clOrdId=num, sessionId=session_id, account=acct or 0, instrument=inst_id, scope=scope)


LOST = b"not sent to the engine: the gateway restarted first"


def recover(book: OrderBook, created: int, published: int, next_in: int) -> list[Outgoing]:
    """After a gateway restart: settle what the book recorded for requests whose engine
    message was staged but never published (``OrderBook.unpublished``: staged for a position
    at or after ``published``, the next one of the inbound ring created at ``created``), so
    that the engine never saw them; returns the reports to send.

    A request the session store does not count as applied (its MsgSeqNum ``>= next_in``) is
    forgotten without a word: the counterparty sends it again after its next Logon (asked
    with a ResendRequest) and it is then handled afresh. The gateway holds the count at the
    first staged message until the publish (``SessionStore.hold``), so one unpublished and
    counted comes only from a store written before that hold existed: it would never come
    again, so it is refused, OrderRejected ExecutionReport, OrderCancelReject or
    OrderMassCancelReport with reason 99 and Text ``LOST``. A released held request that
    never reached the ring is held again (``release`` sends it again), and a held request
    itself not counted yet is forgotten (it comes again).
    """
    out: list[Outgoing] = []
    orders, pendings = book.unpublished(created, published)
    for p in pendings:
        if p.released:
            book.hold_again(p)
            continue
        book.drop_pending(p.num)
        if p.in_seq >= next_in:
            continue
        if p.kind == "mass":
            out.append(Outgoing(MASS_CANCEL_REPORT, [
                (T_CL_ORD_ID, p.cl_ord_id), (T_ORDER_ID, f"MC{p.num}".encode()),
                (T_MASS_TYPE, p.params["type"].encode()), (T_MASS_RESPONSE, b"0"), (T_MASS_REJECT_REASON, b"99"),
                (T_TEXT, LOST)]))
        elif (o := book.by_key(p.key)) is not None:
            out.append(_cancel_reject(o, p, b"99", LOST))
    for o in orders:
        o.status, o.leaves_qty = S_REJECTED, 0  # its ClOrdID free again, for the resent order
        book.save(o)
        if o.in_seq < next_in:
            out.append(_report(o, b"L%d" % o.key, b"8", extra=[(T_ORD_REJ_REASON, b"99"), (T_TEXT, LOST)]))
    for p in book.held():
        if p.in_seq >= next_in and p.in_seq:
            book.drop_pending(p.num)
    return out


# -- outbound: engine -> FIX ------------------------------------------------------------

def _report(o: Order, exec_id: bytes, exec_type: bytes, cl: bytes | None = None, orig: bytes | None = None,
            extra: list[tuple[int, bytes]] | None = None) -> Outgoing:
    """An ExecutionReport of ``o`` as the book has it now, its body written out: 37 11 [41] 17
    150 39, the order's own fields (``order_fields``), ``extra``, 151 14 6."""
    qd = o.qty_decimals
    body = b"37=%s\x0111=%s\x01%s17=%s\x01150=%s\x0139=%s\x01%s%s151=%s\x0114=%s\x016=%s\x01" % (
        b"%d" % o.order_id if o.order_id else b"NONE", cl or o.cl_ord_id, b"41=%s\x01" % orig if orig else b"",
        exec_id, exec_type, o.status, order_fields(o), encode_fields(extra) if extra else b"",
        _render(o.leaves_qty if o.live else 0, qd), _render(o.cum_qty, qd), _avg_px(o.notional, o.cum_qty,
                                                                                     o.price_decimals))
    return Outgoing(EXECUTION_REPORT, body)


def _working_status(o: Order) -> bytes:
    return S_PARTIAL if o.cum_qty else S_NEW


def execution_report(event_name: str, ev: Mapping[str, Any], book: OrderBook,
                     instruments_by_id: Mapping[int, FixInstrument], session_id: int,
                     exec_id: bytes) -> list[Outgoing]:
    """The FIX messages an engine event gives this session (``[]``: none), book updated.

    Returns a list of ``Outgoing(msg_type, body)`` rather than a bare body: a
    CancelRejected is an OrderCancelReject (9) or an OrderMassCancelReport (r), a
    MassCancelDone an r, and a Trade between two orders of this session (self-match with
    STP Off) gives two reports: the taker's with ``exec_id``, then the maker's with
    ``exec_id + b"-2"`` (so ``exec_id`` must be unique among ids the caller makes, suffix
    included: a decimal sequence number is). Events of another session, or naming an
    engine clOrdId the book does not know, give ``[]``.

    ==============  ==========================  =================================================
    engine event    message / ExecType 150      OrdStatus 39, notes
    ==============  ==========================  =================================================
    OrderAccepted   8 / 0 New                   0
    OrderRejected   8 / 8 Rejected              8; OrdRejReason per ORD_REJ_REASON; Text reason
    Trade           8 / F Trade                 1 partial or 2 filled; LastPx 31, LastQty 32,
                                                LastLiquidityInd 851 (1 maker, 2 taker),
                                                SecondaryExecID 527 = tradeId
    OrderCanceled   8 / CANCEL_REASON_EXEC      4 or C; Text reason; User: ClOrdID is the
                                                cancel request's, OrigClOrdID the order's;
                                                leaves > 0 after it: D Restated (378=5)
    OrderReplaced   8 / 5 Replaced              0 or 1 by fills; ClOrdID new, OrigClOrdID old
    CancelRejected  9 (refTemplateId 2, 3)      the order's OrdStatus; CxlRejResponseTo 434
                                                1 cancel / 2 replace; CxlRejReason 102: 1
                                                UnknownOrder, 0 if the book saw it end, else 99
                                                (a throttled held request too)
                    r (refTemplateId 4)         MassCancelResponse 0; 532: 1 UnknownInstrument,
                                                else 99
    StopTriggered   8 / L Triggered             0 or 1 (unchanged)
    MassCancelDone  r                           530 = 531 = the request's type, 533 count
    ==============  ==========================  =================================================

    Every ExecutionReport carries OrderID 37 ("NONE" before acceptance), ClOrdID 11,
    OrigClOrdID 41 where it applies, ExecID 17, Account 1, Symbol 55, Side 54, OrderQty 38,
    OrdType 40, Price 44 / StopPx 99 when set, TimeInForce 59, ExecInst 18 / MaxFloor 111
    when set, LeavesQty 151, CumQty 14, AvgPx 6 (``_avg_px``). TransactTime 60 is the
    caller's (the event's stamp timestamp is the natural value).
    """
    if event_name == "Trade":
        return _trade(ev, book, session_id, exec_id)
    if ev.get("sessionId") != session_id:
        return []
    num = int(ev.get("clOrdId", 0))
    if event_name == "OrderAccepted":
        o = book.by_engine_id(num)
        if o is None or o.status != S_PENDING_NEW:
            return []
        o.order_id, o.status = int(ev["orderId"]), S_NEW
        book.save_state(o)
        return [_report(o, exec_id, b"0")]
    if event_name == "OrderRejected":
        o = book.by_engine_id(num)
        if o is None or o.status != S_PENDING_NEW:
            return []
        reason = m.RejectReason(int(ev["reason"]))
        o.status, o.leaves_qty = S_REJECTED, 0
        book.save_state(o)
        return [_report(o, exec_id, b"8", extra=[(T_ORD_REJ_REASON, str(ORD_REJ_REASON.get(reason, 99)).encode()),
                                                 (T_TEXT, reason.name.encode())])]
    if event_name == "OrderCanceled":
        return _canceled(ev, book, exec_id)
    if event_name == "OrderReplaced":
        p = book.pending(num)
        o = book.by_key(p.key) if p is not None and p.kind == "replace" else None
        if o is None:
            return []
        book.drop_pending(num)
        old = o.cl_ord_id
        o.chain.append(old)
        o.cl_ord_id, o.num = p.cl_ord_id, num
        o.nums.append(num)
        o.qty, o.price, o.leaves_qty, o.display_qty = int(ev["qty"]), int(ev["price"]), int(ev["leavesQty"]), \
            int(ev["displayQty"])
        o.status = _working_status(o)
        book.save(o)
        return [_report(o, exec_id, b"5", orig=old)]
    if event_name == "CancelRejected":
        return _cancel_rejected(ev, book, exec_id)
    if event_name == "StopTriggered":
        o = book.by_engine_id(num)
        if o is None or not o.live:
            return []
        o.triggered = True
        book.save_state(o)
        return [_report(o, exec_id, b"L")]
    if event_name == "MassCancelDone":
        p = book.pending(num)
        if p is None or p.kind != "mass":
            return []
        book.drop_pending(num)
        body = [(T_CL_ORD_ID, p.cl_ord_id), (T_ORDER_ID, f"MC{num}".encode()),
                (T_MASS_TYPE, p.params["type"].encode()), (T_MASS_RESPONSE, p.params["type"].encode()),
                (T_AFFECTED, str(int(ev["canceledCount"])).encode())]
        if p.params.get("symbol"):
            body.append((T_SYMBOL, p.params["symbol"].encode()))
        return [Outgoing(MASS_CANCEL_REPORT, body)]
    return []


def _trade(ev: Mapping[str, Any], book: OrderBook, session_id: int, exec_id: bytes) -> list[Outgoing]:
    out: list[Outgoing] = []
    px, qty = int(ev["price"]), int(ev["qty"])
    for role, liquidity in (("taker", b"2"), ("maker", b"1")):
        if ev.get(f"{role}SessionId") != session_id:
            continue
        o = book.by_engine_id(int(ev[f"{role}ClOrdId"]))
        if o is None or not o.live:
            continue
        o.cum_qty += qty
        o.notional += px * qty
        o.leaves_qty = int(ev[f"{role}LeavesQty"])
        o.status = S_FILLED if o.leaves_qty == 0 else S_PARTIAL
        book.save_state(o)
        extra = [(T_LAST_PX, _render(px, o.price_decimals)), (T_LAST_QTY, _render(qty, o.qty_decimals)),
                 (T_LAST_LIQUIDITY_IND, liquidity), (T_SECONDARY_EXEC_ID, str(int(ev["tradeId"])).encode())]
        out.append(_report(o, exec_id if not out else exec_id + b"-2", b"F", extra=extra))
    return out


def _canceled(ev: Mapping[str, Any], book: OrderBook, exec_id: bytes) -> list[Outgoing]:
    o = book.by_engine_id(int(ev["clOrdId"]))
    if o is None or not o.live:
        return []
    reason = m.CancelReason(int(ev["reason"]))
    gone = int(ev["canceledQty"])
    text = [(T_TEXT, reason.name.encode())]
    if o.leaves_qty > gone:
        # STP DecrementBoth: the engine lowered the order's total with its remainder; it lives on
        o.qty -= gone
        o.leaves_qty -= gone
        o.status = _working_status(o)
        book.save(o)
        return [_report(o, exec_id, b"D", extra=[(T_EXEC_RESTATEMENT_REASON, b"5"), *text])]
    exec_type, o.status = CANCEL_REASON_EXEC.get(reason, (b"4", S_CANCELED))
    o.leaves_qty = 0
    cl = orig = None
    p = book.pending_for(o)
    book.save_state(o)  # before drop_pending: a compaction it may start must see the order's end
    if reason == C.User and p is not None and p.kind == "cancel":
        book.drop_pending(p.num)
        cl, orig = p.cl_ord_id, o.cl_ord_id
    return [_report(o, exec_id, exec_type, cl, orig, extra=text)]


def _cancel_rejected(ev: Mapping[str, Any], book: OrderBook, exec_id: bytes) -> list[Outgoing]:
    num = int(ev["clOrdId"])
    p = book.pending(num)
    if p is None:
        return []
    book.drop_pending(num)
    reason = m.RejectReason(int(ev["reason"]))
    if p.kind == "mass":
        return [Outgoing(MASS_CANCEL_REPORT, [
            (T_CL_ORD_ID, p.cl_ord_id), (T_ORDER_ID, f"MC{num}".encode()),
            (T_MASS_TYPE, p.params["type"].encode()), (T_MASS_RESPONSE, b"0"),
            (T_MASS_REJECT_REASON, b"1" if reason == R.UnknownInstrument else b"99"),  # 1: unknown security
            (T_TEXT, reason.name.encode())])]
    o = book.by_key(p.key)
    if o is None:
        return []
    code = (b"0" if not o.live else b"1") if reason == R.UnknownOrder else b"99"
    return [_cancel_reject(o, p, code, reason.name.encode())]


def _cancel_reject(o: Order, p: Pending, code: bytes, text: bytes) -> Outgoing:
    """The OrderCancelReject of cancel or replace ``p`` of ``o``."""
    return Outgoing(CANCEL_REJECT, [
        (T_ORDER_ID, str(o.order_id).encode() if o.order_id else b"NONE"), (T_CL_ORD_ID, p.cl_ord_id),
        (T_ORIG_CL_ORD_ID, o.cl_ord_id), (T_ORD_STATUS, o.status), (T_ACCOUNT, str(o.account).encode()),
        (T_CXL_REJ_RESPONSE_TO, b"1" if p.kind == "cancel" else b"2"), (T_CXL_REJ_REASON, code),
        (T_TEXT, text)])


def status(fields: Mapping[int, bytes], book: OrderBook, exec_id: bytes = b"0") -> list[tuple[int, bytes]] | bytes:
    """OrderStatusRequest H -> an ExecutionReport body, ExecType I (Order Status), of the order
    ClOrdID 11 names (current or earlier in its replace chain; terminal ones until compacted).
    ExecID defaults to "0" (status reports are not executions). An unknown order gives
    OrdStatus 8 with OrdRejReason 5 Unknown order, as FIX 4.4 recommends; OrdStatusReqID 790
    is echoed. Missing ClOrdID: ``FixRefusal("business")``."""
    cl = _cl_ord_id(fields)
    req = [(T_ORD_STATUS_REQ_ID, bytes(fields[T_ORD_STATUS_REQ_ID]))] if T_ORD_STATUS_REQ_ID in fields else []
    o = book.order(cl)
    if o is None:
        body = [(T_ORDER_ID, b"NONE"), (T_CL_ORD_ID, cl), (T_EXEC_ID, exec_id), (T_EXEC_TYPE, b"I"),
                (T_ORD_STATUS, S_REJECTED), (T_ORD_REJ_REASON, b"5")]
        body += [(t, bytes(fields[t])) for t in (T_SYMBOL, T_SIDE) if t in fields]
        return body + req + [(T_LEAVES_QTY, b"0"), (T_CUM_QTY, b"0"), (T_AVG_PX, b"0"), (T_TEXT, b"Unknown order")]
    return _report(o, exec_id, b"I", cl=cl, extra=req).body


def refusal_report(msg_type: bytes, fields: Mapping[int, bytes], refusal: FixRefusal, exec_id: bytes,
                   book: OrderBook | None = None) -> Outgoing:
    """The answer to a request ``msg_type`` (D, F, G, q, H) refused with ``refusal``.

    "business" -> BusinessMessageReject j (RefMsgType 372, BusinessRejectReason 380,
    BusinessRejectRefID 379 = the ClOrdID when there is one; the caller adds RefSeqNum 45).
    "reject": D/H -> ExecutionReport ExecType 8 / OrdStatus 8 with OrdRejReason; F/G ->
    OrderCancelReject with CxlRejReason (OrdStatus: the order's if the book knows it, else
    8); q -> OrderMassCancelReport with MassCancelResponse 0.
    """
    cl = fields.get(T_CL_ORD_ID, b"")
    text = refusal.text.encode("ascii", "replace")
    if refusal.kind == "business" or msg_type not in (b"D", b"F", b"G", b"q", b"H"):
        body = [(T_REF_MSG_TYPE, msg_type)]
        if cl:
            body.append((T_BIZ_REJECT_REF_ID, bytes(cl)))
        body += [(T_BIZ_REJECT_REASON, str(refusal.business_reason or 0).encode()), (T_TEXT, text)]
        return Outgoing(BUSINESS_REJECT, body)
    if msg_type in (b"F", b"G"):
        o = book.order(bytes(fields[T_ORIG_CL_ORD_ID])) if book is not None and T_ORIG_CL_ORD_ID in fields else None
        return Outgoing(CANCEL_REJECT, [
            (T_ORDER_ID, str(o.order_id).encode() if o is not None and o.order_id else b"NONE"),
            (T_CL_ORD_ID, bytes(cl)), (T_ORIG_CL_ORD_ID, bytes(fields.get(T_ORIG_CL_ORD_ID, b"NONE"))),
            (T_ORD_STATUS, o.status if o is not None else S_REJECTED),
            (T_CXL_REJ_RESPONSE_TO, b"1" if msg_type == b"F" else b"2"),
            (T_CXL_REJ_REASON, str(99 if refusal.cxl_rej_reason is None else refusal.cxl_rej_reason).encode()),
            (T_TEXT, text)])
    if msg_type == b"q":
        return Outgoing(MASS_CANCEL_REPORT, [
            (T_CL_ORD_ID, bytes(cl)), (T_ORDER_ID, b"NONE"), (T_MASS_TYPE, bytes(fields.get(T_MASS_TYPE, b"0"))),
            (T_MASS_RESPONSE, b"0"),
            (T_MASS_REJECT_REASON, str(99 if refusal.mass_cancel_reject_reason is None
                                       else refusal.mass_cancel_reject_reason).encode()),
            (T_TEXT, text)])
    body = [(T_ORDER_ID, b"NONE"), (T_CL_ORD_ID, bytes(cl)), (T_EXEC_ID, exec_id), (T_EXEC_TYPE, b"8"),
            (T_ORD_STATUS, S_REJECTED)]
    body += [(t, bytes(fields[t])) for t in (T_ACCOUNT, T_SYMBOL, T_SIDE, T_ORDER_QTY, T_ORD_TYPE, T_PRICE)
             if t in fields]
    body += [(T_LEAVES_QTY, b"0"), (T_CUM_QTY, b"0"), (T_AVG_PX, b"0"),
             (T_ORD_REJ_REASON, str(99 if refusal.ord_rej_reason is None else refusal.ord_rej_reason).encode()),
             (T_TEXT, text)]
    return Outgoing(EXECUTION_REPORT, body)

