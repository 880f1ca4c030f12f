"""The agent runner: the duty-cycle loop, in the caller's thread or in its own process.

Modelled on Agrona's ``AgentRunner``.  The loop calls ``do_work`` and hands the count to
an idle strategy; it maintains the standard per-agent counters in shared memory (duty
cycles, work count, idle cycles, errors) for ``ringex stat`` to read from outside.

Stopping is cooperative: SIGTERM/SIGINT only set a flag, checked between duty cycles, so
a signal never cuts a ``do_work`` in half (a half-published batch is worse than a late
stop).  ``on_close`` always runs, also when ``on_start`` or ``do_work`` raised.
"""

from __future__ import annotations

import dataclasses
import enum
import gc
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple

import psutil

from ringex.ringbuffer.agent import Agent, AgentTermination
from ringex.ringbuffer.counters import (
    TYPE_DUTY_CYCLES,
    TYPE_ERRORS,
    TYPE_IDLE_CYCLES,
    TYPE_WORK_COUNT,
    Counter,
    CountersManager,
    CountersReader,
    counters_name,
    unlink_counters,
)
from ringex.ringbuffer.hiccup import HiccupRecorder, hiccup_name, unlink_hiccups
from ringex.ringbuffer.doorbell import Doorbell
from ringex.ringbuffer.idle import IdleName, IdleStrategy, idle_strategy
from ringex.ringbuffer.parent_death import ParentGoneError, die_with_parent

__all__ = [
    "AgentRunner",
    "ErrorPolicy",
    "RunnerConfig",
    "StandardCounters",
    "available_cpus",
    "validate_cpus",
]

log = logging.getLogger("ringex.agent")

_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
# a child's log lines name its process (``ringex-<role>``)
CHILD_LOG_FORMAT = "%(asctime)s %(levelname)s %(processName)s %(name)s: %(message)s"


class ErrorPolicy(str, enum.Enum):
    """What the runner does when ``do_work`` raises (the error is always counted and logged)."""

    CONTINUE = "continue"  # keep cycling: for edges where one bad message must not stop the stage
    STOP = "stop"  # close the agent and exit non-zero: for deterministic state we must not corrupt


@dataclass(frozen=True)
class RunnerConfig:
    """How an agent runs; plain data, so it travels to a child process with the agent."""

    idle_strategy: IdleName | IdleStrategy = "backoff"
    cpus: tuple[int, ...] | None = None  # None: leave affinity alone
    error_policy: ErrorPolicy | str = ErrorPolicy.STOP
    disable_gc: bool = True  # gc.disable() + gc.freeze() after on_start (DESIGN.md)
    counters: bool = True  # own a counters object with the standard counters
    hiccups: bool = True  # and a hiccup meter beside it (ringbuffer/hiccup.py)
    # Park on the agent's doorbell sources (its consumers' bells, its sockets) when the idle
    # strategy parks, so that a publish or a socket's input ends the park (ringbuffer/doorbell.py).
    doorbell: bool = True
    counters_name: str | None = None  # None: ringex-counters-<role>-<pid>-<random>
    counters_capacity: int = 256
    handle_signals: bool = True  # SIGTERM/SIGINT stop after the current duty cycle
    # A spawned child starts with logging unconfigured (only warnings reach stderr); a level
    # here gives it a stderr handler at that level, so its start-up lines (compiling the
    # engine, recovery) show beside the parent's. None: leave the child's logging alone.
    log_level: int | None = None


class StandardCounters(NamedTuple):
    duty_cycles: Counter
    work_count: Counter
    idle_cycles: Counter
    errors: Counter

    @classmethod
    def allocate(cls, counters: CountersManager, role_name: str) -> StandardCounters:
        return cls(
            counters.allocate(f"{role_name}: duty cycles", TYPE_DUTY_CYCLES),
            counters.allocate(f"{role_name}: work count", TYPE_WORK_COUNT),
            counters.allocate(f"{role_name}: idle cycles", TYPE_IDLE_CYCLES),
            counters.allocate(f"{role_name}: errors", TYPE_ERRORS),
        )


def available_cpus() -> list[int]:
    """The CPUs this process may run on (its own affinity, which children inherit)."""
    return sorted(psutil.Process().cpu_affinity())


def validate_cpus(cpus: Iterable[int]) -> tuple[int, ...]:
    """Check a CPU list against the CPUs available; a clear ValueError otherwise."""
    wanted = tuple(cpus)
    if not wanted:
        raise ValueError("cpus must name at least one CPU (or be None to leave affinity alone)")
    if not all(isinstance(c, int) and not isinstance(c, bool) for c in wanted):
        raise ValueError(f"cpus must be integers, got {wanted!r}")
    allowed = available_cpus()
    bad = sorted(set(wanted) - set(allowed))
    if bad:
        raise ValueError(
            f"cannot pin to CPU(s) {bad}: not available to this process; "
            f"available CPUs are {allowed}"
        )
    return tuple(sorted(set(wanted)))


def _pin(cpus: tuple[int, ...]) -> None:
    if threading.current_thread() is threading.main_thread():
        psutil.Process().cpu_affinity(list(cpus))
    else:
        # psutil pins the process's main thread; a runner in another thread pins itself.
        os.sched_setaffinity(threading.get_native_id(), cpus)


def _leaf_count(e: BaseException) -> int:
    if isinstance(e, BaseExceptionGroup):
        return sum(_leaf_count(x) for x in e.exceptions)
    return 1


class AgentRunner:
    """Runs one agent (or a ``CompositeAgent``) until stopped.

    ``run()`` runs it in the caller's thread and blocks; ``start_process()`` runs it in a
    spawned child process (the agent and config are pickled into it) and ``stop()`` /
    ``join()`` / ``close()`` control the child from the parent.
    """

    def __init__(
        self,
        agent: Agent,
        config: RunnerConfig | None = None,
        *,
        counters: CountersManager | None = None,
        error_handler: Callable[[BaseException], None] | None = None,
    ) -> None:
        self.agent = agent
        self.config = config or RunnerConfig()
        self.error_policy = ErrorPolicy(self.config.error_policy)
        self.cpus = None if self.config.cpus is None else validate_cpus(self.config.cpus)
        self.role_name: str = getattr(agent, "role_name", type(agent).__name__)
        self._external_counters = counters
        if counters is not None:
            self.counters_name: str | None = counters.name
        elif self.config.counters:
            self.counters_name = self.config.counters_name or counters_name(
                f"{self.role_name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            )
        else:
            self.counters_name = None
        self._error_handler = error_handler
        self.standard_counters: StandardCounters | None = None
        self._hiccups: HiccupRecorder | None = None
        self.error_count = 0
        self.stop_signal: int | None = None
        self._running = False
        self._stop_requested = False
        self._started: Any = threading.Event()
        self._unblock_signals = False
        self._process: multiprocessing.process.BaseProcess | None = None

    # ----------------------------------------------------------------- in this thread

    def run(self) -> int:
        """Run the agent here until stopped; 0 after a requested stop, 1 after a failure."""
        self._running = not self._stop_requested
        previous = self._install_signal_handlers()
        owned: CountersManager | None = None
        try:
            # Set-up errors (pinning, counters) propagate: on_start never ran, so no on_close.
            if self.cpus is not None:
                _pin(self.cpus)
            counters = self._external_counters
            if counters is None and self.counters_name is not None:
                owned = counters = CountersManager(
                    self.counters_name, self.config.counters_capacity
                )
            if counters is not None:
                self.standard_counters = StandardCounters.allocate(counters, self.role_name)
                if self.config.hiccups:
                    self._hiccups = HiccupRecorder(hiccup_name(counters.name))
            hook = getattr(self.agent, "on_counters", None)
            if hook is not None:
                hook(counters)
            idle = self._idle_strategy()
            return self._run_agent(idle)
        finally:
            self._running = False
            self._restore_signal_handlers(previous)
            if owned is not None:
                owned.close(unlink=True)
            if self._hiccups is not None:
                self._hiccups.close()  # the runner made it, whoever owns the counters
                self._hiccups = None

    def _run_agent(self, idle: IdleStrategy) -> int:
        failed = False
        gc_was_enabled = gc.isenabled()
        gc_frozen = False
        try:
            try:
                self.agent.on_start()
            except Exception as e:  # noqa: BLE001 - counted; on_close still runs below
                self._record_error(e, "on_start")
                failed = True
            else:
                if self.config.disable_gc:
                    # Start-up garbage goes to the permanent generation; the loop allocates
                    # nothing that needs collecting, and a collection is a latency spike.
                    gc.disable()
                    gc.freeze()
                    gc_frozen = True
                attach = getattr(idle, "attach", None)
                sources = getattr(self.agent, "doorbell_sources", None)
                if attach is not None and self.config.doorbell and sources is not None and sources():
                    attach(Doorbell(sources))
                self._started.set()
                failed = self._loop(idle)
        finally:
            try:
                self.agent.on_close()
            except Exception as e:  # noqa: BLE001 - an on_close error is reported, not fatal
                self._record_error(e, "on_close")
                failed = True
            finally:
                if gc_frozen:
                    gc.unfreeze()
                    if gc_was_enabled:
                        gc.enable()
        return 1 if failed else 0

    def _loop(self, idle: IdleStrategy) -> bool:
        """The duty cycle; returns True when it stopped because of an error."""
        do_work = self.agent.do_work
        idle_fn = idle.idle
        std = self.standard_counters
        stop_on_error = self.error_policy is ErrorPolicy.STOP
        if std is not None:
            # Index the shared words directly: a method call per counter per cycle would
            # cost more than the duty cycle of an idle agent.
            values = std.duty_cycles._longs
            duty_i = std.duty_cycles._index
            work_i = std.work_count._index
            idle_i = std.idle_cycles._index
        hiccups = self._hiccups
        clock = time.perf_counter_ns
        started = ended = 0  # the previous do_work call's start and end
        worked = False  # and whether it did some work
        parks = hasattr(idle, "parked_ns")  # a test's own strategy may not say
        while self._running:
            if hiccups is not None:
                # how much later than the park asked this cycle starts (jHiccup's measure),
                # and how long the previous do_work ran
                now = clock()
                if ended:
                    hiccups.record(now - ended - (idle.parked_ns if parks else 0), ended - started, worked)
                started = now
            try:
                work = do_work()
            except AgentTermination:
                return False
            except Exception as e:  # noqa: BLE001 - the error policy decides
                terminate = False
                if isinstance(e, BaseExceptionGroup):
                    term, rest = e.split(AgentTermination)
                    terminate = term is not None
                    if rest is not None:
                        self._record_error(rest, "do_work")
                        if stop_on_error:
                            return True
                else:
                    self._record_error(e, "do_work")
                    if stop_on_error:
                        return True
                if terminate:
                    return False
                work = 0
            if hiccups is not None:
                ended = clock()
                worked = work > 0
            if std is not None:
                values[duty_i] += 1
                if work > 0:
                    values[work_i] += work
                else:
                    values[idle_i] += 1
            idle_fn(work)
        return False

    def _idle_strategy(self) -> IdleStrategy:
        spec = self.config.idle_strategy
        strategy = idle_strategy(spec) if isinstance(spec, str) else spec
        strategy.reset()
        return strategy

    def _record_error(self, e: BaseException, where: str) -> None:
        n = _leaf_count(e)
        self.error_count += n
        if self.standard_counters is not None:
            self.standard_counters.errors.increment(n)
        if self._error_handler is not None:
            self._error_handler(e)
        elif self.error_count <= 10 or self.error_count & (self.error_count - 1) == 0:
            # Throttled to the first ten and then powers of two: an agent that fails every
            # cycle under the continue policy must not drown the log (the counter has all).
            log.error(
                "%s: %s raised (error %d)", self.role_name, where, self.error_count,
                exc_info=(type(e), e, e.__traceback__),
            )

    def _install_signal_handlers(self) -> dict[int, Any] | None:
        if not self.config.handle_signals:
            previous = None
        elif threading.current_thread() is not threading.main_thread():
            previous = None  # Python delivers signals to the main thread only
        else:
            previous = {s: signal.signal(s, self._on_signal) for s in _STOP_SIGNALS}
        if self._unblock_signals:
            # Blocked by the parent across spawn so that a stop sent early is not lost.
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
        return previous

    def _restore_signal_handlers(self, previous: dict[int, Any] | None) -> None:
        if previous:
            for s, handler in previous.items():
                signal.signal(s, handler)

    def _on_signal(self, signum: int, frame: object) -> None:
        # Only a flag: the loop checks it between duty cycles.
        self.stop_signal = signum
        self._stop_requested = True
        self._running = False

    # ------------------------------------------------------------ in a child process

    def start_process(self) -> None:
        """Spawn a child process that runs the agent (pinned if the config says so)."""
        if self._process is not None:
            raise RuntimeError(f"{self.role_name}: runner already started a process")
        if self._external_counters is not None:
            raise RuntimeError("a runner given a CountersManager can only run() in-process")
        ctx = multiprocessing.get_context("spawn")
        self._started = ctx.Event()
        process = ctx.Process(
            target=_child_main,
            args=(self.agent, self.config, self.counters_name, self._error_handler,
                  self._started, os.getpid()),
            name=f"ringex-{self.role_name}",
            # daemon: a parent that exits normally terminates it; the child itself asks to
            # be terminated however the parent ends (parent_death), SIGKILL included.
            daemon=True,
        )
        # The child inherits the blocked mask and unblocks once its handlers are in place.
        old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
        try:
            process.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        self._process = process

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    @property
    def exitcode(self) -> int | None:
        return None if self._process is None else self._process.exitcode

    def is_alive(self) -> bool:
        if self._process is None:
            return self._running
        return self._process.is_alive()

    def wait_started(self, timeout: float) -> bool:
        """Wait until ``on_start`` returned; False on timeout or when the child died."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return self._started.is_set()
            if self._started.wait(min(0.05, remaining)):
                return True
            if self._process is not None and not self._process.is_alive():
                return self._started.is_set()

    def open_counters(self, timeout: float = 10.0) -> CountersReader:
        """Attach read-only to the runner's counters once it has started."""
        if self.counters_name is None:
            raise RuntimeError(f"{self.role_name}: runner has no counters")
        if not self.wait_started(timeout):
            raise TimeoutError(f"{self.role_name}: agent did not start within {timeout} s")
        return CountersReader(self.counters_name)

    def stop(self) -> None:
        """Ask the agent to stop after its current duty cycle (SIGTERM to a child)."""
        self._stop_requested = True
        self._running = False
        if self._process is not None and self._process.is_alive():
            try:
                os.kill(self._process.pid, signal.SIGTERM)  # type: ignore[arg-type]
            except ProcessLookupError:
                pass

    def join(self, timeout: float | None = None) -> int | None:
        """Wait for the child; its exit code, or None while it still runs."""
        if self._process is None:
            raise RuntimeError(f"{self.role_name}: no process started")
        self._process.join(timeout)
        if self._process.exitcode is None:
            return None
        self._reap_counters()
        return self._process.exitcode

    def kill(self) -> None:
        """SIGKILL the child: no on_close; the parent removes its counters object."""
        if self._process is not None and self._process.is_alive():
            self._process.kill()

    def close(self, timeout: float = 5.0) -> int | None:
        """Stop, wait up to ``timeout``, then kill; always leaves no child and no counters."""
        if self._process is None:
            self.stop()
            return None
        self.stop()
        code = self.join(timeout)
        if code is None:
            log.warning("%s: did not stop within %.1f s; killing it", self.role_name, timeout)
            self.kill()
            code = self.join(timeout)
        return code

    def _reap_counters(self) -> None:
        # A child killed before its finally block leaves its counters object behind.
        if self.counters_name is not None:
            unlink_counters(self.counters_name)
            unlink_hiccups(hiccup_name(self.counters_name))

    def __enter__(self) -> AgentRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _child_main(
    agent: Agent,
    config: RunnerConfig,
    name: str | None,
    error_handler: Callable[[BaseException], None] | None,
    started: Any,
    parent_pid: int,
) -> None:
    try:
        die_with_parent(parent_pid)
    except ParentGoneError as exc:
        print(f"ringex child: {exc}; not starting", file=sys.stderr)
        sys.exit(1)
    if config.log_level is not None:
        logging.basicConfig(level=config.log_level, format=CHILD_LOG_FORMAT)
    runner = AgentRunner(
        agent, dataclasses.replace(config, counters_name=name), error_handler=error_handler
    )
    runner._started = started
    runner._unblock_signals = True
    sys.exit(runner.run())
