"""The compiled framing of a delivery's messages (gateways/fix_outbound.py) against the path it
replaces: ``fix_codec.encode`` and ``SessionStore.append`` one message at a time."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ringex.gateways import fix_codec, fix_outbound
from ringex.gateways.fix_codec import encode, utc_timestamp
from ringex.gateways.fix_session import FixSession, FixSessionConfig
from ringex.gateways.session_store import MAX_PAYLOAD, SOURCE_GATEWAY, SOURCE_OUTPUT, SOURCE_REJECT, SessionStore

MSG_TYPES = (b"8", b"9", b"r", b"j", b"3", b"0", b"AE", b"BZ")
WALL = 1_765_000_000_123_456_789


def _value(rng: random.Random) -> bytes:
    alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._:/ =?"
    return bytes(rng.choice(alphabet) for _ in range(rng.randint(1, 30)))


def _body(rng: random.Random) -> bytes:
    return b"".join(b"%d=%s\x01" % (rng.randint(1, 9999), _value(rng)) for _ in range(rng.randint(1, 25)))


def _flow(store: SessionStore) -> bytes:
    store.flush()
    return store.path.read_bytes() if hasattr(store, "path") else b""


def _flow_bytes(directory: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(directory.glob("*.flow")))


def test_begin_is_the_codecs() -> None:
    assert fix_outbound.BEGIN == b"8=" + fix_codec.BEGIN_STRING + fix_codec.SOH + b"9="


@pytest.mark.parametrize("seed", range(6))
def test_framed_and_stored_as_encode_and_append_would(tmp_path: Path, seed: int) -> None:
    """Random batches (numbers across digit boundaries, types of one and two letters, bodies
    of 1 to 25 fields): the same wire bytes as ``encode`` message by message, and the same
    flow file as ``SessionStore.append``."""
    rng = random.Random(seed)
    one, batch = SessionStore(tmp_path / "one", 1), SessionStore(tmp_path / "batch", 1)
    try:
        for first in (1, 9, 95, 998)[: 1 + seed % 4]:
            while one.next_seq < first:  # both flows to the same number
                one.append(b"filler", SOURCE_GATEWAY)
                batch.append(b"filler", SOURCE_GATEWAY)
            n = rng.randint(1, 40)
            types = tuple(rng.choice(MSG_TYPES) for _ in range(n))
            bodies = tuple(_body(rng) for _ in range(n))
            positions = tuple(sorted(rng.randrange(1 << 40) for _ in range(n)))
            sender, target = _value(rng).replace(b" ", b"S"), _value(rng).replace(b" ", b"T")
            sending_time = utc_timestamp(WALL + rng.randrange(10**12))
            source, created = rng.choice((SOURCE_OUTPUT, SOURCE_REJECT)), rng.randrange(1 << 60)
            expected = b""
            for t, b, p in zip(types, bodies, positions):
                raw = encode(t, sender, target, one.next_seq, sending_time, b)
                one.append(raw, source, created, p)
                expected += raw
            status, wire, records, offsets = fix_outbound.frame(
                types, bodies, sender, target, sending_time, batch.next_seq, positions, created, source, batch.end,
                MAX_PAYLOAD)
            assert status == 0
            assert wire.tobytes() == expected
            batch.append_records(records, offsets, source, created, positions[-1])
            assert batch.next_seq == one.next_seq
            assert batch.stored_through(source, created) == one.stored_through(source, created) == positions[-1]
            one.flush()
            batch.flush()
            assert _flow_bytes(tmp_path / "batch") == _flow_bytes(tmp_path / "one")
            assert batch.read(first, n) == one.read(first, n)
    finally:
        one.close()
        batch.close()
    reopened = SessionStore(tmp_path / "batch", 1)  # the records read back: nothing cut
    try:
        assert reopened.next_seq == SessionStore(tmp_path / "one", 1).next_seq
    finally:
        reopened.close()


def test_numbers_of_every_width_framed_as_encode_would() -> None:
    """MsgSeqNums across every digit boundary up to 18 digits, BodyLengths of one to four
    digits: the wire bytes ``encode`` makes."""
    rng = random.Random(3)
    sending_time = utc_timestamp(WALL)
    for width in range(1, 19):  # (int64 words: numbers past 18 digits are not ours to send)
        first = 10 ** width - 3
        n = 6
        types = tuple(rng.choice(MSG_TYPES) for _ in range(n))
        bodies = tuple(b"58=" + b"x" * rng.choice((1, 50, 900, 2000)) + b"\x01" for _ in range(n))
        status, wire, _, _ = fix_outbound.frame(types, bodies, b"RINGEX", b"DEMO1", sending_time, first,
                                                tuple(range(n)), 1, SOURCE_OUTPUT, 0, MAX_PAYLOAD)
        assert status == 0
        assert wire.tobytes() == b"".join(encode(t, b"RINGEX", b"DEMO1", first + i, sending_time, b)
                                          for i, (t, b) in enumerate(zip(types, bodies)))


def test_a_message_over_the_stores_bound_frames_nothing() -> None:
    body = b"58=" + b"x" * MAX_PAYLOAD + b"\x01"
    status, wire, records, offsets = fix_outbound.frame(
        (b"8", b"8"), (b"1=a\x01", body), b"S", b"T", utc_timestamp(WALL), 1, (1, 2), 5, SOURCE_OUTPUT, 0, MAX_PAYLOAD)
    assert status == fix_outbound.TOO_LONG and len(wire) == len(records) == len(offsets) == 0


def _session(directory: Path) -> FixSession:
    return FixSession(FixSessionConfig(sender_comp_id="RINGEX", target_comp_id="DEMO1"), SessionStore(directory, 3))


def test_send_batch_sends_and_stores_what_send_would(tmp_path: Path) -> None:
    """Written fields, (tag, value) pairs, and a batch that cannot be framed in one go (a body
    not ending in SOH, an empty one): the same bytes queued and stored as ``send`` one by
    one, and the same refusals."""
    rng = random.Random(7)
    a, b = _session(tmp_path / "a"), _session(tmp_path / "b")
    try:
        for round_ in range(30):
            n = rng.randint(1, 8)  # below and above BATCH_FROM
            messages: list = []
            for i in range(n):
                kind = rng.random()
                if kind < 0.7:
                    body: object = _body(rng)
                else:
                    body = [(58, _value(rng)), (151, rng.randint(0, 10**9)), (14, b"0")]
                messages.append((rng.choice(MSG_TYPES), body, 1000 * round_ + i))
            wall = WALL + round_ * 7_000_000
            for t, body, p in messages:
                a.send(t, body, wall, 5, SOURCE_OUTPUT, 42, p)
            b.send_batch(messages, wall, 5, SOURCE_OUTPUT, 42)
            assert bytes(b.out) == bytes(a.out)
        assert b.store.next_seq == a.store.next_seq
        a.store.flush()
        b.store.flush()
        assert _flow_bytes(tmp_path / "b") == _flow_bytes(tmp_path / "a")
        ok = [(b"8", b"1=a\x01", 0), (b"8", [(1, b"b")], 0)]  # (enough for one compiled call)
        for t, body, p in ok + [(b"0", [], 5)]:  # an empty body: not framed in one go, sent all the same
            a.send(t, body, WALL, 5, SOURCE_OUTPUT, 42, p)
        b.send_batch(ok + [(b"0", [], 5)], WALL, 5, SOURCE_OUTPUT, 42)
        assert bytes(b.out) == bytes(a.out)
        for bad in (ok + [(b"8", b"1=a", 2)], ok + [(b"9", [(58, b"x\x01y")], 4)]):
            with pytest.raises(ValueError) as one:
                for t, body, p in bad:
                    a.send(t, body, WALL, 5, SOURCE_OUTPUT, 42, p)
            with pytest.raises(ValueError) as batch:
                b.send_batch(bad, WALL, 5, SOURCE_OUTPUT, 42)
            assert str(batch.value) == str(one.value)
            assert bytes(b.out) == bytes(a.out) and b.store.next_seq == a.store.next_seq
        sent = b.store.next_seq
        with pytest.raises(ValueError, match="at most"):
            b.send_batch(ok + [(b"8", b"58=" + b"x" * MAX_PAYLOAD + b"\x01", 9)], WALL, 5, SOURCE_OUTPUT, 42)
        assert b.store.next_seq == sent + 2  # those before it sent, as send would
    finally:
        a.store.close()
        b.store.close()


def test_warm_up_compiles_what_send_batch_calls() -> None:
    """``send_batch``'s call finds the version ``warm_up`` made (in a fresh interpreter, so
    that no other test's calls made it already): nothing compiles in a duty cycle."""
    script = """
import tempfile
from pathlib import Path
from ringex.gateways import fix_outbound
from ringex.gateways.fix_session import FixSession, FixSessionConfig
from ringex.gateways.session_store import SessionStore
fix_outbound.warm_up()
made = len(fix_outbound.frame_messages.signatures)
with tempfile.TemporaryDirectory() as d:
    s = FixSession(FixSessionConfig(sender_comp_id="RINGEX", target_comp_id="DEMO1"), SessionStore(Path(d), 1))
    s.send_batch([(b"8", b"37=1\\x0111=a\\x01", 5), (b"9", [(58, b"x")], 6), (b"8", b"1=b\\x01", 7)],
                 1_765_000_000_000_000_000, 1, 1, 77)
    assert s.store.next_seq == 4
    assert len(s.out) > 0
    s.store.close()
assert len(fix_outbound.frame_messages.signatures) == made, fix_outbound.frame_messages.signatures
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
