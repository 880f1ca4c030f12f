"""A NewOrderSingle's fields as the engine's NewOrder values, compiled.

``fix_orders.new_order`` maps a NewOrderSingle to the engine's NewOrder in Python, one
check after another, each failure with its own refusal. ``order_values`` makes the same
checks in compiled code on a message ``fix_scan`` has framed and validated, straight from
its field table, and writes the values ``new_order`` would give into a row of
``ORDER_WORDS`` words, ``O_OK`` set; it never refuses: anything it does not accept (a
refusal of any kind, a number too long for int64 arithmetic, a tag it does not read) leaves
``O_OK`` clear, and the gateway asks ``new_order``, which answers as always. What only the
book can say (a ClOrdID in use among the session's live orders) is the caller's to ask.

The instruments and the session's accounts come as arrays (``InstrumentTable``,
``account_array``), made once.
"""

from __future__ import annotations

from typing import Iterable, NamedTuple

import numpy as np
from numba import njit

from ringex.engine.wire import messages as m
from ringex.gateways.fix_dictionary import HEADER_ALLOWED, TRAILER
from ringex.gateways.fix_instrument import FixInstrument
from ringex.gateways.fix_scan import (F_END, F_START, F_TAG, FIELD_WORDS, M_FIELD_COUNT, M_FIELD_FROM, M_TYPE, M_VALID,
                                      MESSAGE_WORDS, MSG_TYPES)
from ringex.gateways.fix_tags import (T_ACCOUNT, T_CL_ORD_ID, T_EXEC_INST, T_MAX_FLOOR, T_ORD_TYPE, T_ORDER_QTY, T_PRICE,
                                      T_SIDE, T_STOP_PX, T_STP_MODE, T_SYMBOL, T_TEXT, T_TIF, T_TRANSACT_TIME)

__all__ = [
    "ORD_TYPES",
    "SIDES",
    "STP_MODES",
    "TIFS",
    "InstrumentTable",
    "ORDER_WORDS",
    "O_ACCOUNT",
    "O_CL_END",
    "O_CL_START",
    "O_DISPLAY",
    "O_INSTRUMENT",
    "O_OK",
    "O_ORD_TYPE",
    "O_POST",
    "O_PRICE",
    "O_QTY",
    "O_REDUCE",
    "O_SIDE",
    "O_STOP",
    "O_STP",
    "O_TIF",
    "account_array",
    "instrument_table",
    "order_values",
    "orders_of",
]

# a NewOrderSingle's row
O_OK = 0  # 1: every check of new_order passed (but the ClOrdID's use); the words below are its values
O_CL_START, O_CL_END = 1, 2  # the ClOrdID's bytes in what was scanned
O_PRICE, O_QTY, O_DISPLAY, O_STOP = 3, 4, 5, 6  # engine units
O_ACCOUNT = 7
O_INSTRUMENT = 8  # the instrument's row in the InstrumentTable
O_SIDE, O_ORD_TYPE, O_TIF, O_POST, O_REDUCE, O_STP = 9, 10, 11, 12, 13, 14  # the engine's enumeration values
ORDER_WORDS = 15

# an instrument's row of numbers
I_PRICE_DECIMALS, I_QTY_DECIMALS, I_TICK, I_LOT, I_MIN_QTY, I_MAX_QTY = range(6)
MAX_SYMBOL = 64
MAX_DIGITS = 18  # whole and kept decimal digits of a number read here: int64 arithmetic cannot overflow
MAX_CL_ORD_ID = 64  # fix_orders._cl_ord_id's bounds: 1..64 printable ASCII
UINT32_MAX = (1 << 32) - 1

#: FIX's one-character choices -> the engine's values (fix_orders reads them too)
SIDES = {b"1": m.Side.Buy, b"2": m.Side.Sell}
ORD_TYPES = {b"1": m.OrdType.Market, b"2": m.OrdType.Limit, b"3": m.OrdType.Stop, b"4": m.OrdType.StopLimit}
TIFS = {b"0": m.TimeInForce.Day, b"1": m.TimeInForce.GTC, b"3": m.TimeInForce.IOC, b"4": m.TimeInForce.FOK}
STP_MODES = {str(int(v)).encode(): v for v in m.StpMode}


def _by_character(choices: dict[bytes, object]) -> np.ndarray:
    """A choice table by character code (-1: refused), for compiled code."""
    table = np.full(256, -1, np.int64)
    for text, value in choices.items():
        if len(text) != 1:
            raise ValueError(f"{text!r}: only one-character choices are read here")
        table[text[0]] = int(value)  # type: ignore[call-overload]
    return table


_SIDE, _ORD_TYPE, _TIF, _STP = (_by_character(c) for c in (SIDES, ORD_TYPES, TIFS, STP_MODES))
_TIF_DEFAULT = int(m.TimeInForce.Day)
_STP_DEFAULT = int(m.StpMode.AccountDefault)
_LIMIT, _STOP_LIMIT = int(m.OrdType.Limit), int(m.OrdType.StopLimit)
_STOP = int(m.OrdType.Stop)
# the tags of a NewOrderSingle new_order does not read: the header's, the trailer, Text,
# TransactTime
_IGNORED = tuple(sorted(HEADER_ALLOWED | set(TRAILER) | {T_TEXT, T_TRANSACT_TIME}))


class InstrumentTable(NamedTuple):
    """The instruments as ``order_values`` reads them: symbols, their lengths, numbers."""

    symbols: np.ndarray  # uint8 [n, MAX_SYMBOL]
    lengths: np.ndarray  # int64 [n]
    numbers: np.ndarray  # int64 [n, 6]: I_*


def instrument_table(instruments: Iterable[FixInstrument]) -> InstrumentTable:
    rows = list(instruments)
    symbols = np.zeros((len(rows), MAX_SYMBOL), np.uint8)
    lengths = np.zeros(len(rows), np.int64)
    numbers = np.zeros((len(rows), 6), np.int64)
    for i, inst in enumerate(rows):
        if len(inst.symbol) > MAX_SYMBOL:
            lengths[i] = -1  # never matched: its orders take the Python path
        else:
            symbols[i, :len(inst.symbol)] = np.frombuffer(inst.symbol, np.uint8)
            lengths[i] = len(inst.symbol)
        numbers[i] = (inst.price_decimals, inst.qty_decimals, inst.tick_size, inst.lot_size, inst.min_qty,
                      inst.max_qty)
    return InstrumentTable(symbols, lengths, numbers)


def account_array(accounts: Iterable[int]) -> np.ndarray:
    """A session's permitted accounts, sorted, for ``order_values``."""
    return np.array(sorted(set(accounts)), np.int64)


@njit(cache=True)
def _scaled(buf: np.ndarray, start: int, end: int, decimals: int) -> int:
    """A FIX float times 10**decimals, exactly, when that is a positive int64 of at most
    MAX_DIGITS digits; -1 otherwise (a refusal, or a number left to the Python path). The
    value is one fix_scan found well formed: -?(digits[.digits*]|.digits)."""
    i = start
    if i < end and buf[i] == 45:  # "-": negative or zero, refused
        return -1
    value = 0
    digits = 0
    while i < end and buf[i] != 46:
        if buf[i] < 48 or buf[i] > 57:
            return -1
        if value or buf[i] != 48:  # leading zeros are not digits that count
            digits += 1
        value = value * 10 + (buf[i] - 48)
        i += 1
        if digits > MAX_DIGITS:
            return -1
    kept = 0
    if i < end:
        i += 1  # the point
        while i < end:
            c = buf[i]
            if c < 48 or c > 57:
                return -1
            if kept < decimals:
                value = value * 10 + (c - 48)
                kept += 1
                if value:
                    digits += 1
                    if digits > MAX_DIGITS:
                        return -1
            elif c != 48:
                return -1  # more decimals than the instrument has: refused
            i += 1
    if digits + decimals - kept > MAX_DIGITS:
        return -1
    for _ in range(decimals - kept):
        value *= 10
    return value if value > 0 else -1


@njit(cache=True)
def _price(buf: np.ndarray, fields: np.ndarray, f: int, wanted: bool, nums: np.ndarray) -> int:
    """The price (Price 44 or StopPx 99) in field row ``f`` (-1: absent), where the order
    type ``wanted`` one: positive and on the tick; 0 where it wanted none and there is
    none; -1 otherwise."""
    if not wanted:
        return -1 if f >= 0 else 0
    if f < 0:
        return -1
    v = _scaled(buf, fields[f, F_START], fields[f, F_END], nums[I_PRICE_DECIMALS])
    return v if v > 0 and v % nums[I_TICK] == 0 else -1


@njit(cache=True)
def _is(buf: np.ndarray, start: int, end: int, text: np.ndarray, length: int) -> bool:
    if end - start != length:
        return False
    for k in range(length):
        if buf[start + k] != text[k]:
            return False
    return True


@njit(cache=True)
def order_values(buf: np.ndarray, fields: np.ndarray, first: int, end: int, symbols: np.ndarray,
                 lengths: np.ndarray, numbers: np.ndarray, accounts: np.ndarray, out: np.ndarray) -> None:
    """``new_order``'s checks and values of the NewOrderSingle whose fields are
    ``fields[first:end]`` (fix_scan's rows over ``buf``), into ``out`` (see the module)."""
    out[O_OK] = 0
    cl = sym = side = ord_type = tif = account = qty = price = stop = inst = floor = stp = -1
    for f in range(first, end):
        tag = fields[f, F_TAG]
        if tag == T_CL_ORD_ID:
            cl = f
        elif tag == T_SYMBOL:
            sym = f
        elif tag == T_SIDE:
            side = f
        elif tag == T_ORD_TYPE:
            ord_type = f
        elif tag == T_TIF:
            tif = f
        elif tag == T_ACCOUNT:
            account = f
        elif tag == T_ORDER_QTY:
            qty = f
        elif tag == T_PRICE:
            price = f
        elif tag == T_STOP_PX:
            stop = f
        elif tag == T_EXEC_INST:
            inst = f
        elif tag == T_MAX_FLOOR:
            floor = f
        elif tag == T_STP_MODE:
            stp = f
        else:
            known = False
            for t in _IGNORED:
                if tag == t:
                    known = True
            if not known:
                return
    if cl < 0 or sym < 0 or side < 0 or ord_type < 0 or account < 0 or qty < 0:
        return
    # ClOrdID: 1..64 printable ASCII
    a, b = fields[cl, F_START], fields[cl, F_END]
    if b - a < 1 or b - a > MAX_CL_ORD_ID:
        return
    for k in range(a, b):
        if buf[k] < 0x20 or buf[k] > 0x7E:
            return
    # Symbol: a configured one
    row = -1
    s0, s1 = fields[sym, F_START], fields[sym, F_END]
    for r in range(len(lengths)):
        if _is(buf, s0, s1, symbols[r], lengths[r]):
            row = r
            break
    if row < 0:
        return
    # the choices, one character each
    v_side = _SIDE[buf[fields[side, F_START]]] if fields[side, F_END] - fields[side, F_START] == 1 else -1
    v_type = _ORD_TYPE[buf[fields[ord_type, F_START]]] if fields[ord_type, F_END] - fields[ord_type, F_START] == 1 \
        else -1
    v_tif = _TIF_DEFAULT
    if tif >= 0:
        v_tif = _TIF[buf[fields[tif, F_START]]] if fields[tif, F_END] - fields[tif, F_START] == 1 else -1
    v_stp = _STP_DEFAULT
    if stp >= 0:
        v_stp = _STP[buf[fields[stp, F_START]]] if fields[stp, F_END] - fields[stp, F_START] == 1 else -1
    if v_side < 0 or v_type < 0 or v_tif < 0 or v_stp < 0:
        return
    # Account: digits, at most 10 of them, a uint32, one the session may trade
    a, b = fields[account, F_START], fields[account, F_END]
    if b - a < 1 or b - a > 10:
        return
    acct = 0
    for k in range(a, b):
        if buf[k] < 48 or buf[k] > 57:
            return
        acct = acct * 10 + (buf[k] - 48)
    if acct > UINT32_MAX:
        return
    at = np.searchsorted(accounts, acct)
    if at >= len(accounts) or accounts[at] != acct:
        return
    # quantities and prices, exact, on the lot and the tick
    nums = numbers[row]
    v_qty = _scaled(buf, fields[qty, F_START], fields[qty, F_END], nums[I_QTY_DECIMALS])
    if v_qty <= 0 or v_qty % nums[I_LOT] or v_qty < nums[I_MIN_QTY] or v_qty > nums[I_MAX_QTY]:
        return
    v_price = _price(buf, fields, price, v_type == _LIMIT or v_type == _STOP_LIMIT, nums)
    v_stop = _price(buf, fields, stop, v_type == _STOP or v_type == _STOP_LIMIT, nums)
    if v_price < 0 or v_stop < 0:
        return
    # ExecInst: 6 and E, separated by spaces
    post = reduce = 0
    if inst >= 0:
        a, b = fields[inst, F_START], fields[inst, F_END]
        if (b - a) % 2 == 0:
            return
        for k in range(a, b):  # a character, then a space before each next one
            c = buf[k]
            if (k - a) % 2:
                if c != 32:
                    return
            elif c == 54:  # "6"
                post = 1
            elif c == 69:  # "E"
                reduce = 1
            else:
                return
    v_display = 0
    if floor >= 0:
        v_display = _scaled(buf, fields[floor, F_START], fields[floor, F_END], nums[I_QTY_DECIMALS])
        if v_display <= 0 or v_display % nums[I_LOT] or v_display > v_qty:
            return
    out[O_CL_START] = fields[cl, F_START]
    out[O_CL_END] = fields[cl, F_END]
    out[O_PRICE] = v_price
    out[O_QTY] = v_qty
    out[O_DISPLAY] = v_display
    out[O_STOP] = v_stop
    out[O_ACCOUNT] = acct
    out[O_INSTRUMENT] = row
    out[O_SIDE] = v_side
    out[O_ORD_TYPE] = v_type
    out[O_TIF] = v_tif
    out[O_POST] = post
    out[O_REDUCE] = reduce
    out[O_STP] = v_stp
    out[O_OK] = 1


_D = MSG_TYPES.index(b"D")


@njit(cache=True, nogil=True)
def orders_of(buf: np.ndarray, messages: np.ndarray, count: int, fields: np.ndarray, symbols: np.ndarray,
              lengths: np.ndarray, numbers: np.ndarray, accounts: np.ndarray, out: np.ndarray) -> None:
    """``order_values`` of every valid NewOrderSingle among ``fix_scan``'s first ``count``
    rows, into the same row of ``out`` (``O_OK`` clear for every other message)."""
    for i in range(count):
        row = messages[i]
        out[i, O_OK] = 0
        if row[M_VALID] and row[M_TYPE] == _D:
            first = row[M_FIELD_FROM]
            order_values(buf, fields, first, first + row[M_FIELD_COUNT], symbols, lengths, numbers, accounts,
                         out[i])


def warm_up() -> None:
    """Compile (or load from the cache) before a duty cycle needs it, with the argument
    types the gateway passes (the bytes read as a read-only array: ``fix_scan.warm_up``)."""
    table = instrument_table([])
    none = np.zeros((0, FIELD_WORDS), np.int64)
    orders_of(np.frombuffer(b"", np.uint8), np.zeros((0, MESSAGE_WORDS), np.int64), 0, none, table.symbols,
              table.lengths, table.numbers, account_array([]), np.zeros((0, ORDER_WORDS), np.int64))
