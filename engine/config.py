"""The matching engine's configuration: capacities fixed when the engine is built.

Every limit here sizes a preallocated array; reaching one gives the specific rejection
(``BookFull``, ``StopCapacity``, ``PriceOutOfRange``, ``InstrumentCapacity``,
``AccountCapacity``), never a crash or an overwrite. ``EngineConfig`` is a
``msgspec.Struct`` so that it reads straight from the ``[engine]`` table of the exchange's
TOML; building one directly validates it too (``EngineConfig(max_orders=0)`` raises
``ValueError`` naming the key).
"""

from __future__ import annotations

import msgspec

# Largest sizes the engine accepts: int32 pool links and level indices, and a sanity cap
# on memory (an order costs about 150 bytes, a price level 8 bytes per side).
_MAX_ORDERS = 1 << 28
_MAX_LEVELS = 1 << 26
_MAX_IDS = 1 << 24


class EngineConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """Capacities of the matching engine (see docs/engine.md, "Configuration")."""

    max_instruments: int = 16  # instrument ids are 1 .. max_instruments-1
    max_accounts: int = 1024  # account ids are 1 .. max_accounts-1 (0 is the insurance fund)
    max_assets: int = 8  # asset ids are 0 .. max_assets-1; 0 settles every instrument
    max_orders: int = 1 << 18  # live orders: resting, pending stops and queued, all instruments
    price_levels: int = 1 << 16  # book width in ticks per instrument, centred on the reference price
    max_stops: int = 4096  # pending stop orders, all instruments
    market_protection_ticks: int = 100  # how far past the best opposite price a market order trades
    event_buffer: int = 4096  # initial output capacity in events (slots); grows when a batch needs more

    def __post_init__(self) -> None:
        problems = self.problems()
        if problems:
            raise ValueError("invalid EngineConfig: " + "; ".join(problems))

    def problems(self) -> list[str]:
        """Every problem with this configuration, one line each (empty when valid)."""
        out: list[str] = []

        def need(ok: bool, key: str, what: str) -> None:
            if not ok:
                out.append(f"{key} {what}")

        for key in ("max_instruments", "max_accounts", "max_assets", "max_orders", "price_levels", "max_stops",
                    "market_protection_ticks", "event_buffer"):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, int):
                out.append(f"{key} must be an integer, got {v!r}")
        if out:
            return out
        need(2 <= self.max_instruments <= _MAX_IDS, "max_instruments",
             f"must be in 2..{_MAX_IDS} (ids are 1..max_instruments-1), got {self.max_instruments}")
        need(2 <= self.max_accounts <= _MAX_IDS, "max_accounts",
             f"must be in 2..{_MAX_IDS} (ids are 1..max_accounts-1), got {self.max_accounts}")
        need(1 <= self.max_assets <= 1 << 12, "max_assets",
             f"must be in 1..{1 << 12} (asset 0 is the settlement asset), got {self.max_assets}")
        need(1 <= self.max_orders <= _MAX_ORDERS, "max_orders",
             f"must be in 1..{_MAX_ORDERS}, got {self.max_orders}")
        need(2 <= self.price_levels <= _MAX_LEVELS, "price_levels",
             f"must be in 2..{_MAX_LEVELS}, got {self.price_levels}")
        need(0 <= self.max_stops <= _MAX_ORDERS, "max_stops",
             f"must be in 0..{_MAX_ORDERS}, got {self.max_stops}")
        need(0 <= self.market_protection_ticks <= _MAX_LEVELS, "market_protection_ticks",
             f"must be in 0..{_MAX_LEVELS}, got {self.market_protection_ticks}")
        need(16 <= self.event_buffer <= 1 << 26, "event_buffer",
             f"must be in 16..{1 << 26}, got {self.event_buffer}")
        per_side = self.max_instruments * self.price_levels
        need(per_side <= 1 << 28, "max_instruments * price_levels",
             f"must be at most {1 << 28} (book arrays), got {per_side}")
        return out
