"""The suite's leak check (``leakcheck.py``) catches each kind of leftover, names it, removes it,
and lets pass what is not a leak: a child that exits within the grace time, what a process
outside the test's tree owns, what existed before the test.

Each case is a small test file run by pytest itself (in this process, through ``pytester``)
with the same fixtures the suite uses."""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
import uuid
from pathlib import Path

import pytest

import leakcheck

pytest_plugins = ["pytester"]

TESTS_DIR = Path(__file__).resolve().parent
CONFTEST = "from leakcheck import _leak_marker, no_leaks, no_module_leaks  # noqa: F401\n"


@pytest.fixture
def run_inner(pytester, monkeypatch):
    """Run a test file under the leak check; returns the result and its text output."""
    pytester.syspathinsert(TESTS_DIR)
    pytester.makeconftest(CONFTEST)
    monkeypatch.setattr(leakcheck, "SETTLE_S", 1.0)  # every leaking case waits this long

    def run(source: str):
        pytester.makepyfile(test_inner=source)
        result = pytester.runpytest("-p", "no:cacheprovider", "-p", "no:randomly")
        return result, result.stdout.str()

    return run


def teardown_error(out: str, test: str) -> str:
    """The leak check's message at the teardown of ``test``."""
    section = out.split(f"ERROR at teardown of {test} ", 1)
    assert len(section) == 2, f"no teardown error for {test}:\n{out}"
    return section[1].split("\n", 1)[1].split("\n___", 1)[0]


def alive(pid: int) -> bool:
    st = leakcheck._stat(pid)
    return st is not None and st[0] not in "ZX"


def wait_for_file(path: Path, timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    while not path.exists() or not path.read_text():
        assert time.monotonic() < deadline, f"{path} not written in {timeout} s"
        time.sleep(0.02)
    return path.read_text()


def test_each_kind_of_leak_fails_its_test_names_it_and_is_removed(run_inner, tmp_path) -> None:
    shm = f"rxleak-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    pids = tmp_path / "pids"
    result, out = run_inner(f"""
import os, socket, subprocess, sys
import posix_ipc

KEEP = []  # what the tests leak stays referenced, as a forgotten object in a fixture would

def test_clean_before():
    pass

def test_leaks_shared_memory():
    posix_ipc.SharedMemory("/{shm}", posix_ipc.O_CREX, size=4096).close_fd()

def test_leaks_a_child_process():
    p = subprocess.Popen(["sleep", "60"])
    KEEP.append(p)
    open({str(pids)!r} + ".child", "w").write(str(p.pid))

def test_leaks_an_orphaned_grandchild():
    # its parent exits at once: the grandchild is no longer our descendant, only marked
    subprocess.run(["sh", "-c", "sleep 60 & echo $! > {pids}.orphan"], check=True)

def test_leaks_a_listening_tcp_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    KEEP.append(s)
    open({str(pids)!r} + ".tcp", "w").write(str(s.getsockname()[1]))

def test_leaks_a_bound_udp_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    KEEP.append(s)

def test_clean_after():
    pass
""")
    result.assert_outcomes(passed=7, errors=5)
    # one bad test does not fail the next: what leaked was removed before it ran
    assert "ERROR at teardown of test_clean" not in out

    msg = teardown_error(out, "test_leaks_shared_memory")
    assert f"/dev/shm/{shm}" in msg and "(removed now)" in msg
    assert not os.path.exists(f"/dev/shm/{shm}")

    child = int((tmp_path / "pids.child").read_text())
    assert f"processes: pid {child} (sleep 60)" in teardown_error(out, "test_leaks_a_child_process")
    orphan = int((tmp_path / "pids.orphan").read_text())
    assert f"processes: pid {orphan} (sleep 60)" in teardown_error(out, "test_leaks_an_orphaned_grandchild")
    deadline = time.monotonic() + 10
    while (alive(child) or alive(orphan)) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not alive(child) and not alive(orphan)

    port = int((tmp_path / "pids.tcp").read_text())
    assert f"tcp port {port} (pid {os.getpid()} fd " in teardown_error(out, "test_leaks_a_listening_tcp_port")
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), timeout=5):
        pass
    assert "listening ports: udp port " in teardown_error(out, "test_leaks_a_bound_udp_port")


def test_what_is_not_a_leak_passes(run_inner, tmp_path) -> None:
    """A child still exiting at the end of the test, multiprocessing's semaphores, objects that
    existed before the test, and what a process outside the test's tree holds (another test
    run on the host) are not leaks."""
    before = f"rxleak-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    foreign = f"rxleak-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    ready = tmp_path / "foreign.pid"
    Path(f"/dev/shm/{before}").write_bytes(b"")
    env = {k: v for k, v in os.environ.items() if k != leakcheck.MARKER}
    holder = (f"import mmap, os, posix_ipc, time; s = posix_ipc.SharedMemory('/{foreign}', posix_ipc.O_CREX, "
              f"size=4096); m = mmap.mmap(s.fd, 4096); s.close_fd(); "
              f"open({str(ready)!r}, 'w').write(str(os.getpid())); time.sleep(120)")
    # started from the inner test but detached (no marker, parent gone), as another run's would be
    detach = f"({sys.executable} -c \"{holder}\" > /dev/null 2>&1 &)"
    try:
        result, out = run_inner(f"""
import multiprocessing, subprocess, time
from pathlib import Path

KEEP = []

def test_child_exiting_within_the_grace_time():
    subprocess.Popen(["sleep", "0.3"])

def test_multiprocessing_semaphores_live_with_their_objects():
    KEEP.append(multiprocessing.get_context("spawn").Event())

def test_object_that_existed_before_is_left_alone():
    assert Path("/dev/shm/{before}").exists()

def test_shared_memory_mapped_by_a_process_outside_the_tree():
    subprocess.run(["sh", "-c", {detach!r}], env={env!r}, check=True)
    deadline = time.monotonic() + 60
    while not Path({str(ready)!r}).exists() or not Path({str(ready)!r}).read_text():
        assert time.monotonic() < deadline
        time.sleep(0.02)
""")
        result.assert_outcomes(passed=4)
        assert os.path.exists(f"/dev/shm/{before}") and os.path.exists(f"/dev/shm/{foreign}")
    finally:
        if ready.exists() and ready.read_text():
            os.kill(int(ready.read_text()), signal.SIGKILL)
        for name in (before, foreign):
            if os.path.exists(f"/dev/shm/{name}"):
                os.unlink(f"/dev/shm/{name}")


def test_a_module_fixture_that_leaks_fails_the_module(run_inner) -> None:
    result, out = run_inner("""
import subprocess
import pytest

@pytest.fixture(scope="module")
def server():
    return subprocess.Popen(["sleep", "60"])  # never stopped

def test_uses_it(server):
    pass

def test_again(server):
    pass
""")
    result.assert_outcomes(passed=2, errors=1)
    assert "this module left behind processes: pid " in teardown_error(out, "test_again")
