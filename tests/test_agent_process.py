"""The agent runner in real child processes: signals, errors, pinning, live counters."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest

from ringex.ringbuffer.agent import CompositeAgent
from ringex.ringbuffer.runner import AgentRunner, ErrorPolicy, RunnerConfig, available_cpus
from test_agent_kit import (
    WAIT_S,
    CountingAgent,
    FileAgent,
    read_lines,
    sleeping,
    unique_name,
    wait_for,
)


@contextmanager
def child(agent, **config) -> Iterator[AgentRunner]:
    """A started child runner that is always stopped, killed if need be, and cleaned up."""
    config.setdefault("idle_strategy", sleeping(1.0))
    config.setdefault("counters_name", unique_name("proc"))
    runner = AgentRunner(agent, RunnerConfig(**config))
    runner.start_process()
    try:
        yield runner
    finally:
        runner.close(timeout=WAIT_S)
    # close() promises no child and no counters object (the suite's leak check removes them
    # if not, so nothing here may remove them first)
    assert not runner.is_alive()
    assert not os.path.exists(f"/dev/shm/{runner.counters_name}")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_after_the_current_duty_cycle(tmp_path: Path, signum: int):
    log, release = tmp_path / "log", tmp_path / "release"
    with child(FileAgent(log, hold_until=release)) as runner:
        assert runner.wait_started(WAIT_S)
        wait_for(lambda: "begin 1" in read_lines(log), what="the first cycle")
        os.kill(runner.pid, signum)  # cycle 1 is held open: the signal lands inside it
        release.touch()
        assert runner.join(WAIT_S) == 0
    # The cycle the signal interrupted ran to its end, and no later one began.
    assert read_lines(log) == [f"started {runner.pid}", "begin 1", "end 1", "closed"]


def test_stop_sent_right_after_spawn_is_not_lost(tmp_path: Path):
    log = tmp_path / "log"
    with child(FileAgent(log)) as runner:
        runner.stop()  # before the child has even imported ringex
        assert runner.join(WAIT_S) == 0
    assert read_lines(log)[-1] == "closed"


def test_do_work_error_stops_closes_and_counts(tmp_path: Path):
    log, trigger = tmp_path / "log", tmp_path / "fail-now"
    agent = FileAgent(log, role_name="failing", fail_when=trigger)
    with child(agent, error_policy=ErrorPolicy.STOP) as runner:
        with runner.open_counters(WAIT_S) as reader:
            assert reader.value("failing: errors") == 0
            wait_for(lambda: reader.value("failing: duty cycles") > 0, what="a duty cycle")
            trigger.touch()
            assert runner.join(WAIT_S) == 1  # the policy stopped it, non-zero exit
            # The mapping outlives the child: the final values are still readable.
            assert reader.value("failing: errors") == 1
            assert reader.value("failing: duty cycles") > 0
    assert read_lines(log)[-1] == "closed"


def test_do_work_errors_with_continue_policy_keep_running(tmp_path: Path):
    log = tmp_path / "log"
    agent = FileAgent(log, role_name="flaky", fail_every=2)
    with child(agent, error_policy="continue") as runner:
        with runner.open_counters(WAIT_S) as reader:
            wait_for(lambda: reader.value("flaky: errors") >= 3, what="errors to be counted")
            assert runner.is_alive()
            runner.stop()
            assert runner.join(WAIT_S) == 0
    assert read_lines(log)[-1] == "closed"


def test_child_is_pinned_to_the_configured_cpu(tmp_path: Path):
    cpu = available_cpus()[-1]
    with child(FileAgent(tmp_path / "log"), cpus=(cpu,)) as runner:
        assert runner.wait_started(WAIT_S)
        assert psutil.Process(runner.pid).cpu_affinity() == [cpu]
    assert psutil.Process().cpu_affinity() == available_cpus()  # the parent is untouched


def test_invalid_cpu_is_rejected_before_spawning(tmp_path: Path):
    bad = max(available_cpus()) + 64
    with pytest.raises(ValueError, match=rf"\[{bad}\].*available CPUs are"):
        AgentRunner(FileAgent(tmp_path / "log"), RunnerConfig(cpus=(bad,)))


def test_composite_agent_in_one_child(tmp_path: Path):
    a, b = tmp_path / "a", tmp_path / "b"
    comp = CompositeAgent(
        [FileAgent(a, role_name="a"), CountingAgent(role_name="b-count"),
         FileAgent(b, role_name="b")],
        role_name="gateway+sequencer",
    )
    with child(comp) as runner:
        with runner.open_counters(WAIT_S) as reader:
            wait_for(lambda: reader.value("b-count: events") > 3, what="composite work")
            assert reader.value("gateway+sequencer: work count") > 3
            runner.stop()
            assert runner.join(WAIT_S) == 0
    assert read_lines(a)[-1] == "closed" and read_lines(b)[-1] == "closed"
    assert read_lines(a)[0] == read_lines(b)[0]  # same process


def test_counters_are_read_live_while_the_child_runs(tmp_path: Path):
    with child(CountingAgent(role_name="live")) as runner:
        with runner.open_counters(WAIT_S) as reader:
            assert reader.owner_pid == runner.pid
            first = reader.value("live: duty cycles")
            wait_for(lambda: reader.value("live: duty cycles") > first + 10, what="progress")
            wait_for(lambda: reader.value("live: events") > 5, what="agent's own counter")
            assert reader.value("live: idle cycles") > 0


def test_killed_child_leaves_no_counters_object(tmp_path: Path):
    with child(FileAgent(tmp_path / "log")) as runner:
        assert runner.wait_started(WAIT_S)
        assert os.path.exists(f"/dev/shm/{runner.counters_name}")
        runner.kill()
        assert runner.join(WAIT_S) == -signal.SIGKILL
        assert not os.path.exists(f"/dev/shm/{runner.counters_name}")  # the parent reaped it


def test_failing_on_start_in_child_exits_nonzero(tmp_path: Path):
    agent = FileAgent(tmp_path / "log", role_name="bad")
    agent.path = str(tmp_path / "missing-dir" / "log")  # on_start's open() fails
    with child(agent) as runner:
        assert not runner.wait_started(WAIT_S)
        assert runner.join(WAIT_S) == 1
