"""SOFH framing (gateways/sofh.py). Headers are written byte by byte from the specification
(FIX Simple Open Framing Header 1.0: uint32 Message_Length including the 6-byte header, then
uint16 Encoding_Type, both big-endian; SBE 1.0 little-endian is 0xEB50), not by our encoder."""

from __future__ import annotations

import socket
import struct

import numpy as np
import pytest

from ringex.gateways import sofh

SBE_LE = b"\xeb\x50"


def frame(payload: bytes, encoding: bytes = SBE_LE) -> bytes:
    return struct.pack(">I", len(payload) + 6) + encoding + payload


def payloads(frames: sofh.Frames) -> list[bytes]:
    return [bytes(frames.payload(i)) for i in range(len(frames))]


MESSAGES = [bytes([i]) * n for i, n in enumerate([1, 8, 40, 123, 7, 300, 2, 64], start=1)]


def test_header_layout_is_the_specifications():
    assert (sofh.MESSAGE_LENGTH_OFFSET, sofh.ENCODING_TYPE_OFFSET, sofh.HEADER_LENGTH) == (0, 4, 6)
    assert sofh.SBE_1_0_LITTLE_ENDIAN == 0xEB50 and sofh.SBE_1_0_BIG_ENDIAN == 0x5BE0
    assert sofh.header(10) == b"\x00\x00\x00\x10\xeb\x50"
    assert sofh.header(1, sofh.FIX_TAG_VALUE) == b"\x00\x00\x00\x07\xf0\x00"
    buf = np.zeros(20, np.uint8)
    assert sofh.write_header(buf, 3, 0x0102 - 6) == 9
    assert bytes(buf[3:9]) == b"\x00\x00\x01\x02\xeb\x50"
    with pytest.raises(ValueError):
        sofh.header(0)
    with pytest.raises(ValueError):
        sofh.header(5, 0x10000)


def test_frames_of_one_buffer_and_their_offsets():
    stream = b"".join(frame(m) for m in MESSAGES)
    buf = np.frombuffer(stream, np.uint8)
    rows = np.zeros((16, 2), np.int64)
    count, stop, status = sofh.scan(buf, 0, len(buf), 4096, 0xEB50, rows)
    assert (count, stop, status) == (len(MESSAGES), len(stream), sofh.SCAN_OK)
    at = 0
    for i, m in enumerate(MESSAGES):
        assert tuple(rows[i]) == (at + 6, len(m))
        at += 6 + len(m)


def test_scan_stops_before_a_partial_frame_and_at_a_full_batch():
    stream = frame(b"abc") + frame(b"defg")
    buf = np.frombuffer(stream, np.uint8)
    rows = np.zeros((4, 2), np.int64)
    for cut in range(len(stream)):
        count, stop, status = sofh.scan(buf, 0, cut, 4096, 0xEB50, rows)
        assert status == sofh.SCAN_OK
        assert (count, stop) == ((0, 0) if cut < 9 else (1, 9))
    one = np.zeros((1, 2), np.int64)
    assert sofh.scan(buf, 0, len(buf), 4096, 0xEB50, one) == (1, 9, sofh.SCAN_OK)
    assert sofh.scan(buf, 9, len(buf), 4096, 0xEB50, one) == (1, len(stream), sofh.SCAN_OK)


@pytest.mark.parametrize("bad, status", [
    (b"\x00\x00\x00\x00" + SBE_LE, sofh.SCAN_TOO_SHORT),  # shorter than its own header
    (b"\x00\x00\x00\x06" + SBE_LE, sofh.SCAN_TOO_SHORT),  # a header with no message
    (b"\x00\x00\x10\x01" + SBE_LE, sofh.SCAN_TOO_LONG),  # 4097 > the receiver's 4096
    (b"\xff\xff\xff\xff" + SBE_LE, sofh.SCAN_TOO_LONG),
    (b"\x00\x00\x00\x0a\x5b\xe0", sofh.SCAN_WRONG_ENCODING),  # SBE big-endian: not what we speak
    (b"\x00\x00\x00\x0a\xf0\x00", sofh.SCAN_WRONG_ENCODING),  # FIX tag=value
    (b"\x00\x00\x00\x0a\x50\xeb", sofh.SCAN_WRONG_ENCODING),  # the encoding type byte-swapped
])
def test_a_bad_header_stops_the_scan_where_it_is(bad, status):
    stream = frame(b"ok") + bad + b"\x00" * 8 + frame(b"never")
    rows = np.zeros((8, 2), np.int64)
    count, stop, got = sofh.scan(np.frombuffer(stream, np.uint8), 0, len(stream), 4096, 0xEB50, rows)
    assert (count, stop, got) == (1, 8, status)


def test_reader_byte_by_byte_gives_every_frame_once():
    stream = b"".join(frame(m) for m in MESSAGES)
    reader = sofh.FrameReader(max_length=512, read_size=64)
    got = []
    for i in range(len(stream)):
        got += payloads(reader.feed(stream[i: i + 1]))
    assert got == MESSAGES
    assert reader.pending == 0 and reader.frames_received == len(MESSAGES)
    assert reader.bytes_received == len(stream)


@pytest.mark.parametrize("chunk", [1, 5, 7, 64, 100, 1000, 5000])
def test_reader_in_chunks_of_any_size(chunk):
    messages = MESSAGES * 40
    stream = b"".join(frame(m) for m in messages)
    reader = sofh.FrameReader(max_length=512, batch=8, read_size=128)
    got = []
    for i in range(0, len(stream), chunk):
        got += payloads(reader.feed(stream[i: i + chunk]))
    assert got == messages and reader.pending == 0


def test_reader_delivers_the_frames_before_a_bad_header_then_fails():
    reader = sofh.FrameReader(max_length=64)
    got = reader.feed(frame(b"one") + frame(b"two") + b"\x00\x00\x00\x41" + SBE_LE)  # 65 > 64
    assert payloads(got) == [b"one", b"two"]
    with pytest.raises(sofh.FramingError) as e:
        reader.feed(b"")
    assert e.value.reason == "MessageTooLong" and e.value.at == 18 and e.value.declared_length == 65
    with pytest.raises(sofh.FramingError):
        reader.feed(frame(b"more"))  # the stream has no boundary any more: nothing else is framed


def test_reader_reports_the_stream_offset_after_the_buffer_moved():
    reader = sofh.FrameReader(max_length=64, read_size=16)
    sent = 0
    for _ in range(50):
        f = frame(b"x" * 20)
        assert payloads(reader.feed(f)) == [b"x" * 20]
        sent += len(f)
    with pytest.raises(sofh.FramingError) as e:
        reader.feed(b"\x00\x00\x00\x09\x12\x34abc")
    assert e.value.reason == "WrongEncodingType" and e.value.at == sent and e.value.encoding == 0x1234


def test_reader_over_a_socket():
    a, b = socket.socketpair()
    try:
        b.setblocking(False)
        reader = sofh.FrameReader(max_length=1024, read_size=100)
        messages = [bytes([i % 251]) * (1 + i * 7 % 900) for i in range(200)]
        stream = b"".join(frame(m) for m in messages)
        a.sendall(stream[:3333])
        got = []
        got += payloads(reader.receive(b))
        assert reader.bytes_received == 100  # one read is at most read_size bytes
        while len(got) < len(messages):
            if reader.bytes_received == 3333:
                a.sendall(stream[3333:])
            got += payloads(reader.receive(b))
        assert got == messages
        assert len(reader.receive(b)) == 0  # would block: no frames, no error
        a.close()
        with pytest.raises(sofh.ConnectionClosed):
            reader.receive(b)
    finally:
        a.close()
        b.close()


def test_a_close_inside_a_frame_says_so():
    a, b = socket.socketpair()
    try:
        reader = sofh.FrameReader(max_length=1024)
        a.sendall(frame(b"abcdef")[:8])
        a.close()
        assert len(reader.receive(b)) == 0
        with pytest.raises(sofh.ConnectionClosed, match="inside a frame"):
            reader.receive(b)
    finally:
        b.close()


def test_reader_limits():
    with pytest.raises(ValueError):
        sofh.FrameReader(max_length=6)
    with pytest.raises(ValueError):
        sofh.FrameReader(max_length=64, batch=0)
    reader = sofh.FrameReader(max_length=64, read_size=32)
    assert reader._buf.nbytes == 96  # bounded whatever the peer sends
