"""The exchange's configuration: TOML read into typed msgspec structures.

Everything is checked before anything starts; an error names the key and the problem
(``$.instrument[1].tick_size: must be > 0``). ``DEFAULT_TOML`` is the embedded default
that ``make run`` starts: a small 2-core-friendly topology with a small funded venue (two spot
instruments, one perpetual, three accounts, an insurance fund).

Risk keys (docs/risk.md): ``[engine] max_assets``; per ``[[instrument]]`` ``base_asset``
(spot), fees, pre-trade limits and breaker, and for a perpetual an
``[instrument.perpetual]`` table (margin, mark, funding, first ``index_price``); per
``[[account]]`` ``deposits = { 0 = 1_000_000, 1 = 50 }`` keyed by asset id; and
``[insurance_fund] deposit`` (asset 0 of the engine's account 0). ``tools/launcher.py``
turns them into admin messages.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Literal

import msgspec

from ringex.engine.config import EngineConfig
from ringex.engine.kernel.fixed import book_base
from ringex.engine.storage import defaults
from ringex.engine.storage.data_dir import journal_dir, snapshot_dir
from ringex.feeds.feed_config import FeedConfig, check_feed
from ringex.feeds.itch_instrument import check_instrument
from ringex.gateways.gateway_config import GatewayConfig, check_gateway
from ringex.ringbuffer.process_spec import AGENT_NAMES, ProcessSpec, composed

Durability = Literal["none", "batch", "interval"]
Kind = Literal["spot", "perpetual"]
Stp = Literal["off", "cancel-resting", "cancel-aggressor", "cancel-both", "decrement-both"]


class ConfigError(ValueError):
    """The configuration is invalid; the message names the key and the problem."""


class Strict(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class ExchangeSection(Strict):
    name: str = "ringex"
    data_dir: str = "var"  # journal and snapshots; relative paths are relative to the config file
    shm_prefix: str = "ringex"  # prefix of every shared-memory object this exchange creates


class JournalSection(Strict):
    durability: Durability = defaults.DURABILITY
    interval_ms: int = defaults.INTERVAL_MS
    segment_bytes: int = defaults.SEGMENT_BYTES
    snapshot_every: int = defaults.SNAPSHOT_EVERY  # messages between periodic snapshots
    snapshots_kept: int = defaults.SNAPSHOTS_KEPT
    snapshot_writer: str = defaults.SNAPSHOT_WRITER  # "shadow", "fork" or "inline" (defaults.SNAPSHOT_WRITERS)
    # Where journal segments older than the oldest kept snapshot go, gzip-compressed (relative
    # paths are relative to the config file); unset, they are deleted.
    archive_dir: str | None = None


class RingsSection(Strict):
    inbound_capacity: int = 16384  # each gateway's and the admin ring
    engine_capacity: int = 65536  # sequencer -> engine
    output_capacity: int = 65536  # engine -> gateways and market data
    batch_limit: int = 1024  # most messages one duty cycle takes from a ring
    # One inbound ring per order-entry producer (a gateway, a load generator): <prefix>-in-<name>.
    gateways: list[str] = msgspec.field(default_factory=lambda: ["gw0"])
    # Consumers of the engine's output (and the sequencer's rejections) besides the launcher.
    subscribers: list[str] = msgspec.field(default_factory=list)


class PerpetualConfig(Strict):
    """A perpetual's margin, mark price and funding parameters (``[instrument.perpetual]``),
    sent as a ``PerpetualParams`` after its definition. The defaults are the engine's for a
    perpetual defined without one (docs/risk.md): fully collateralized, no funding."""

    im_ppm: int = 1_000_000  # initial margin rate of the first tier
    mm_ppm: int = 500_000  # maintenance margin as a fraction of initial margin
    tier_notional: int = 0  # the rate rises by tier_step_ppm per this much notional; 0 = one tier
    tier_step_ppm: int = 0
    funding_interval_ns: int = 0  # funding at every multiple of this in sequencer time; 0 = none
    funding_cap_ppm: int = 0  # funding rate clamp per interval
    basis_cap_ppm: int = 0  # |mark - index| at most index * basis_cap_ppm; 0 = mark is the index
    basis_ema_ppm: int = 0  # weight of a new basis sample in its moving average
    liquidation_fee_ppm: int = 0  # of a liquidated position's notional, to the insurance fund
    interest_ppm: int = 0  # funding's interest component per interval (the rate stays within 0.05% of it)
    impact_notional: int = 0  # the mark samples the average fill of this much notional a side; 0 = mid
    # The first index price, sent as an IndexPrice once every account is funded (an index
    # moves the mark, and a mark move runs the liquidation check). None: the mark stays the
    # reference price until an operator or feed sends one.
    index_price: int | None = None


class InstrumentConfig(Strict):
    id: int
    symbol: str
    reference_price: int
    kind: Kind = "spot"
    # spot: the asset bought and sold (1..max_assets-1, required); perpetual: 0 (settles in
    # asset 0, the quote of every instrument)
    base_asset: int | None = None
    tick_size: int = 1
    lot_size: int = 1
    # How a FIX gateway writes this instrument's prices and quantities: engine units = the
    # FIX decimal x 10**decimals, exactly (gateways/fix_instrument.py)
    price_decimals: int = 0
    qty_decimals: int = 0
    # How a market-data feed writes this instrument's prices (docs/market-data.md): engine
    # price units per 1/10000 of the ITCH price; left out, the feed writes the FIX decimal
    # price (price_decimals), i.e. ITCH Price(4) = engine price x 10**(4 - price_decimals)
    itch_price_scale: int | None = None
    min_qty: int = 1
    max_qty: int = 1_000_000
    maker_fee_ppm: int = 0  # negative: a rebate, at most the taker fee
    taker_fee_ppm: int = 0
    halt_policy: Literal["reject", "queue"] = "reject"
    # pre-trade limits and circuit breaker (docs/risk.md); the defaults disable them. They are
    # sent as an InstrumentLimits after the instrument's definition (tools/launcher.py)
    max_order_qty: int = 0  # 0 = no limit
    max_position: int = 0  # perpetual only: |position| with every open order filled; 0 = no limit
    max_order_notional: int = 0  # 0 = no limit
    notional_divisor: int = 1  # notional(price, qty) = price * qty / notional_divisor; divides tick * lot
    price_band_ppm: int = 0
    cb_move_ppm: int = 0
    cb_window_ns: int = 0
    cb_halt_ns: int = 0
    perpetual: PerpetualConfig | None = None  # perpetual only; None = the engine's defaults

    def base(self) -> int:
        """The baseAsset the definition carries (a perpetual's is 0)."""
        return self.base_asset if self.base_asset is not None else 0

    def perpetual_params(self) -> PerpetualConfig:
        """A perpetual's parameters, its table or the defaults."""
        return self.perpetual if self.perpetual is not None else PerpetualConfig()


class AccountConfig(Strict):
    id: int
    stp_default: Stp = "cancel-resting"
    max_open_orders: int = 0  # 0 = no limit
    # Initial deposits by asset id: ``deposits = { 0 = 1_000_000, 1 = 50 }`` (TOML keys are
    # strings, so the ids are checked here rather than by msgspec); each one a Funds message.
    deposits: dict[str, int] = msgspec.field(default_factory=dict)

    def deposit_list(self) -> list[tuple[int, int]]:
        """(asset, amount) in ascending asset id, as the launcher sends them."""
        return sorted((int(a), v) for a, v in self.deposits.items())


class InsuranceFundSection(Strict):
    """Account 0 in the engine: it takes over what liquidations leave and covers deficits."""

    deposit: int = 0  # initial deposit of the settlement asset (asset 0); 0 = none


class SupervisorSection(Strict):
    """How ``ringex run`` watches its processes (tools/launcher.py)."""

    # a ring consumer whose heartbeat is older than this is dead: acceptance is withdrawn
    heartbeat_timeout_ms: int = 2000
    check_interval_ms: int = 100  # how often the supervisor looks at processes and rings
    # A process that dies is restarted, at most max_restarts times within any restart_window_ms
    # (a rate, so that transient crashes spread over weeks never add up); one more death within
    # the window and the process is given up: the exchange stays up but refuses every order
    # until the operator restarts it. 0 = never restart (the first death gives up).
    max_restarts: int = 5
    restart_window_ms: int = 600_000


class ExchangeConfig(Strict):
    exchange: ExchangeSection = msgspec.field(default_factory=ExchangeSection)
    engine: EngineConfig = msgspec.field(default_factory=EngineConfig)
    journal: JournalSection = msgspec.field(default_factory=JournalSection)
    rings: RingsSection = msgspec.field(default_factory=RingsSection)
    supervisor: SupervisorSection = msgspec.field(default_factory=SupervisorSection)
    instrument: list[InstrumentConfig] = msgspec.field(default_factory=list)
    account: list[AccountConfig] = msgspec.field(default_factory=list)
    insurance_fund: InsuranceFundSection = msgspec.field(default_factory=InsuranceFundSection)
    process: list[ProcessSpec] = msgspec.field(default_factory=list)
    gateway: list[GatewayConfig] = msgspec.field(default_factory=list)
    feed: list[FeedConfig] = msgspec.field(default_factory=list)
    base_dir: str = "."  # where relative paths resolve; set by the loader, not by the file

    def data_path(self) -> Path:
        p = Path(self.exchange.data_dir)
        return p if p.is_absolute() else Path(self.base_dir) / p

    def gateway_names(self) -> list[str]:
        return [g.name for g in self.gateway]

    def inbound_names(self) -> list[str]:
        """Every order-entry ring's name: ``[rings] gateways`` (rings some other program
        writes) and every configured gateway's."""
        return [*self.rings.gateways, *self.gateway_names()]

    def feed_names(self) -> list[str]:
        return [f.name for f in self.feed]

    def edge_names(self) -> list[str]:
        """Every agent the configuration defines besides the pipeline's: gateways, then feeds."""
        return [*self.gateway_names(), *self.feed_names()]

    def subscriber_names(self) -> list[str]:
        """Every subscriber of the output and reject rings besides the launcher, in consumer
        index order: ``[rings] subscribers``, then every configured gateway, then every feed
        (a feed reads only the output ring; its reject-ring index stays unused)."""
        return [*self.rings.subscribers, *self.edge_names()]

    def feed_dir(self, name: str) -> Path:
        """Where feed ``name`` keeps its message store."""
        return self.data_path() / "feeds" / name

    def gateway_dir(self, name: str) -> Path:
        """Where gateway ``name`` keeps its sessions' flows and state."""
        return self.data_path() / "gateways" / name

    def archive_path(self) -> Path | None:
        """The journal archive directory, ``None`` when retired segments are deleted."""
        if self.journal.archive_dir is None:
            return None
        p = Path(self.journal.archive_dir)
        return p if p.is_absolute() else Path(self.base_dir) / p


DEFAULT_TOML = """\
# ringex embedded default: one process for the whole pipeline, backoff idle, fit for 2 cores.
# A small venue: asset 0 = USD (the settlement asset: every quote, all perpetual collateral),
# asset 1 = BTC, asset 2 = ETH. Prices are whole USD per unit, quantities whole units.
[exchange]
name = "ringex-demo"
data_dir = "var"
shm_prefix = "ringex"

[engine]
max_assets = 8

[journal]
durability = "batch"
archive_dir = "var/archive"    # retired segments kept compressed: the whole day stays replayable

[supervisor]
heartbeat_timeout_ms = 2000    # a process that stops heartbeating this long: orders refused
check_interval_ms = 100
max_restarts = 5               # a dead process is restarted at most 5 times in any 10 minutes;
restart_window_ms = 600000     #   one more death there gives it up: up, but refusing orders

[[process]]
name = "core"
agents = ["sequencer", "engine"]
idle = "backoff"

[[process]]
name = "edge"
agents = ["sbe-gateway", "fix-gateway"]
idle = "backoff"

[[process]]
name = "market-data"
agents = ["md-publisher"]
idle = "backoff"

# Market data (docs/market-data.md): ITCH 5.0 in MoldUDP64 packets to 127.0.0.1:9200 (UDP),
# retransmission requests on 9201 (UDP), snapshots over SoupBinTCP on 9202 (login demo/demo);
# `ringex feed` shows the book live.
[[feed]]
name = "md-publisher"
destination = "127.0.0.1:9200"
retransmit_listen = "127.0.0.1:9201"
snapshot_listen = "127.0.0.1:9202"
username = "demo"
password = "demo"

# Binary order entry (docs/binary-protocol.md): SBE over TCP, FIXP sessions. Demo sessions
# 1-3 trade accounts 1-3; `ringex load` and ringex.gateways.client log on with them.
[[gateway]]
name = "sbe-gateway"
protocol = "sbe"
listen = "127.0.0.1:9100"
[[gateway.session]]
id = 1
credentials = "demo-1"
accounts = [1]
max_msgs_per_s = 100000
[[gateway.session]]
id = 2
credentials = "demo-2"
accounts = [2]
max_msgs_per_s = 100000
[[gateway.session]]
id = 3
credentials = "demo-3"
accounts = [3]
max_msgs_per_s = 100000

# FIX 4.4 order entry (docs/fix-protocol.md): the gateway is RINGEX; demo counterparties
# DEMO1-DEMO3 (passwords demo-1..demo-3) trade accounts 1-3; `ringex fix-client` logs on as DEMO1.
[[gateway]]
name = "fix-gateway"
protocol = "fix"
listen = "127.0.0.1:9878"
comp_id = "RINGEX"
keepalive_min_ms = 1000
[[gateway.session]]
id = 11
target_comp_id = "DEMO1"
credentials = "demo-1"
accounts = [1]
max_msgs_per_s = 100000
[[gateway.session]]
id = 12
target_comp_id = "DEMO2"
credentials = "demo-2"
accounts = [2]
max_msgs_per_s = 100000
[[gateway.session]]
id = 13
target_comp_id = "DEMO3"
credentials = "demo-3"
accounts = [3]
max_msgs_per_s = 100000

[[instrument]]
id = 1
symbol = "BTC-USD"
base_asset = 1
tick_size = 1
lot_size = 1
min_qty = 1
max_qty = 1000000
reference_price = 50000
maker_fee_ppm = 100
taker_fee_ppm = 400
max_order_qty = 100
price_band_ppm = 100000

[[instrument]]
id = 2
symbol = "ETH-USD"
base_asset = 2
tick_size = 1
lot_size = 1
min_qty = 1
max_qty = 1000000
reference_price = 3000
maker_fee_ppm = 100
taker_fee_ppm = 400
max_order_qty = 1000
price_band_ppm = 100000

[[instrument]]
id = 3
symbol = "BTC-PERP"
kind = "perpetual"
tick_size = 1
lot_size = 1
min_qty = 1
max_qty = 1000000
reference_price = 50000
maker_fee_ppm = -50
taker_fee_ppm = 500
max_order_qty = 100
max_position = 1000
price_band_ppm = 100000
[instrument.perpetual]
im_ppm = 100000               # 10x leverage on the first tier
mm_ppm = 500000               # maintenance = half the initial margin (5%)
tier_notional = 5000000       # +1% initial margin per 5M USD of notional
tier_step_ppm = 10000
funding_interval_ns = 28800000000000   # every 8 hours
funding_cap_ppm = 750         # at most 0.075% per interval
basis_cap_ppm = 5000          # mark within 0.5% of the index
basis_ema_ppm = 100000
liquidation_fee_ppm = 5000    # 0.5% of a liquidated position's notional to the insurance fund
interest_ppm = 100            # 0.01% per interval, as the leading venues
impact_notional = 20000       # the mark's basis from 20k USD fills on each side, not the top of book
index_price = 50000

# Accounts 1-3: 10M USD, 100 BTC and 1000 ETH each, enough to trade every instrument.
[[account]]
id = 1
deposits = { 0 = 10000000, 1 = 100, 2 = 1000 }
[[account]]
id = 2
deposits = { 0 = 10000000, 1 = 100, 2 = 1000 }
[[account]]
id = 3
deposits = { 0 = 10000000, 1 = 100, 2 = 1000 }

[insurance_fund]
deposit = 1000000
"""


def book_top(ins: InstrumentConfig, e: EngineConfig) -> int | None:
    """The top price of an instrument's book window (docs/engine.md), None when its tick or
    reference price is invalid (reported on their own)."""
    if ins.tick_size <= 0 or ins.reference_price <= 0:
        return None
    base = book_base(ins.reference_price // ins.tick_size, e.price_levels)
    return (base + e.price_levels - 1) * ins.tick_size


def _name_taken(name: str, agents: set[str], cfg: ExchangeConfig) -> str | None:
    """What a gateway's or feed's ``name`` already names (an agent, a ring, a subscriber), or None."""
    return ("a pipeline agent" if name in AGENT_NAMES
            else "another gateway or feed" if name in agents
            else "a ring in rings.gateways" if name in cfg.rings.gateways
            else "a subscriber in rings.subscribers" if name in cfg.rings.subscribers else None)


def _check(cfg: ExchangeConfig) -> list[str]:
    problems: list[str] = []

    def need(ok: bool, key: str, what: str) -> None:
        if not ok:
            problems.append(f"$.{key}: {what}")

    e = cfg.engine
    need(cfg.journal.interval_ms > 0, "journal.interval_ms", "must be > 0")
    need(cfg.journal.segment_bytes >= 4096, "journal.segment_bytes", "must be at least 4096")
    need(cfg.journal.snapshot_every > 0, "journal.snapshot_every", "must be > 0")
    need(cfg.journal.snapshots_kept >= 1, "journal.snapshots_kept", "must be at least 1")
    need(cfg.journal.snapshot_writer in defaults.SNAPSHOT_WRITERS, "journal.snapshot_writer",
         f"must be one of {', '.join(defaults.SNAPSHOT_WRITERS)}")
    archive = cfg.archive_path()
    if archive is not None:
        data = cfg.data_path().resolve()
        taken = {data: "the data directory", journal_dir(data): "the journal directory",
                 snapshot_dir(data): "the snapshot directory"}
        problem = None
        if not cfg.journal.archive_dir.strip():
            problem = "must be a directory path (leave it out to delete old journal segments)"
        elif archive.resolve() in taken:
            problem = (f"{archive} is {taken[archive.resolve()]}; the archive needs a directory "
                       "of its own")
        elif archive.exists() and not archive.is_dir():
            problem = f"{archive} exists and is not a directory"
        need(problem is None, "journal.archive_dir", problem or "")
    for key in ("inbound_capacity", "engine_capacity", "output_capacity"):
        v = getattr(cfg.rings, key)
        need(v >= 2 and v & (v - 1) == 0, f"rings.{key}", f"must be a power of two >= 2, got {v}")
    need(cfg.rings.batch_limit >= 1, "rings.batch_limit", "must be >= 1")
    for key in ("gateways", "subscribers"):
        values = getattr(cfg.rings, key)
        need(len(set(values)) == len(values), f"rings.{key}", "names must be unique")
        for v in values:
            need(bool(v) and v.replace("-", "").replace("_", "").isalnum() and v.isascii(),
                 f"rings.{key}", f"{v!r} must be letters, digits, '-' or '_'")
    need(cfg.supervisor.heartbeat_timeout_ms > 0, "supervisor.heartbeat_timeout_ms", "must be > 0")
    need(cfg.supervisor.check_interval_ms > 0, "supervisor.check_interval_ms", "must be > 0")
    need(cfg.supervisor.max_restarts >= 0, "supervisor.max_restarts",
         "must be >= 0 (restarts of one process within restart_window_ms; 0 = never restart)")
    need(cfg.supervisor.restart_window_ms > 0, "supervisor.restart_window_ms",
         "must be > 0 (the window, in ms, in which at most max_restarts restarts are allowed)")
    need(bool(cfg.exchange.shm_prefix) and "/" not in cfg.exchange.shm_prefix,
         "exchange.shm_prefix", "must be a non-empty name without '/'")

    ppm_range = "must be in 0..1000000 (0 disables)"
    max_money = 2**60  # the most a balance may hold (a deposit above it is QtyOutOfRange)
    seen: set[int] = set()
    for i, ins in enumerate(cfg.instrument):
        k = f"instrument[{i}]"
        perp = ins.kind == "perpetual"
        need(0 < ins.id < e.max_instruments, f"{k}.id", f"must be in 1..{e.max_instruments - 1}")
        need(ins.id not in seen, f"{k}.id", f"instrument {ins.id} is defined twice")
        seen.add(ins.id)
        need(0 < len(ins.symbol) <= 8 and ins.symbol.isascii(), f"{k}.symbol", "must be 1-8 ASCII characters")
        if perp:
            need(ins.base_asset in (None, 0), f"{k}.base_asset",
                 "must be 0 or left out for a perpetual (it settles in asset 0)")
        elif ins.base_asset is None:
            need(False, f"{k}.base_asset", f"is required for a spot instrument (1..{e.max_assets - 1})")
        else:
            need(0 < ins.base_asset < e.max_assets, f"{k}.base_asset",
                 f"must be in 1..{e.max_assets - 1} (asset 0 is the settlement asset; [engine] max_assets "
                 f"is {e.max_assets})")
        need(ins.tick_size > 0, f"{k}.tick_size", "must be > 0")
        need(0 <= ins.price_decimals <= 18, f"{k}.price_decimals", "must be in 0..18")
        need(0 <= ins.qty_decimals <= 18, f"{k}.qty_decimals", "must be in 0..18")
        need(ins.lot_size > 0, f"{k}.lot_size", "must be > 0")
        need(0 < ins.min_qty <= ins.max_qty, f"{k}.min_qty", "need 0 < min_qty <= max_qty")
        if ins.lot_size > 0:
            need(ins.min_qty % ins.lot_size == 0 and ins.max_qty % ins.lot_size == 0,
                 f"{k}.min_qty" if ins.min_qty % ins.lot_size else f"{k}.max_qty",
                 "min_qty and max_qty must be multiples of lot_size")
        need(ins.reference_price > 0, f"{k}.reference_price", "must be > 0")
        if ins.tick_size > 0:
            need(ins.reference_price % ins.tick_size == 0, f"{k}.reference_price",
                 "must be a multiple of tick_size")
        # a maker rebate never exceeds the taker fee, so the fee account never pays out more
        # than it takes on a trade (docs/risk.md, "Assets and money")
        if 0 <= ins.taker_fee_ppm <= 1_000_000:  # else the maker bound means nothing
            need(-ins.taker_fee_ppm <= ins.maker_fee_ppm <= ins.taker_fee_ppm, f"{k}.maker_fee_ppm",
                 f"must be in -{ins.taker_fee_ppm}..{ins.taker_fee_ppm} (-taker_fee_ppm..taker_fee_ppm: "
                 "a rebate is at most the taker fee)")
        else:
            need(False, f"{k}.taker_fee_ppm", "must be in 0..1000000")
        need(0 <= ins.max_order_qty < 2**63, f"{k}.max_order_qty", "must be 0 (no limit) or > 0")
        need(0 <= ins.max_position < 2**63, f"{k}.max_position", "must be 0 (no limit) or > 0")
        need(perp or ins.max_position == 0, f"{k}.max_position",
             "applies to perpetuals only (a spot instrument has no position)")
        need(0 <= ins.max_order_notional < 2**63, f"{k}.max_order_notional", "must be 0 (no limit) or > 0")
        need(1 <= ins.notional_divisor < 2**63, f"{k}.notional_divisor", "must be >= 1")
        if ins.notional_divisor >= 1 and ins.tick_size > 0 and ins.lot_size > 0:
            need((ins.tick_size * ins.lot_size) % ins.notional_divisor == 0, f"{k}.notional_divisor",
                 f"must divide tick_size * lot_size ({ins.tick_size * ins.lot_size}), so that every "
                 "trade's notional is a whole number")
        for key in ("price_band_ppm", "cb_move_ppm"):
            need(0 <= getattr(ins, key) <= 1_000_000, f"{k}.{key}", ppm_range)
        for key in ("cb_window_ns", "cb_halt_ns"):
            need(0 <= getattr(ins, key) < 2**63, f"{k}.{key}", "must be >= 0 (0 disables)")
        top = book_top(ins, e)
        if top is not None and ins.max_qty > 0:
            need(top * ins.max_qty < 2**62, f"{k}.max_qty",
                 f"the top of the book window ({top}) times max_qty must be < 2**62")
        if ins.perpetual is not None and not perp:
            need(False, f"{k}.perpetual", "only a perpetual instrument has margin and funding parameters "
                 f"(kind is {ins.kind!r})")
        elif ins.perpetual is not None:
            pk, pp = f"{k}.perpetual", ins.perpetual
            need(1 <= pp.im_ppm <= 1_000_000, f"{pk}.im_ppm", "must be in 1..1000000")
            need(1 <= pp.mm_ppm <= 1_000_000, f"{pk}.mm_ppm", "must be in 1..1000000 (a fraction of im)")
            need(0 <= pp.tier_notional < 2**63, f"{pk}.tier_notional", "must be 0 (one tier) or > 0")
            need(0 <= pp.funding_interval_ns < 2**63, f"{pk}.funding_interval_ns", "must be >= 0 (0 = no funding)")
            for key in ("tier_step_ppm", "funding_cap_ppm", "basis_cap_ppm", "basis_ema_ppm",
                        "liquidation_fee_ppm"):
                need(0 <= getattr(pp, key) <= 1_000_000, f"{pk}.{key}", "must be in 0..1000000")
            need(-1_000_000 <= pp.interest_ppm <= 1_000_000, f"{pk}.interest_ppm", "must be in -1000000..1000000")
            need(0 <= pp.impact_notional < 2**63, f"{pk}.impact_notional", "must be 0 (the mid) or > 0")
            if pp.index_price is not None:
                hi = f"1..{top}" if top is not None else "> 0"
                need(0 < pp.index_price and (top is None or pp.index_price <= top), f"{pk}.index_price",
                     f"must be in {hi} (a price inside the book window)")
    seen = set()
    for i, acc in enumerate(cfg.account):
        k = f"account[{i}]"
        need(0 < acc.id < e.max_accounts, f"{k}.id",
             f"must be in 1..{e.max_accounts - 1} (account 0 is the insurance fund: [insurance_fund])")
        need(acc.id not in seen, f"{k}.id", f"account {acc.id} is defined twice")
        seen.add(acc.id)
        need(0 <= acc.max_open_orders < 2**32, f"{k}.max_open_orders", "must be in 0..2**32-1 (0 = no limit)")
        for asset, amount in acc.deposits.items():
            dk = f"{k}.deposits.{asset}"
            # canonical decimal only, so "1" and "01" cannot name the same asset twice
            if not (asset.isascii() and asset.isdigit() and str(int(asset)) == asset
                    and int(asset) < e.max_assets):
                need(False, dk, f"the key must be an asset id in 0..{e.max_assets - 1}, in decimal")
            need(0 < amount <= max_money, dk, "must be in 1..2**60 (a balance is at most 2**60)")
    need(0 <= cfg.insurance_fund.deposit <= max_money, "insurance_fund.deposit",
         "must be in 0..2**60 (0 = none; a balance is at most 2**60)")

    known_agents = set(AGENT_NAMES)
    session_of: dict[int, str] = {}
    for i, g in enumerate(cfg.gateway):
        k = f"gateway[{i}]"
        problems.extend(check_gateway(g, k, e.max_accounts))
        taken = _name_taken(g.name, known_agents, cfg)
        need(taken is None, f"{k}.name", f"{g.name!r} is already the name of {taken}")
        known_agents.add(g.name)
        for j, sess in enumerate(g.session):
            need(sess.id not in session_of or session_of[sess.id] == g.name, f"{k}.session[{j}].id",
                 f"session {sess.id} is also defined by gateway {session_of.get(sess.id)!r}: a session id "
                 "is the engine's sessionId, unique across every gateway")
            session_of.setdefault(sess.id, g.name)
            for a in sess.accounts:
                need(a in {acc.id for acc in cfg.account} or not cfg.account, f"{k}.session[{j}].accounts",
                     f"account {a} is not a configured [[account]]")
    for i, f in enumerate(cfg.feed):
        k = f"feed[{i}]"
        problems.extend(check_feed(f, k))
        taken = _name_taken(f.name, known_agents, cfg)
        need(taken is None, f"{k}.name", f"{f.name!r} is already the name of {taken}")
        known_agents.add(f.name)
    if cfg.feed:  # every instrument's prices and quantities must fit ITCH's fields
        for i, ins in enumerate(cfg.instrument):
            top = book_top(ins, e)
            low = None if top is None else book_base(ins.reference_price // ins.tick_size, e.price_levels) * ins.tick_size
            problems.extend(check_instrument(ins, f"instrument[{i}]", low, top))

    placed: dict[str, str] = {}
    names: set[str] = set()
    for i, proc in enumerate(cfg.process):
        k = f"process[{i}]"
        need(proc.name not in names, f"{k}.name", f"process {proc.name!r} is defined twice")
        names.add(proc.name)
        need(bool(proc.agents), f"{k}.agents", "must name at least one agent")
        for agent in proc.agents:
            need(agent in known_agents, f"{k}.agents",
                 f"unknown agent {agent!r}: neither a pipeline agent ({', '.join(AGENT_NAMES)}) nor a "
                 "[[gateway]] or [[feed]] name")
            need(agent not in placed, f"{k}.agents",
                 f"agent {agent!r} is already placed in process {placed.get(agent)!r}")
            placed.setdefault(agent, proc.name)
    if cfg.process:
        missing = [a for a in (*AGENT_NAMES, *cfg.edge_names()) if a not in placed]
        need(not missing, "process", f"agents {missing} are not placed in any process")
    return problems


def parse_config(text: str, base_dir: str | Path = ".") -> ExchangeConfig:
    """Parse and check a TOML configuration; raises ConfigError listing every problem."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"invalid TOML: {exc}") from None
    raw["base_dir"] = str(base_dir)
    try:
        cfg = msgspec.convert(raw, ExchangeConfig)
    except msgspec.ValidationError as exc:
        engine = re.fullmatch(r"invalid EngineConfig: (.*) - at `\$\.engine`", str(exc), re.S)
        if engine:  # EngineConfig's own checks, "max_orders must be ...": named as the others are
            raise ConfigError("invalid configuration:\n  " + "\n  ".join(
                "$.engine." + p.replace(" must ", ": must ", 1) for p in engine.group(1).split("; "))) from None
        hint = ""
        if "unknown field `deposit`" in str(exc) and "$.account" in str(exc):
            # the key of earlier versions, which named no asset
            hint = " (deposits are per asset: deposits = { 0 = amount, ... })"
        raise ConfigError(str(exc) + hint) from None
    if not cfg.process:
        # a name given twice (or after a pipeline agent) is reported as that, not as placed twice
        cfg.process = composed([g for g in dict.fromkeys(cfg.edge_names()) if g not in AGENT_NAMES])
    problems = _check(cfg)
    if problems:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems))
    return cfg


def load_config(path: str | Path | None = None) -> ExchangeConfig:
    """The configuration in ``path``, or the embedded default (data in ./var)."""
    if path is None:
        return parse_config(DEFAULT_TOML, base_dir=Path.cwd())
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read configuration {p}: {exc.strerror}") from None
    return parse_config(text, base_dir=p.resolve().parent)
