"""Agents, the composite agent and the runner in the caller's thread; idle strategies."""

from __future__ import annotations

import gc
import os
import threading

import pytest

import ringex.ringbuffer.idle as idle_mod
from ringex.ringbuffer.agent import Agent, AgentTermination, CompositeAgent
from ringex.ringbuffer.counters import CountersManager, CountersReader
from ringex.ringbuffer.idle import IDLE_NAMES, BackoffIdleStrategy, idle_strategy
from ringex.ringbuffer.runner import (
    AgentRunner,
    ErrorPolicy,
    RunnerConfig,
    available_cpus,
    validate_cpus,
)
from test_agent_kit import (
    WAIT_S,
    CountingAgent,
    FileAgent,
    read_lines,
    sleeping,
    unique_name,
)


class Recorder(Agent):
    def __init__(self, name: str, log: list, work: int = 1, fail: str = "") -> None:
        self.role_name = name
        self.log = log
        self.work = work
        self.fail = fail

    def on_start(self) -> None:
        self.log.append((self.role_name, "start"))
        if self.fail == "start":
            raise RuntimeError(f"{self.role_name} start")

    def do_work(self) -> int:
        self.log.append((self.role_name, "work"))
        if self.fail == "work":
            raise RuntimeError(f"{self.role_name} work")
        return self.work

    def on_close(self) -> None:
        self.log.append((self.role_name, "close"))
        if self.fail == "close":
            raise RuntimeError(f"{self.role_name} close")


@pytest.fixture
def name():
    return unique_name("agent")


def cfg(**kw) -> RunnerConfig:
    kw.setdefault("idle_strategy", sleeping(0.5))
    return RunnerConfig(**kw)


# ------------------------------------------------------------------- agent and composite


def test_agent_requires_do_work():
    class NoWork(Agent):
        pass

    with pytest.raises(TypeError):
        NoWork()  # type: ignore[abstract]


def test_composite_sums_work_and_runs_lifecycle_in_order():
    log: list = []
    comp = CompositeAgent([Recorder("a", log, 2), Recorder("b", log, 0), Recorder("c", log, 3)])
    assert comp.role_name == "[a,b,c]"
    comp.on_start()
    assert comp.do_work() == 5
    comp.on_close()
    assert log == [
        ("a", "start"), ("b", "start"), ("c", "start"),
        ("a", "work"), ("b", "work"), ("c", "work"),
        ("a", "close"), ("b", "close"), ("c", "close"),
    ]


def test_composite_on_close_runs_for_all_even_when_one_raises():
    log: list = []
    comp = CompositeAgent([Recorder("a", log, fail="close"), Recorder("b", log)])
    comp.on_start()
    with pytest.raises(RuntimeError, match="a close"):
        comp.on_close()
    assert ("b", "close") in log

    log.clear()
    comp = CompositeAgent([Recorder("a", log, fail="close"), Recorder("b", log, fail="close")])
    with pytest.raises(ExceptionGroup) as info:
        comp.on_close()
    assert len(info.value.exceptions) == 2


def test_composite_keeps_other_agents_working_when_one_raises():
    log: list = []
    comp = CompositeAgent([Recorder("a", log, fail="work"), Recorder("b", log)])
    with pytest.raises(RuntimeError, match="a work"):
        comp.do_work()
    assert ("b", "work") in log


def test_composite_closes_only_agents_whose_start_was_attempted():
    log: list = []
    comp = CompositeAgent(
        [Recorder("a", log), Recorder("b", log, fail="start"), Recorder("c", log)]
    )
    with pytest.raises(RuntimeError, match="b start"):
        comp.on_start()
    comp.on_close()
    assert [e for e in log if e[1] == "close"] == [("a", "close"), ("b", "close")]
    assert ("c", "start") not in log


def test_composite_needs_agents():
    with pytest.raises(ValueError):
        CompositeAgent([])


# ------------------------------------------------------------------------- runner here


def test_run_counts_duty_cycles_and_closes(tmp_path, name):
    agent = FileAgent(tmp_path / "log", max_cycles=40)
    runner = AgentRunner(agent, cfg(counters_name=name))
    assert runner.counters_name == name
    assert runner.run() == 0  # AgentTermination is a clean stop
    assert read_lines(tmp_path / "log")[-1] == "closed"
    assert runner.standard_counters is not None
    # The runner owned the object, so it unlinked it on the way out.
    assert not os.path.exists(f"/dev/shm/{name}")
    with pytest.raises(ValueError):
        runner.standard_counters.duty_cycles.get()  # released with the mapping


def test_standard_counters_are_maintained(name):
    with CountersManager(name, capacity=16) as mgr:
        agent = CountingAgent(max_cycles=40)
        runner = AgentRunner(agent, cfg(), counters=mgr)
        assert runner.run() == 0
        std = runner.standard_counters
        assert std.duty_cycles.get() == 40
        assert std.work_count.get() == 20
        assert std.idle_cycles.get() == 20
        assert std.errors.get() == 0
        with CountersReader(name) as reader:
            labels = [label for _, label, _ in reader]
            assert labels == [
                "counting: duty cycles", "counting: work count", "counting: idle cycles",
                "counting: errors", "counting: events",
            ]
            assert reader.value("counting: events") == 20


def test_stop_from_another_thread_ends_run(tmp_path):
    agent = FileAgent(tmp_path / "log")
    runner = AgentRunner(agent, cfg(counters=False))
    timer = threading.Timer(0.2, runner.stop)
    timer.start()
    try:
        assert runner.run() == 0
    finally:
        timer.cancel()
    assert read_lines(tmp_path / "log")[-1] == "closed"
    assert runner.counters_name is None


def test_do_work_error_with_stop_policy(tmp_path, name):
    seen: list[BaseException] = []
    with CountersManager(name, capacity=8) as mgr:
        agent = FileAgent(tmp_path / "log", fail_every=3, max_cycles=100)
        runner = AgentRunner(
            agent, cfg(error_policy=ErrorPolicy.STOP), counters=mgr, error_handler=seen.append
        )
        assert runner.run() == 1
        assert runner.standard_counters.errors.get() == 1
        assert runner.standard_counters.duty_cycles.get() == 2
    assert agent.cycle == 3
    assert read_lines(tmp_path / "log")[-1] == "closed"
    assert len(seen) == 1 and "cycle 3 fails" in str(seen[0])


def test_do_work_error_with_continue_policy(tmp_path, name):
    with CountersManager(name, capacity=8) as mgr:
        agent = FileAgent(tmp_path / "log", fail_every=3, max_cycles=30)
        runner = AgentRunner(
            agent, cfg(error_policy="continue"), counters=mgr, error_handler=lambda e: None
        )
        assert runner.run() == 0
        assert runner.standard_counters.errors.get() == 10
        assert runner.error_count == 10
    assert read_lines(tmp_path / "log")[-1] == "closed"


def test_composite_errors_are_counted_per_agent(name):
    log: list = []

    class Stopper(Agent):
        role_name = "stopper"
        n = 0

        def do_work(self) -> int:
            self.n += 1
            if self.n >= 5:
                raise AgentTermination()
            return 0

    comp = CompositeAgent(
        [Recorder("a", log, fail="work"), Recorder("b", log, fail="work"), Stopper()]
    )
    with CountersManager(name, capacity=8) as mgr:
        runner = AgentRunner(comp, cfg(error_policy="continue"), counters=mgr,
                             error_handler=lambda e: None)
        assert runner.run() == 0  # the termination inside the group still stops cleanly
        assert runner.standard_counters.errors.get() == 10
    assert log.count(("a", "close")) == 1 and log.count(("b", "close")) == 1


def test_on_start_error_still_closes_and_skips_work(tmp_path):
    log: list = []
    runner = AgentRunner(Recorder("a", log, fail="start"), cfg(counters=False),
                         error_handler=lambda e: None)
    assert runner.run() == 1
    assert log == [("a", "start"), ("a", "close")]
    assert runner.error_count == 1


def test_on_close_error_is_reported(tmp_path):
    class Once(Recorder):
        def do_work(self) -> int:
            raise AgentTermination()

    log: list = []
    runner = AgentRunner(Once("a", log, fail="close"), cfg(counters=False),
                         error_handler=lambda e: None)
    assert runner.run() == 1
    assert runner.error_count == 1


class GcProbe(Agent):
    role_name = "gc-probe"

    def __init__(self) -> None:
        self.enabled_in_loop: list[bool] = []

    def do_work(self) -> int:
        self.enabled_in_loop.append(gc.isenabled())
        if len(self.enabled_in_loop) >= 3:
            raise AgentTermination()
        return 0


def test_gc_is_off_in_the_loop_and_restored_after():
    assert gc.isenabled()
    probe = GcProbe()
    AgentRunner(probe, cfg(counters=False)).run()
    assert probe.enabled_in_loop == [False, False, False]
    assert gc.isenabled()
    assert gc.get_freeze_count() == 0


def test_gc_opt_out():
    probe = GcProbe()
    AgentRunner(probe, cfg(counters=False, disable_gc=False)).run()
    assert probe.enabled_in_loop == [True, True, True]


def test_signal_handlers_are_restored_after_run():
    import signal

    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    AgentRunner(GcProbe(), cfg(counters=False)).run()
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before


def test_run_in_a_worker_thread_can_be_stopped(tmp_path):
    agent = FileAgent(tmp_path / "log")
    runner = AgentRunner(agent, cfg(counters=False))
    result: list[int] = []
    t = threading.Thread(target=lambda: result.append(runner.run()))
    t.start()
    try:
        assert runner.wait_started(WAIT_S)
        runner.stop()
    finally:
        runner.stop()
        t.join(WAIT_S)
    assert not t.is_alive() and result == [0]
    assert read_lines(tmp_path / "log")[-1] == "closed"


# ------------------------------------------------------------------------------ CPUs


def test_invalid_cpu_is_rejected_clearly():
    bad = max(available_cpus()) + 1000
    with pytest.raises(ValueError, match=rf"cannot pin to CPU\(s\) \[{bad}\].*available CPUs"):
        AgentRunner(GcProbe(), cfg(cpus=(bad,)))
    with pytest.raises(ValueError, match="at least one CPU"):
        validate_cpus([])
    with pytest.raises(ValueError, match="integers"):
        validate_cpus(["0"])  # type: ignore[list-item]
    assert validate_cpus([available_cpus()[0]]) == (available_cpus()[0],)


def test_run_in_a_thread_pins_that_thread_only():
    cpu = available_cpus()[-1]
    before = os.sched_getaffinity(0)
    seen: list[set[int]] = []

    class Probe(GcProbe):
        def do_work(self) -> int:
            seen.append(os.sched_getaffinity(threading.get_native_id()))
            raise AgentTermination()

    runner = AgentRunner(Probe(), cfg(counters=False, cpus=(cpu,)))
    t = threading.Thread(target=runner.run)
    t.start()
    t.join(WAIT_S)
    assert seen == [{cpu}]
    assert os.sched_getaffinity(0) == before


# ---------------------------------------------------------------------- idle strategies


def test_backoff_progresses_spin_yield_park_with_bounded_sleep(monkeypatch):
    calls: list = []
    monkeypatch.setattr(idle_mod.os, "sched_yield", lambda: calls.append("yield"))
    monkeypatch.setattr(idle_mod.time, "sleep", lambda s: calls.append(round(s * 1e9)))
    b = BackoffIdleStrategy(max_spins=2, max_yields=2, min_park_ns=1_000, max_park_ns=4_000)
    for _ in range(2):
        b.idle(0)
    assert calls == []  # spinning
    for _ in range(2):
        b.idle(0)
    assert calls == ["yield", "yield"]
    for _ in range(5):
        b.idle(0)
    assert calls[2:] == [1_000, 2_000, 4_000, 4_000, 4_000]  # doubling, capped
    assert b.park_ns == 4_000
    b.idle(1)  # work resets to spinning
    calls.clear()
    b.idle(0)
    assert calls == [] and b.park_ns == 1_000


def test_runner_hands_work_counts_to_the_idle_strategy():
    counts: list[int] = []

    class Recording:
        name = "recording"

        def idle(self, work_count: int) -> None:
            counts.append(work_count)

        def reset(self) -> None:
            counts.append(-1)

    AgentRunner(CountingAgent(max_cycles=6), RunnerConfig(idle_strategy=Recording(),
                                                         counters_name=unique_name("idle"))
                ).run()
    assert counts == [-1, 0, 1, 0, 1, 0, 1]


def test_idle_strategy_by_name(tmp_path):
    runner = AgentRunner(FileAgent(tmp_path / "log", max_cycles=3),
                         RunnerConfig(idle_strategy="sleep", counters=False))
    assert runner.run() == 0
    with pytest.raises(ValueError, match="unknown idle strategy"):
        AgentRunner(GcProbe(), RunnerConfig(idle_strategy="nope", counters=False)).run()


def test_every_idle_name_builds_the_strategy_of_that_name():
    assert [idle_strategy(name).name for name in IDLE_NAMES] == list(IDLE_NAMES)
