"""Serving remote functions from Python (proto/README.md "Remote functions") against a real
fidbusd: results, RETRY, HANDLER_FAILED, deadlines, idempotent
redelivery, credit, stopping and draining, re-registration, refusals."""

import hashlib
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

import fidbus
import fidbus._serving
from harness import COUNT, HERE, TIMEOUT

FN = "acme.audit@1.0.0"


def conf(credit: int = 16, timeout_ms: int = 30000, extra: str = "") -> str:
    return (COUNT + f"[remote acme]\nusers = {os.getuid()}\ncredit = {credit}\n"
            f"timeout_ms = {timeout_ms}\nattempts = 3\n"
            f"[route audit]\nevent = a.*\nto = {FN}\n"
            "[route side]\nevent = side.*\nto = fidbus.count\n" + extra)


class Server:
    """A Client serving in a thread of this process."""

    def __init__(self, bus: str, handler, **kw) -> None:  # type: ignore[no-untyped-def]
        self.client = fidbus.Client(bus)
        self.client.function(FN, signature="event:any", **kw)(handler)
        self.ready = threading.Semaphore(0)
        self.error: "BaseException | None" = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert self.ready.acquire(timeout=TIMEOUT), "serve() did not start"

    def _run(self) -> None:
        try:
            self.client.serve(on_ready=self.ready.release)
        except BaseException as e:  # noqa: B902 - reported by stop()
            self.error = e

    def stop(self) -> None:
        self.client.stop()
        self.thread.join(TIMEOUT)
        assert not self.thread.is_alive(), "serve() did not return after stop()"
        if self.error is not None:
            raise self.error
        self.client.close()


def fn_stats(ctl: fidbus.Control) -> dict:  # type: ignore[type-arg]
    """The daemon's stats of FN."""
    (st,) = [v for v in ctl.stats()["functions"].values() if v.get("canonical") == FN]
    return st  # type: ignore[no-any-return]


def wait_until(cond, what: str) -> None:  # type: ignore[no-untyped-def]
    """A condition the daemon reaches on its own (no ready signal exists
    for it): polled through the control socket, within a generous bound."""
    end = time.monotonic() + TIMEOUT
    while not cond():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.01)


CHILD = """
import sys, time
sys.path.insert(0, sys.argv[2])
import fidbus
bus = fidbus.Client(sys.argv[1])
mode = sys.argv[3]

@bus.function("acme.audit@1.0.0", signature="event:any", idempotent=True, credit=2)
def audit(ev):
    print("got", ev.attempt, ev.payload, flush=True)
    if mode == "hold":
        time.sleep(3600)   # held until the test kills this process
    elif mode == "wait-line" and ev.payload == "first":
        sys.stdin.readline()

bus.serve(on_ready=lambda: print("ready", flush=True))
print("drained", bus.calls_served, flush=True)
"""


def child(dm, mode: str) -> subprocess.Popen:  # type: ignore[type-arg,no-untyped-def]
    p = subprocess.Popen([sys.executable, "-c", CHILD, dm.bus, str(HERE.parent), mode],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None
    assert p.stdout.readline() == "ready\n"
    return p


def test_served_function_counts_in_ack(make_daemon):  # type: ignore[no-untyped-def]
    dm = make_daemon(conf())
    seen = []
    side = []

    def audit(ev: fidbus.Event) -> None:
        seen.append(ev)
        if ev.id == "a.pub":  # publish (and wait) on the serving connection
            side.append(srv.client.publish_ack("side.x", payload=ev.payload))

    srv = Server(dm.bus, audit)
    with fidbus.Client(dm.bus) as pub:
        assert pub.publish_ack("a.x", {"region": "eu"}, payload={"id": 42}) == 1
        assert pub.publish_ack("a.none") == 1
        raw = fidbus.RawCBOR(b"\x9f\x01\xff")  # indefinite array: kept byte-exact
        assert pub.publish_ack("a.raw", payload=raw) == 1
        assert pub.publish_ack("a.pub", payload=7) == 1
        assert pub.publish_many(["a.many"] * 500) == [1] * 500
    srv.stop()
    ev = seen[0]
    assert (ev.id, ev.tags, ev.payload, ev.attempt) == ("a.x", {"region": "eu"}, {"id": 42}, 1)
    assert ev.raw_payload == b"\xa1\x62id\x18\x2a" and ev.generation >= 1 and ev.call_id >= 1
    assert (ev.uid, ev.pid) == (os.getuid(), os.getpid())  # the publisher: this process
    assert ev.funcid == int.from_bytes(hashlib.sha256(FN.encode()).digest()[:8], "big")
    assert not seen[1].has_payload and seen[1].payload is None and seen[1].tags == {}
    assert seen[2].raw_payload == b"\x9f\x01\xff" and seen[2].payload == [1]
    assert side == [1]
    assert len(seen) == 504 and srv.client.calls_served == 504
    assert [e.call_id for e in seen] == sorted(e.call_id for e in seen)
    dm.stop()
    assert dm.count()["side.x"] == 1


def test_async_handler(make_daemon):  # type: ignore[no-untyped-def]
    import asyncio
    dm = make_daemon(conf())
    got = []

    async def audit(ev: fidbus.Event) -> None:
        await asyncio.sleep(0)
        if ev.payload == "fail":
            raise RuntimeError("async failure")
        got.append(ev.payload)

    srv = Server(dm.bus, audit)
    with fidbus.Client(dm.bus) as pub:
        assert pub.publish_ack("a.x", payload=1) == 1
        with pytest.raises(fidbus.PublishError) as ei:
            pub.publish_ack("a.x", payload="fail")
        assert ei.value.name == "HANDLER_FAILED"
    srv.stop()
    assert got == [1]


def test_exception_is_handler_failed_with_message(make_daemon, monkeypatch):  # type: ignore[no-untyped-def]
    sent = []
    real = fidbus._serving.result_one

    def spy(call_id: int, code: int, message: str) -> bytes:
        frame = real(call_id, code, message)
        sent.append((code, message, len(frame)))
        return frame

    monkeypatch.setattr(fidbus._serving, "result_one", spy)
    dm = make_daemon(conf())

    def audit(ev: fidbus.Event) -> None:
        if ev.payload == "long":
            raise ValueError("x" * 5000)
        if ev.payload != "ok":
            raise KeyError(f"no such order: {ev.payload}")

    srv = Server(dm.bus, audit)
    with fidbus.Client(dm.bus) as pub:
        with pytest.raises(fidbus.PublishError) as ei:
            pub.publish_ack("a.x", payload=42)
        assert ei.value.code == fidbus.proto.HANDLER_FAILED and ei.value.result == 0
        with pytest.raises(fidbus.PublishError):
            pub.publish_ack("a.x", payload="long")
        assert pub.publish_ack("a.x", payload="ok") == 1  # the loop goes on
    srv.stop()
    assert sent[0][:2] == (fidbus.proto.HANDLER_FAILED, "'no such order: 42'")
    assert sent[1][0] == fidbus.proto.HANDLER_FAILED and sent[1][2] < 1100  # bounded


def test_retry_goes_to_another_member(make_daemon):  # type: ignore[no-untyped-def]
    dm = make_daemon(conf())
    a_got = threading.Event()
    b_up = threading.Event()
    b_seen = []

    def a(ev: fidbus.Event) -> None:
        a_got.set()
        assert b_up.wait(TIMEOUT)
        raise fidbus.Retry("busy here")

    sa = Server(dm.bus, a)
    with fidbus.Client(dm.bus) as pub:
        fut = pub.publish("a.x", payload="r", ack=True)  # only a serves yet
        pub.flush()
        assert a_got.wait(TIMEOUT)
        sb = Server(dm.bus, lambda ev: b_seen.append(ev.attempt))
        b_up.set()
        assert fut.result() == 1
    sa.stop()
    sb.stop()
    assert b_seen == [2]


def test_hanging_handler_deadline(make_daemon):  # type: ignore[no-untyped-def]
    dm = make_daemon(conf())
    release = threading.Event()
    done = []

    def audit(ev: fidbus.Event) -> None:
        if ev.payload == "hang":
            assert release.wait(TIMEOUT)
        done.append(ev.payload)

    srv = Server(dm.bus, audit, timeout_ms=200)
    with fidbus.Client(dm.bus) as pub:
        with pytest.raises(fidbus.PublishError) as ei:
            pub.publish_ack("a.x", payload="hang")
        assert ei.value.name == "UNAVAILABLE"
        release.set()
        assert pub.publish_ack("a.x", payload="next") == 1
    srv.stop()
    assert done == ["hang", "next"]
    with fidbus.Control(dm.control) as ctl:
        assert fn_stats(ctl)["timeouts"] == 1


def test_idempotent_redelivery_after_kill(make_daemon):  # type: ignore[no-untyped-def]
    dm = make_daemon(conf())
    p = child(dm, "hold")
    b_seen = []
    try:
        with fidbus.Client(dm.bus) as pub:
            fut = pub.publish("a.x", payload="once", ack=True)
            pub.flush()
            assert p.stdout.readline() == "got 1 once\n"  # type: ignore[union-attr]
            sb = Server(dm.bus, lambda ev: b_seen.append((ev.attempt, ev.payload)))
            os.kill(p.pid, signal.SIGKILL)
            assert fut.result() == 1
            sb.stop()
    finally:
        p.kill()
        p.wait()
    assert b_seen == [(2, "once")]


def test_credit_respected(make_daemon):  # type: ignore[no-untyped-def]
    dm = make_daemon(conf())
    release = threading.Event()
    seen = []
    held = []

    def audit(ev: fidbus.Event) -> None:
        seen.append(ev.call_id)
        held.append(srv.client.held)
        if len(seen) == 1:
            assert release.wait(TIMEOUT)

    srv = Server(dm.bus, audit, credit=2)
    ctl = fidbus.Control(dm.control)

    def members():  # type: ignore[no-untyped-def]
        (m,) = ctl.func_members()["members"]
        return m

    with fidbus.Client(dm.bus) as pub:
        futs = [pub.publish("a.x", payload=i, ack=True) for i in range(8)]
        pub.flush()
        # all 8 taken by the daemon: 2 written to the member, 6 waiting
        wait_until(lambda: len(seen) == 1 and members()["inflight"] == 2 and
                   fn_stats(ctl)["waiting"] == 6, "the member to hold its credit")
        assert members()["credit"] == 2 and len(seen) == 1
        release.set()
        assert [f.result() for f in futs] == [1] * 8
    srv.stop()
    ctl.close()
    assert len(seen) == 8 and 1 <= max(held) <= 2 and srv.client.held == 0


def test_stop_from_another_thread(make_daemon):  # type: ignore[no-untyped-def]
    dm = make_daemon(conf())
    srv = Server(dm.bus, lambda ev: None)
    with fidbus.Control(dm.control) as ctl:
        assert len(ctl.func_members()["members"]) == 1
        srv.stop()
        assert srv.client.serving == []
        assert ctl.func_members()["members"] == []
    with fidbus.Client(dm.bus) as pub:
        with pytest.raises(fidbus.PublishError) as ei:
            pub.publish_ack("a.x")
        assert ei.value.name == "UNAVAILABLE"


def test_stop_from_handler(make_daemon):  # type: ignore[no-untyped-def]
    dm = make_daemon(conf())
    bus = fidbus.Client(dm.bus)

    @bus.function(FN)
    def audit(ev: fidbus.Event) -> None:
        bus.stop()

    with fidbus.Client(dm.bus) as pub:
        fut = pub.publish("a.x", ack=True)
        pub.flush()
        bus.serve()  # returns once the call is answered and UNREGISTER acked
        assert fut.result() == 1
    assert bus.serving == [] and bus.calls_served == 1
    bus.close()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_drains(make_daemon, sig):  # type: ignore[no-untyped-def]
    dm = make_daemon(conf())
    p = child(dm, "wait-line")
    try:
        with fidbus.Client(dm.bus) as pub:
            f1 = pub.publish("a.x", payload="first", ack=True)
            f2 = pub.publish("a.x", payload="second", ack=True)  # in hand (credit 2)
            pub.flush()
            assert p.stdout.readline() == "got 1 first\n"  # type: ignore[union-attr]
            with fidbus.Control(dm.control) as ctl:
                wait_until(lambda: ctl.func_members()["members"][0]["inflight"] == 2,
                           "both calls written to the member")
            p.send_signal(sig)
            p.stdin.write("go\n")  # type: ignore[union-attr]
            p.stdin.flush()  # type: ignore[union-attr]
            out, _ = p.communicate(timeout=TIMEOUT)
            assert p.returncode == 0, out
            assert out == "got 1 second\ndrained 2\n"
            assert f1.result() == 1 and f2.result() == 1
            with pytest.raises(fidbus.PublishError) as ei:
                pub.publish_ack("a.x")
            assert ei.value.name == "UNAVAILABLE"
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_reregister_after_daemon_restart(make_daemon):  # type: ignore[no-untyped-def]
    dm = make_daemon(conf())
    srv = Server(dm.bus, lambda ev: None)
    dm.stop()
    dm.start()
    assert srv.ready.acquire(timeout=TIMEOUT), "not registered again"
    with fidbus.Client(dm.bus) as pub:
        assert pub.publish_ack("a.x") == 1
    assert srv.client.reconnects == 1
    srv.stop()


def test_register_refused(make_daemon):  # type: ignore[no-untyped-def]
    other = hashlib.sha256(b"other").hexdigest()
    dm = make_daemon(conf(extra="[route signed]\nevent = s.*\nto = acme.signed@1.0.0\n"
                                f"signature = {other}\n"))
    with fidbus.Client(dm.bus) as bus:
        with pytest.raises(fidbus.RegisterError) as ei:
            bus.function("zork.audit@1.0.0")(lambda ev: None)  # no [remote zork]
        assert ei.value.code == fidbus.proto.UNAUTHORIZED and ei.value.name == "UNAUTHORIZED"
        assert ei.value.function == "zork.audit@1.0.0"
        with pytest.raises(fidbus.InvalidError):
            bus.function("acme.audit")(lambda ev: None)  # no version
        with pytest.raises(fidbus.InvalidError):
            bus.function(FN, credit=0)(lambda ev: None)
        with pytest.raises(fidbus.RegisterError) as ei:
            bus.function("acme.signed@1.0.0", signature="event:any")(lambda ev: None)
        assert ei.value.name == "SIGNATURE_MISMATCH"
        bus.function("acme.signed@1.0.0", signature="other")(lambda ev: None)
        bus.function(FN, signature="event:any")(lambda ev: None)
        assert bus.serving == ["acme.signed@1.0.0", FN]
        with fidbus.Client(dm.bus) as other:
            with pytest.raises(fidbus.RegisterError) as ei:
                other.function(FN, signature="event:other")(lambda ev: None)
            assert ei.value.name == "CONFLICT"
            assert other.serving == []
            with pytest.raises(ValueError):
                other.serve()  # nothing to serve
        bus.ping()  # the connection is still fine
