"""A market-data feed's configuration: one ``[[feed]]`` table.

A feed is an agent named by its ``name``: ``[[process]] agents`` places it like ``sequencer``
and the gateways, the launcher makes it a subscriber of ``<prefix>-out`` (after the
gateways' indexes) and it keeps its message store under ``<data_dir>/feeds/<name>/``. In
TOML::

    [[feed]]
    name = "md-publisher"
    destination = "127.0.0.1:9200"   # UDP host:port the MoldUDP64 packets go to (a multicast
                                     # group, or loopback unicast)
    session = "RINGEX"               # MoldUDP64 session prefix (a run number completes it)
    ttl = 1                          # multicast TTL
    interface = ""                   # multicast interface address; "" = the default route's
    max_payload = 1400               # bytes of one UDP payload: header and message blocks
    heartbeat_ms = 1000              # a heartbeat packet after this long without data
    retransmit_listen = "127.0.0.1:9201"   # UDP: MoldUDP64 request packets
    snapshot_listen = "127.0.0.1:9202"     # TCP: SoupBinTCP snapshot logins
    username = "demo"                # SoupBinTCP login (6 characters at most)
    password = "demo"                # (10 at most)
    retain_messages = 10000000       # messages the retransmission store keeps

Each instrument's ITCH price scale is a key of its ``[[instrument]]`` table
(``itch_price_scale``, docs/market-data.md); whether every instrument's prices and
quantities fit ITCH's 32-bit fields is judged with the engine's configuration by
``ringex.tools.config``.
"""

from __future__ import annotations

import msgspec

from ringex.gateways.gateway_config import parse_listen

__all__ = ["FeedConfig", "check_feed", "MAX_SESSION_PREFIX"]

MAX_SESSION_PREFIX = 4  # MoldUDP64's session is 10 characters: the prefix, then a 6-digit run number
MIN_PAYLOAD = 20 + 2 + 50  # the MoldUDP64 header and the longest message we publish (Stock Directory)
MAX_PAYLOAD = 65507  # the largest UDP payload over IPv4


class FeedConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """One market-data publisher: where its packets go and where it serves recovery."""

    name: str = "md-publisher"
    destination: str = "127.0.0.1:9200"
    session: str = "RGX"
    ttl: int = 1
    interface: str = ""
    max_payload: int = 1400
    heartbeat_ms: int = 1000
    retransmit_listen: str = "127.0.0.1:9201"
    snapshot_listen: str = "127.0.0.1:9202"
    username: str = "demo"
    password: str = "demo"
    retain_messages: int = 10_000_000
    max_snapshot_clients: int = 16

    def destination_address(self) -> tuple[str, int]:
        return parse_listen(self.destination)

    def retransmit_address(self) -> tuple[str, int]:
        return parse_listen(self.retransmit_listen)

    def snapshot_address(self) -> tuple[str, int]:
        return parse_listen(self.snapshot_listen)


def _alnum(s: str, extra: str = "-_") -> bool:
    return bool(s) and s.isascii() and all(c.isalnum() or c in extra for c in s)


def check_feed(f: FeedConfig, key: str) -> list[str]:
    """Problems with one feed table, each as ``$.key: what``."""
    problems: list[str] = []

    def need(ok: bool, k: str, what: str) -> None:
        if not ok:
            problems.append(f"$.{k}: {what}")

    need(_alnum(f.name), f"{key}.name", f"{f.name!r} must be letters, digits, '-' or '_'")
    for k in ("destination", "retransmit_listen", "snapshot_listen"):
        try:
            parse_listen(getattr(f, k))
        except ValueError as exc:
            need(False, f"{key}.{k}", str(exc))
    need(_alnum(f.session, "") and len(f.session) <= MAX_SESSION_PREFIX, f"{key}.session",
         f"must be 1..{MAX_SESSION_PREFIX} letters or digits (a 6-digit run number completes "
         "MoldUDP64's 10-character session)")
    need(0 <= f.ttl <= 255, f"{key}.ttl", "must be in 0..255")
    need(MIN_PAYLOAD <= f.max_payload <= MAX_PAYLOAD, f"{key}.max_payload",
         f"must be in {MIN_PAYLOAD}..{MAX_PAYLOAD} (a header and the longest message must fit)")
    need(1 <= f.heartbeat_ms <= 60_000, f"{key}.heartbeat_ms", "must be in 1..60000")
    need(_alnum(f.username, "") and len(f.username) <= 6, f"{key}.username",
         "must be 1..6 letters or digits (SoupBinTCP's Username field)")
    need(0 < len(f.password) <= 10 and f.password.isascii() and f.password.isprintable()
         and " " not in f.password, f"{key}.password",
         "must be 1..10 printable ASCII characters without spaces (SoupBinTCP's Password field)")
    need(1000 <= f.retain_messages <= 1 << 40, f"{key}.retain_messages", "must be in 1000..2**40")
    need(1 <= f.max_snapshot_clients <= 1024, f"{key}.max_snapshot_clients", "must be in 1..1024")
    return problems
