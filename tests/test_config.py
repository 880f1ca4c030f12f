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
