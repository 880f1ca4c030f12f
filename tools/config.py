"""The exchange's configuration: TOML read into typed msgspec structures.

Everything is checked before anything starts; an error names the key and the problem
(``$.instrument[1].tick_size: must be > 0``). ``DEFAULT_TOML`` is the embedded default
that ``make run`` starts: a small 2-core-friendly topology with demo instruments and
accounts.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Literal

import msgspec

from ringex.engine.config import EngineConfig

Durability = Literal["none", "batch", "interval"]
Idle = Literal["busy-spin", "yield", "backoff", "sleep"]
Kind = Literal["spot", "perpetual"]
Stp = Literal["off", "cancel-resting", "cancel-aggressor", "cancel-both", "decrement-both"]
AgentName = Literal["sequencer", "engine"]

KNOWN_AGENTS: tuple[str, ...] = ("sequencer", "engine")


class ConfigError(ValueError):
    """The configuration is invalid; the message names the key and the problem."""


class Strict(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class ExchangeSection(Strict):
    name: str = "ringex"
    data_dir: str = "var"  # journal and snapshots; relative paths are relative to the config file
    shm_prefix: str = "ringex"  # prefix of every shared-memory object this exchange creates


class JournalSection(Strict):
    durability: Durability = "batch"
    interval_ms: int = 10
    segment_bytes: int = 64 * 1024 * 1024
    snapshot_every: int = 1_000_000  # messages between periodic snapshots
    snapshots_kept: int = 3


class RingsSection(Strict):
    inbound_capacity: int = 16384  # each gateway's and the admin ring
    engine_capacity: int = 65536  # sequencer -> engine
    output_capacity: int = 65536  # engine -> gateways and market data
    batch_limit: int = 1024  # most messages one duty cycle takes from a ring
    # One inbound ring per order-entry producer (a gateway, a load generator): <prefix>-in-<name>.
    gateways: list[str] = msgspec.field(default_factory=lambda: ["gw0"])
    # Consumers of the engine's output (and the sequencer's rejections) besides the launcher.
    subscribers: list[str] = msgspec.field(default_factory=list)


class PortsSection(Strict):
    host: str = "127.0.0.1"
    fix: int = 9878
    sbe: int = 9879
    market_data: int = 9880
    snapshot: int = 9881


class InstrumentConfig(Strict):
    id: int
    symbol: str
    reference_price: int
    kind: Kind = "spot"
    tick_size: int = 1
    lot_size: int = 1
    min_qty: int = 1
    max_qty: int = 1_000_000
    maker_fee_ppm: int = 0
    taker_fee_ppm: int = 0
    halt_policy: Literal["reject", "queue"] = "reject"
    # pre-trade limits and circuit breaker (docs/risk.md); the defaults disable them. They are
    # sent as an InstrumentLimits after the instrument's definition (tools/launcher.py)
    max_order_notional: int = 0  # 0 = no limit
    notional_divisor: int = 1  # notional(price, qty) = price * qty // notional_divisor
    price_band_ppm: int = 0
    cb_move_ppm: int = 0
    cb_window_ns: int = 0
    cb_halt_ns: int = 0


class AccountConfig(Strict):
    id: int
    stp_default: Stp = "cancel-resting"
    deposit: int = 0
    max_open_orders: int = 0  # 0 = no limit


class ProcessConfig(Strict):
    name: str
    agents: list[AgentName]
    cpus: list[int] | None = None
    idle: Idle = "backoff"


class SupervisorSection(Strict):
    heartbeat_timeout_ms: int = 2000
    check_interval_ms: int = 100


class ExchangeConfig(Strict):
    exchange: ExchangeSection = msgspec.field(default_factory=ExchangeSection)
    engine: EngineConfig = msgspec.field(default_factory=EngineConfig)
    journal: JournalSection = msgspec.field(default_factory=JournalSection)
    rings: RingsSection = msgspec.field(default_factory=RingsSection)
    ports: PortsSection = msgspec.field(default_factory=PortsSection)
    supervisor: SupervisorSection = msgspec.field(default_factory=SupervisorSection)
    instrument: list[InstrumentConfig] = msgspec.field(default_factory=list)
    account: list[AccountConfig] = msgspec.field(default_factory=list)
    process: list[ProcessConfig] = msgspec.field(default_factory=list)
    base_dir: str = "."  # where relative paths resolve; set by the loader, not by the file

    def data_path(self) -> Path:
        p = Path(self.exchange.data_dir)
        return p if p.is_absolute() else Path(self.base_dir) / p


DEFAULT_TOML = """\
# ringex embedded default: one process for the whole pipeline, backoff idle, fit for 2 cores.
[exchange]
name = "ringex-demo"
data_dir = "var"
shm_prefix = "ringex"

[journal]
durability = "batch"

[[process]]
name = "core"
agents = ["sequencer", "engine"]
idle = "backoff"

[[instrument]]
id = 1
symbol = "BTC-USD"
tick_size = 1
lot_size = 1
min_qty = 1
max_qty = 1000000
reference_price = 50000

[[instrument]]
id = 2
symbol = "ETH-USD"
tick_size = 1
lot_size = 1
min_qty = 1
max_qty = 1000000
reference_price = 3000

[[account]]
id = 1
[[account]]
id = 2
[[account]]
id = 3
"""


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
    for key in ("fix", "sbe", "market_data", "snapshot"):
        v = getattr(cfg.ports, key)
        need(0 < v < 65536, f"ports.{key}", f"must be a TCP/UDP port, got {v}")
    need(cfg.supervisor.heartbeat_timeout_ms > 0, "supervisor.heartbeat_timeout_ms", "must be > 0")
    need(cfg.supervisor.check_interval_ms > 0, "supervisor.check_interval_ms", "must be > 0")
    need(bool(cfg.exchange.shm_prefix) and "/" not in cfg.exchange.shm_prefix,
         "exchange.shm_prefix", "must be a non-empty name without '/'")

    seen: set[int] = set()
    for i, ins in enumerate(cfg.instrument):
        k = f"instrument[{i}]"
        need(0 < ins.id < e.max_instruments, f"{k}.id", f"must be in 1..{e.max_instruments - 1}")
        need(ins.id not in seen, f"{k}.id", f"instrument {ins.id} is defined twice")
        seen.add(ins.id)
        need(0 < len(ins.symbol) <= 8 and ins.symbol.isascii(), f"{k}.symbol", "must be 1-8 ASCII characters")
        need(ins.tick_size > 0, f"{k}.tick_size", "must be > 0")
        need(ins.lot_size > 0, f"{k}.lot_size", "must be > 0")
        need(0 < ins.min_qty <= ins.max_qty, f"{k}.min_qty", "need 0 < min_qty <= max_qty")
        if ins.lot_size > 0:
            need(ins.min_qty % ins.lot_size == 0 and ins.max_qty % ins.lot_size == 0,
                 f"{k}.min_qty", "min_qty and max_qty must be multiples of lot_size")
        need(ins.reference_price > 0, f"{k}.reference_price", "must be > 0")
        if ins.tick_size > 0:
            need(ins.reference_price % ins.tick_size == 0, f"{k}.reference_price",
                 "must be a multiple of tick_size")
        need(0 <= ins.max_order_notional < 2**63, f"{k}.max_order_notional", "must be 0 (no limit) or > 0")
        need(1 <= ins.notional_divisor < 2**63, f"{k}.notional_divisor", "must be >= 1")
        for key in ("price_band_ppm", "cb_move_ppm"):
            need(0 <= getattr(ins, key) <= 1_000_000, f"{k}.{key}", "must be in 0..1000000 (0 disables)")
        for key in ("cb_window_ns", "cb_halt_ns"):
            need(0 <= getattr(ins, key) < 2**63, f"{k}.{key}", "must be >= 0 (0 disables)")
        if ins.tick_size > 0 and ins.reference_price > 0 and ins.max_qty > 0:
            base = max(1, ins.reference_price // ins.tick_size - e.price_levels // 2)
            top = (base + e.price_levels - 1) * ins.tick_size
            need(top * ins.max_qty < 2**62, f"{k}.max_qty",
                 f"the top of the book window ({top}) times max_qty must be < 2**62")
    seen = set()
    for i, acc in enumerate(cfg.account):
        k = f"account[{i}]"
        need(0 < acc.id < e.max_accounts, f"{k}.id", f"must be in 1..{e.max_accounts - 1}")
        need(acc.id not in seen, f"{k}.id", f"account {acc.id} is defined twice")
        seen.add(acc.id)
        need(acc.deposit >= 0, f"{k}.deposit", "must not be negative")
        need(0 <= acc.max_open_orders < 2**32, f"{k}.max_open_orders", "must be in 0..2**32-1 (0 = no limit)")

    placed: dict[str, str] = {}
    names: set[str] = set()
    for i, proc in enumerate(cfg.process):
        k = f"process[{i}]"
        need(proc.name not in names, f"{k}.name", f"process {proc.name!r} is defined twice")
        names.add(proc.name)
        need(bool(proc.agents), f"{k}.agents", "must name at least one agent")
        for agent in proc.agents:
            need(agent not in placed, f"{k}.agents",
                 f"agent {agent!r} is already placed in process {placed.get(agent)!r}")
            placed.setdefault(agent, proc.name)
        if proc.cpus is not None:
            need(bool(proc.cpus) and all(c >= 0 for c in proc.cpus), f"{k}.cpus",
                 "must list CPU numbers >= 0 (or be left out)")
    if cfg.process:
        missing = [a for a in KNOWN_AGENTS if a not in placed]
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
        raise ConfigError(str(exc)) from None
    if not cfg.process:
        cfg.process = [ProcessConfig(name="core", agents=list(KNOWN_AGENTS))]
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
