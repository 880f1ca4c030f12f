"""Consumer heartbeats: a supervisor tells dead consumers from slow ones."""

from __future__ import annotations

import os
import signal
import time

import psutil
import pytest

from ringex.ringbuffer.liveness import ConsumerState
from ringex.ringbuffer.ring import Ring
from test_ring_support import idle_consumer, ring_env, slow_consumer, wait_until  # noqa: F401

pytestmark = pytest.mark.slow

# Generous: a 2-core host under load can deschedule a healthy process for a few hundred ms.
STALE_NS = 1_000_000_000


def test_alive_slow_dead_and_hung_consumers(ring_env):
    cap = 64
    name = ring_env.name("hb")
    with Ring.create(name, slot_size=16, capacity=cap, consumers=3) as ring, \
            Ring.observe(name) as sup:
        prod = ring.producer()
        for i in range(3):
            assert sup.consumer_state(i, STALE_NS) is ConsumerState.ABSENT
        fast, fast_conn = ring_env.spawn(idle_consumer, name, 0, 10 * cap)
        slow, _ = ring_env.spawn(slow_consumer, name, 1, 10**9, 0.05)
        doomed, _ = ring_env.spawn(idle_consumer, name, 2, 10**9)
        wait_until(lambda: all(sup.consumer_info(i).pid for i in range(3)), 30, "attach")

        # fill: the slow consumer lags by most of the ring but keeps its heartbeat fresh
        sent = 0
        deadline = time.monotonic() + 30
        while sup.consumer_info(1).lag < cap // 2:
            if prod.offer(sent.to_bytes(16, "little")):
                sent += 1
            else:
                time.sleep(0.001)
            assert time.monotonic() < deadline
        wait_until(lambda: sup.consumer_info(0).lag == 0, 30, "fast consumer to catch up")
        assert sup.consumer_state(0, STALE_NS) is ConsumerState.ALIVE
        assert sup.consumer_state(1, STALE_NS) is ConsumerState.SLOW
        info = sup.consumer_info(1)
        assert info.pid == slow.pid and info.pid_alive and info.heartbeat_age_ns < STALE_NS

        # hung: stopped, so its heartbeat goes stale and its cursor stops
        os.kill(doomed.pid, signal.SIGSTOP)
        wait_until(lambda: psutil.Process(doomed.pid).status() == psutil.STATUS_STOPPED, 10,
                   "stop")
        sup.consumer_state(2, STALE_NS)  # the supervisor notes where its cursor stands
        time.sleep(STALE_NS / 1e9 * 1.5)
        assert sup.consumer_state(2, STALE_NS) is ConsumerState.DEAD
        while prod.offer(sent.to_bytes(16, "little")):  # top up: the slow one lags again
            sent += 1
        assert sup.consumer_info(1).lag >= cap // 2
        assert sup.consumer_state(1, STALE_NS) is ConsumerState.SLOW  # still slow, not dead
        os.kill(doomed.pid, signal.SIGCONT)
        wait_until(lambda: sup.consumer_state(2, STALE_NS) is ConsumerState.ALIVE, 10, "resume")

        # dead: SIGKILL; DEAD even before the parent reaps the zombie, and after
        os.kill(doomed.pid, signal.SIGKILL)
        wait_until(lambda: sup.consumer_state(2, STALE_NS) is ConsumerState.DEAD, 10, "death")
        doomed.join(10)
        assert sup.consumer_state(2, STALE_NS) is ConsumerState.DEAD
        assert not sup.consumer_info(2).pid_alive
        # the producer's own handle sees the same
        assert ring.consumer_state(2, STALE_NS) is ConsumerState.DEAD
        assert ring.consumer_state(1, STALE_NS) is ConsumerState.SLOW
        slow.kill()
        slow.join(10)
    fast.kill()
    fast.join(10)
