"""The bus client against a real fidbusd: publishing, answers, errors."""

import socket

import pytest

import fidbus
from fidbus import _proto as P
from harness import COUNT, LOG, tp


def received(dm) -> int:  # type: ignore[no-untyped-def]
    with fidbus.Control(dm.control) as ctl:
        return int(ctl.stats()["received"])


def test_publish_unacked_then_ping(daemon):  # type: ignore[no-untyped-def]
    with fidbus.Client(daemon.bus) as bus:
        assert bus.server_name.startswith("fidbusd")
        seqs = [bus.publish("ev.order", {"region": "eu"}, payload={"id": i})
                for i in range(100)]
        assert seqs == sorted(set(seqs))
        bus.publish("ev.none")  # no payload at all
        bus.publish("ev.null", payload=None)  # CBOR null
        bus.ping()
    lines = daemon.log_lines()
    assert len(lines) == 102
    assert 'event=ev.order' in lines[0] and 'tags={"region":"eu"}' in lines[0]
    assert 'payload={"id": 0}' in lines[0]
    assert "payload=" not in lines[100]
    assert "payload=null" in lines[101]
    assert received(daemon) == 102


def test_rawcbor_is_sent_byte_exact(daemon):  # type: ignore[no-untyped-def]
    with fidbus.Client(daemon.bus) as bus:
        bus.publish("ev.raw", payload=fidbus.RawCBOR(bytes.fromhex("9f0102ff")))
        bus.publish("ev.bytes", payload=b"\x01\x02")  # bytes: a byte string item
        bus.ping()
    lines = daemon.log_lines()
    assert "payload=[_ 1, 2]" in lines[0], lines[0]
    assert "payload=h'0102'" in lines[1], lines[1]


def test_publish_ack_returns_handler_count(daemon):  # type: ignore[no-untyped-def]
    with fidbus.Client(daemon.bus) as bus:
        assert bus.publish_ack("ev.a", {"k": "v"}, payload=[1, 2]) == 2
        fut = bus.publish("ev.b", ack=True)
        assert isinstance(fut, fidbus.PublishFuture)
        assert fut.result() == 2 and fut.done() and fut.exception() is None


def test_publish_ack_errors(daemon):  # type: ignore[no-untyped-def]
    with fidbus.Client(daemon.bus) as bus:
        with pytest.raises(fidbus.PublishError) as ei:
            bus.publish_ack("nr.nothing")
        e = ei.value
        assert (e.code, e.name) == (P.NO_ROUTE, "NO_ROUTE")
        assert "no route" in e.message and e.seq is not None
        with pytest.raises(fidbus.PublishError) as ei:
            bus.publish_ack("fail.x")
        assert ei.value.name == "HANDLER_FAILED" and ei.value.result == 1
        assert isinstance(ei.value, fidbus.Error)


def test_pipelined_errors_land_on_their_own_future(daemon):  # type: ignore[no-untyped-def]
    kinds = ["ev.ok", "nr.none", "fail.f"] * 300
    with fidbus.Client(daemon.bus, window=64) as bus:
        futs = [bus.publish(k, payload=i, ack=True) for i, k in enumerate(kinds)]
        seen_cb = []
        futs[-1].add_done_callback(lambda f: seen_cb.append(f.seq))
        for k, f in zip(kinds, futs):
            if k == "ev.ok":
                assert f.result() == 2
            else:
                err = f.exception()
                assert isinstance(err, fidbus.PublishError)
                assert err.seq == f.seq
                assert err.name == ("NO_ROUTE" if k == "nr.none" else "HANDLER_FAILED")
        assert seen_cb == [futs[-1].seq]
        assert bus.unanswered == 0


def test_errors_answered_out_of_order_land_on_their_future(make_daemon):  # type: ignore[no-untyped-def]
    # a blocking handler answers late, NO_ROUTE at once: the answers come
    # back out of order and are matched by seq, not by position
    dm = make_daemon(tp("slow") + "delay_ms = 300\nfile = @D@/slow.txt\n"
                     "[route s]\nevent = slow.*\nto = test.slow\n" + COUNT +
                     "[route c]\nevent = ev.*\nto = fidbus.count\n")
    with fidbus.Client(dm.bus) as bus:
        slow = bus.publish("slow.a", ack=True)
        nr = [bus.publish("nr.b", ack=True) for _ in range(3)]
        ok = bus.publish("ev.c", ack=True)
        assert ok.result() == 1
        for f in nr:
            assert f.exception().name == "NO_ROUTE" and f.exception().seq == f.seq
        assert slow.result() == 1


def test_callbacks_may_call_into_the_client(daemon):  # type: ignore[no-untyped-def]
    # a done-callback runs after the client's buffers are consistent: it may
    # publish and wait itself
    with fidbus.Client(daemon.bus, window=8) as bus:
        got = []

        def cb(f):  # type: ignore[no-untyped-def]
            got.append((f.result(), bus.publish_ack("ev.from-callback")))

        futs = [bus.publish("ev.a", payload=i, ack=True) for i in range(50)]
        for f in futs[::10]:
            f.add_done_callback(cb)
        assert [f.result() for f in futs] == [2] * 50
        bus.ping()
        assert got == [(2, 2)] * 5
        done = futs[0]
        done.add_done_callback(lambda f: got.append("now"))  # already done: at once
        assert got[-1] == "now"


def test_publish_many(daemon):  # type: ignore[no-untyped-def]
    with fidbus.Client(daemon.bus, window=16) as bus:
        items = ["ev.a", ("ev.b",), ("ev.c", {"t": "1"}), ("ev.d", None, {"x": 1})] * 50
        assert bus.publish_many(items) == [2] * 200
        mixed = ["ev.a", "nr.b", ("fail.c", None, 1)]
        with pytest.raises(fidbus.BatchError) as ei:
            bus.publish_many(mixed)
        r = ei.value.results
        assert r[0] == 2 and r[1].name == "NO_ROUTE" and r[2].name == "HANDLER_FAILED"
        assert ei.value.code == P.NO_ROUTE
        r = bus.publish_many(mixed, return_exceptions=True)
        assert r[0] == 2 and isinstance(r[1], fidbus.PublishError)
        assert bus.publish_many(["ev.x"] * 10, ack=False) is None
        bus.ping()
    assert received(daemon) == 200 + 3 + 3 + 10


def test_unacked_error_is_raised_by_ping_with_its_seq(daemon):  # type: ignore[no-untyped-def]
    deep: object = 1
    for _ in range(70):  # deeper than max_depth 64: the daemon says TOO_LARGE
        deep = [deep]
    with fidbus.Client(daemon.bus) as bus:
        bus.publish("ev.a")
        bad = bus.publish("ev.deep", payload=deep)
        bus.publish("ev.b")
        with pytest.raises(fidbus.UnackedErrors) as ei:
            bus.ping()
        assert [e.seq for e in ei.value.errors] == [bad]
        assert ei.value.name == "TOO_LARGE" and bus.async_errors == 1
        bus.ping()  # raised once, not again
        got = []
        bus.on_error = got.append
        bad2 = bus.publish("ev.deep", payload=deep)
        bus.ping()
        assert [e.seq for e in got] == [bad2]
        bus.on_error = None
        bad3 = bus.publish("ev.deep", payload=deep)
        with pytest.raises(fidbus.UnackedErrors):
            bus.ping()
        assert bus.take_errors() == []
        assert bad3 > bad2


@pytest.mark.parametrize("event,tags", [
    ("", None),
    ("has space", None),
    ("x" * 256, None),
    ("ümlaut", None),
    ("ok", {"": "v"}),
    ("ok", {"bad key": "v"}),
    ("ok", {"k" * 65: "v"}),
    ("ok", {"k": "v" * 256}),
    ("ok", {"k": "é" * 128}),  # 256 bytes of UTF-8
    ("ok", {"k": "nul\0"}),
    ("ok", {"k": "\ud800"}),  # a lone surrogate is not UTF-8
    ("ok", {f"k{i}": "v" for i in range(33)}),
    ("ok", {"k": 1}),
    (b"ev.bytes", None),
])
def test_invalid_ids_and_tags_refused_client_side(daemon, event, tags):  # type: ignore[no-untyped-def]
    with fidbus.Client(daemon.bus) as bus:
        for ack in (False, True):
            with pytest.raises(fidbus.InvalidError) as ei:
                bus.publish(event, tags, ack=ack)
            assert ei.value.code == P.INVALID and isinstance(ei.value, ValueError)
        bus.ping()
    assert received(daemon) == 0


def test_limits_accepted_at_the_edge(daemon):  # type: ignore[no-untyped-def]
    with fidbus.Client(daemon.bus) as bus:
        tags = {f"k{i}": "v" for i in range(32)}
        tags["k0"] = "é" * 127 + "x"  # 255 bytes
        tags["k" * 64] = tags.pop("k1")
        bus.publish("ev." + "x" * 252, tags)
        bus.publish("ev.empty", {"k": ""})
        bus.ping()
    assert received(daemon) == 2


def test_rawcbor_checked_once(daemon):  # type: ignore[no-untyped-def]
    for bad in ("", "ff", "8201", "0101", "a1", "1c"):
        with pytest.raises(fidbus.InvalidError) as ei:
            fidbus.RawCBOR(bytes.fromhex(bad))
        assert ei.value.code == P.MALFORMED
    with pytest.raises(fidbus.InvalidError) as ei:
        fidbus.RawCBOR(b"\x81" * 65 + b"\x01")
    assert ei.value.code == P.TOO_LARGE
    assert fidbus.RawCBOR(b"\x81" * 64 + b"\x01").decode() is not None
    assert fidbus.RawCBOR(bytes.fromhex("1b0000000000000003")).decode() == 3


def test_payload_above_max_frame(make_daemon):  # type: ignore[no-untyped-def]
    dm = make_daemon(COUNT + "[route all]\nevent = *\nto = fidbus.count\n", max_frame=4096)
    with fidbus.Client(dm.bus, max_frame=4096) as bus:
        # body: a5, 00 03, 01 01 (seq 1), 02 64 "ev.x", 04 ITEM, 05 01: 14 bytes
        # and the item; ITEM = 59 LL LL + L bytes
        n = 4096 - 14 - 3
        fits = fidbus.RawCBOR(b"\x59" + n.to_bytes(2, "big") + bytes(n))
        assert bus.publish_ack("ev.x", payload=fits) == 1  # exactly max_frame
        big = bytes(5000)
        for ack in (False, True):
            with pytest.raises(fidbus.InvalidError) as ei:
                bus.publish("ev.x", payload=big, ack=ack)
            assert ei.value.code == P.TOO_LARGE
        assert bus.publish_ack("ev.x", payload=b"small") == 1  # still connected
    # the daemon's own limit, when the client is told a larger one: it
    # answers TOO_LARGE and closes, and the client says so
    with fidbus.Client(dm.bus, max_frame=1 << 20, reconnect=False) as bus:
        bus.publish("ev.x", payload=bytes(5000))
        with pytest.raises(fidbus.ConnectionLost) as ei2:
            bus.ping()
        assert "TOO_LARGE" in str(ei2.value)


def test_unencodable_payload(daemon):  # type: ignore[no-untyped-def]
    with fidbus.Client(daemon.bus) as bus:
        with pytest.raises(fidbus.InvalidError):
            bus.publish("ev.x", payload=object())
        assert bus.publish_ack("ev.x", payload={"fine": [1.5, None, True]}) == 2


def test_flush_writes_what_is_buffered(daemon):  # type: ignore[no-untyped-def]
    bus = fidbus.Client(daemon.bus)
    for i in range(10):
        bus.publish("ev.flush", payload=i)
    assert received(daemon) == 0  # buffered: not written yet
    bus.flush()
    # End of input is a barrier too: the daemon handles every frame it
    # received, then closes (proto/README.md "End of input").
    sock = socket.socket(fileno=bus.fileno())
    try:
        sock.shutdown(socket.SHUT_WR)
        sock.setblocking(True)
        while sock.recv(4096):
            pass
    finally:
        sock.detach()
    bus.close()
    assert received(daemon) == 10


def test_timeout_leaves_the_publish_in_flight(make_daemon):  # type: ignore[no-untyped-def]
    dm = make_daemon(tp("slow") + "delay_ms = 1500\nfile = @D@/slow.txt\n"
                     "[route s]\nevent = slow.*\nto = test.slow\n")
    with fidbus.Client(dm.bus, timeout=0.2) as bus:
        with pytest.raises(fidbus.Timeout):
            bus.publish_ack("slow.x")
        fut = bus.publish("slow.y", ack=True)
        with pytest.raises(fidbus.Timeout):
            fut.result()
        assert fut.result(timeout=10) == 1  # the answer, when it comes
        bus.ping(timeout=10)


def test_control_refuses_publish_with_error(daemon):  # type: ignore[no-untyped-def]
    # the control socket is not a bus: an un-acked publish there is
    # answered UNSUPPORTED on its seq
    with fidbus.Client(daemon.control) as bus:
        s = bus.publish("ev.x")
        with pytest.raises(fidbus.UnackedErrors) as ei:
            bus.ping()
        assert ei.value.errors[0].seq == s and ei.value.name == "UNSUPPORTED"


def test_log_and_count_together(make_daemon):  # type: ignore[no-untyped-def]
    dm = make_daemon(LOG + COUNT + "[route r]\nevent = *\nto = fidbus.count\n")
    with fidbus.Client(dm.bus) as bus:
        bus.publish_many([("a.b", None, i) for i in range(1000)], ack=False)
        bus.ping()
    dm.stop()
    assert dm.count()["a.b"] == 1000
