"""Children do not outlive the launcher (ringbuffer/parent_death.py), and a data directory
that a live process holds is refused at start (tools/launcher.py, journal_lock.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from ringex.engine.storage.data_dir import journal_dir
from ringex.engine.storage.journal_lock import JournalLock, journal_holder
from ringex.ringbuffer.liveness import pid_alive
from pipeline_kit import shm_leftovers, small_venue_toml, start_ringex_run, stop_ringex_run

PROCESSES = """
[[process]]
name = "seq"
agents = ["sequencer"]
[[process]]
name = "eng"
agents = ["engine"]
"""


def config(tmp_path: Path, prefix: str) -> Path:
    conf = tmp_path / "ringex.toml"
    conf.write_text(small_venue_toml(prefix, PROCESSES))
    return conf


def start_run(conf: Path) -> tuple[subprocess.Popen, dict[str, int], list[str]]:
    proc, pids, lines = start_ringex_run(conf)
    assert any("Ctrl-C" in ln for ln in lines), "".join(lines)
    return proc, pids, lines


def wait_gone(pids: list[int], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    alive = list(pids)
    while alive and time.monotonic() < deadline:
        time.sleep(0.1)
        alive = [p for p in alive if pid_alive(p)]
    return alive


def test_children_exit_when_the_launcher_is_killed_and_the_next_run_starts(tmp_path: Path) -> None:
    prefix = f"rxpd{os.getpid()}"
    conf = config(tmp_path, prefix)
    data = tmp_path / "data"
    proc, pids, _ = start_run(conf)
    second = None
    try:
        assert set(pids) == {"seq", "eng"}
        assert journal_holder(journal_dir(data)) == pids["eng"]  # the engine holds the journal
        proc.kill()  # SIGKILL: the launcher stops nothing itself
        proc.communicate(timeout=10)
        assert wait_gone(list(pids.values()), 60.0) == [], "children outlived their launcher"
        assert journal_holder(journal_dir(data)) is None
        # The killed run left its rings behind; the next run on the same data directory
        # resumes them (tools/ring_record.py) and starts.
        second, pids2, lines = start_run(conf)
        assert any("resumed the rings a crashed run left" in ln for ln in lines), "".join(lines)
        out = stop_ringex_run(second)
        assert second.returncode == 0 and "stopped cleanly" in out, out
        second = None
    finally:
        for p in (proc, second):
            if p is not None and p.poll() is None:
                p.kill()
                p.communicate(timeout=10)
        for pid in pids.values():
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)
    assert wait_gone(list(pids.values()), 10.0) == []
    assert shm_leftovers(prefix) == []


def test_a_data_directory_held_by_a_live_process_is_refused_at_once(tmp_path: Path) -> None:
    prefix = f"rxpdh{os.getpid()}"
    conf = config(tmp_path, prefix)
    jdir = journal_dir(tmp_path / "data")
    jdir.mkdir(parents=True)
    lock = JournalLock(jdir)  # this test process plays the other exchange's engine
    try:
        assert journal_holder(jdir) == os.getpid()
        t0 = time.monotonic()
        r = subprocess.run([sys.executable, "-m", "ringex.tools.cli", "run", "--config", str(conf)],
                           capture_output=True, text=True, timeout=120, cwd=tmp_path)
        took = time.monotonic() - t0
    finally:
        lock.release()
    assert r.returncode == 1, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ringex run: ")
    assert f"is in use by process {os.getpid()}: " in lines[0] and "pytest" in lines[0]
    assert "Traceback" not in r.stderr and "started process" not in r.stdout + r.stderr
    assert shm_leftovers(prefix) == []  # refused before any ring was created
    assert took < 60  # at once: no wait for a start that cannot happen
    assert journal_holder(jdir) is None


def test_a_second_writer_is_told_who_holds_the_journal(tmp_path: Path) -> None:
    from ringex.engine.storage.journal_format import JournalLockedError
    lock = JournalLock(tmp_path)
    try:
        child = subprocess.run(
            [sys.executable, "-c", "import sys; from pathlib import Path; "
             "from ringex.engine.storage.journal_lock import JournalLock; JournalLock(Path(sys.argv[1]))",
             str(tmp_path)], capture_output=True, text=True, timeout=60)
        assert child.returncode != 0
        assert f"is open by another writer (process {os.getpid()}: " in child.stderr
        with pytest.raises(JournalLockedError, match=f"process {os.getpid()}"):
            JournalLock(tmp_path)  # flock locks are per open file: this process too is refused
    finally:
        lock.release()
    assert journal_holder(tmp_path) is None
    JournalLock(tmp_path).release()  # free again


GRANDCHILD = """
import os, signal, sys, time
from ringex.ringbuffer.parent_death import ParentGoneError, die_with_parent
parent = int(sys.argv[1])
try:
    die_with_parent(parent)
except ParentGoneError:
    print("gone", flush=True)
    sys.exit(3)
signal.signal(signal.SIGTERM, lambda *a: (print("terminated", flush=True), sys.exit(0)))
print("ready", flush=True)
time.sleep(60)
"""

MIDDLE = """
import subprocess, sys, time, os
child = subprocess.Popen([sys.executable, "-c", sys.argv[1], str(os.getpid() + int(sys.argv[2]))],
                         stdout=open(sys.argv[3], "w"))
print(child.pid, flush=True)
time.sleep(60)
"""


@pytest.mark.parametrize("wrong_parent", [0, 1])
def test_die_with_parent(tmp_path: Path, wrong_parent: int) -> None:
    """A middle process starts a child that asks to die with it; SIGKILL of the middle
    process terminates the child. A child told the wrong parent pid refuses to start."""
    out = tmp_path / "child.out"
    middle = subprocess.Popen([sys.executable, "-c", MIDDLE, GRANDCHILD, str(wrong_parent), str(out)],
                              stdout=subprocess.PIPE, text=True)
    child_pid = None
    try:
        child_pid = int(middle.stdout.readline())
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not out.read_text().strip():
            time.sleep(0.05)
        if wrong_parent:
            assert out.read_text().split() == ["gone"]
            return
        assert out.read_text().split() == ["ready"]
        middle.kill()
        middle.communicate(timeout=10)
        assert wait_gone([child_pid], 30.0) == []
        assert out.read_text().split() == ["ready", "terminated"]
    finally:
        if middle.poll() is None:
            middle.kill()
            middle.communicate(timeout=10)
        if child_pid is not None and psutil.pid_exists(child_pid) and pid_alive(child_pid):
            os.kill(child_pid, signal.SIGKILL)
