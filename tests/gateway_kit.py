"""Helpers for the gateway tests: a running exchange with a binary gateway, and clients.

The exchange runs as users run it, ``ringex run --config`` in a child process, with a
gateway listening on a port the system picks (its address file says which). One exchange is
shared by the tests of a module where they allow it; every test uses its own sessions'
order ids, so that they do not see each other's events.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ringex.engine.wire import messages as m
from ringex.gateways.client import Client
from ringex.gateways.gateway_config import GatewayConfig
from ringex.ringbuffer.ring import Ring
from pipeline_kit import shm_leftovers
from ringex.gateways.sbe_gateway import ADDRESS_FILE, SbeGatewayAgent

GATEWAY = "bin"
PRICE = 1000  # the instrument's reference price: orders within its band


def gateway_toml(prefix: str, *, sessions: str, gateway_extra: str = "", extra: str = "",
                 processes: str = "") -> str:
    """One spot instrument (1), accounts 1-4 funded, a gateway ``bin`` on a free port with
    ``sessions`` (its ``[[gateway.session]]`` tables)."""
    accounts = "".join(
        f"[[account]]\nid = {a}\nstp_default = \"off\"\ndeposits = {{ 0 = 1000000000, 1 = 1000000 }}\n"
        for a in (1, 2, 3, 4))
    return f"""
[exchange]
data_dir = "data"
shm_prefix = "{prefix}"
[engine]
max_orders = 65536
price_levels = 4096
[supervisor]
heartbeat_timeout_ms = 1000
check_interval_ms = 50
{extra}
{processes}
[[instrument]]
id = 1
symbol = "DEMO"
reference_price = {PRICE}
base_asset = 1
max_qty = 1000000
{accounts}
[insurance_fund]
deposit = 5000
[[gateway]]
name = "{GATEWAY}"
listen = "127.0.0.1:0"
keepalive_min_ms = 50
{gateway_extra}
{sessions}
"""


def session_toml(sid: int, accounts: str = "[1]", *, rate: int = 0, cod: bool = True, burst: int = 0) -> str:
    return (f"[[gateway.session]]\nid = {sid}\ncredentials = \"pw{sid}\"\naccounts = {accounts}\n"
            f"max_msgs_per_s = {rate}\nburst = {burst}\ncancel_on_disconnect = {'true' if cod else 'false'}\n")


def fix_toml(prefix: str, sessions: tuple[tuple[int, int], ...] = ((21, 1), (22, 2), (23, 3)), *,
             gateway_extra: str = "", extra: str = "", rate: int = 0, cod: bool = True) -> str:
    """``gateway_toml`` with the gateway speaking FIX 4.4 as ``RINGEX``: one session per
    ``(id, account)``, counterparty CompID ``C<id>``, password ``pw<id>``."""
    tables = "".join(session_toml(sid, f"[{acct}]", rate=rate, cod=cod) + f'target_comp_id = "C{sid}"\n'
                     for sid, acct in sessions)
    toml = gateway_toml(prefix, sessions=tables, extra=extra)
    return toml.replace("keepalive_min_ms = 50",
                        'keepalive_min_ms = 1000\nprotocol = "fix"\ncomp_id = "RINGEX"\n' + gateway_extra)


@dataclass
class RunningExchange:
    """``ringex run`` in a child process, and where its gateway listens."""

    directory: Path
    proc: subprocess.Popen
    prefix: str = ""  # the exchange's shm_prefix
    host: str = ""
    port: int = 0
    pids: dict[str, int] = field(default_factory=dict)
    output: list[str] = field(default_factory=list)

    def client(self, session: int, **kw) -> Client:
        return Client.connect(self.host, self.port, session, f"pw{session}", **kw)

    def raw(self, session: int, **kw) -> Client:
        """A connected client that has sent nothing."""
        c = Client(self.host, self.port, session, f"pw{session}", **kw)
        c.open()
        return c

    def address_file(self) -> Path:
        return self.directory / "data" / "gateways" / GATEWAY / ADDRESS_FILE

    def wait_listening(self, timeout: float = 300.0, after: float = 0.0) -> None:
        """Until the gateway's address file is (re)written after ``after`` (a time.time())."""
        path = self.address_file()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("ringex run exited:\n" + self.read_output())
            try:
                if path.stat().st_mtime > after:
                    host, port = path.read_text().strip().rsplit(":", 1)
                    self.host, self.port = host, int(port)
                    return
            except (FileNotFoundError, ValueError):
                pass
            time.sleep(0.05)
        raise TimeoutError("the gateway did not start listening")

    def read_output(self) -> str:
        return "".join(self.output)

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            out, _ = self.proc.communicate(timeout=60)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                out, _ = self.proc.communicate(timeout=10)
        self.output.append(out or "")
        return self.read_output()


def start_exchange(directory: Path, toml: str, timeout: float = 300.0,
                   env: dict[str, str] | None = None) -> RunningExchange:
    """Write ``toml`` to ``directory/ex.toml`` and start ``ringex run`` on it (``env``: added
    to its environment, e.g. a crash point); returns once its first status line is out and
    the gateway listens."""
    directory.mkdir(parents=True, exist_ok=True)
    conf = directory / "ex.toml"
    conf.write_text(toml)
    started = time.time()
    env = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
    proc = subprocess.Popen([sys.executable, "-m", "ringex.tools.cli", "run", "--config", str(conf)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=directory, env=env)
    prefix = re.search(r'shm_prefix = "([^"]+)"', toml)
    ex = RunningExchange(directory, proc, prefix.group(1) if prefix else "")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError("ringex run exited while starting:\n" + ex.read_output())
        ex.output.append(line)
        if line.strip().startswith("process ") and "(pid " in line:
            ex.pids[line.split()[1]] = int(line.split("(pid ")[1].split(")")[0])
        if line.startswith("seq "):
            break
    else:
        proc.kill()
        raise TimeoutError("ringex run did not start")
    # keep reading its output on a thread, so the pipe never fills and blocks the launcher
    import threading

    def pump() -> None:
        try:
            for line in proc.stdout:
                ex.output.append(line)
        except (ValueError, OSError):  # stop() took the pipe over to read the rest
            pass

    threading.Thread(target=pump, daemon=True).start()
    ex.wait_listening(after=started - 1)
    return ex


@contextmanager
def running_exchange(directory: Path, toml: str, env: dict[str, str] | None = None) -> Iterator[RunningExchange]:
    """``start_exchange``, and on the way out a clean stop that leaves no shared memory."""
    ex = start_exchange(directory, toml, env=env)
    try:
        yield ex
    finally:
        out = ex.stop()
        assert "ringex stopped cleanly" in out, out[-3000:]
        assert shm_leftovers(ex.prefix) == []


def signal_if_alive(pid: int, sig: int) -> None:
    """Send ``sig`` to ``pid`` unless it is gone already (a SIGSTOPped process the supervisor
    killed meanwhile, a child that followed its launcher)."""
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def offer_load(prefix: str, messages, timeout: float = 10.0) -> None:
    """Offer each of ``messages`` (encoded engine messages) on ring ``<prefix>-in-load``, a
    producer standing in for another gateway (``[rings] gateways = ["load"]``), waiting at most
    ``timeout`` s for room for each: the exchange must keep taking orders."""
    from ringex.ringbuffer.idle import BackoffIdleStrategy
    from ringex.ringbuffer.ring import Ring

    ring = Ring.attach(f"{prefix}-in-load", wait_s=5.0)
    prod = ring.producer(takeover=True)
    idle = BackoffIdleStrategy(max_spins=0, max_yields=5, max_park_ns=1_000_000)
    try:
        for msg in messages:
            deadline = time.monotonic() + timeout
            while not prod.offer(msg):
                assert time.monotonic() < deadline, "the exchange stopped taking orders"
                idle.idle(0)
    finally:
        prod.close()
        ring.close()


def limit(cl: int, side: str, qty: int = 1, price: int = PRICE, account: int = 1, **kw) -> dict:
    return dict(clOrdId=cl, account=account, instrument=1, side=side, ordType="Limit", price=price, qty=qty,
                timeInForce=kw.pop("timeInForce", "GTC"), **kw)


def accepted_slot(session: int, k: int) -> np.ndarray:
    """The engine's OrderAccepted of session ``session``'s order ``k``, as an output ring slot."""
    row = np.zeros(m.SLOT_SIZE, np.uint8)
    body = m.OrderAccepted.encode(seq=k, timestampNs=k, orderId=100 + k, clOrdId=k, sessionId=session, account=1,
                                  instrument=1)
    row[:len(body)] = np.frombuffer(body, np.uint8)
    return row


@contextmanager
def inprocess_sbe_gateway(names: list[str], directory: Path, cfg: GatewayConfig,
                          capacity: int) -> Iterator[tuple[SbeGatewayAgent, object]]:
    """An ``SbeGatewayAgent`` started in this process on three new rings named ``names``
    (inbound, output, reject), and the output ring's producer (this test plays the engine);
    the test calls its duty cycle by hand. Closed, rings and all, on the way out."""
    rings = [Ring.create(n, slot_size=m.SLOT_SIZE, capacity=capacity, consumers=1) for n in names]
    agent = None
    try:
        agent = SbeGatewayAgent(cfg, names[0], names[1], names[2], 0, directory)
        agent.on_start()
        yield agent, rings[1].producer()
    finally:
        if agent is not None:
            agent.on_close()
        for r in rings:
            r.close()
