"""A gateway's configuration: one ``[[gateway]]`` table and its ``[[gateway.session]]`` tables.

A gateway is an agent named by its ``name``: ``[[process]] agents`` places it like
``sequencer`` and ``engine``, the launcher gives it the inbound ring
``<prefix>-in-<name>`` and makes it a subscriber of ``<prefix>-out`` and ``<prefix>-rej``,
and it keeps its sessions' state under ``<data_dir>/gateways/<name>/``. In TOML::

    [[gateway]]
    name = "sbe-gateway"
    protocol = "sbe"               # SBE over SOFH with FIXP (docs/binary-protocol.md); or "fix":
                                   # FIX 4.4 tag=value (comp_id = our CompID, and per session
                                   # target_comp_id = theirs, credentials = the Logon's Password)
    listen = "127.0.0.1:9100"
    [[gateway.session]]
    id = 1                         # the engine's sessionId: unique across every gateway
    credentials = "demo-1"         # checked at Negotiate and Establish
    accounts = [1]                 # the accounts it may trade
    max_msgs_per_s = 1000          # order-entry messages per second (token bucket); 0 = no limit
    cancel_on_disconnect = true

Whether session ids are unique across gateways, and gateway names across agents and rings,
is a property of the whole configuration, judged by ``ringex.tools.config``.
"""

from __future__ import annotations

from typing import Literal

import msgspec

__all__ = ["GatewayConfig", "SessionConfig", "check_gateway", "parse_listen"]

MAX_CREDENTIALS = 32  # the schema's Credentials field (engine/wire/schema.xml)
MAX_SESSION_ID = (1 << 32) - 1
MAX_COMP_ID = 64


class SessionConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """One configured session: who may log on as it, and what it may do."""

    id: int
    credentials: str  # SBE: checked at Negotiate and Establish; FIX: the Logon's Password (554)
    accounts: list[int] = msgspec.field(default_factory=list)
    target_comp_id: str = ""  # FIX only: the counterparty's SenderCompID (our TargetCompID)
    max_msgs_per_s: int = 1000  # sustained order-entry rate; 0 = no throttle
    burst: int = 0  # messages allowed at once above the rate; 0 = one second's worth
    cancel_on_disconnect: bool = True  # a lost or ended connection cancels the session's orders

    def bucket(self) -> int:
        """The throttle's bucket size: ``burst``, or one second's worth of messages."""
        return self.burst or self.max_msgs_per_s


class GatewayConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """One gateway agent: its protocol, where it listens, its limits and its sessions."""

    name: str
    protocol: Literal["sbe", "fix"] = "sbe"
    listen: str = "127.0.0.1:9100"  # host:port; port 0 = any free port (tests)
    comp_id: str = "RINGEX"  # FIX only: the gateway's SenderCompID (the counterparties' TargetCompID)
    keepalive_min_ms: int = 100  # the keepalive intervals a client may ask for
    keepalive_max_ms: int = 60_000
    max_backlog_bytes: int = 4 << 20  # a connection's unsent output above this: disconnected
    max_retransmit: int = 100_000  # the most messages one RetransmitRequest may ask for
    max_connections: int = 64  # open TCP connections, established or not
    session: list[SessionConfig] = msgspec.field(default_factory=list)

    def address(self) -> tuple[str, int]:
        return parse_listen(self.listen)


def _comp_id_ok(value: str) -> bool:
    return 0 < len(value) <= MAX_COMP_ID and value.isascii() and value.isprintable() and "\x01" not in value


def parse_listen(listen: str) -> tuple[str, int]:
    """``"host:port"`` as ``(host, port)``; ValueError saying what is wrong."""
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{listen!r} is not host:port with a port in 0..65535")
    return host.strip("[]"), int(port)


def check_gateway(g: GatewayConfig, key: str, max_accounts: int) -> list[str]:
    """Problems with one gateway table, each as ``$.key: what``."""
    problems: list[str] = []

    def need(ok: bool, k: str, what: str) -> None:
        if not ok:
            problems.append(f"$.{k}: {what}")

    need(bool(g.name) and g.name.replace("-", "").replace("_", "").isalnum() and g.name.isascii(),
         f"{key}.name", f"{g.name!r} must be letters, digits, '-' or '_'")
    try:
        parse_listen(g.listen)
    except ValueError as exc:
        need(False, f"{key}.listen", str(exc))
    need(1 <= g.keepalive_min_ms <= g.keepalive_max_ms < 2**32, f"{key}.keepalive_min_ms",
         "need 1 <= keepalive_min_ms <= keepalive_max_ms < 2**32")
    need(g.max_backlog_bytes >= 1 << 16, f"{key}.max_backlog_bytes", "must be at least 65536")
    need(g.max_retransmit >= 1, f"{key}.max_retransmit", "must be >= 1")
    need(g.max_connections >= 1, f"{key}.max_connections", "must be >= 1")
    fix = g.protocol == "fix"
    if fix:
        need(_comp_id_ok(g.comp_id), f"{key}.comp_id", f"must be 1..{MAX_COMP_ID} printable ASCII characters")
        need(g.keepalive_min_ms >= 1000, f"{key}.keepalive_min_ms",
             "FIX HeartBtInt is in whole seconds: at least 1000")
    comp_ids: set[str] = set()
    seen: set[int] = set()
    for i, s in enumerate(g.session):
        k = f"{key}.session[{i}]"
        need(1 <= s.id <= MAX_SESSION_ID, f"{k}.id", f"must be in 1..{MAX_SESSION_ID}")
        need(s.id not in seen, f"{k}.id", f"session {s.id} is defined twice")
        seen.add(s.id)
        need(0 < len(s.credentials) <= MAX_CREDENTIALS and s.credentials.isascii()
             and s.credentials.isprintable(), f"{k}.credentials",
             f"must be 1..{MAX_CREDENTIALS} printable ASCII characters")
        need(bool(s.accounts), f"{k}.accounts", "must list the accounts the session may trade")
        for a in s.accounts:
            need(0 < a < max_accounts, f"{k}.accounts",
                 f"{a} is not an account id in 1..{max_accounts - 1} (account 0 is the insurance fund)")
        if fix:
            need(_comp_id_ok(s.target_comp_id), f"{k}.target_comp_id",
                 f"a FIX session needs the counterparty's CompID: 1..{MAX_COMP_ID} printable ASCII characters")
            need(s.target_comp_id not in comp_ids, f"{k}.target_comp_id",
                 f"{s.target_comp_id!r} names two sessions of this gateway")
            comp_ids.add(s.target_comp_id)
        else:
            need(not s.target_comp_id, f"{k}.target_comp_id", "is for FIX sessions (protocol = \"fix\")")
        need(0 <= s.max_msgs_per_s < 2**31, f"{k}.max_msgs_per_s", "must be >= 0 (0 = no throttle)")
        need(0 <= s.burst < 2**31, f"{k}.burst", "must be >= 0 (0 = one second's worth)")
    return problems
