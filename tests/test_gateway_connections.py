"""A gateway's duty cycle looks only at the connections with something to do (output queued,
a flag set: ``Connection.watch``), not at every connection it holds: in process, over real
rings and real sockets, with the agent's duty cycle called by hand. What must not be lost
by that: output the socket did not take in one cycle is sent in the next ones with nothing
new queued, and among connections readable together none is starved."""

from __future__ import annotations

import select
import socket
import threading
import time

import numpy as np
import pytest

from ringex.gateways.client import Client
from ringex.gateways.gateway_config import GatewayConfig, SessionConfig
from ringex.gateways.sbe_gateway import SbeGatewayAgent

from gateway_kit import accepted_slot, inprocess_sbe_gateway
from test_ring_support import RingEnv, ring_env  # noqa: F401

SESSIONS = (7, 8, 9)
CAPACITY = 1024


@pytest.fixture
def gateway(ring_env: RingEnv, tmp_path):  # noqa: F811
    cfg = GatewayConfig(name="g", listen="127.0.0.1:0", max_backlog_bytes=64 << 20,
                        session=[SessionConfig(id=s, credentials="pw", accounts=[1]) for s in SESSIONS])
    with inprocess_sbe_gateway([ring_env.name(tag) for tag in ("in", "out", "rej")], tmp_path / "g", cfg,
                               CAPACITY) as g:
        yield g


def connect(agent: SbeGatewayAgent, session: int, **kw) -> Client:
    """A client negotiated and established, the gateway's duty cycle run meanwhile on a thread
    (the blocking client waits for its answers); only this test's thread runs it afterwards."""
    done = threading.Event()

    def cycles() -> None:
        while not done.is_set():
            agent.do_work()
            time.sleep(0.001)

    t = threading.Thread(target=cycles, daemon=True)
    t.start()
    try:
        host, port = agent.address
        return Client.connect(host, port, session, "pw", timeout=10.0, **kw)
    finally:
        done.set()
        t.join(timeout=10)
        assert not t.is_alive()


def test_output_the_socket_did_not_take_is_sent_with_nothing_new_queued(gateway) -> None:
    agent, out = gateway
    client = connect(agent, 7, receive_buffer=4096)  # a reader that lets the server's buffers fill
    (conn,) = agent._conns
    conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)  # and a sender's that does not grow
    try:
        n = 0
        for _ in range(4):  # ~200 KB of reports, more than the two sockets' buffers hold
            assert out.offer_batch(np.stack([accepted_slot(7, n + k + 1) for k in range(CAPACITY // 2)])) == CAPACITY // 2
            n += CAPACITY // 2
            agent.do_work()
        agent.do_work()
        assert agent.sessions[7].store.next_seq > n  # every report stored (the precondition below too)
        assert conn.backlog, "the socket took everything: nothing is tested"
        got: list[int] = []
        deadline = time.monotonic() + 30
        while len(got) < n and time.monotonic() < deadline:
            agent.do_work()  # nothing new queued: only what is left of the output
            try:
                while True:
                    got.append(client.receive(timeout=0.002)["clOrdId"])
            except TimeoutError:
                pass
        assert got == list(range(1, n + 1))
    finally:
        client.close_socket()


def test_connections_readable_together_are_each_read(gateway) -> None:
    agent, _ = gateway
    clients = [connect(agent, s) for s in SESSIONS]
    try:
        for round_ in range(3):
            for i, c in enumerate(clients):
                c.new_order(clOrdId=10 * round_ + i + 1, account=1, instrument=1, side="Buy", ordType="Limit",
                            price=100, qty=1, timeInForce="GTC")
            deadline = time.monotonic() + 10
            while len(select.select([c.sock for c in agent._conns], [], [], 0.05)[0]) < len(clients):
                assert time.monotonic() < deadline, "an order did not reach the gateway's socket"
            before = agent._in.position
            agent.do_work()
            assert agent._in.position - before == len(clients)  # one cycle read all three, published them
    finally:
        for c in clients:
            c.close_socket()
