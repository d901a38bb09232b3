"""Serving remote functions on fidbus.aio: concurrent async handlers
within the credit, answers in and out of call-id order, RETRY and
HANDLER_FAILED, stop() and drain, registration refused at serve(), and
re-registration after the daemon restarts."""

import asyncio
import os

import pytest

import fidbus
import fidbus.aio
from harness import COUNT, TIMEOUT

FN = "acme.audit@1.0.0"


def conf() -> str:
    return (COUNT + f"[remote acme]\nusers = {os.getuid()}\ncredit = 64\n"
            f"[route audit]\nevent = a.*\nto = {FN}\n")


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(asyncio.wait_for(coro, 60))


def test_concurrent_within_credit(make_daemon):  # type: ignore[no-untyped-def]
    dm = make_daemon(conf())

    async def main() -> None:
        running = 0
        most = 0
        four = asyncio.Event()
        srv = fidbus.aio.Client(dm.bus)
        await srv.connect()

        @srv.function(FN, signature="event:any", credit=4)
        async def audit(ev: fidbus.Event) -> None:
            nonlocal running, most
            running += 1
            most = max(most, running)
            if running == 4:
                four.set()
            await four.wait()  # the first four are all held at once
            running -= 1
            if ev.payload % 4 == 1:
                await asyncio.sleep(0)  # finishes after a younger call
            if ev.payload == 5:
                raise ValueError("five is bad")
            if ev.payload == 6:
                raise fidbus.Retry()

        ready = asyncio.Event()
        task = asyncio.ensure_future(srv.serve(on_ready=ready.set))
        await asyncio.wait_for(ready.wait(), TIMEOUT)
        async with fidbus.aio.Client(dm.bus) as pub:
            res = await pub.publish_many([("a.x", None, i) for i in range(12)],
                                         return_exceptions=True)
        assert most == 4
        assert [r if isinstance(r, int) else r.name for r in res] == \
            [1, 1, 1, 1, 1, "HANDLER_FAILED", "UNAVAILABLE", 1, 1, 1, 1, 1]
        srv.stop()
        await asyncio.wait_for(task, TIMEOUT)
        assert srv.serving == [] and srv.held == 0
        await srv.close()

    run(main())


def test_register_refused_and_stop(make_daemon):  # type: ignore[no-untyped-def]
    dm = make_daemon(conf())

    async def main() -> None:
        async with fidbus.aio.Client(dm.bus) as bus:
            bus.function(FN)(lambda ev: None)
            bus.function("zork.x@1.0.0")(lambda ev: None)
            with pytest.raises(fidbus.RegisterError) as ei:
                await bus.serve()
            assert ei.value.name == "UNAUTHORIZED" and ei.value.function == "zork.x@1.0.0"
            assert bus.serving == []
        async with fidbus.aio.Client(dm.bus) as pub:  # acme.audit left again
            with pytest.raises(fidbus.PublishError) as pe:
                await pub.publish_ack("a.x")
            assert pe.value.name == "UNAVAILABLE"

            bus = fidbus.aio.Client(dm.bus)
            await bus.connect()
            seen = []

            @bus.function(FN)
            def plain(ev: fidbus.Event) -> None:  # a plain handler runs in the reader
                seen.append(ev.payload)
                if ev.payload == "stop":
                    bus.stop()

            ready = asyncio.Event()
            task = asyncio.ensure_future(bus.serve(on_ready=ready.set))
            await asyncio.wait_for(ready.wait(), TIMEOUT)
            f1 = pub.publish("a.x", payload=1, ack=True)
            assert await f1 == 1
            assert await pub.publish_ack("a.x", payload="stop") == 1
            await asyncio.wait_for(task, TIMEOUT)
            assert seen == [1, "stop"] and bus.calls_served == 2
            await bus.close()

    run(main())


def test_reregister_after_restart(make_daemon):  # type: ignore[no-untyped-def]
    dm = make_daemon(conf())

    async def main() -> None:
        bus = fidbus.aio.Client(dm.bus)
        await bus.connect()

        @bus.function(FN)
        async def audit(ev: fidbus.Event) -> None:
            pass

        ready = asyncio.Queue()  # type: asyncio.Queue[int]
        task = asyncio.ensure_future(bus.serve(on_ready=lambda: ready.put_nowait(1)))
        await asyncio.wait_for(ready.get(), TIMEOUT)
        await asyncio.get_running_loop().run_in_executor(None, dm.stop)
        await asyncio.get_running_loop().run_in_executor(None, dm.start)
        await asyncio.wait_for(ready.get(), TIMEOUT)  # registered again
        async with fidbus.aio.Client(dm.bus) as pub:
            assert await pub.publish_ack("a.x") == 1
        assert bus.reconnects == 1
        bus.stop()
        await asyncio.wait_for(task, TIMEOUT)
        await bus.close()

    run(main())


CHILD = """
import asyncio, sys
sys.path.insert(0, sys.argv[2])
import fidbus, fidbus.aio

async def main():
    bus = fidbus.aio.Client(sys.argv[1])
    await bus.connect()

    @bus.function("acme.audit@1.0.0", credit=2)
    async def audit(ev):
        print("got", ev.payload, flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)

    await bus.serve(on_ready=lambda: print("ready", flush=True))
    print("drained", bus.calls_served, flush=True)
    await bus.close()

asyncio.run(main())
"""


def test_sigterm_drains(make_daemon):  # type: ignore[no-untyped-def]
    import signal
    import subprocess
    import sys
    from harness import HERE
    dm = make_daemon(conf())
    p = subprocess.Popen([sys.executable, "-c", CHILD, dm.bus, str(HERE.parent)],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout is not None and p.stdin is not None
        assert p.stdout.readline() == "ready\n"
        with fidbus.Client(dm.bus) as pub:
            futs = [pub.publish("a.x", payload=i, ack=True) for i in (1, 2)]
            pub.flush()
            assert sorted([p.stdout.readline(), p.stdout.readline()]) == ["got 1\n", "got 2\n"]
            p.send_signal(signal.SIGTERM)  # both calls held, running
            p.stdin.write("go\ngo\n")
            p.stdin.flush()
            out, _ = p.communicate(timeout=TIMEOUT)
            assert p.returncode == 0 and out == "drained 2\n", out
            assert [f.result() for f in futs] == [1, 1]
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_serve_started_while_disconnected(make_daemon):  # type: ignore[no-untyped-def]
    dm = make_daemon(conf())

    async def main() -> None:
        bus = fidbus.aio.Client(dm.bus)
        await bus.connect()

        @bus.function(FN)
        async def audit(ev: fidbus.Event) -> None:
            pass

        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, dm.stop)
        end = loop.time() + TIMEOUT
        while bus.connected:  # the read loop sees the end of the stream
            assert loop.time() < end
            await asyncio.sleep(0.01)
        ready = asyncio.Event()
        task = asyncio.ensure_future(bus.serve(on_ready=ready.set))
        await loop.run_in_executor(None, dm.start)
        await asyncio.wait_for(ready.wait(), TIMEOUT)  # registered on the new connection
        async with fidbus.aio.Client(dm.bus) as pub:
            assert await pub.publish_ack("a.x") == 1
        bus.stop()
        await asyncio.wait_for(task, TIMEOUT)
        await bus.close()

    run(main())
