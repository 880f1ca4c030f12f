"""``ringex fix-client`` (tools/fix_client.py): the command parser (tools/fix_commands.py) and
the report lines from hand-built messages (tools/fix_format.py), then the command as users run
it against a running exchange's FIX gateway (gateway_kit: sessions 21..23 as C21..C23,
passwords pw21..pw23, accounts 1..3)."""

from __future__ import annotations

import io
import queue
import subprocess
import sys
import threading
import time

import pytest

from ringex.gateways.fix_codec import FixMessage, encode
from ringex.tools import cli
from ringex.tools.fix_commands import CommandError, Commands, describe_order
from ringex.tools.fix_format import format_message
from gateway_kit import PRICE, fix_toml, running_exchange

# -- the command parser ---------------------------------------------------------------------


def parse(line: str, commands: Commands | None = None):
    return (commands or Commands("fc", 1)).parse(line)


def test_a_limit_order_with_every_option() -> None:
    req = parse("buy 2 DEMO @ 1000 gtc post-only reduce-only iceberg 1 account 3")
    assert req.msg_type == b"D" and req.cl_ord_id == "fc-1"
    assert dict(req.fields) == {11: "fc-1", 1: "3", 55: "DEMO", 54: "1", 38: "2", 40: "2", 44: "1000", 59: "1",
                                18: "6 E", 111: "1"}
    assert req.text == "buy 2 DEMO @ 1000 gtc post-only reduce-only iceberg 1"


@pytest.mark.parametrize("line, expected", [
    ("sell 1.5 DEMO @1000.25", {54: "2", 38: "1.5", 40: "2", 44: "1000.25"}),
    ("buy 1 DEMO @ 1000 ioc", {40: "2", 59: "3"}),
    ("BUY 1 DEMO @ 1000 FOK", {59: "4"}),
    ("buy 1 DEMO @ 1000 day", {59: "0"}),
    ("market buy 1 DEMO", {54: "1", 40: "1"}),
    ("stop sell 1 DEMO stop 990", {54: "2", 40: "3", 99: "990"}),
    ("stop sell 1 DEMO stop 990 @ 985", {40: "4", 99: "990", 44: "985"}),
    ("sell 1 DEMO stop 990 @ 985", {40: "4", 99: "990", 44: "985"}),
])
def test_order_forms(line: str, expected: dict) -> None:
    fields = dict(parse(line).fields)
    assert {t: fields.get(t) for t in expected} == expected
    assert fields[1] == "1" and fields[55] == "DEMO" and fields[11] == "fc-1"
    if fields[40] in ("1", "3"):
        assert 44 not in fields
    if fields[40] in ("1", "2"):
        assert 99 not in fields
    if "ioc" not in line.lower() and "fok" not in line.lower() and "day" not in line.lower():
        assert 59 not in fields  # the gateway's default, Day


def test_cancel_replace_status_and_cancel_all_repeat_what_the_order_said() -> None:
    c = Commands("x", 2)
    c.parse("sell 5 DEMO @ 1010 iceberg 2")
    cancel = c.parse("cancel x-1")
    assert cancel.msg_type == b"F" and dict(cancel.fields) == {11: "x-2", 41: "x-1", 55: "DEMO", 54: "2"}
    replace = c.parse("replace last 6 @ 1011")
    assert replace.msg_type == b"G"
    assert dict(replace.fields) == {11: "x-3", 41: "x-1", 55: "DEMO", 54: "2", 38: "6", 40: "2", 44: "1011",
                                    111: "2"}  # the iceberg restated: absent would show it all
    status = c.parse("status x-3")
    assert status.msg_type == b"H" and dict(status.fields) == {11: "x-3", 55: "DEMO", 54: "2"}
    every = c.parse("cancel-all")
    assert every.msg_type == b"q" and dict(every.fields) == {11: "x-4", 530: "7"}
    by_symbol = c.parse("cancel-all DEMO")
    assert dict(by_symbol.fields) == {11: "x-5", 530: "1", 55: "DEMO", 1: "2"}
    other = c.parse("cancel zz-9 buy OTHER")  # an order this client never saw: its side and symbol given
    assert dict(other.fields) == {11: "x-6", 41: "zz-9", 55: "OTHER", 54: "1"}
    assert c.parse("quit").kind == "quit" and c.parse("  ") is None and c.parse("# a comment") is None


def test_an_execution_report_teaches_the_parser_an_order() -> None:
    c = Commands("x", 1)
    c.learn(msg(b"8", (37, 7), (11, "old-1"), (17, "1"), (150, "0"), (39, "0"), (55, "DEMO"), (54, "2"),
                (38, "1"), (40, "2"), (44, "1000"), (151, "1"), (14, "0"), (6, "0")))
    assert dict(c.parse("cancel old-1").fields)[54] == "2"


@pytest.mark.parametrize("line, says", [
    ("buy -1 DEMO @ 10", "positive number"),
    ("buy 0 DEMO @ 10", "more than 0"),
    ("buy 1 DEMO @ abc", "price must be a positive number"),
    ("buy 1 DEMO @ -5", "price must be a positive number"),
    ("buy 1 DEMO", "needs a price"),
    ("buy 1 DEMO @", "needs a value"),
    ("buy 1 DEMO @ 10 @ 11", "two prices"),
    ("buy 1 DEMO @ 10 ioc fok", "two times in force"),
    ("buy 1 DEMO @ 10 soon", "unexpected 'soon'"),
    ("buy 1 DEMO @ 10 iceberg 2", "more than the order's"),
    ("buy 1 DEMO @ 10 account x", "account is a number"),
    ("buy DEMO @ 10", "positive number"),
    ("buy 1", "quantity and a symbol"),
    ("market buy 1 DEMO @ 10", "no price"),
    ("stop sell 1 DEMO @ 985", "stop price"),
    ("purchase 1 DEMO @ 10", "unknown command 'purchase'"),
    ("cancel", "which order"),
    ("cancel nope-1", "has not seen order nope-1"),
    ("cancel last", "no order sent yet"),
    ("replace nope-1 2 @ 10", "has not seen order nope-1"),
    ("status nope-1", "has not seen order nope-1"),
    ("quit now", "nothing after it"),
])
def test_bad_input_is_refused_with_a_clear_error(line: str, says: str) -> None:
    c = Commands("fc", 1)
    with pytest.raises(CommandError, match=says):
        c.parse(line)
    assert c.counter == 0  # no ClOrdID spent on it


def test_a_replace_checks_its_quantity_and_price() -> None:
    c = Commands("fc", 1)
    c.parse("buy 4 DEMO @ 1000 iceberg 3")
    for line, says in (("replace fc-1 2", "new quantity and price"), ("replace fc-1 x @ 10", "positive number"),
                       ("replace fc-1 2 @ y", "price must be"), ("replace fc-1 2 @ 999", "shows 3 \\(iceberg\\)")):
        with pytest.raises(CommandError, match=says):
            c.parse(line)
    assert dict(c.parse("replace fc-1 2 @ 999 iceberg 1").fields)[111] == "1"


# -- report lines -----------------------------------------------------------------------------

WHEN = 1_700_000_000.123


def msg(msg_type: bytes, *body) -> FixMessage:
    return FixMessage(encode(msg_type, b"RINGEX", b"C21", 9, b"20261207-13:02:11.123", list(body)))


def clock(when: float = WHEN) -> str:
    return time.strftime("%H:%M:%S", time.localtime(when)) + ".123"


def er(exec_type: str, status: str, *extra, cl: str = "fc-3") -> FixMessage:
    return msg(b"8", (37, 17), (11, cl), (17, "5.1"), (150, exec_type), (39, status), (1, 1), (55, "DEMO"),
               (54, 1), (38, 2), (40, 2), (44, 1000), (59, 1), *extra)


def test_a_fill_is_one_readable_line() -> None:
    line = format_message(er("F", "2", (31, 1000), (32, 2), (851, 2), (151, 0), (14, 2), (6, 1000)), WHEN)
    assert line == (f"{clock()} FILLED    buy 2 DEMO @ 1000 gtc  last 2 @ 1000  cum 2  leaves 0  avg 1000  "
                    "order 17  clordid fc-3")


@pytest.mark.parametrize("exec_type, status, extra, expected", [
    ("0", "0", [(151, 2), (14, 0), (6, 0)], "NEW       buy 2 DEMO @ 1000 gtc  cum 0  leaves 2  order 17  clordid fc-3"),
    ("F", "1", [(31, 1000), (32, 1), (151, 1), (14, 1), (6, 1000)], "PARTIAL   buy 2 DEMO @ 1000 gtc  last 1 @ 1000"),
    ("4", "4", [(41, "fc-1"), (151, 0), (14, 0), (6, 0), (58, "User")], "CANCELED  buy 2 DEMO @ 1000 gtc  cum 0  "
                                                                        "leaves 0  order 17  clordid fc-3  orig fc-1  "
                                                                        "text User"),
    ("C", "C", [(151, 0), (14, 0), (6, 0), (58, "IocRemainder")], "EXPIRED   "),
    ("5", "1", [(41, "fc-1"), (151, 1), (14, 1), (6, 1000)],
     "REPLACED  buy 2 DEMO @ 1000 gtc  status partially filled"),
    ("I", "0", [(151, 2), (14, 0), (6, 0)], "STATUS    buy 2 DEMO @ 1000 gtc  status new"),
    ("L", "0", [(99, 990), (151, 2), (14, 0), (6, 0)], "TRIGGERED buy 2 DEMO stop 990 @ 1000 gtc  status new"),
    ("8", "8", [(151, 0), (14, 0), (6, 0), (103, 15), (58, "UnknownAccount")],
     "REJECTED  buy 2 DEMO @ 1000 gtc  cum 0  leaves 0  order 17  clordid fc-3  reason unknown account  "
     "text UnknownAccount"),
])
def test_execution_report_names(exec_type, status, extra, expected) -> None:
    line = format_message(er(exec_type, status, *extra), WHEN)
    assert line.startswith(f"{clock()} {expected}"), line


def test_a_rejected_order_before_acceptance_has_no_order_id() -> None:
    m = msg(b"8", (37, "NONE"), (11, "fc-9"), (17, "3.0"), (150, "8"), (39, "8"), (55, "DEMO"), (54, 2), (38, 1),
            (40, 2), (44, "abc"), (151, 0), (14, 0), (6, 0), (103, 99), (58, "Price (44) is not a number"))
    line = format_message(m, WHEN)
    assert "order" not in line.split("clordid")[0].split("leaves")[1]
    assert line.endswith("clordid fc-9  reason other  text Price (44) is not a number")


def test_rejects_reports_and_logout_are_readable() -> None:
    cases = [
        (msg(b"9", (37, 17), (11, "fc-4"), (41, "fc-3"), (39, "2"), (434, "1"), (102, "0"), (58, "too late")),
         "CXL-REJ   cancel of fc-3 refused  reason too late to cancel  status filled  order 17  clordid fc-4  "
         "text too late"),
        (msg(b"9", (37, "NONE"), (11, "fc-5"), (41, "zz"), (39, "8"), (434, "2"), (102, "1")),
         "CXL-REJ   replace of zz refused  reason unknown order  status rejected  clordid fc-5"),
        (msg(b"r", (11, "fc-6"), (37, "MC9"), (530, "7"), (531, "7"), (533, 3)),
         "MASS-CXL  cancel-all (all orders)  3 canceled  clordid fc-6"),
        (msg(b"r", (11, "fc-7"), (37, "NONE"), (530, "1"), (531, "0"), (532, "1"), (58, "unknown symbol")),
         "MASS-CXL  cancel-all refused  reason invalid or unknown security  clordid fc-7  text unknown symbol"),
        (msg(b"3", (45, 4), (371, 54), (372, "D"), (373, 1), (58, "required tag 54 is missing")),
         "REJECT    message 4 NewOrderSingle (D) refused by the session  reason required tag missing  "
         "tag 54 (Side)  text required tag 54 is missing"),
        (msg(b"j", (372, "D"), (379, "fc-8"), (380, 5), (45, 6), (58, "ClOrdID (11) missing")),
         "BIZ-REJ   NewOrderSingle (D) refused  reason conditionally required field missing  ref fc-8  message 6  "
         "text ClOrdID (11) missing"),
        (msg(b"5", (58, "invalid password")), "LOGOUT    invalid password"),
        (msg(b"A", (98, 0), (108, 30), (141, "Y")),
         "LOGON     logged on as C21 to RINGEX, heartbeat 30 s, sequence numbers reset"),
    ]
    for m, expected in cases:
        assert format_message(m, WHEN) == f"{clock()} {expected}"
    assert format_message(msg(b"0"), WHEN) is None and format_message(msg(b"1", (112, "x")), WHEN) is None


def test_describe_order_reads_like_the_command() -> None:
    assert describe_order({54: "2", 38: "1", 55: "DEMO", 40: "1"}) == "sell 1 DEMO @ market"
    assert describe_order({54: "1", 38: "3", 55: "DEMO", 40: "2", 44: "10", 59: "3", 18: "E", 111: "1"}) == \
        "buy 3 DEMO @ 10 ioc reduce-only iceberg 1"


def test_a_bad_command_on_the_command_line_exits_2_before_connecting() -> None:
    args = cli.build_parser().parse_args(["fix-client", "--port", "1", "buy 1 DEMO @ 990", "buy -1 DEMO @ 10"])
    from ringex.tools.fix_client import run

    out, err = io.StringIO(), io.StringIO()
    assert run(args, stdin=io.StringIO(""), out=out, err=err) == 2
    assert "'buy -1 DEMO @ 10'" in err.getvalue() and "positive number" in err.getvalue()
    assert out.getvalue() == ""


# -- against a running exchange ---------------------------------------------------------------

TIMEOUT = 60


@pytest.fixture(scope="module")
def ex(tmp_path_factory):
    with running_exchange(tmp_path_factory.mktemp("fixc"), fix_toml(f"rxfc{time.time_ns() % 10**9}")) as running:
        yield running


def client_argv(ex, sid: int, *commands: str, password: str | None = None, prefix: str = "") -> list[str]:
    argv = [sys.executable, "-m", "ringex.tools.cli", "fix-client", "--port", str(ex.port), "--sender", f"C{sid}",
            "--password", password if password is not None else f"pw{sid}", "--reset", "--account", str(sid - 20)]
    if prefix:
        argv += ["--prefix", prefix]
    return argv + list(commands)


def fix_client(ex, sid: int, *commands: str, password: str | None = None,
               prefix: str = "") -> subprocess.CompletedProcess:
    return subprocess.run(client_argv(ex, sid, *commands, password=password, prefix=prefix), capture_output=True,
                          text=True, timeout=TIMEOUT)


def report(out: str, word: str, *contains: str) -> str:
    """The one report line headed ``word`` that has every text of ``contains``."""
    found = [line for line in out.splitlines()
             if line[13:].split(" ", 1)[0] == word and all(c in line for c in contains)]
    assert len(found) == 1, f"no single {word} line with {contains} in:\n{out}"
    return found[0]


def test_an_order_is_new_then_canceled(ex) -> None:
    r = fix_client(ex, 21, f"buy 1 DEMO @ {PRICE - 10}", "cancel last", f"buy 2 DEMO @ {PRICE - 11} gtc",
                   "status nc-3", "cancel-all", prefix="nc")
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    assert "LOGON     logged on as C21 to RINGEX" in out
    assert f"-> nc-1      buy 1 DEMO @ {PRICE - 10}" in out  # the ClOrdID made, printed
    report(out, "NEW", f"buy 1 DEMO @ {PRICE - 10}", "cum 0  leaves 1", "clordid nc-1")
    report(out, "CANCELED", "leaves 0", "clordid nc-2  orig nc-1", "text User")
    report(out, "STATUS", f"buy 2 DEMO @ {PRICE - 11} gtc", "status new", "clordid nc-3")
    report(out, "MASS-CXL", "cancel-all (all orders)  1 canceled", "clordid nc-4")
    report(out, "CANCELED", "clordid nc-3", "text MassCancel")
    assert out.splitlines()[-1][13:] == "LOGOUT    logged out"
    assert r.stderr == ""


def test_two_client_runs_of_different_sessions_cross_and_both_are_filled(ex) -> None:
    """The maker stays logged on (a script on its standard input: logging out would cancel its
    order) while the taker's run crosses it."""
    maker = subprocess.Popen(client_argv(ex, 22, prefix="mk"), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, bufsize=1)
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        for line in maker.stdout:
            lines.put(line)
        lines.put(None)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()

    def until(word: str, *contains: str) -> str:
        deadline = time.monotonic() + TIMEOUT
        seen = []
        while True:
            try:
                line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no {word} line from the maker:\n{''.join(seen)}") from None
            if line is None:
                raise AssertionError(f"the maker exited before its {word} line:\n{''.join(seen)}")
            seen.append(line)
            if line[13:].split(" ", 1)[0] == word and all(c in line for c in contains):
                return line

    try:
        maker.stdin.write(f"sell 2 DEMO @ {PRICE + 5} gtc\n")
        maker.stdin.flush()
        until("NEW", "clordid mk-1")
        r = fix_client(ex, 23, f"buy 2 DEMO @ {PRICE + 5} ioc", prefix="tk")
        assert r.returncode == 0, r.stdout + r.stderr
        report(r.stdout, "FILLED", f"buy 2 DEMO @ {PRICE + 5} ioc", f"last 2 @ {PRICE + 5}", "cum 2  leaves 0",
               f"avg {PRICE + 5}", "clordid tk-1")
        filled = until("FILLED", "clordid mk-1")
        assert f"sell 2 DEMO @ {PRICE + 5} gtc  last 2 @ {PRICE + 5}  cum 2  leaves 0  avg {PRICE + 5}" in filled
        maker.stdin.close()  # end of its script: it logs out
        assert maker.wait(timeout=TIMEOUT) == 0
        until("LOGOUT")
    finally:
        if maker.poll() is None:
            maker.kill()
            maker.wait(timeout=10)
        reader.join(timeout=10)
        maker.stdout.close()


def test_a_wrong_password_prints_the_logout_reason_and_fails(ex) -> None:
    r = fix_client(ex, 21, f"buy 1 DEMO @ {PRICE - 10}", password="nope")
    assert r.returncode == 1
    report(r.stdout, "LOGOUT", "invalid password")
    assert "-> " not in r.stdout  # nothing was sent
    assert "logon refused: invalid password" in r.stderr


def test_a_script_on_standard_input_reports_a_bad_line_and_goes_on(ex) -> None:
    script = f"# a comment\nbuy 1 DEMO @ abc\nbuy 1 DEMO @ {PRICE - 12}\ncancel last\nquit\nbuy 1 DEMO @ 1\n"
    r = subprocess.run(client_argv(ex, 21, prefix="sc"), input=script, capture_output=True, text=True,
                       timeout=TIMEOUT)
    assert r.returncode == 2, r.stdout + r.stderr  # the bad line: a script's failure
    assert "error: price must be a positive number, got 'abc'" in r.stdout
    report(r.stdout, "NEW", "clordid sc-1")
    report(r.stdout, "CANCELED", "clordid sc-2  orig sc-1")
    assert "sc-3" not in r.stdout  # nothing after quit


def test_ctrl_c_logs_out_cleanly(ex) -> None:
    import signal

    p = subprocess.Popen(client_argv(ex, 23, prefix="cc"), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        p.stdin.write(f"buy 1 DEMO @ {PRICE - 30}\n")
        p.stdin.flush()
        line = ""
        deadline = time.monotonic() + TIMEOUT
        while "NEW" not in line and time.monotonic() < deadline:
            line = p.stdout.readline()  # bounded: the client answers or exits within its --wait
            assert line, p.stderr.read()
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=TIMEOUT)
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate(timeout=10)
    assert p.returncode == 130, out + err
    assert out.splitlines()[-1][13:] == "LOGOUT    logged out"
    assert "Traceback" not in err


# -- the session, against a scripted gateway on a socket pair ----------------------------------


def test_the_session_answers_test_requests_resend_requests_and_a_logout() -> None:
    import socket

    from ringex.gateways.fix_codec import FixReader, utc_timestamp
    from ringex.tools.fix_client import FixClient, Printer

    ours, theirs = socket.socketpair()
    theirs.settimeout(5.0)
    reader = FixReader()
    sent = []

    def gateway(t: bytes, *body) -> None:
        sent.append(t)
        theirs.sendall(encode(t, b"RINGEX", b"C21", len(sent), utc_timestamp(time.time_ns()), list(body)))

    def received(t: bytes) -> FixMessage:
        while True:
            for m in pending:
                if m.msg_type == t:
                    pending.remove(m)
                    return m
            data = theirs.recv(65536)
            assert data, "the client closed the connection"
            pending.extend(reader.feed(data))

    pending: list = []
    out = io.StringIO()
    client = FixClient("", 0, "C21", "RINGEX", "pw21", 30, Printer(out, raw=False), Commands("t", 1), reset=True)
    client.sock = ours
    try:
        gateway(b"A", (98, 0), (108, 30), (141, "Y"))
        client.logon(timeout=5.0)
        logon = received(b"A")
        assert logon.get(554) == b"pw21" and logon.get(141) == b"Y" and logon.get(108) == b"30"
        assert logon.seq_num == 1
        gateway(b"1", (112, "are-you-there"))
        assert received(b"0").get(112) == b"are-you-there"
        gateway(b"2", (7, 1), (16, 0))
        fill = received(b"4")
        assert fill.get(123) == b"Y" and fill.get(43) == b"Y" and fill.seq_num == 1 and fill.int(36) == client.seq
        gateway(b"5", (58, "the gateway is stopping"))
        assert received(b"5").get(58) is None
        client.logout(timeout=5.0)
        assert client.ended_by_gateway and client.logout_text == "the gateway is stopping"
        assert out.getvalue().splitlines()[-1].endswith("LOGOUT    the gateway is stopping")
    finally:
        client._close()
        theirs.close()
