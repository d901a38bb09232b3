"""fidbus.aio: the same publishing client on asyncio."""

import asyncio
from pathlib import Path

import pytest

import fidbus
import fidbus.aio
from fidbus import _proto as P
from harness import COUNT, tp

KEY = b"0123456789abcdef-aio-key"


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(asyncio.wait_for(coro, 60))


def test_publish_ack_ping_many(daemon):  # type: ignore[no-untyped-def]
    async def main() -> None:
        async with fidbus.aio.Client(daemon.bus) as bus:
            assert bus.server_name.startswith("fidbusd")
            for i in range(100):
                bus.publish("ev.a", {"k": "v"}, payload={"i": i})
            assert await bus.publish_ack("ev.b", payload=[1]) == 2
            fut = bus.publish("nr.x", ack=True)
            with pytest.raises(fidbus.PublishError) as ei:
                await fut
            assert ei.value.name == "NO_ROUTE" and ei.value.seq is not None
            with pytest.raises(fidbus.PublishError) as ei:
                await bus.publish_ack("fail.x")
            assert ei.value.code == P.HANDLER_FAILED and ei.value.result == 1
            kinds = ["ev.ok", "nr.none", "fail.f"] * 200
            r = await bus.publish_many([(k, None, i) for i, k in enumerate(kinds)],
                                       return_exceptions=True)
            for k, x in zip(kinds, r):
                if k == "ev.ok":
                    assert x == 2
                else:
                    assert x.name == ("NO_ROUTE" if k == "nr.none" else "HANDLER_FAILED")
            with pytest.raises(fidbus.BatchError):
                await bus.publish_many(["ev.a", "nr.b"])
            assert await bus.publish_many(["ev.c"] * 5000, ack=False) is None
            with pytest.raises(fidbus.InvalidError):
                bus.publish("bad id")
            deep: object = 1
            for _ in range(70):
                deep = [deep]
            bad = bus.publish("ev.deep", payload=deep)
            with pytest.raises(fidbus.UnackedErrors) as eu:
                await bus.ping()
            assert [e.seq for e in eu.value.errors] == [bad]
            assert bus.async_errors == 1 and bus.connected
            got = []
            bus.on_error = got.append
            bad2 = bus.publish("ev.deep", payload=deep)
            await bus.ping()
            assert [e.seq for e in got] == [bad2] and bus.take_errors() == []
            bus.on_error = None
            await bus.flush()
            await bus.ping()
            assert bus.unanswered == 0
    run(main())
    with fidbus.Control(daemon.control) as ctl:
        assert ctl.stats()["received"] == 100 + 1 + 1 + 1 + 600 + 2 + 5000


def test_connect_errors(make_daemon, tmp_path):  # type: ignore[no-untyped-def]
    async def missing() -> None:
        await fidbus.aio.Client(str(tmp_path / "none.sock")).connect()
    with pytest.raises(fidbus.ConnectError):
        run(missing())
    dm = make_daemon(COUNT + "[route all]\nevent = *\nto = fidbus.count\n", tcp_key=KEY)

    async def tcp() -> None:
        async with fidbus.aio.Client(dm.tcp_addr, key=KEY) as bus:
            assert await bus.publish_ack("ev.x") == 1
        with pytest.raises(fidbus.ConnectError) as ei:
            await fidbus.aio.Client(dm.tcp_addr, key=b"y" * 16).connect()
        assert ei.value.code == P.UNAUTHORIZED
    run(tcp())


GATE = (tp("gate") + "gate = @D@/gate\nfile = @D@/gate.txt\n"
        "[route g]\nevent = g.*\nto = test.gate\n" + COUNT +
        "[route all]\nevent = ev.*\nto = fidbus.count\n")


def test_reconnect_and_resend(make_daemon):  # type: ignore[no-untyped-def]
    dm = make_daemon(GATE)

    async def main() -> None:
        bus = await fidbus.aio.Client(dm.bus, reconnect_max=0.2).connect()
        held = [bus.publish("g.held", payload=i, ack=True) for i in range(3)]
        await bus.flush()
        dm.kill()
        more = [bus.publish("ev.more", payload=i, ack=True) for i in range(20)]
        Path(dm.dir / "gate").touch()
        dm.start()
        assert await asyncio.gather(*held) == [1, 1, 1]
        assert await asyncio.gather(*more) == [1] * 20
        await bus.ping()
        assert bus.reconnects >= 1
        await bus.close()
        return [f for f in held]
    held = run(main())
    seqs = sorted(int(ln.split()[1]) for ln in (dm.dir / "gate.txt").read_text().splitlines())
    assert len(seqs) == 3 and len(held) == 3


def test_lost_without_reconnect(make_daemon):  # type: ignore[no-untyped-def]
    dm = make_daemon(GATE)

    async def main() -> None:
        bus = await fidbus.aio.Client(dm.bus, reconnect=False).connect()
        fut = bus.publish("g.held", ack=True)
        await bus.flush()
        dm.kill()
        with pytest.raises(fidbus.ConnectionLost):
            await fut
        with pytest.raises(fidbus.ConnectionLost):
            await bus.publish_ack("ev.x")
        await bus.close()
    run(main())
    dm.start()
