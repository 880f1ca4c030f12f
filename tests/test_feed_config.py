"""A feed's configuration: ``[[feed]]`` checked, and every instrument checked to fit ITCH's
32-bit fields at start (never truncated at run time), each problem naming its key."""

from __future__ import annotations

import pytest

from ringex.feeds.itch_instrument import itch_instruments
from ringex.tools.config import DEFAULT_TOML, ConfigError, parse_config

BASE = """
[engine]
price_levels = 1024
[[instrument]]
id = 1
symbol = "BTC-USD"
base_asset = 1
reference_price = {ref}
tick_size = {tick}
price_decimals = {decimals}
max_qty = {max_qty}
{extra}
[[feed]]
name = "md"
{feed}
"""


def config(ref: int = 50_000, tick: int = 1, decimals: int = 0, max_qty: int = 1000, extra: str = "",
           feed: str = "") -> str:
    return BASE.format(ref=ref, tick=tick, decimals=decimals, max_qty=max_qty, extra=extra, feed=feed)


def problems(text: str) -> str:
    with pytest.raises(ConfigError) as e:
        parse_config(text)
    return str(e.value)


def test_the_embedded_default_publishes_a_feed() -> None:
    cfg = parse_config(DEFAULT_TOML)
    assert cfg.feed_names() == ["md-publisher"]
    assert cfg.subscriber_names()[-1] == "md-publisher"  # after the gateways: their indexes unchanged
    assert any(p.agents == ["md-publisher"] for p in cfg.process)


def test_prices_map_to_price4_exactly() -> None:
    whole = itch_instruments(parse_config(config()).instrument)[1]
    assert whole.itch_price(50_000) == 500_000_000  # $50,000.0000
    cents = itch_instruments(parse_config(config(ref=5_000_000, decimals=2)).instrument)[1]
    assert cents.itch_price(5_000_001) == 500_000_100  # $50,000.01
    fine = itch_instruments(parse_config(config(ref=500_000_000, tick=100, decimals=6)).instrument)[1]
    assert fine.itch_price(500_000_100) == 5_000_001
    scaled = itch_instruments(parse_config(config(ref=500_000_000, tick=1000, extra="itch_price_scale = 1000")).instrument)[1]
    assert scaled.itch_price(500_001_000) == 500_001


def test_a_price_over_32_bits_is_refused_at_start() -> None:
    text = problems(config(ref=500_000))  # top of the window ~500,511 -> 5,005,110,000 > 2**32
    assert "$.instrument[0].itch_price_scale" in text and "over its 32 bits" in text


def test_a_tick_finer_than_price4_is_refused() -> None:
    text = problems(config(ref=5_000_000, tick=1, decimals=6))  # 0.000001 is not a multiple of 0.0001
    assert "$.instrument[0].itch_price_scale" in text and "not a whole number" in text


def test_quantities_and_symbols_must_fit_itch() -> None:
    assert "$.instrument[0].max_qty" in problems(config(max_qty=2**32))
    assert "$.instrument[0].symbol" in problems(config().replace('"BTC-USD"', '"BTC USD"'))


def test_an_instrument_that_does_not_fit_is_fine_without_a_feed() -> None:
    parse_config(config(ref=500_000).split("[[feed]]")[0])


@pytest.mark.parametrize("key, value, fragment", [
    ("session", '"TOOLONG"', "$.feed[0].session"),
    ("max_payload", "50", "$.feed[0].max_payload"),
    ("username", '"sevenchr"', "$.feed[0].username"),
    ("password", '"has space"', "$.feed[0].password"),
    ("destination", '"nowhere"', "$.feed[0].destination"),
    ("retain_messages", "10", "$.feed[0].retain_messages"),
])
def test_feed_keys_are_checked(key: str, value: str, fragment: str) -> None:
    assert fragment in problems(config(feed=f"{key} = {value}"))


def test_a_feed_name_is_unique_among_agents() -> None:
    text = problems(config(feed="") + '[[feed]]\nname = "md"\n')
    assert "$.feed[1].name" in text
    assert "$.feed[0].name" in problems(config().replace('name = "md"', 'name = "engine"'))
