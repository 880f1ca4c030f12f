"""The exchange configuration: typed, checked before anything starts, errors name the key."""

from __future__ import annotations

import ast
import inspect
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ringex.engine.config import EngineConfig
from ringex.tools import config as config_module
from ringex.tools.config import DEFAULT_TOML, ConfigError, load_config, parse_config


def test_embedded_default_is_valid_and_composed_for_two_cores() -> None:
    cfg = load_config()
    assert [p.agents for p in cfg.process] == [["sequencer", "engine"], ["sbe-gateway", "fix-gateway"],
                                               ["md-publisher"]]
    assert all(p.idle == "backoff" for p in cfg.process)
    assert cfg.instrument and cfg.account
    assert parse_config(DEFAULT_TOML).instrument == cfg.instrument


def test_embedded_default_is_a_funded_venue() -> None:
    """``make run`` can trade out of the box: spot markets with base assets, a perpetual with
    margin and funding, every account holding the settlement asset and every base asset, and
    an insurance fund (tests/test_pipeline.py runs it through the engine)."""
    cfg = load_config()
    spots = [i for i in cfg.instrument if i.kind == "spot"]
    perps = [i for i in cfg.instrument if i.kind == "perpetual"]
    assert spots and perps
    bases = {i.base_asset for i in spots}
    assert 0 not in bases and None not in bases
    for p in perps:
        assert p.perpetual is not None and p.perpetual.im_ppm < 1_000_000  # leveraged
        assert p.perpetual.funding_interval_ns > 0 and p.perpetual.index_price is not None
    for acc in cfg.account:
        held = {asset for asset, _ in acc.deposit_list()}
        assert {0} | bases <= held, acc
    assert cfg.insurance_fund.deposit > 0


# the smallest valid instruments, to which a case adds one key
SPOT = "[[instrument]]\nid = 1\nsymbol = 'X'\nreference_price = 100\nbase_asset = 1\n"
PERP = "[[instrument]]\nid = 1\nsymbol = 'P'\nreference_price = 100\nkind = 'perpetual'\n"
PERP_TABLE = PERP + "[instrument.perpetual]\n"
ACCOUNT = "[[account]]\nid = 1\n"
GW = "[[gateway]]\nname = 'g1'\nlisten = '127.0.0.1:9101'\n"
FIXGW = GW + "protocol = 'fix'\nkeepalive_min_ms = 1000\n"


MISSING_FILE = Path("/nonexistent-ringex-config/nope.toml")


def problems_of(text: str | Path) -> list[str]:
    """The problems a ConfigError lists for ``text`` (a path: the file, read) one line each."""
    with pytest.raises(ConfigError) as err:
        load_config(text) if isinstance(text, Path) else parse_config(text)
    lines = str(err.value).splitlines()
    return lines[1:] if lines[0] == "invalid configuration:" else lines


# Every check of tools/config.py (and of EngineConfig, which reads [engine]): a configuration
# with one problem, and the key its message must name. test_every_check_has_a_case makes
# sure no check is left out.
INVALID = [
    # [engine] (EngineConfig's checks)
    ("[engine]\nmax_instruments = 1", "$.engine.max_instruments"),
    ("[engine]\nmax_accounts = 1", "$.engine.max_accounts"),
    ("[engine]\nmax_assets = 0", "$.engine.max_assets"),
    ("[engine]\nmax_orders = 0", "$.engine.max_orders"),
    ("[engine]\nprice_levels = 1", "$.engine.price_levels"),
    ("[engine]\nmax_stops = -1", "$.engine.max_stops"),
    ("[engine]\nmarket_protection_ticks = -1", "$.engine.market_protection_ticks"),
    ("[engine]\nevent_buffer = 15", "$.engine.event_buffer"),
    ("[engine]\nmax_instruments = 65536\nprice_levels = 8192", "$.engine.max_instruments * price_levels"),
    ("[engine]\nunknown_key = 1", "unknown_key"),
    # [exchange]
    ("[exchange]\nshm_prefix = ''", "$.exchange.shm_prefix"),
    ("[exchange]\nshm_prefix = 'a/b'", "$.exchange.shm_prefix"),
    # [journal]
    ("[journal]\ndurability = 'sometimes'", "$.journal.durability"),
    ("[journal]\ninterval_ms = 0", "$.journal.interval_ms"),
    ("[journal]\nsegment_bytes = 4095", "$.journal.segment_bytes"),
    ("[journal]\nsnapshot_every = 0", "$.journal.snapshot_every"),
    ("[journal]\nsnapshots_kept = 0", "$.journal.snapshots_kept"),
    ("[journal]\nsnapshot_writer = 'thread'", "$.journal.snapshot_writer"),
    ("[journal]\narchive_dir = ' '", "$.journal.archive_dir"),
    ("[journal]\narchive_dir = 'var'", "$.journal.archive_dir"),  # the data directory itself
    ("[journal]\narchive_dir = 'var/journal'", "$.journal.archive_dir"),
    ("[journal]\narchive_dir = '/dev/null'", "$.journal.archive_dir"),  # not a directory
    # [rings]
    ("[rings]\nengine_capacity = 1000", "$.rings.engine_capacity"),
    ("[rings]\ninbound_capacity = 1", "$.rings.inbound_capacity"),
    ("[rings]\noutput_capacity = 3", "$.rings.output_capacity"),
    ("[rings]\nbatch_limit = 0", "$.rings.batch_limit"),
    ("[rings]\ngateways = ['a', 'a']", "$.rings.gateways"),
    ("[rings]\ngateways = ['']", "$.rings.gateways"),
    ("[rings]\nsubscribers = ['md', 'md']", "$.rings.subscribers"),
    ("[rings]\nsubscribers = ['m d']", "$.rings.subscribers"),
    ("[rings]\nsubscribers = ['md/1']", "$.rings.subscribers"),
    # [supervisor]
    ("[supervisor]\nheartbeat_timeout_ms = 0", "$.supervisor.heartbeat_timeout_ms"),
    ("[supervisor]\ncheck_interval_ms = 0", "$.supervisor.check_interval_ms"),
    ("[supervisor]\nmax_restarts = -1", "$.supervisor.max_restarts"),
    ("[supervisor]\nrestart_window_ms = 0", "$.supervisor.restart_window_ms"),
    # [[instrument]]
    (SPOT.replace("id = 1", "id = 0"), "$.instrument[0].id"),
    (SPOT.replace("id = 1", "id = 16"), "$.instrument[0].id"),  # max_instruments is 16
    (SPOT + "tick_size = 0", "$.instrument[0].tick_size"),
    (SPOT + "lot_size = 0", "$.instrument[0].lot_size"),
    (SPOT + "min_qty = 0", "$.instrument[0].min_qty"),
    (SPOT + "min_qty = 5\nmax_qty = 4", "$.instrument[0].min_qty"),
    (SPOT + "lot_size = 2\nmax_qty = 10", "$.instrument[0].min_qty"),  # min_qty 1 is not a lot
    (SPOT + "lot_size = 2\nmin_qty = 2\nmax_qty = 11", "$.instrument[0].max_qty"),
    (SPOT.replace("reference_price = 100", "reference_price = 0"), "$.instrument[0].reference_price"),
    (SPOT + "tick_size = 3", "$.instrument[0].reference_price"),
    ("[[instrument]]\nid = 1\nsymbol = 'TOOLONGSYM'\nreference_price = 7\nbase_asset = 1", "$.instrument[0].symbol"),
    (SPOT + SPOT.replace("'X'", "'Y'"), "$.instrument[1].id"),
    (SPOT + "notional_divisor = 0", "$.instrument[0].notional_divisor"),
    (SPOT + "notional_divisor = 3\ntick_size = 10", "$.instrument[0].notional_divisor"),
    (SPOT + "max_order_notional = -1", "$.instrument[0].max_order_notional"),
    (SPOT + "price_band_ppm = -1", "$.instrument[0].price_band_ppm"),
    (SPOT + "cb_move_ppm = 1000001", "$.instrument[0].cb_move_ppm"),
    (SPOT + "cb_window_ns = -5", "$.instrument[0].cb_window_ns"),
    (SPOT + "cb_halt_ns = -5", "$.instrument[0].cb_halt_ns"),
    (SPOT + "max_qty = 4611686018427387904", "$.instrument[0].max_qty"),
    # base asset: required for spot, 1..max_assets-1; a perpetual's is 0
    ("[[instrument]]\nid = 1\nsymbol = 'X'\nreference_price = 100", "$.instrument[0].base_asset"),
    (SPOT.replace("base_asset = 1", "base_asset = 0"), "$.instrument[0].base_asset"),
    (SPOT.replace("base_asset = 1", "base_asset = 8"), "$.instrument[0].base_asset"),
    ("[engine]\nmax_assets = 2\n" + SPOT.replace("base_asset = 1", "base_asset = 2"), "$.instrument[0].base_asset"),
    (SPOT.replace("base_asset = 1", "base_asset = 'BTC'"), "$.instrument[0].base_asset"),
    (PERP + "base_asset = 1", "$.instrument[0].base_asset"),
    # fees: 0 <= taker <= 100%, -taker <= maker <= taker
    (SPOT + "taker_fee_ppm = -1", "$.instrument[0].taker_fee_ppm"),
    (SPOT + "taker_fee_ppm = 1000001\nmaker_fee_ppm = 0", "$.instrument[0].taker_fee_ppm"),
    (SPOT + "taker_fee_ppm = 10\nmaker_fee_ppm = 11", "$.instrument[0].maker_fee_ppm"),
    (SPOT + "taker_fee_ppm = 10\nmaker_fee_ppm = -11", "$.instrument[0].maker_fee_ppm"),
    # the two new limits
    (SPOT + "max_order_qty = -1", "$.instrument[0].max_order_qty"),
    (PERP + "max_position = -1", "$.instrument[0].max_position"),
    (SPOT + "max_position = 10", "$.instrument[0].max_position"),
    # the perpetual table: perpetuals only, each field in its range
    (SPOT + "[instrument.perpetual]\nim_ppm = 100000", "$.instrument[0].perpetual"),
    (PERP_TABLE + "im_ppm = 0", "$.instrument[0].perpetual.im_ppm"),
    (PERP_TABLE + "im_ppm = 1000001", "$.instrument[0].perpetual.im_ppm"),
    (PERP_TABLE + "mm_ppm = 0", "$.instrument[0].perpetual.mm_ppm"),
    (PERP_TABLE + "mm_ppm = 1000001", "$.instrument[0].perpetual.mm_ppm"),
    (PERP_TABLE + "tier_notional = -1", "$.instrument[0].perpetual.tier_notional"),
    (PERP_TABLE + "tier_step_ppm = -1", "$.instrument[0].perpetual.tier_step_ppm"),
    (PERP_TABLE + "tier_step_ppm = 1000001", "$.instrument[0].perpetual.tier_step_ppm"),
    (PERP_TABLE + "funding_interval_ns = -1", "$.instrument[0].perpetual.funding_interval_ns"),
    (PERP_TABLE + "funding_interval_ns = 9223372036854775807\nfunding_cap_ppm = -1",
     "$.instrument[0].perpetual.funding_cap_ppm"),
    (PERP_TABLE + "funding_cap_ppm = 1000001", "$.instrument[0].perpetual.funding_cap_ppm"),
    (PERP_TABLE + "basis_cap_ppm = 1000001", "$.instrument[0].perpetual.basis_cap_ppm"),
    (PERP_TABLE + "basis_ema_ppm = -1", "$.instrument[0].perpetual.basis_ema_ppm"),
    (PERP_TABLE + "liquidation_fee_ppm = 1000001", "$.instrument[0].perpetual.liquidation_fee_ppm"),
    (PERP_TABLE + "interest_ppm = -1000001", "$.instrument[0].perpetual.interest_ppm"),
    (PERP_TABLE + "impact_notional = -1", "$.instrument[0].perpetual.impact_notional"),
    (PERP_TABLE + "index_price = 0", "$.instrument[0].perpetual.index_price"),
    # reference 100 with 65536 levels: the window is 1..65536
    (PERP_TABLE + "index_price = 65537", "$.instrument[0].perpetual.index_price"),
    (PERP_TABLE + "leverage = 10", "leverage"),
    # deposits: keyed by an asset id in range, each 1..2**60
    (ACCOUNT + "deposits = { 8 = 5 }", "$.account[0].deposits.8"),
    (ACCOUNT + "deposits = { usd = 5 }", "$.account[0].deposits.usd"),
    (ACCOUNT + "deposits = { 01 = 5 }", "$.account[0].deposits.01"),
    (ACCOUNT + "deposits = { '-1' = 5 }", "$.account[0].deposits.-1"),
    (ACCOUNT + "deposits = { 0 = 0 }", "$.account[0].deposits.0"),
    (ACCOUNT + "deposits = { 1 = -5 }", "$.account[0].deposits.1"),
    (ACCOUNT + "deposits = { 0 = 1152921504606846977 }", "$.account[0].deposits.0"),
    (ACCOUNT + "deposits = { 0 = '5' }", "$.account[0].deposits"),
    (ACCOUNT + "deposit = 5", "deposit"),  # the old single-asset key is gone
    ("[insurance_fund]\ndeposit = -1", "$.insurance_fund.deposit"),
    ("[insurance_fund]\ndeposit = 1152921504606846977", "$.insurance_fund.deposit"),
    ("[insurance_fund]\ndeposits = { 0 = 5 }", "$.insurance_fund"),
    (ACCOUNT + "max_open_orders = -1", "$.account[0].max_open_orders"),
    ("[[account]]\nid = 0", "$.account[0].id"),
    ("[[account]]\nid = 1\nstp_default = 'sometimes'", "$.account[0].stp_default"),
    ("[[account]]\nid = 1024", "$.account[0].id"),  # max_accounts is 1024
    (ACCOUNT + ACCOUNT, "$.account[1].id"),
    # [[process]]
    ("[[process]]\nname = 'a'\nagents = ['sequencer']", "$.process:"),  # the engine is placed nowhere
    ("[[process]]\nname = 'a'\nagents = ['sequencer', 'engine', 'engine']", "$.process[0].agents"),
    ("[[process]]\nname = 'a'\nagents = ['sequencer', 'engine', 'matcher']", "$.process[0].agents"),
    ("[[process]]\nname = 'a'\nagents = ['sequencer', 'engine', 'm-*']", "$.process[0].agents[2]"),
    # [[gateway]]: names, sessions, limits (gateways/gateway_config.py)
    (GW + "[[gateway.session]]\nid = 1\ncredentials = 'x'\naccounts = [1]\n" + GW.replace("'g1'", "'engine'"),
     "$.gateway[1].name"),
    (GW + GW.replace("'g1'", "'g2'").replace("9101", "9102") + "[[gateway.session]]\nid = 1\ncredentials = 'x'\naccounts = [1]\n"
     + "[[gateway]]\nname = 'g3'\n[[gateway.session]]\nid = 1\ncredentials = 'y'\naccounts = [1]\n",
     "$.gateway[2].session[0].id"),
    (ACCOUNT + GW + "[[gateway.session]]\nid = 1\ncredentials = 'x'\naccounts = [7]\n", "$.gateway[0].session[0].accounts"),
    (GW + "[[gateway.session]]\nid = 1\ncredentials = 'x'\naccounts = [5000]\n", "$.gateway[0].session[0].accounts"),
    (GW + "[[gateway.session]]\nid = 1\ncredentials = 'x'\naccounts = []\n", "$.gateway[0].session[0].accounts"),
    (GW + "[[gateway.session]]\nid = 0\ncredentials = 'x'\naccounts = [1]\n", "$.gateway[0].session[0].id"),
    (GW + "[[gateway.session]]\nid = 1\ncredentials = 'x'\naccounts = [1]\n[[gateway.session]]\nid = 1\n"
     "credentials = 'x'\naccounts = [1]\n", "$.gateway[0].session[1].id"),
    (GW + "[[gateway.session]]\nid = 1\ncredentials = ''\naccounts = [1]\n", "$.gateway[0].session[0].credentials"),
    (GW + "[[gateway.session]]\nid = 1\ncredentials = '" + "x" * 33 + "'\naccounts = [1]\n",
     "$.gateway[0].session[0].credentials"),
    (GW + "[[gateway.session]]\nid = 1\ncredentials = 'x'\naccounts = [1]\nmax_msgs_per_s = -1\n",
     "$.gateway[0].session[0].max_msgs_per_s"),
    (GW + "[[gateway.session]]\nid = 1\ncredentials = 'x'\naccounts = [1]\nburst = -1\n",
     "$.gateway[0].session[0].burst"),
    (GW.replace("127.0.0.1:9101", "nowhere"), "$.gateway[0].listen"),
    (GW.replace("127.0.0.1:9101", "127.0.0.1:70000"), "$.gateway[0].listen"),
    (GW + "keepalive_min_ms = 0\n", "$.gateway[0].keepalive_min_ms"),
    (GW + "keepalive_min_ms = 5000\nkeepalive_max_ms = 100\n", "$.gateway[0].keepalive_min_ms"),
    (GW + "max_backlog_bytes = 100\n", "$.gateway[0].max_backlog_bytes"),
    (GW + "max_retransmit = 0\n", "$.gateway[0].max_retransmit"),
    (GW + "max_connections = 0\n", "$.gateway[0].max_connections"),
    (GW.replace("'g1'", "'g 1'"), "$.gateway[0].name"),
    (GW + "protocol = 'ftp'\n", "$.gateway[0].protocol"),
    (FIXGW + "comp_id = ''\n", "$.gateway[0].comp_id"),
    (GW + "protocol = 'fix'\nkeepalive_min_ms = 500\n", "$.gateway[0].keepalive_min_ms"),
    (FIXGW + "[[gateway.session]]\nid = 1\ncredentials = 'x'\naccounts = [1]\n", "$.gateway[0].session[0].target_comp_id"),
    (FIXGW + "[[gateway.session]]\nid = 1\ncredentials = 'x'\naccounts = [1]\ntarget_comp_id = 'A'\n"
     "[[gateway.session]]\nid = 2\ncredentials = 'x'\naccounts = [1]\ntarget_comp_id = 'A'\n",
     "$.gateway[0].session[1].target_comp_id"),
    (GW + "[[gateway.session]]\nid = 1\ncredentials = 'x'\naccounts = [1]\ntarget_comp_id = 'A'\n",
     "$.gateway[0].session[0].target_comp_id"),
    (SPOT + "price_decimals = 19", "$.instrument[0].price_decimals"),
    (SPOT + "qty_decimals = -1", "$.instrument[0].qty_decimals"),
    ("[rings]\ngateways = ['g1']\n" + GW, "$.gateway[0].name"),
    ("[rings]\nsubscribers = ['g1']\n" + GW, "$.gateway[0].name"),
    ("[[process]]\nname = 'a'\nagents = ['sequencer', 'engine']\n" + GW, "$.process:"),  # g1 placed nowhere
    ("[[process]]\nname = 'a'\nagents = ['sequencer', 'engine']\ncpus = [-1]", "$.process[0].cpus"),
    ("[[process]]\nname = 'a'\nagents = ['sequencer']\n[[process]]\nname = 'a'\nagents = ['engine']",
     "$.process[1].name"),
    ("[[process]]\nname = 'a'\nagents = []\n[[process]]\nname = 'b'\nagents = ['sequencer', 'engine']",
     "$.process[0].agents"),
    (GW + "[[feed]]\nname = 'g1'\n", "$.feed[0].name"),  # a feed's name is unique among agents
    ("[ports]\nfix = 9878", "ports"),  # gone: nothing read it (the binary gateway brings its own table)
    ("x = 1\ny = \nz = 2", "invalid TOML: Invalid value (at line 2"),  # no key yet: the line says where
    (MISSING_FILE, str(MISSING_FILE)),
]


@pytest.mark.parametrize("text, key", INVALID)
def test_invalid_configuration_names_the_key(text: str | Path, key: str) -> None:
    problems = problems_of(text)
    # exactly the one problem the case makes, and it names the key
    assert len(problems) == 1, problems
    assert key in problems[0]


def _check_sites() -> dict[object, set[int]]:
    """Where the checks are: the line of every ``need(...)`` call in ``_check`` (tools/config.py)
    and ``EngineConfig.problems``, and of every ``raise ConfigError`` in tools/config.py."""
    def calls_of(func, name: str) -> set[int]:
        lines, first = inspect.getsourcelines(func)
        tree = ast.parse(textwrap.dedent("".join(lines)))
        return {n.lineno + first - 1 for n in ast.walk(tree)
                if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == name}
    tree = ast.parse(inspect.getsource(config_module))
    raises = {n.lineno for n in ast.walk(tree) if isinstance(n, ast.Raise) and isinstance(n.exc, ast.Call)
              and isinstance(n.exc.func, ast.Name) and n.exc.func.id == "ConfigError"}
    return {config_module._check.__code__: calls_of(config_module._check, "need"),
            EngineConfig.problems.__code__: calls_of(EngineConfig.problems, "need"),
            "raise": raises}


def _sites_hit(text: str | Path) -> set[tuple[object, int]]:
    """The checks that fail for ``text``: (the checking function's code, line of the failing
    ``need`` call), and ("raise", line) for each line of tools/config.py that ran (among them
    the ``raise ConfigError`` that reported the problem)."""
    needs = {c for f in (config_module._check, EngineConfig.problems) for c in f.__code__.co_consts
             if getattr(c, "co_name", None) == "need"}
    module_file = config_module.__file__
    hit: set[tuple[object, int]] = set()

    def in_raiser(frame, event, arg):
        if event == "line":
            hit.add(("raise", frame.f_lineno))
        return in_raiser

    def tracer(frame, event, arg):
        if event != "call":
            return None
        if frame.f_code in needs and not frame.f_locals["ok"]:
            hit.add((frame.f_back.f_code, frame.f_back.f_lineno))
        if frame.f_code.co_filename == module_file:
            return in_raiser
        return None

    previous = sys.gettrace()  # a coverage tool's, say
    sys.settrace(tracer)
    try:
        problems_of(text)
    finally:
        sys.settrace(previous)
    return hit


def test_every_check_has_a_case() -> None:
    """The INVALID table cannot silently miss a check: every ``need(...)`` of the config
    checks fails for some case, and every ``raise ConfigError`` is raised by some case."""
    sites = _check_sites()
    hit: set[tuple[object, int]] = set().union(*(_sites_hit(text) for text, _ in INVALID))
    for code in (config_module._check.__code__, EngineConfig.problems.__code__):
        missing = sorted(sites[code] - {line for c, line in hit if c is code})
        assert not missing, f"{code.co_filename}: no case fails the check at lines {missing}"
    missing = sorted(sites["raise"] - {line for c, line in hit if c == "raise"})
    assert not missing, f"tools/config.py: no case raises ConfigError at lines {missing}"
    assert len(sites[config_module._check.__code__]) > 40  # the walk found the checks


def test_the_insurance_fund_is_not_an_account() -> None:
    (problem,) = problems_of("[[account]]\nid = 0")
    assert "insurance_fund" in problem


@pytest.mark.parametrize("text", [
    SPOT + "taker_fee_ppm = 1000000\nmaker_fee_ppm = -1000000",  # a rebate equal to the taker fee
    SPOT.replace("base_asset = 1", "base_asset = 7"),  # the last asset of the default 8
    PERP + "base_asset = 0\nmax_position = 5",
    PERP_TABLE + "im_ppm = 1000000\nmm_ppm = 1\nfunding_interval_ns = 9223372036854775807\nindex_price = 65536",
    ACCOUNT + "deposits = { 0 = 1152921504606846976, 7 = 1 }",
    "[insurance_fund]\ndeposit = 1152921504606846976",
])
def test_boundary_values_are_accepted(text: str) -> None:
    parse_config(text)


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


def decoded_admin(text: str) -> list:
    from ringex.engine.wire.messages import SCHEMA
    from ringex.tools.launcher import admin_messages

    return [SCHEMA.decode(m) for m in admin_messages(parse_config(text))]


def test_risk_keys_reach_the_admin_messages() -> None:
    decoded = decoded_admin(
        "[[instrument]]\nid = 1\nsymbol = 'X'\nreference_price = 100\nbase_asset = 3\nmax_order_notional = 5000\n"
        "tick_size = 10\nnotional_divisor = 10\nprice_band_ppm = 50000\ncb_move_ppm = 20000\ncb_window_ns = 1000000\n"
        "cb_halt_ns = 5000000\nmax_order_qty = 40\nmaker_fee_ppm = -20\ntaker_fee_ppm = 30\n"
        "[[account]]\nid = 1\nmax_open_orders = 7\n[[account]]\nid = 2\n")
    assert [d.name for d in decoded] == ["InstrumentDefinition", "InstrumentLimits", "CreateAccount", "CreateAccount"]
    ins, lim, acc, acc2 = (d.fields for d in decoded)
    assert "maxOrderNotional" not in ins and lim["instrument"] == 1
    assert (ins["baseAsset"], ins["kind"], ins["makerFeePpm"], ins["takerFeePpm"]) == (3, 1, -20, 30)
    assert (lim["maxOrderQty"], lim["maxPosition"], lim["maxOrderNotional"], lim["notionalDivisor"],
            lim["priceBandPpm"], lim["cbMovePpm"], lim["cbWindowNs"], lim["cbHaltNs"]) == (
        40, 0, 5000, 10, 50000, 20000, 1_000_000, 5_000_000)
    assert acc["maxOpenOrders"] == 7 and acc2["maxOpenOrders"] == 0
    # limits at their defaults: the definition alone (a new instrument's limits are off); each
    # of the two new limits on its own is enough to send an InstrumentLimits
    decoded = decoded_admin(SPOT + SPOT.replace("id = 1", "id = 2").replace("'X'", "'Y'") + "price_band_ppm = 1000\n"
                            + SPOT.replace("id = 1", "id = 3").replace("'X'", "'Z'") + "max_order_qty = 9\n"
                            + PERP.replace("id = 1", "id = 4") + "max_position = 8\n")
    assert [(d.name, d.fields["instrument"]) for d in decoded] == [
        ("InstrumentDefinition", 1), ("InstrumentDefinition", 2), ("InstrumentLimits", 2),
        ("InstrumentDefinition", 3), ("InstrumentLimits", 3),
        ("InstrumentDefinition", 4), ("InstrumentLimits", 4), ("PerpetualParams", 4)]
    lims = [d.fields for d in decoded if d.name == "InstrumentLimits"]
    assert [(f["maxOrderQty"], f["maxPosition"], f["maxOrderNotional"], f["notionalDivisor"], f["priceBandPpm"],
             f["cbMovePpm"], f["cbWindowNs"], f["cbHaltNs"]) for f in lims] == [
        (0, 0, 0, 1, 1000, 0, 0, 0), (9, 0, 0, 1, 0, 0, 0, 0), (0, 8, 0, 1, 0, 0, 0, 0)]


def test_perpetual_deposits_and_index_reach_the_admin_messages_in_order() -> None:
    decoded = decoded_admin(
        "[[instrument]]\nid = 2\nsymbol = 'PERP'\nkind = 'perpetual'\nreference_price = 1000\n"
        "taker_fee_ppm = 500\nmaker_fee_ppm = -100\nmax_position = 50\n"
        "[instrument.perpetual]\nim_ppm = 100000\nmm_ppm = 600000\ntier_notional = 1000000\n"
        "tier_step_ppm = 20000\nfunding_interval_ns = 3600000000000\nfunding_cap_ppm = 750\n"
        "basis_cap_ppm = 5000\nbasis_ema_ppm = 200000\nliquidation_fee_ppm = 2500\ninterest_ppm = -30\n"
        "impact_notional = 7000\n"
        "index_price = 1010\n"
        "[[instrument]]\nid = 1\nsymbol = 'SPOT'\nreference_price = 1000\nbase_asset = 2\n"
        "[[instrument]]\nid = 3\nsymbol = 'BARE'\nkind = 'perpetual'\nreference_price = 7\n"
        "[[account]]\nid = 5\ndeposits = { 2 = 30, 0 = 1_000_000 }\n"
        "[[account]]\nid = 4\n"
        "[[account]]\nid = 6\ndeposits = { 1 = 1 }\n"
        "[insurance_fund]\ndeposit = 250_000\n")
    fields = [(d.name, d.fields) for d in decoded]
    assert [(n, f.get("instrument", f.get("account"))) for n, f in fields] == [
        ("InstrumentDefinition", 2), ("InstrumentLimits", 2), ("PerpetualParams", 2),
        ("InstrumentDefinition", 1),
        ("InstrumentDefinition", 3), ("PerpetualParams", 3),
        ("CreateAccount", 5), ("CreateAccount", 4), ("CreateAccount", 6),
        ("Funds", 5), ("Funds", 5), ("Funds", 6), ("Funds", 0),
        ("IndexPrice", 2)]
    perp_def, spot_def = fields[0][1], fields[3][1]
    assert (perp_def["kind"], perp_def["baseAsset"], perp_def["makerFeePpm"], perp_def["takerFeePpm"]) == (
        2, 0, -100, 500)
    assert (spot_def["kind"], spot_def["baseAsset"]) == (1, 2)
    assert fields[1][1]["maxPosition"] == 50
    pp = fields[2][1]
    assert (pp["imPpm"], pp["mmPpm"], pp["tierNotional"], pp["tierStepPpm"], pp["fundingIntervalNs"],
            pp["fundingCapPpm"], pp["basisCapPpm"], pp["basisEmaPpm"], pp["liquidationFeePpm"], pp["interestPpm"],
            pp["impactNotional"]) == (100000, 600000, 1_000_000, 20000, 3_600_000_000_000, 750, 5000, 200000, 2500,
                                      -30, 7000)
    # a perpetual without a table gets the engine's defaults (docs/risk.md), stated explicitly
    bare = fields[5][1]
    assert (bare["imPpm"], bare["mmPpm"], bare["tierNotional"], bare["tierStepPpm"], bare["fundingIntervalNs"],
            bare["fundingCapPpm"], bare["basisCapPpm"], bare["basisEmaPpm"], bare["liquidationFeePpm"],
            bare["interestPpm"]) == (1_000_000, 500_000, 0, 0, 0, 0, 0, 0, 0, 0)
    funds = [f for n, f in fields if n == "Funds"]
    assert [(f["account"], f["asset"], f["amount"], f["action"]) for f in funds] == [
        (5, 0, 1_000_000, 1), (5, 2, 30, 1), (6, 1, 1, 1), (0, 0, 250_000, 1)]
    assert (fields[-1][1]["instrument"], fields[-1][1]["price"]) == (2, 1010)


def test_nothing_to_fund_sends_no_funds() -> None:
    decoded = decoded_admin(SPOT + ACCOUNT + "[insurance_fund]\ndeposit = 0\n")
    assert [d.name for d in decoded] == ["InstrumentDefinition", "CreateAccount"]


def test_the_readme_example_is_a_valid_configuration() -> None:
    """The README documents the risk keys with a TOML example; it must stay loadable."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    blocks = readme.split("```toml\n")[1:]
    assert blocks, "README.md has no toml example"
    cfg = parse_config(blocks[0].split("```")[0])
    assert [i.kind for i in cfg.instrument] == ["spot", "perpetual"]
    assert cfg.instrument[1].perpetual is not None and cfg.insurance_fund.deposit > 0
