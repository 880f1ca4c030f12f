"""A gateway with no connection reads its rings on an interval, not on every publish
(gateways/gateway_agent.py, ``IDLE_READ_NS``): in process, over real rings and a real
listening socket, with the agent's duty cycle called by hand."""

from __future__ import annotations

import socket
import time

import numpy as np
import pytest

from ringex.gateways import gateway_agent
from ringex.gateways.gateway_config import GatewayConfig, SessionConfig
from ringex.gateways.sbe_gateway import SbeGatewayAgent
from ringex.ringbuffer.consumer import Consumer

from gateway_kit import accepted_slot, inprocess_sbe_gateway
from test_ring_support import RingEnv, ring_env  # noqa: F401

SESSION = 7
CAPACITY = 64
INTERVAL_S = 0.5


def accepted(k: int) -> np.ndarray:
    return accepted_slot(SESSION, k)


@pytest.fixture
def gateway(ring_env: RingEnv, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setattr(gateway_agent, "IDLE_READ_NS", int(INTERVAL_S * 1e9))
    cfg = GatewayConfig(name="g", listen="127.0.0.1:0",
                        session=[SessionConfig(id=SESSION, credentials="pw", accounts=[1])])
    with inprocess_sbe_gateway([ring_env.name(tag) for tag in ("in", "out", "rej")], tmp_path / "g", cfg,
                               CAPACITY) as g:
        yield g


def stored(agent: SbeGatewayAgent) -> int:
    """Messages in the session's store (what it would retransmit)."""
    return agent.sessions[SESSION].store.next_seq - 1


def publish(out, first: int, count: int) -> None:
    assert out.offer_batch(np.stack([accepted(k) for k in range(first, first + count)])) == count


def test_without_a_connection_a_publish_does_not_wake_it_and_it_reads_on_its_interval(gateway) -> None:
    agent, out = gateway
    agent.do_work()  # the first cycle reads (nothing yet), then the interval runs
    assert not any(isinstance(s, Consumer) for s in agent.doorbell_sources())  # only its listening socket's
    publish(out, 1, 3)
    agent.do_work()
    assert stored(agent) == 0  # not read: no one to answer
    deadline = time.monotonic() + INTERVAL_S + 5.0
    while stored(agent) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
        agent.do_work()
    assert stored(agent) == 3  # the interval passed: read and stored for a later retransmission


def test_a_ring_a_quarter_full_is_read_at_once(gateway) -> None:
    agent, out = gateway
    agent.do_work()
    publish(out, 1, CAPACITY // 4)
    agent.do_work()
    assert stored(agent) == 0  # a quarter: not yet
    publish(out, CAPACITY // 4 + 1, 1)
    agent.do_work()
    assert stored(agent) == CAPACITY // 4 + 1  # past a quarter: drained, whatever the interval


def test_with_a_connection_every_publish_is_read_in_the_next_cycle(gateway) -> None:
    agent, out = gateway
    agent.do_work()
    with socket.create_connection(agent.address, timeout=5.0):
        deadline = time.monotonic() + 5.0
        while not any(isinstance(s, Consumer) for s in agent.doorbell_sources()):
            assert time.monotonic() < deadline, "the connection was never accepted"
            time.sleep(0.001)
            agent.do_work()
        publish(out, 1, 2)
        agent.do_work()
        assert stored(agent) == 2
