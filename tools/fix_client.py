"""``ringex fix-client``: a FIX 4.4 order-entry client for people.

It logs on to a FIX gateway with the given CompIDs, sends the orders, cancels and replaces it
is told (on the command line or typed, one per line, in the command language of
``ringex.tools.fix_commands``, whose forms ``help`` lists) and prints every answer as one
readable line (``ringex.tools.fix_format``)::

    13:02:11.123 -> fc-3      buy 2 DEMO @ 1000
    13:02:11.125 FILLED    buy 2 DEMO @ 1000  last 2 @ 1000  cum 2  leaves 0  avg 1000  order 17  clordid fc-3

ClOrdIDs are ``<prefix>-<n>`` (``--prefix``; by default ``fc`` and the time, so that runs do
not reuse them), each printed as it is sent. Commands given on the command line are all
checked before anything is sent, then sent in order, each after the answer to the one before
(or ``--wait`` seconds), and the client listens until every answer is in and the line is quiet
(bounded by ``--wait`` again) before it logs out. Without commands it reads them from standard
input: interactive on a terminal; a script otherwise (each line after the answer to the one
before; a bad line is reported and the exit status is 2).

The session is small and blocking, built on ``ringex.gateways.fix_codec`` (``FixReader``
frames, ``encode`` writes): Logon (EncryptMethod 0, HeartBtInt, Password, ResetSeqNumFlag=Y
with ``--reset``), a Heartbeat after HeartBtInt seconds without sending, a TestRequest after
HeartBtInt plus a fifth without receiving (and the connection given up after as long again),
a Heartbeat for every TestRequest, a gap fill for every ResendRequest (the client keeps no
store of what it sent), and a Logout, answered or timed out, on the way out (end of input,
``quit``, Ctrl-C). Without ``--reset``, a Logout saying the gateway expects a higher MsgSeqNum
is answered by logging on again once with that number.

One thread reads the connection (and keeps the session alive), the other sends commands.
"""

from __future__ import annotations

import argparse
import re
import socket
import sys
import threading
import time
from typing import Iterable, TextIO

from ringex.gateways.fix_codec import FixMessage, FixReader, Garbled, encode, utc_timestamp
from ringex.tools.fix_commands import HELP, CommandError, Commands, Request, _s
from ringex.tools.fix_format import _clock, format_message, format_raw

#: After the last answer expected, how long the client keeps listening for what follows it
#: (an IOC's expiry after its fill, the maker's side of a cross) before it exits.
QUIET_S = 0.3
LOGON_TIMEOUT_S = 10.0
LOGOUT_TIMEOUT_S = 2.0
MAX_MESSAGE = 1 << 16


# -- the session ------------------------------------------------------------------------------

class LogonRefused(Exception):
    def __init__(self, text: str, expected_seq: int | None = None) -> None:
        super().__init__(text)
        self.expected_seq = expected_seq


class Printer:
    """Lines to ``out``, whole and flushed, from either thread."""

    def __init__(self, out: TextIO, raw: bool) -> None:
        self.out = out
        self.raw = raw
        self._lock = threading.Lock()

    def line(self, text: str) -> None:
        with self._lock:
            self.out.write(text + "\n")
            self.out.flush()


class FixClient:
    """A blocking FIX 4.4 initiator: ``logon``, then ``request`` from one thread while another
    (started by ``logon``) reads, answers the session's needs and prints; ``logout`` at the end."""

    def __init__(self, host: str, port: int, sender: str, target: str, password: str, heartbeat: int,
                 printer: Printer, commands: Commands, reset: bool = False, next_seq: int = 1) -> None:
        self.host, self.port = host, port
        self.sender, self.target = sender.encode(), target.encode()
        self.password = password
        self.heartbeat = heartbeat
        self.reset = reset
        self.printer = printer
        self.commands = commands
        self.seq = next_seq  # the next MsgSeqNum to send
        self.expected: int | None = None  # the next MsgSeqNum to receive
        self.sock: socket.socket | None = None
        self.reader = FixReader(MAX_MESSAGE)
        self._send_lock = threading.Lock()
        self._cond = threading.Condition()
        self._pending: dict[int, str] = {}  # our MsgSeqNum -> the ClOrdID whose answer is awaited
        self._last_send = self._last_recv = time.monotonic()
        self._test_req_at = 0.0
        self._test_req_id = 0
        self.logged_on = False
        self.closed = False  # the connection is gone (or going)
        self.logout_text: str | None = None  # why the gateway logged us out, if it did
        self._logout_sent = False
        self.ended_by_gateway = False  # the gateway sent the first Logout
        self._thread: threading.Thread | None = None

    # ---------------------------------------------------------------- sending

    def _send(self, msg_type: bytes, body: Iterable[tuple[int, bytes | str | int]], *, seq: int | None = None,
              poss_dup: bool = False) -> int:
        with self._send_lock:
            number = self.seq if seq is None else seq
            now = utc_timestamp(time.time_ns())
            data = encode(msg_type, self.sender, self.target, number, now, list(body), poss_dup=poss_dup,
                          orig_sending_time=now if poss_dup else None)
            if seq is None:
                self.seq += 1
            if self.printer.raw:
                self.printer.line(f"{_clock(time.time())} > {format_raw(data)}")
            assert self.sock is not None
            self.sock.sendall(data)
            self._last_send = time.monotonic()
            return number

    def request(self, req: Request) -> None:
        """Send ``req`` (stamped with TransactTime where the message has one) and await its answer."""
        body: list[tuple[int, bytes | str | int]] = list(req.fields)
        if req.msg_type in (b"D", b"F", b"G", b"q"):
            body.append((60, utc_timestamp(time.time_ns())))
        with self._cond:
            if self.closed:
                raise ConnectionError("not connected")
            number = self._send(req.msg_type, body)
            if req.cl_ord_id:
                self._pending[number] = req.cl_ord_id
        if not self.printer.raw:
            self.printer.line(f"{_clock(time.time())} -> {req.cl_ord_id:<9} {req.text}")

    # ---------------------------------------------------------------- logon / logout

    def connect(self, timeout: float = LOGON_TIMEOUT_S) -> None:
        self.sock = socket.create_connection((self.host, self.port), timeout=timeout)

    def logon(self, timeout: float = LOGON_TIMEOUT_S) -> None:
        """Log on and start the reading thread; ``LogonRefused`` with the gateway's reason."""
        if self.sock is None:
            self.connect(timeout)
        assert self.sock is not None
        body: list[tuple[int, bytes | str | int]] = [(98, 0), (108, self.heartbeat)]
        if self.password:
            body.append((554, self.password))
        if self.reset:
            body.append((141, b"Y"))
            self.seq = 1
        self._send(b"A", body)
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                self._close()
                raise LogonRefused(f"no answer to the Logon within {timeout:g} s")
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(MAX_MESSAGE)
            except socket.timeout:
                continue
            except OSError as exc:
                self._close()
                raise LogonRefused(f"connection failed: {exc}") from None
            if not data:
                self._close()
                raise LogonRefused("the gateway closed the connection without an answer "
                                   "(unknown SenderCompID, or this session is logged on elsewhere)")
            for item in self.reader.feed(data):
                if isinstance(item, Garbled):
                    continue
                self._show(item)
                if item.msg_type == b"5":
                    text = _s(item, 58) or "logged out"
                    self._close()
                    m = re.search(r"expecting (\d+)", text)
                    raise LogonRefused(text, int(m.group(1)) if m and "too low" in text else None)
                if item.msg_type == b"A":
                    self.logged_on = True
                    self.expected = (item.seq_num or 0) + 1
                    self._last_recv = time.monotonic()
                    pending = self.reader.feed(b"")
                    self._thread = threading.Thread(target=self._run, args=(pending,), name="fix-client-reader",
                                                    daemon=True)
                    self._thread.start()
                    return

    def logout(self, timeout: float = LOGOUT_TIMEOUT_S) -> None:
        """Send a Logout (unless the connection is gone), wait for the answer (bounded), close."""
        with self._cond:
            if not self.closed and not self._logout_sent:
                self._logout_sent = True
                try:
                    self._send(b"5", [])
                except OSError:
                    self.closed = True
            self._cond.wait_for(lambda: self.closed, timeout)
        self._close()
        if self._thread is not None:
            self._thread.join(timeout)

    def _close(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify_all()
        if self.sock is not None:
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self.sock.close()

    # ---------------------------------------------------------------- waiting

    def wait_answers(self, timeout: float, quiet: float = QUIET_S) -> bool:
        """Until every request sent has an answer and nothing more came for ``quiet`` seconds,
        or ``timeout``; True if all were answered."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self.closed:
                now = time.monotonic()
                if now >= deadline:
                    break
                if not self._pending:
                    since = now - self._last_recv
                    if since >= quiet:
                        break
                    self._cond.wait(min(quiet - since, deadline - now))
                else:
                    self._cond.wait(deadline - now)
            return not self._pending

    # ---------------------------------------------------------------- receiving

    def _run(self, first: list) -> None:
        """The reading thread: every message received, and the session's timers between them."""
        items = first
        hb = float(self.heartbeat)
        while True:
            for item in items:
                if not isinstance(item, Garbled):
                    self._on_message(item)
                elif self.printer.raw:
                    self.printer.line(f"{_clock(time.time())} ? garbled ({item.reason}): {format_raw(item.raw)}")
            if self.closed:
                return
            now = time.monotonic()
            if self._test_req_at and now - self._test_req_at > hb * 1.2:
                self.printer.line(f"{_clock(time.time())} {'LOST':<9} no answer to a TestRequest: disconnected")
                self._close()
                return
            try:
                if not self._test_req_at and now - self._last_recv > hb * 1.2:
                    self._test_req_id += 1
                    self._send(b"1", [(112, f"TEST{self._test_req_id}")])
                    self._test_req_at = now
                if now - self._last_send >= hb:
                    self._send(b"0", [])
            except OSError:
                pass
            wake = min(self._last_send + hb, (self._test_req_at or self._last_recv) + hb * 1.2 + 0.01)
            sock = self.sock
            if sock is None:
                return
            try:
                sock.settimeout(max(0.05, wake - time.monotonic()))
                data = sock.recv(MAX_MESSAGE)
            except socket.timeout:
                items = []
                continue
            except OSError:
                data = b""
            if not data:
                if not self.closed and not self._logout_sent:
                    self.printer.line(f"{_clock(time.time())} {'LOST':<9} the gateway closed the connection")
                self._close()
                return
            items = self.reader.feed(data)

    def _on_message(self, msg: FixMessage) -> None:
        self._last_recv = time.monotonic()
        self._test_req_at = 0.0
        seq = msg.seq_num
        if seq is not None and self.expected is not None:
            if seq > self.expected and msg.msg_type != b"4":
                self.printer.line(f"{_clock(time.time())} {'GAP':<9} messages {self.expected}..{seq - 1} "
                                  "of the gateway not received")
            if seq >= self.expected:
                self.expected = seq + 1
        t = msg.msg_type
        if t == b"8":
            self.commands.learn(msg)
        self._show(msg)
        try:
            if t == b"1":
                self._send(b"0", [(112, msg.get(112) or b"TEST")])
            elif t == b"2":  # we keep no store: everything asked for is replaced by one gap fill
                begin = msg.int(7)
                if begin < self.seq:
                    self._send(b"4", [(123, b"Y"), (36, self.seq)], seq=begin, poss_dup=True)
            elif t == b"4":
                try:
                    self.expected = msg.int(36)
                except ValueError:
                    pass
            elif t == b"5":
                self.logout_text = _s(msg, 58)
                if not self._logout_sent:
                    self.ended_by_gateway = True
                    self._logout_sent = True
                    self._send(b"5", [])
                self._close()
        except OSError:
            self._close()
        ids = {_s(msg, 11), _s(msg, 379)} - {None} if t in (b"8", b"9", b"r", b"j") else set()
        ref = _s(msg, 45) if t in (b"3", b"j") else None
        with self._cond:
            for n, cl in list(self._pending.items()):
                if cl in ids or str(n) == ref:
                    del self._pending[n]
            self._cond.notify_all()

    def _show(self, msg: FixMessage) -> None:
        if self.printer.raw:
            self.printer.line(f"{_clock(time.time())} < {format_raw(msg.raw)}")
            return
        line = format_message(msg)
        if line is not None:
            self.printer.line(line)


# -- the command ------------------------------------------------------------------------------

def default_prefix() -> str:
    """``fc`` and the time in milliseconds, base 36: ClOrdIDs unique across runs."""
    n = time.time_ns() // 1_000_000
    digits = ""
    while n:
        n, d = divmod(n, 36)
        digits = "0123456789abcdefghijklmnopqrstuvwxyz"[d] + digits
    return "fc" + digits


def default_account(sender: str) -> int:
    """The embedded default's DEMO<n> trades account n; any other sender account 1."""
    m = re.fullmatch(r"DEMO([0-9]{1,9})", sender)
    return int(m.group(1)) if m else 1


def _stdin_lines(stdin: TextIO, interactive: bool) -> Iterable[str]:
    while True:
        if interactive:
            try:
                line = input("fix> ")
            except EOFError:
                return
        else:
            line = stdin.readline()
            if not line:
                return
        yield line


def run(args: argparse.Namespace, stdin: TextIO | None = None, out: TextIO | None = None,
        err: TextIO | None = None) -> int:
    """``ringex fix-client``: 0 when every request was answered, 1 when the logon or the
    connection failed or answers are missing, 2 for a command that cannot be sent."""
    stdin = sys.stdin if stdin is None else stdin
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    account = args.account if args.account is not None else default_account(args.sender)
    try:
        commands = Commands(args.prefix or default_prefix(), account)
    except ValueError as exc:
        print(f"ringex fix-client: {exc}", file=err)
        return 2
    if args.heartbeat <= 0:
        print("ringex fix-client: --heartbeat must be at least 1 second", file=err)
        return 2
    batch: list[Request] = []
    for text in args.commands:  # all checked before anything is sent
        try:
            req = commands.parse(text)
        except CommandError as exc:
            print(f"ringex fix-client: {text!r}: {exc}", file=err)
            return 2
        if req is not None and req.kind != "help":
            batch.append(req)
            if req.kind == "quit":
                break
    printer = Printer(out, args.raw)
    client = _logged_on_client(args, printer, commands, err)
    if client is None:
        return 1
    status = 0
    interactive = not args.commands and stdin.isatty()
    try:
        if args.commands:
            answered = True
            for req in batch:  # each after the answer to the one before (a cancel needs its order acknowledged)
                if req.kind == "quit" or client.closed:
                    break
                client.request(req)
                answered = client.wait_answers(args.wait, quiet=0.0) and answered
            if not (client.wait_answers(args.wait) and answered):
                print(f"ringex fix-client: not every request was answered within {args.wait:g} s", file=err)
                status = 1
        else:
            if interactive:
                printer.line("type commands, 'help' for their forms, 'quit' or Ctrl-D to log out")
            for line in _stdin_lines(stdin, interactive):
                if client.closed:
                    break
                try:
                    req = commands.parse(line)
                except CommandError as exc:
                    printer.line(f"error: {exc}")
                    if not interactive:
                        status = 2
                    continue
                if req is None:
                    continue
                if req.kind == "help":
                    printer.line(HELP)
                    continue
                if req.kind == "quit":
                    break
                client.request(req)
                if not interactive and not client.wait_answers(args.wait, quiet=0.0):
                    status = status or 1  # a script's next line may depend on this one's answer
            if not client.closed and not client.wait_answers(args.wait) and not interactive:
                print(f"ringex fix-client: not every request was answered within {args.wait:g} s", file=err)
                status = status or 1
    except KeyboardInterrupt:
        status = 0 if interactive else 130
    except (ConnectionError, OSError) as exc:
        print(f"ringex fix-client: connection lost: {exc}", file=err)
        status = 1
    finally:
        lost = client.closed and not client._logout_sent
        client.logout()
    if (lost or client.ended_by_gateway) and status == 0:
        status = 1  # the connection was lost, or the gateway ended the session
    return status


def _logged_on_client(args: argparse.Namespace, printer: Printer, commands: Commands,
                      err: TextIO) -> FixClient | None:
    next_seq = 1
    for attempt in (1, 2):
        client = FixClient(args.host, args.port, args.sender, args.target, args.password, args.heartbeat, printer,
                           commands, reset=args.reset, next_seq=next_seq)
        try:
            client.logon()
            return client
        except LogonRefused as exc:
            if attempt == 1 and not args.reset and exc.expected_seq is not None:
                next_seq = exc.expected_seq
                printer.line(f"{_clock(time.time())} {'':<9} logging on again with MsgSeqNum {next_seq}")
                continue
            print(f"ringex fix-client: logon refused: {exc}", file=err)
            return None
        except OSError as exc:
            print(f"ringex fix-client: cannot connect to {args.host}:{args.port}: {exc}", file=err)
            return None
    return None


def main(argv: list[str] | None = None) -> int:
    """``python -m ringex.tools.fix_client ...``, the same as ``ringex fix-client ...`` (whose
    options ``ringex.tools.cli`` declares)."""
    from ringex.tools.cli import main as cli_main

    return cli_main(["fix-client", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
