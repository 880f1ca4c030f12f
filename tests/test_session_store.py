"""The binary gateway's per-session store (gateways/session_store.py): the server flow's
records, their CRC (gateways/outbound.py computes it in compiled code, equal to zlib's), a
torn tail cut away at open, a new identity by rename, the client's applied count, and
what a restarted gateway needs to skip events it already stored."""

from __future__ import annotations

import os
import zlib

import numpy as np
import pytest

from ringex.engine.wire import messages as m
from ringex.gateways.outbound import crc32
from ringex.gateways.session_store import (
    FLOW_HEADER,
    RECORD,
    SOURCE_GATEWAY,
    SOURCE_OUTPUT,
    SOURCE_REJECT,
    SessionStore,
    StoreError,
)


def accepted(cl: int) -> bytes:
    return m.OrderAccepted.encode(clOrdId=cl, side="Buy", ordType="Limit", timeInForce="GTC")


def slots(*messages: bytes) -> np.ndarray:
    rows = np.zeros((len(messages), m.SLOT_SIZE), np.uint8)
    for i, msg in enumerate(messages):
        rows[i, :len(msg)] = np.frombuffer(msg, np.uint8)
    return rows


def test_the_compiled_crc_is_zlibs():
    rng = np.random.default_rng(7)
    for n in (0, 1, 3, 64, 1000):
        b = rng.integers(0, 256, n, dtype=np.uint8)
        assert crc32(b, 0, n) == zlib.crc32(b.tobytes())
    b = rng.integers(0, 256, 64, dtype=np.uint8)
    for start in range(9):  # every start and length around the eight-byte steps
        for end in range(start, 40):
            assert crc32(b, start, end) == zlib.crc32(b[start:end].tobytes()), (start, end)


def test_messages_come_back_by_number_after_a_reopen(tmp_path):
    s = SessionStore(tmp_path, 7)
    s.reset(1, 2, 99, 5)
    assert s.next_seq == 1 and s.next_in == 1 and s.inbound_start == (99, 5)
    assert s.append(accepted(1)) == 1
    region = slots(accepted(2), m.BookAdd.encode(), accepted(3))
    sizes = np.array([m.OrderAccepted.size, m.OrderAccepted.size], np.int64)
    frames = s.append_events(region, np.array([0, 2]), sizes, np.array([40, 42]), SOURCE_OUTPUT, 1234)
    assert bytes(frames[6:6 + m.OrderAccepted.size]) == accepted(2)  # SOFH framed
    assert int.from_bytes(bytes(frames[:4]), "big") == 6 + m.OrderAccepted.size
    s.next_in = 9
    s.close()
    again = SessionStore(tmp_path, 7)
    assert again.uuid == (1, 2) and again.next_seq == 4 and again.next_in == 9
    assert again.read(1, 3) == [accepted(1), accepted(2), accepted(3)]
    assert again.read(2, 1) == [accepted(2)]
    assert again.stored_through(SOURCE_OUTPUT, 1234) == 42
    assert again.stored_through(SOURCE_OUTPUT, 999) == -1  # another incarnation of the ring
    assert again.stored_through(SOURCE_REJECT, 1234) == -1
    with pytest.raises(ValueError):
        again.read(3, 2)
    again.close()


def test_a_torn_tail_is_cut_away_and_the_flow_stays_a_prefix(tmp_path):
    s = SessionStore(tmp_path, 1)
    s.reset(5, 5)
    for cl in range(1, 4):
        s.append(accepted(cl), SOURCE_OUTPUT, 77, cl)
    s.close()
    path = tmp_path / "session-1.flow"
    size = path.stat().st_size
    with open(path, "r+b") as fh:
        fh.truncate(size - 10)  # the last record cut short by a kill
    again = SessionStore(tmp_path, 1)
    assert again.next_seq == 3 and again.truncated_bytes == RECORD.size + m.OrderAccepted.size - 10
    assert again.stored_through(SOURCE_OUTPUT, 77) == 2  # event 3 will be stored again, once
    assert again.append(accepted(3), SOURCE_OUTPUT, 77, 3) == 3
    again.close()
    # a flipped byte in the middle: everything from that record on is cut
    with open(path, "r+b") as fh:
        fh.seek(FLOW_HEADER.size + RECORD.size + 5)
        fh.write(b"\xff")
    third = SessionStore(tmp_path, 1)
    assert third.next_seq == 1
    third.close()


def test_a_new_identity_starts_an_empty_flow_and_a_fresh_count(tmp_path):
    s = SessionStore(tmp_path, 3)
    s.reset(1, 1)
    s.append(accepted(1), SOURCE_GATEWAY)
    s.next_in = 50
    s.reset(2, 2, 10, 20)
    assert s.next_seq == 1 and s.next_in == 1 and s.uuid == (2, 2)
    s.close()
    assert not list(tmp_path.glob("*.tmp"))
    again = SessionStore(tmp_path, 3)
    assert again.uuid == (2, 2) and again.next_seq == 1 and again.next_in == 1
    again.close()


def test_a_state_file_of_another_identity_counts_nothing(tmp_path):
    s = SessionStore(tmp_path, 4)
    s.reset(1, 1)
    s.next_in = 12
    s.close()
    # the flow was replaced (a Negotiate) but the state file kept the old identity's count
    state = (tmp_path / "session-4.state").read_bytes()
    SessionStore(tmp_path, 4).reset(3, 3)
    (tmp_path / "session-4.state").write_bytes(state)
    again = SessionStore(tmp_path, 4)
    assert again.uuid == (3, 3) and again.next_in == 1
    again.close()


def test_a_count_held_for_a_staged_message_never_passes_it_on_disk(tmp_path):
    s = SessionStore(tmp_path, 5)
    s.reset(1, 1)
    s.applied(4)  # 1..4 published
    s.hold(5)  # 5 staged, not yet published
    s.applied(6)  # 6 answered by the gateway itself
    s.next_in = 8  # a session message (7) moved the count too
    assert s.next_in == 5 and s.holding_back
    s.hold(9)  # a later message staged: the hold stays at the first
    s.close()  # killed here: on disk, nothing past 5 was counted
    killed = SessionStore(tmp_path, 5)
    assert killed.next_in == 5 and not killed.holding_back
    killed.hold(5)
    killed.applied(6)
    killed.applied(5)  # published (the caller counts it), then released
    killed.release()
    assert killed.next_in == 7 and not killed.holding_back
    killed.close()


def test_a_partial_publish_holds_the_count_at_the_first_message_left(tmp_path):
    s = SessionStore(tmp_path, 6)
    s.reset(1, 1)
    s.hold(1)
    s.applied(3)  # 1..3 staged, 4 answered here
    s.applied(4)
    s.applied(2)  # the ring took 1 and 2 only
    s.release(still_staged=3)
    assert s.next_in == 3 and s.holding_back
    s.applied(3)
    s.release()
    assert s.next_in == 5 and not s.holding_back
    s.hold(5)
    s.release()  # nothing asked meanwhile: the count stays
    assert s.next_in == 5
    s.close()


def test_a_file_that_is_not_a_store_is_refused_by_name(tmp_path):
    (tmp_path / "session-5.flow").write_bytes(b"not a flow file at all, no, not at all")
    with pytest.raises(StoreError, match="session-5.flow: not a session flow file"):
        SessionStore(tmp_path, 5)
    os.remove(tmp_path / "session-5.flow")
