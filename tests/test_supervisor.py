"""The supervisor (tools/launcher.py): restarts as a rate, giving a process up, start-up
that includes compiling the engine, and a data directory written by another engine.

The rules are tested with a fake clock (tools/supervision.py); the launcher with real
processes, where every wait is bounded and no assertion depends on how long something took:
a test that needs a slow start holds it open with a gate file (tests/supervisor_kit.py).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import msgspec
import psutil
import pytest

from pipeline_kit import attached, make_config, order, shm_leftovers
from supervisor_kit import GatedExchange
from ringex.engine.config import EngineConfig
from ringex.engine.pipeline import warm_start
from ringex.engine.pipeline.engine_agent import ENGINE_FILE, EngineStateError, check_engine_file, write_engine_file
from ringex.engine.wire import messages as m
from ringex.ringbuffer.control import REASON_GIVEN_UP, REASON_HEARTBEAT_LOST, REASON_STARTING
from ringex.tools import launcher
from ringex.tools.config import ExchangeConfig, load_config, parse_config
from ringex.tools.launcher import Exchange
from ringex.tools.supervision import RestartBudget, StartDeadline


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# ----------------------------------------------------------------------------- rules


def test_restart_budget_allows_n_within_the_window_then_refuses() -> None:
    clock = FakeClock()
    budget = RestartBudget(3, 60.0, clock)
    for _ in range(3):
        assert budget.try_restart()
        clock.now += 1
    assert budget.in_window() == 3
    assert not budget.try_restart()  # the fourth within 60 s
    assert budget.in_window() == 3  # a refusal takes nothing


def test_restart_budget_slides_restarts_spread_out_are_always_allowed() -> None:
    clock = FakeClock()
    budget = RestartBudget(2, 60.0, clock)
    # a crash every 30 s for a long time: never more than 2 in any 60 s window
    for _ in range(100):
        assert budget.try_restart()
        clock.now += 30.0
    # the window slides: the oldest restart leaves it exactly window_s after it happened
    clock = FakeClock()
    budget = RestartBudget(2, 60.0, clock)
    assert budget.try_restart()  # t = 0
    clock.now += 10
    assert budget.try_restart()  # t = 10
    clock.now += 49.9
    assert not budget.try_restart()  # t = 59.9: both still inside
    clock.now += 0.1
    assert budget.try_restart()  # t = 60: the first left
    assert not budget.try_restart()


def test_restart_budget_zero_never_restarts_and_rejects_nonsense() -> None:
    assert not RestartBudget(0, 1.0, FakeClock()).try_restart()
    with pytest.raises(ValueError):
        RestartBudget(-1, 1.0)
    with pytest.raises(ValueError):
        RestartBudget(1, 0.0)


def test_start_deadline_leaves_compiling_out_and_bounds_it_separately() -> None:
    clock = FakeClock()
    d = StartDeadline(10.0, compile_limit_s=600.0, clock=clock)
    clock.now += 5
    assert d.check(False) is None
    clock.now += 1
    assert d.check(True) is None  # compiling from here (6 s of start-up so far)
    clock.now += 300  # far past ready_s, but compiling
    assert d.check(True) is None
    clock.now += 1
    assert d.check(False) is None  # compile over: 301 s of it
    assert d.compiling_s() == pytest.approx(301)
    clock.now += 3.5
    assert d.check(False) is None  # 9.5 s of start-up besides the compile
    clock.now += 1
    late = d.check(False)
    assert late is not None and "did not start within 10 s" in late and "301 s compiling" in late

    clock = FakeClock()
    d = StartDeadline(10.0, compile_limit_s=600.0, clock=clock)
    assert d.check(True) is None
    clock.now += 601
    late = d.check(True)
    assert late is not None and "still compiling" in late


def test_start_deadline_without_a_compile() -> None:
    clock = FakeClock()
    d = StartDeadline(10.0, clock=clock)
    clock.now += 10
    assert d.check(False) is None
    clock.now += 0.5
    late = d.check(False)
    assert late == "did not start within 10 s"


# ----------------------------------------------------------------------------- configuration


def _with_supervisor(lines: str) -> str:
    return f"[supervisor]\n{lines}\n"


def test_supervisor_keys_parse_and_default() -> None:
    cfg = parse_config(_with_supervisor("max_restarts = 2\nrestart_window_ms = 30000"))
    assert (cfg.supervisor.max_restarts, cfg.supervisor.restart_window_ms) == (2, 30000)
    assert parse_config(_with_supervisor("max_restarts = 0")).supervisor.max_restarts == 0
    # the embedded default states them, with the defaults
    default = load_config().supervisor
    assert (default.max_restarts, default.restart_window_ms) == (5, 600_000)


# Each key's errors are rows of tests/test_config.py's INVALID table (every check has one).


# ----------------------------------------------------------------------------- compile notice


class FakeCounter:
    def __init__(self) -> None:
        self.value = 0

    def set(self, v: int) -> None:
        self.value = v


class FakeCounters:
    def __init__(self) -> None:
        self.allocated: dict[str, FakeCounter] = {}

    def allocate(self, label: str, type_id: int = 0) -> FakeCounter:
        self.allocated[label] = FakeCounter()
        return self.allocated[label]


def test_cold_cache_announces_the_compile_flags_it_and_times_it(caplog) -> None:
    caplog.set_level(logging.INFO, logger="ringex.engine")
    counters = FakeCounters()
    during = []

    def compile_engine() -> float:
        during.append(counters.allocated[warm_start.COMPILING_LABEL].value)
        return 0.0

    warm_start.warm_up_engine(counters, cache_warm=lambda: False, compile_engine=compile_engine,
                              where=lambda: "/cache/here")
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines
    assert lines[0].startswith("compiling the matching engine: first start only, about 3 minutes")
    assert lines[0].endswith("cached in /cache/here")
    assert lines[1].startswith("compiled the matching engine in ")
    assert during == [1]  # flagged while compiling, for the launcher
    assert counters.allocated[warm_start.COMPILING_LABEL].value == 0


def test_warm_cache_says_one_short_line_and_never_flags(caplog) -> None:
    caplog.set_level(logging.INFO, logger="ringex.engine")
    counters = FakeCounters()
    during = []
    warm_start.warm_up_engine(
        counters, cache_warm=lambda: True,
        compile_engine=lambda: during.append(counters.allocated[warm_start.COMPILING_LABEL].value) or 0.0)
    lines = [r.getMessage() for r in caplog.records]
    assert during == [0]
    assert len(lines) == 1 and lines[0].startswith("matching engine loaded from cache in ")
    assert not any("compil" in ln for ln in lines)


def test_a_failed_compile_clears_the_flag() -> None:
    counters = FakeCounters()

    def boom() -> float:
        raise RuntimeError("numba failed")

    with pytest.raises(RuntimeError, match="numba failed"):
        warm_start.warm_up_engine(counters, cache_warm=lambda: False, compile_engine=boom, where=lambda: "x")
    assert counters.allocated[warm_start.COMPILING_LABEL].value == 0


def _cache_warm_in_fresh_process(env: dict[str, str]) -> str:
    code = ("from ringex.engine.pipeline.warm_start import kernel_cache_warm\n"
            "from ringex.engine.kernel import dispatch\n"
            "print(kernel_cache_warm(), len(dispatch.process_batch.overloads))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env={**os.environ, **env})
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def test_kernel_cache_warm_reads_numbas_own_index(tmp_path: Path) -> None:
    from ringex.engine.engine import jit_enabled, warm_up

    if not jit_enabled():
        pytest.skip("NUMBA_DISABLE_JIT: nothing is compiled or cached")
    warm_up()  # here: compiles once if this checkout never did, so the cache holds the kernel
    # A fresh process sees it in the cache, and finding out compiled nothing (0 overloads).
    assert _cache_warm_in_fresh_process({}) == "True 0"
    # An empty cache directory: cold, again without compiling to find out.
    assert _cache_warm_in_fresh_process({"NUMBA_CACHE_DIR": str(tmp_path)}) == "False 0"


# ----------------------------------------------------------------------------- engine file


def test_check_engine_file_names_the_file_and_each_difference(tmp_path: Path) -> None:
    assert check_engine_file(tmp_path, EngineConfig()) is False  # a new data directory
    write_engine_file(tmp_path, EngineConfig(max_orders=1024, max_stops=16))
    assert check_engine_file(tmp_path, EngineConfig(max_orders=1024, max_stops=16)) is True
    with pytest.raises(EngineStateError) as err:
        check_engine_file(tmp_path, EngineConfig(max_orders=2048, max_stops=16, price_levels=512))
    msg = str(err.value)
    assert str(tmp_path / ENGINE_FILE) in msg
    assert "max_orders = 1024 there, 2048 configured" in msg
    assert f"price_levels = {EngineConfig().price_levels} there, 512 configured" in msg
    assert "max_stops" not in msg  # only what differs


@pytest.mark.parametrize("content, words", [
    ('{"schema": "0000000000000000", "engine": {}}', "journal written with schema 0000000000000000"),
    ("not json", "unreadable"),
    ('["a list"]', "unreadable"),
    ('{"schema": "%s", "engine": {"max_orderz": 5}}' % m.SCHEMA.fingerprint, "not one this build knows"),
])
def test_an_unusable_engine_file_is_an_engine_state_error(tmp_path: Path, content: str, words: str) -> None:
    (tmp_path / ENGINE_FILE).write_text(content)
    with pytest.raises(EngineStateError) as err:
        check_engine_file(tmp_path, EngineConfig())
    assert str(tmp_path / ENGINE_FILE) in str(err.value) and words in str(err.value)


# ----------------------------------------------------------------------------- real processes


@pytest.fixture
def no_leftover_children():
    """The test leaves no child process of this one behind (multiprocessing's resource
    tracker, started once and kept, aside)."""

    def children() -> set[int]:
        out = set()
        for p in psutil.Process().children(recursive=True):
            try:
                if "resource_tracker" not in " ".join(p.cmdline()):
                    out.add(p.pid)
            except psutil.NoSuchProcess:
                pass
        return out

    before = children()
    yield
    deadline = time.monotonic() + 10
    while children() - before and time.monotonic() < deadline:
        time.sleep(0.05)  # a killed child is being reaped
    assert children() - before == set()


def supervise_until(exchange: Exchange, until, timeout: float, seen: list | None = None) -> None:
    """Run the supervisor's checks (and drain its monitor) until ``until()``; bounded.
    ``seen`` collects (control reason, problems) after every check."""
    deadline = time.monotonic() + timeout
    while not until():
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met within {timeout} s")
        exchange.drain()
        problems = exchange.supervise_once()
        if seen is not None:
            seen.append((exchange._control.reason, problems))
        time.sleep(0.02)


def started_lines(caplog, name: str) -> int:
    return sum(1 for r in caplog.records if r.getMessage().startswith(f"started process {name!r}"))


def with_supervisor(cfg: ExchangeConfig, **keys: int) -> ExchangeConfig:
    return msgspec.structs.replace(cfg, supervisor=msgspec.structs.replace(cfg.supervisor, **keys))


def kill(child) -> None:
    os.kill(child.runner.pid, signal.SIGKILL)
    assert child.runner.join(10) is not None


def test_compiling_engine_shows_progress_and_is_not_judged_by_heartbeats(
        tmp_path: Path, caplog, monkeypatch, no_leftover_children) -> None:
    caplog.set_level(logging.INFO, logger="ringex.launcher")
    monkeypatch.setattr(launcher, "PROGRESS_EVERY_S", 0.1)
    heartbeat_s = 0.5
    cfg = make_config(tmp_path, heartbeat_ms=int(heartbeat_s * 1000))
    ex = GatedExchange(cfg)
    gate = ex.gate = tmp_path / "gate"
    errors: list[BaseException] = []

    def start() -> None:
        try:
            ex.start()
        except BaseException as e:  # noqa: BLE001 - reported by the test below
            errors.append(e)

    starter = threading.Thread(target=start)
    starter.start()
    try:
        # start() waits through the "compile", saying so, without giving up on the process
        deadline = time.monotonic() + 60
        wanted = "still waiting for process 'core': compiling the matching engine"
        while not any(r.getMessage().startswith(wanted) for r in caplog.records):
            assert starter.is_alive(), errors
            assert time.monotonic() < deadline, "no progress line while the engine compiled"
            time.sleep(0.02)
        gate.touch()
        starter.join(60)
        assert not starter.is_alive() and errors == []
        assert ex._control.accepting

        # A restart that compiles: starting, not dead, however long the compile holds.
        gate.unlink()
        first = ex._children[0]
        kill(first)
        seen: list = []
        supervise_until(ex, lambda: ex._children[0] is not first and ex._children[0].compiling, 60, seen)
        held_from = time.monotonic()
        # beyond two heartbeat timeouts, the grace after which heartbeats used to be judged
        supervise_until(ex, lambda: time.monotonic() - held_from > 3 * heartbeat_s, 30, seen)
        assert REASON_HEARTBEAT_LOST not in {reason for reason, _ in seen}
        reason, problems = seen[-1]
        assert reason == REASON_STARTING and not ex._control.accepting
        assert any("'core'" in p and "is compiling the matching engine" in p for p in problems), problems
        gate.touch()
        supervise_until(ex, lambda: ex._control.accepting, 60, seen)
        assert ex._children[0].restarts == 1 and started_lines(caplog, "core") == 2
    finally:
        gate.touch()
        starter.join(60)
        ex.stop()
    assert shm_leftovers(cfg.exchange.shm_prefix) == []


def test_restarts_are_a_rate_and_an_exhausted_budget_gives_the_process_up(
        tmp_path: Path, caplog, no_leftover_children) -> None:
    caplog.set_level(logging.INFO, logger="ringex.launcher")
    cfg = with_supervisor(make_config(tmp_path, processes="split"), max_restarts=1, restart_window_ms=60_000)
    clock = FakeClock()
    ex = Exchange(cfg, restart_clock=clock)
    ex.start()
    try:
        with attached(ex, cfg) as (reader, prod):
            def engine():
                return next(c for c in ex._children if c.name == "eng")

            def restarted(old) -> bool:
                return engine() is not old and engine().started and ex._control.accepting

            # 1: restarted (1 in the window)
            victim = engine()
            kill(victim)
            supervise_until(ex, lambda: restarted(victim), 120)
            # 2: the window moved on past the first restart: restarted again
            clock.now += 61
            victim = engine()
            kill(victim)
            supervise_until(ex, lambda: restarted(victim), 120)
            # 3: a second death within 60 s of the last restart: given up
            victim = engine()
            kill(victim)
            supervise_until(ex, lambda: bool(engine().given_up), 30)
            assert engine() is victim and not ex._control.accepting
            assert ex._control.reason == REASON_GIVEN_UP
            gave_up = [r.getMessage() for r in caplog.records if r.getMessage().startswith("giving up on process 'eng'")]
            assert len(gave_up) == 1 and "max_restarts = 1" in gave_up[0] and "refuses every order" in gave_up[0]
            line = ex.status().line()
            assert "NOT accepting" in line and "given up" in line and "eng" in line
            # never restarted again, however long it is supervised; the order is refused
            for _ in range(20):
                ex.supervise_once()
            assert engine() is victim and started_lines(caplog, "eng") == 3
            assert ex._control.reason == REASON_GIVEN_UP and not ex._control.accepting
            assert prod.offer(order(42, 1, 990))
            supervise_until(ex, lambda: reader.poll() >= 0 and any(c == 42 for _n, c, _r in reader.rejected_not_accepting),
                            30)
            assert (m.RejectReason.ExchangeNotAccepting in
                    [r for _n, c, r in reader.rejected_not_accepting if c == 42])
    finally:
        ex.stop()
    assert shm_leftovers(cfg.exchange.shm_prefix) == []


def test_another_engine_configuration_is_refused_before_anything_starts(
        tmp_path: Path, caplog, no_leftover_children) -> None:
    cfg = make_config(tmp_path)
    prefix = cfg.exchange.shm_prefix
    ex = Exchange(cfg)
    ex.start()
    ex.stop()
    engine_file = cfg.data_path() / ENGINE_FILE
    assert engine_file.exists()
    caplog.set_level(logging.INFO, logger="ringex.launcher")

    other = msgspec.structs.replace(cfg, engine=msgspec.structs.replace(cfg.engine, max_orders=4096))
    with pytest.raises(EngineStateError) as err:
        Exchange(other).start()
    assert str(engine_file) in str(err.value)
    assert f"max_orders = {cfg.engine.max_orders} there, 4096 configured" in str(err.value)
    assert started_lines(caplog, "core") == 0 and shm_leftovers(prefix) == []

    doc = json.loads(engine_file.read_text())
    doc["schema"] = "0" * 16
    engine_file.write_text(json.dumps(doc))
    with pytest.raises(EngineStateError) as err:
        Exchange(cfg).start()
    assert str(engine_file) in str(err.value) and f"schema {'0' * 16}, this build has" in str(err.value)
    assert started_lines(caplog, "core") == 0 and shm_leftovers(prefix) == []


@pytest.mark.parametrize("mismatch", ["engine", "schema"])
def test_ringex_run_reports_an_engine_state_error_and_exits_non_zero(tmp_path: Path, mismatch: str) -> None:
    prefix = f"rxsup{os.getpid()}{mismatch}"
    conf = tmp_path / "ringex.toml"
    conf.write_text(f'[exchange]\ndata_dir = "data"\nshm_prefix = "{prefix}"\n[engine]\nmax_orders = 4096\n')
    data = tmp_path / "data"
    data.mkdir()
    written = EngineConfig(max_orders=1024 if mismatch == "engine" else 4096)
    schema = m.SCHEMA.fingerprint if mismatch == "engine" else "0" * 16
    (data / ENGINE_FILE).write_text(json.dumps({"schema": schema, "engine": msgspec.to_builtins(written)}))
    r = subprocess.run([sys.executable, "-m", "ringex.tools.cli", "run", "--config", str(conf)],
                       capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"ringex run: {data / ENGINE_FILE}: " in r.stderr
    assert ("max_orders = 1024 there, 4096 configured" if mismatch == "engine"
            else f"schema {'0' * 16}") in r.stderr
    assert "Traceback" not in r.stderr and "started process" not in r.stderr
    assert shm_leftovers(prefix) == []


def test_an_engine_that_fails_every_start_is_given_up_not_restarted_forever(
        tmp_path: Path, caplog, no_leftover_children) -> None:
    caplog.set_level(logging.INFO, logger="ringex.launcher")
    cfg = with_supervisor(make_config(tmp_path, processes="split"), max_restarts=2, restart_window_ms=600_000)
    ex = Exchange(cfg)
    ex.start()
    try:
        # The data directory changes under the running exchange; the engine then dies.
        engine_file = cfg.data_path() / ENGINE_FILE
        doc = json.loads(engine_file.read_text())
        doc["schema"] = "0" * 16
        engine_file.write_text(json.dumps(doc))
        kill(next(c for c in ex._children if c.name == "eng"))
        # Each restart dies in on_start (EngineStateError); after two the process is given up.
        supervise_until(ex, lambda: any(c.given_up for c in ex._children), 120)
        for _ in range(20):
            ex.supervise_once()
        assert started_lines(caplog, "eng") == 3  # the first start and two restarts, no more
        eng = next(c for c in ex._children if c.name == "eng")
        assert not eng.runner.is_alive() and eng.runner.exitcode == 1
        assert ex._control.reason == REASON_GIVEN_UP and not ex._control.accepting
    finally:
        ex.stop()
    assert shm_leftovers(cfg.exchange.shm_prefix) == []
