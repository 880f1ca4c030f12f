"""The exchange configuration: typed, checked before anything starts, errors name the key."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ringex.tools.config import DEFAULT_TOML, ConfigError, load_config, parse_config


def test_embedded_default_is_valid_and_composed_for_two_cores() -> None:
    cfg = load_config()
    assert [p.agents for p in cfg.process] == [["sequencer", "engine"]]
    assert all(p.idle == "backoff" for p in cfg.process)
    assert cfg.instrument and cfg.account
    assert parse_config(DEFAULT_TOML).instrument == cfg.instrument


@pytest.mark.parametrize("text, key", [
    ("[engine]\nmax_orders = 0", "max_orders"),
    ("[engine]\nunknown_key = 1", "unknown_key"),
    ("[journal]\ndurability = 'sometimes'", "$.journal.durability"),
    ("[rings]\nengine_capacity = 1000", "$.rings.engine_capacity"),
    ("[rings]\ngateways = ['a', 'a']", "$.rings.gateways"),
    ("[ports]\nfix = 70000", "$.ports.fix"),
    ("[[instrument]]\nid = 1\nsymbol = 'X'\nreference_price = 7\ntick_size = 2", "$.instrument[0].reference_price"),
    ("[[instrument]]\nid = 1\nsymbol = 'TOOLONGSYM'\nreference_price = 7", "$.instrument[0].symbol"),
    ("[[instrument]]\nid = 1\nsymbol = 'A'\nreference_price = 7\n[[instrument]]\nid = 1\nsymbol = 'B'\nreference_price = 7",
     "$.instrument[1].id"),
    ("[[instrument]]\nid = 1\nsymbol = 'X'\nreference_price = 7\nnotional_divisor = 0", "$.instrument[0].notional_divisor"),
    ("[[instrument]]\nid = 1\nsymbol = 'X'\nreference_price = 7\nmax_order_notional = -1",
     "$.instrument[0].max_order_notional"),
    ("[[instrument]]\nid = 1\nsymbol = 'X'\nreference_price = 7\nprice_band_ppm = -1", "$.instrument[0].price_band_ppm"),
    ("[[instrument]]\nid = 1\nsymbol = 'X'\nreference_price = 7\ncb_move_ppm = 1000001", "$.instrument[0].cb_move_ppm"),
    ("[[instrument]]\nid = 1\nsymbol = 'X'\nreference_price = 7\ncb_window_ns = -5", "$.instrument[0].cb_window_ns"),
    ("[[instrument]]\nid = 1\nsymbol = 'X'\nreference_price = 7\ncb_halt_ns = -5", "$.instrument[0].cb_halt_ns"),
    ("[[instrument]]\nid = 1\nsymbol = 'X'\nreference_price = 7\nmax_qty = 4611686018427387904", "$.instrument[0].max_qty"),
    ("[[account]]\nid = 1\nmax_open_orders = -1", "$.account[0].max_open_orders"),
    ("[[account]]\nid = 0", "$.account[0].id"),
    ("[[account]]\nid = 1\nstp_default = 'sometimes'", "$.account[0].stp_default"),
    ("[[process]]\nname = 'a'\nagents = ['sequencer']", "not placed"),
    ("[[process]]\nname = 'a'\nagents = ['sequencer', 'engine', 'engine']", "already placed"),
    ("[[process]]\nname = 'a'\nagents = ['matcher']", "$.process[0].agents"),
    ("x = ", "invalid TOML"),
])
def test_invalid_configuration_names_the_key(text: str, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(text)
    assert key in str(err.value)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read configuration"):
        load_config(tmp_path / "nope.toml")


def test_relative_data_dir_resolves_beside_the_file(tmp_path: Path) -> None:
    conf = tmp_path / "x.toml"
    conf.write_text("[exchange]\ndata_dir = 'here'\n")
    assert load_config(conf).data_path() == tmp_path / "here"


def test_tune_check_reads_the_exchange_topology(tmp_path: Path) -> None:
    conf = tmp_path / "x.toml"
    conf.write_text(
        "[[process]]\nname = 'a'\nagents = ['sequencer']\ncpus = [0]\nidle = 'busy-spin'\n"
        "[[process]]\nname = 'b'\nagents = ['engine']\ncpus = [0]\nidle = 'busy-spin'\n"
    )
    r = subprocess.run([sys.executable, "-m", "ringex.tools.cli", "tune", "check", "--config", str(conf), "--json"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1, r.stderr
    doc = json.loads(r.stdout)
    assert any(f["severity"] == "error" and f["topic"] == "topology" for f in doc["findings"])


def test_risk_keys_reach_the_admin_messages() -> None:
    from ringex.engine.messages import SCHEMA
    from ringex.tools.launcher import admin_messages

    cfg = parse_config("[[instrument]]\nid = 1\nsymbol = 'X'\nreference_price = 100\nmax_order_notional = 5000\n"
                       "notional_divisor = 10\nprice_band_ppm = 50000\ncb_move_ppm = 20000\ncb_window_ns = 1000000\n"
                       "cb_halt_ns = 5000000\n[[account]]\nid = 1\nmax_open_orders = 7\n[[account]]\nid = 2\n")
    decoded = [SCHEMA.decode(m) for m in admin_messages(cfg)]
    assert [d.name for d in decoded] == ["InstrumentDefinition", "InstrumentLimits", "CreateAccount", "CreateAccount"]
    ins, lim, acc, acc2 = (d.fields for d in decoded)
    assert "maxOrderNotional" not in ins and lim["instrument"] == 1
    assert (lim["maxOrderNotional"], lim["notionalDivisor"], lim["priceBandPpm"], lim["cbMovePpm"],
            lim["cbWindowNs"], lim["cbHaltNs"]) == (5000, 10, 50000, 20000, 1_000_000, 5_000_000)
    assert acc["maxOpenOrders"] == 7 and acc2["maxOpenOrders"] == 0
    # limits at their defaults: the definition alone (a new instrument's limits are off)
    default = parse_config("[[instrument]]\nid = 1\nsymbol = 'X'\nreference_price = 100\n"
                           "[[instrument]]\nid = 2\nsymbol = 'Y'\nreference_price = 100\nprice_band_ppm = 1000\n")
    decoded = [SCHEMA.decode(m) for m in admin_messages(default)]
    assert [(d.name, d.fields["instrument"]) for d in decoded] == [
        ("InstrumentDefinition", 1), ("InstrumentDefinition", 2), ("InstrumentLimits", 2)]
    lim = decoded[2].fields
    assert (lim["maxOrderNotional"], lim["notionalDivisor"], lim["priceBandPpm"], lim["cbMovePpm"],
            lim["cbWindowNs"], lim["cbHaltNs"]) == (0, 1, 1000, 0, 0, 0)
