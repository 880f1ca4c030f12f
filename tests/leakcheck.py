"""The suite's leak check: no test may leave shared memory, processes or listening ports behind.

A leftover ring, a spinning agent process or a bound port outlives the test that made it and
changes what the next tests see (a name already taken, a CPU busy, a port in use), and it
hides the bug it is evidence of: a shutdown that does not clean up. So ``no_leaks`` (autouse,
registered by ``conftest.py``) takes a snapshot before each test and after it, and fails the
test (an error at teardown) naming everything the test left:

- shared memory: entries of ``/dev/shm`` that appeared during the test (rings, control
  blocks, counters), except those some process outside this test's process tree still maps
  (another test run on the same host owns those) and multiprocessing's semaphores (below);
- processes: descendants of the test process, and processes that inherited this session's
  marker in their environment (an agent orphaned when its launcher was killed is no longer
  our descendant, but still carries it), that are alive and did not exist before;
- listening ports: TCP sockets in LISTEN and bound UDP sockets that this process or one of
  those processes holds and did not hold before.

multiprocessing's own semaphores (``sem.mp-*``, behind every ``Event`` and ``Lock`` of the
spawn context, one ``AgentRunner`` holds five) are not judged: each lives exactly as long as
the Python object that owns it, and pytest still holds a test's objects (its fixture values,
the log records it captured) until after the teardown; the resource tracker unlinks any left
at exit. ringex itself makes no semaphores.

Before judging, it collects garbage (an unreachable ring or socket closes itself) and gives
exiting children a bounded time to finish; the clean case costs a listing of ``/dev/shm``, a
scan of ``/proc`` and of this process's descriptors, under 2 ms a test. After a failure it
removes what leaked (kills the processes, unlinks the shared memory, closes the sockets) so
that one bad test does not fail the ones after it. A module-scoped check does the same around
each module, for what module-scoped fixtures start.

Linux only, like ringex itself.
"""

from __future__ import annotations

import gc
import multiprocessing.forkserver
import multiprocessing.resource_tracker
import os
import signal
import time
from dataclasses import dataclass

import psutil
import pytest

SHM_DIR = "/dev/shm"
#: Set to the test process's pid for the session; every process started from it inherits it.
MARKER = "RINGEX_TEST_SESSION"
#: How long exiting children (and the shared memory they remove on exit) get before a leak is
#: judged; a clean test never waits.
SETTLE_S = 3.0

#: multiprocessing names its semaphores ``/mp-<random>``, which glibc keeps as ``sem.mp-<random>``.
MP_SEMAPHORE = "sem.mp-"
_TCP_LISTEN = "0A"


@dataclass(frozen=True)
class Proc:
    """A process, identified by pid and start time (so a reused pid is a different process)."""

    pid: int
    start: int  # clock ticks after boot, /proc/<pid>/stat field 22

    def describe(self) -> str:
        try:
            with open(f"/proc/{self.pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            cmd = "?"
        return f"pid {self.pid} ({cmd[:160]})"


@dataclass(frozen=True)
class Socket:
    pid: int
    fd: int
    inode: str


@dataclass(frozen=True)
class Snapshot:
    shm: frozenset[str]
    procs: frozenset[Proc]
    sockets: frozenset[Socket]


def _stat(pid: int) -> tuple[str, int] | None:
    """(state letter, start time) of a process, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            text = f.read().decode(errors="replace")
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()  # the command name may hold spaces and ')'
    return fields[0], int(fields[19])


# The kernel lists each thread's children only with CONFIG_PROC_CHILDREN; psutil finds them
# without it, by reading every process's parent (slower).
_CHILDREN_FILES = os.path.exists(f"/proc/self/task/{os.getpid()}/children")


def _children(pid: int) -> list[int]:
    if not _CHILDREN_FILES:
        try:
            return [c.pid for c in psutil.Process(pid).children()]
        except psutil.Error:
            return []
    out: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out.extend(int(c) for c in f.read().split())
        except OSError:
            pass
    return out


def _descendants(pid: int) -> set[int]:
    seen: set[int] = set()
    todo = _children(pid)
    while todo:
        child = todo.pop()
        if child not in seen:
            seen.add(child)
            todo.extend(_children(child))
    return seen


def _marked(marker: bytes) -> set[int]:
    """Pids whose environment holds ``marker`` (``NAME=value``), whoever their parent is now."""
    out = set()
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as f:
                env = f.read()
        except OSError:
            continue
        if env.startswith(marker + b"\0") or b"\0" + marker + b"\0" in env:
            out.add(int(name))
    return out


def _infrastructure() -> set[int]:
    """multiprocessing's helper processes: started once by the first test that needs them and
    shared by every later one, so they belong to the session, not to that test."""
    pids = {getattr(multiprocessing.resource_tracker._resource_tracker, "_pid", None),
            getattr(multiprocessing.forkserver._forkserver, "_forkserver_pid", None)}
    return {p for p in pids if p}


def live_processes(marker: bytes) -> set[Proc]:
    """This process's live descendants and the live processes carrying ``marker``."""
    me = os.getpid()
    out = set()
    for pid in (_descendants(me) | _marked(marker)) - _infrastructure() - {me}:
        st = _stat(pid)
        if st is not None and st[0] not in "ZX":  # a zombie has exited; its parent reaps it
            out.add(Proc(pid, st[1]))
    return out


def socket_fds(pids) -> set[Socket]:
    out = set()
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                out.add(Socket(pid, int(fd), target[8:-1]))
    return out


def listening(inodes: set[str]) -> dict[str, str]:
    """Of ``inodes``, those of listening TCP or bound UDP sockets, described by address."""
    out = {}
    for proto in ("tcp", "tcp6", "udp", "udp6"):
        try:
            with open(f"/proc/net/{proto}") as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            cols = row.split()
            if len(cols) < 10 or cols[9] not in inodes:
                continue
            addr, port = cols[1].rsplit(":", 1)
            if (cols[3] == _TCP_LISTEN) if proto.startswith("tcp") else int(port, 16) != 0:
                out[cols[9]] = f"{proto} port {int(port, 16)}"
    return out


def shm_entries() -> frozenset[str]:
    return frozenset(n for n in os.listdir(SHM_DIR) if not n.startswith(MP_SEMAPHORE))


def snapshot(marker: bytes) -> Snapshot:
    procs = live_processes(marker)
    return Snapshot(shm_entries(), frozenset(procs), frozenset(socket_fds({os.getpid()} | {p.pid for p in procs})))


def _foreign(names: set[str], ours: set[int]) -> set[str]:
    """Of the shared-memory ``names``, those owned by another user or mapped by a process
    outside ``ours``: a concurrent test run or exchange on this host made them, not this test."""
    uid = os.geteuid()
    foreign = set()
    for n in names:
        try:
            if os.stat(os.path.join(SHM_DIR, n)).st_uid != uid:
                foreign.add(n)
        except OSError:
            foreign.add(n)  # gone meanwhile: not left behind
    paths = {os.path.join(SHM_DIR, n): n for n in names - foreign}
    if not paths:
        return foreign
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) in ours:
            continue
        try:
            with open(f"/proc/{pid}/maps") as f:
                maps = f.read()
        except OSError:
            continue
        for path, n in list(paths.items()):
            if path in maps:
                foreign.add(n)
                del paths[path]
        if not paths:
            break
    return foreign


@dataclass
class Leaks:
    shm: list[str]
    procs: list[Proc]
    ports: dict[Socket, str]

    def __bool__(self) -> bool:
        return bool(self.shm or self.procs or self.ports)

    def describe(self) -> str:
        parts = []
        if self.shm:
            parts.append("shared memory: " + ", ".join(f"{SHM_DIR}/{n}" for n in self.shm))
        if self.procs:
            parts.append("processes: " + ", ".join(p.describe() for p in self.procs))
        if self.ports:
            parts.append("listening ports: " + ", ".join(
                f"{what} (pid {s.pid} fd {s.fd})" for s, what in self.ports.items()))
        return "; ".join(parts)


def find_leaks(before: Snapshot, marker: bytes) -> Leaks:
    after = snapshot(marker)
    procs = sorted(after.procs - before.procs, key=lambda p: p.pid)
    new_sockets = after.sockets - before.sockets
    found = listening({s.inode for s in new_sockets}) if new_sockets else {}
    ports = {s: found[s.inode] for s in sorted(new_sockets, key=lambda s: (s.pid, s.fd)) if s.inode in found}
    shm = set(after.shm - before.shm)
    if shm:
        shm -= _foreign(shm, {os.getpid()} | {p.pid for p in after.procs})
    return Leaks(sorted(shm), procs, ports)


def settle(before: Snapshot, marker: bytes) -> Leaks:
    """The leaks that remain after a garbage collection and up to ``SETTLE_S`` seconds for
    exiting processes; returns at once when there are none."""
    leaks = find_leaks(before, marker)
    if not leaks:
        return leaks
    gc.collect()  # a dropped Ring or socket in a reference cycle closes when collected
    deadline = time.monotonic() + SETTLE_S
    pause = 0.01
    while True:
        leaks = find_leaks(before, marker)
        if not leaks or time.monotonic() >= deadline:
            return leaks
        time.sleep(pause)
        pause = min(pause * 2, 0.2)


def clean_up(leaks: Leaks) -> None:
    """Remove what a test left, so that the next test starts clean."""
    me = os.getpid()
    for p in leaks.procs:
        st = _stat(p.pid)
        if st is not None and st[1] == p.start:  # still that process, not a reuse of its pid
            try:
                os.kill(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + SETTLE_S
    while time.monotonic() < deadline and any(
            (st := _stat(p.pid)) is not None and st[1] == p.start and st[0] not in "ZX" for p in leaks.procs):
        time.sleep(0.02)
    for n in leaks.shm:
        try:
            os.unlink(os.path.join(SHM_DIR, n))
        except FileNotFoundError:
            pass
    for s in leaks.ports:
        if s.pid == me:
            # Point the descriptor at /dev/null rather than closing it: the socket object that
            # owns the number still closes it later, and must not close someone else's file.
            null = os.open(os.devnull, os.O_RDWR)
            try:
                os.dup2(null, s.fd)
            finally:
                os.close(null)


def marker_value() -> bytes:
    return f"{MARKER}={os.environ[MARKER]}".encode()


@pytest.fixture(scope="session", autouse=True)
def _leak_marker():
    """Mark every process this session starts, through the environment it inherits."""
    old = os.environ.get(MARKER)
    os.environ[MARKER] = str(os.getpid())
    yield
    if old is None:
        del os.environ[MARKER]
    else:
        os.environ[MARKER] = old


def _check(what: str):
    marker = marker_value()
    before = snapshot(marker)
    yield
    leaks = settle(before, marker)
    if leaks:
        message = f"{what} left behind {leaks.describe()} (removed now)"
        clean_up(leaks)
        pytest.fail(message, pytrace=False)


@pytest.fixture(scope="module", autouse=True)
def no_module_leaks(_leak_marker):
    """What module-scoped fixtures start must be gone when the module is done."""
    yield from _check("this module")


@pytest.fixture(autouse=True)
def no_leaks(_leak_marker, no_module_leaks):
    """Each test leaves no shared memory, process or listening port behind."""
    yield from _check("this test")
