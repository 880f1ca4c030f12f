"""``ringex stat``: live counters of another process, read-only, with rates."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import posix_ipc
import psutil
import pytest

from ringex.ringbuffer.counters import CountersManager, CountersReader
from ringex.ringbuffer.runner import AgentRunner, RunnerConfig
from ringex.tools import stat
from test_agent_kit import WAIT_S, CountingAgent, cleanup_shm, sleeping, unique_name, wait_for


def run_stat(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ringex.tools.stat", *args],
        capture_output=True, text=True, timeout=60,
    )


@pytest.fixture
def live_child():
    name = unique_name("stat")
    runner = AgentRunner(
        CountingAgent(role_name="stat-live"),
        RunnerConfig(idle_strategy=sleeping(1.0), counters_name=name),
    )
    runner.start_process()
    try:
        with runner.open_counters(WAIT_S) as reader:
            wait_for(lambda: reader.value("stat-live: duty cycles") > 0, what="first cycles")
        yield runner
    finally:
        runner.close(timeout=WAIT_S)
    assert not os.path.exists(f"/dev/shm/{name}")  # close() removed it (else the leak check does)


def test_stat_module_prints_live_counters_of_a_child(live_child):
    result = run_stat(live_child.counters_name, "--count", "2", "--interval", "0.1")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.count("ringex stat") == 2  # two refreshes, then exit
    assert f"== {live_child.counters_name}  pid {live_child.pid}" in out
    for label in ("duty cycles", "work count", "idle cycles", "errors", "events"):
        assert f"stat-live: {label}" in out
    # The second refresh has a rate (the first has none: "-"). How many cycles the child ran
    # in 0.1 s is the scheduler's business; test_stat_main_computes_rates_and_never_writes
    # checks the figure itself.
    second = out.split("ringex stat")[2]
    duty = next(line for line in second.splitlines() if "stat-live: duty cycles" in line)
    assert float(duty.split()[-1].replace(",", "")) >= 0


def test_stat_discovers_counters_by_prefix(live_child):
    result = run_stat("--count", "1", "--interval", "0.1")
    assert result.returncode == 0, result.stderr
    assert live_child.counters_name in result.stdout


def test_stat_missing_name_is_a_clear_error():
    missing = unique_name("missing")
    result = run_stat(missing, "--count", "1")
    assert result.returncode == 1
    assert "no counters object" in result.stderr and missing in result.stderr


def test_stat_rejects_bad_options():
    assert stat.main(["--interval", "0", "--count", "1"]) == 2
    assert stat.main(["--count", "0"]) == 2


def test_stat_main_computes_rates_and_never_writes(capsys, monkeypatch):
    name = unique_name("statmain")
    with CountersManager(name, capacity=4) as mgr:
        ticks = mgr.allocate("ticker: ticks")
        still = mgr.allocate("ticker: still")
        still.set(123)
        real_sleep = stat.time.sleep

        def tick(seconds: float) -> None:
            # the counter moves while stat waits between refreshes, every time (a thread
            # ticking beside it might not get the CPU in time)
            ticks.increment(7)
            real_sleep(seconds)

        monkeypatch.setattr(stat.time, "sleep", tick)
        assert stat.main([name, "--count", "3", "--interval", "0.05"]) == 0
        monkeypatch.undo()
        with CountersReader(name) as reader:
            before = hashlib.sha256(reader.buffer).hexdigest()
            assert stat.main([f"/dev/shm/{name}", "--count", "2", "--interval", "0.01"]) == 0
            assert hashlib.sha256(reader.buffer).hexdigest() == before  # stat wrote nothing
    out = capsys.readouterr().out
    refreshes = out.split("ringex stat")[1:]
    assert len(refreshes) == 5
    first_still = next(x for x in refreshes[0].splitlines() if "ticker: still" in x)
    assert first_still.split()[-2:] == ["123", "-"]  # no rate before a second sample
    later_ticks = next(x for x in refreshes[2].splitlines() if "ticker: ticks" in x)
    assert later_ticks.split()[-2] == "14"  # 7 in each of the two waits before the third refresh
    assert float(later_ticks.split()[-1].replace(",", "")) > 0
    later_still = next(x for x in refreshes[2].splitlines() if "ticker: still" in x)
    assert later_still.split()[-1] == "0.0"


def test_stat_skips_garbage_objects_in_discovery(capsys):
    name = unique_name("garbage")
    shm = posix_ipc.SharedMemory("/" + name, posix_ipc.O_CREX, size=4096)
    try:
        shm.close_fd()
        assert stat.main(["--count", "2", "--interval", "0.01"]) == 0
    finally:
        cleanup_shm(name)
    err = capsys.readouterr().err
    assert err.count(f"skipping {name}") == 1  # warned once, not every refresh
    assert "not a ringex counters object" in err


def test_stat_shows_an_exited_owner(capsys):
    name = unique_name("exited")
    mgr = CountersManager(name, capacity=1)
    try:
        mgr.allocate("gone: value").set(5)
        view = stat.StatView([name], sys.stdout, sys.stderr)
        view.readers[name] = CountersReader(name)
        view.readers[name].owner_pid = 2**22 + 12345  # beyond pid_max: never alive
        view.refresh()
        view.close()
    finally:
        mgr.close()
    out = capsys.readouterr().out
    assert "(exited)" in out and "gone: value" in out


def test_stat_shows_an_owner_whose_pid_was_reused_as_exited(capsys):
    name = unique_name("reused")
    mgr = CountersManager(name, capacity=1)
    try:
        mgr.allocate("reused: value").set(5)
        view = stat.StatView([name], sys.stdout, sys.stderr)
        view.readers[name] = CountersReader(name)
        assert view.readers[name].owner_pid == os.getpid()
        # Created a minute before this process started: the pid's owner then is gone.
        started_ns = int(psutil.Process().create_time() * 1e9)
        view.readers[name].created_ns = started_ns - 60_000_000_000
        view.refresh()
        view.close()
    finally:
        mgr.close()
    out = capsys.readouterr().out
    assert f"pid {os.getpid()} (exited)" in out and "reused: value" in out
