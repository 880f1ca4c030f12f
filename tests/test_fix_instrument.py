"""Exact FIX decimal conversion and the refusal type (gateways/fix_instrument.py)."""

from __future__ import annotations

import pytest

from ringex.engine.wire import messages as m
from ringex.gateways import fix_instrument as fi
from ringex.gateways.fix_instrument import FixInstrument
from ringex.tools.config import InstrumentConfig

from fix_kit import BTC, ETH, refusal


def test_from_config() -> None:
    cfg = InstrumentConfig(id=3, symbol="SOL-USD", reference_price=100, base_asset=1, tick_size=5, lot_size=2,
                           min_qty=2, max_qty=1000)
    inst = FixInstrument.from_config(cfg, price_decimals=2, qty_decimals=1)
    assert inst == FixInstrument(3, b"SOL-USD", 2, 1, 5, 2, 2, 1000)


@pytest.mark.parametrize("text, value", [
    (b"50000.5", 5_000_050), (b"50000.50", 5_000_050), (b"50000.500000", 5_000_050), (b"50000", 5_000_000),
    (b"0.5", 50), (b".5", 50), (b"7.", 700), (b"000123.00", 12_300),
])
def test_engine_price_exact(text: bytes, value: int) -> None:
    assert BTC.engine_price(text) == value


@pytest.mark.parametrize("text, reason", [
    (b"50000.505", "more than 2 decimals"), (b"50000.01", "BadTick"), (b"0", "PriceOutOfRange"),
    (b"-5", "PriceOutOfRange"), (b"abc", "not a number"), (b"1e5", "not a number"), (b"", "not a number"),
    (b".", "not a number"), (b"1.2.3", "not a number"), (b"+5", "not a number"), (b" 5", "not a number"),
    (b"\xd9\xa3", "not a number"), (b"92233720368547758.08", "int64"), (b"9" * 41, "not a number"),
])
def test_engine_price_refused(text: bytes, reason: str) -> None:
    e = refusal(BTC.engine_price, text)
    assert e.kind == "reject" and e.tag == 44 and reason in e.text


def test_stop_price_reason() -> None:
    e = refusal(BTC.engine_price, b"1.01", 99)
    assert e.tag == 99 and "InvalidStopPrice" in e.text and e.ord_rej_reason == 11


def test_engine_price_int64_edge() -> None:
    inst = FixInstrument(9, b"X", 0, 0, 1, 1, 1, 1)
    assert inst.engine_price(b"9223372036854775807") == (1 << 63) - 1
    assert "int64" in refusal(inst.engine_price, b"9223372036854775808").text


@pytest.mark.parametrize("text, value", [(b"1.5", 1500), (b"0.01", 10), (b"1.50000", 1500), (b"100000", 100_000_000)])
def test_engine_qty_exact(text: bytes, value: int) -> None:
    assert BTC.engine_qty(text) == value


@pytest.mark.parametrize("text, reason, code", [
    (b"0.0015", "more than 3 decimals", 13), (b"0.015", "BadLot", 13), (b"0", "QtyOutOfRange", 13),
    (b"-1", "QtyOutOfRange", 13), (b"0.000", "QtyOutOfRange", 13), (b"x1", "not a number", 13),
    (b"100000.01", "QtyOutOfRange", 13), (b"99999999999999999", "int64", 13),
])
def test_engine_qty_refused(text: bytes, reason: str, code: int) -> None:
    e = refusal(BTC.engine_qty, text)
    assert e.tag == 38 and reason in e.text and e.ord_rej_reason == code


def test_min_qty() -> None:
    inst = FixInstrument(9, b"X", 0, 0, 1, 5, 10, 100)
    assert "QtyOutOfRange" in refusal(inst.engine_qty, b"5").text
    assert inst.engine_qty(b"5", 111) == 5  # MaxFloor: the lot, not the bounds


@pytest.mark.parametrize("value, text", [(5_000_050, b"50000.5"), (5_000_000, b"50000"), (50, b"0.5"), (5, b"0.05"),
                                         (-5, b"-0.05"), (0, b"0")])
def test_render_price(value: int, text: bytes) -> None:
    assert BTC.fix_price(value) == text
    if value > 0 and value % BTC.tick_size == 0:
        assert BTC.engine_price(text) == value


def test_render_qty() -> None:
    assert BTC.fix_qty(1500) == b"1.5" and BTC.fix_qty(10) == b"0.01" and BTC.fix_qty(2000) == b"2"
    assert ETH.fix_qty(7) == b"7" and ETH.fix_price(123) == b"123"


def test_avg_px_rendering() -> None:
    assert fi._avg_px(0, 0, 2) == b"0"
    assert fi._avg_px(3 * 5_000_050, 3, 2) == b"50000.5"
    assert fi._avg_px(100 + 200, 2, 2) == b"1.5"  # (1.00 + 2.00) / 2
    assert fi._avg_px(1 + 1 + 2, 3, 0) == b"1.33333333"  # 4/3: price_decimals + 8 digits, half-even
    assert fi._avg_px(2, 3, 0) == b"0.66666667"
    assert fi._avg_px(1, 2 * 10**8 * 2, 0) == b"0"  # 2.5e-9 rounds down to 0 (even)


def test_ord_rej_reason_table() -> None:
    assert fi.ORD_REJ_REASON[m.RejectReason.UnknownInstrument] == 1
    assert fi.ORD_REJ_REASON[m.RejectReason.BadLot] == 13
    assert fi.ORD_REJ_REASON[m.RejectReason.UnknownAccount] == 15
    assert fi.ORD_REJ_REASON.get(m.RejectReason.InsufficientFunds, 99) == 99


def test_whole_numbers_scale_as_decimals_do() -> None:
    """A whole number takes a short way through the scaling: the same value as the general
    path, for every count of decimals, leading zeros and the int64 edge included."""
    from ringex.gateways.fix_instrument import _scaled

    for text in (b"0", b"7", b"007", b"50000", b"999999999999999999", b"9223372036854775807", b"1" * 19):
        for decimals in (0, 1, 2, 8):
            general = _scaled(text + b".0", decimals, 44, "price", m.RejectReason.PriceOutOfRange)
            assert _scaled(text, decimals, 44, "price", m.RejectReason.PriceOutOfRange) == general == \
                int(text) * 10**decimals
