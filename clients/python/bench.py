#!/usr/bin/python3
"""Publish rates of the Python client, one process, against a fidbusd of
its own (count plugin only, every event routed to it), and the C client's
figures from build/bench/fidbus-bench in the same run.

    /usr/bin/python3 clients/python/bench.py [--events N] [--acked N] [--one N]
        [--no-c] [--bus ADDR]

Modes (each ends with a PING barrier inside the clock, so the daemon has
handled every event when the clock stops; the daemon's own count is
checked afterwards through the control socket):

- unacked:      publish() without ACK, a 64-byte payload given as RawCBOR
                (the frame is the C bench's 90 bytes plus a seq)
- unacked-dict: publish() without ACK, tags and a dict payload encoded
                per event by cbor2
- acked-pipe:   publish_many(ack=True), window 1024
- acked-one:    publish_ack() one at a time (a round trip each)
- aio-unacked, aio-acked-pipe: the same two on fidbus.aio
- serve:        calls/s served by one Python process (a child running
                Client.serve() with a handler that returns at once, credit
                1024), the calls published by libfidbus through ctypes from
                this process (acked, window 1024): from the first publish
                to the last ACK, each ACK counting the call as ok
- aio-serve:    the same with fidbus.aio and an async def handler (a task
                per call)
- C acked-pipe, C acked-one: libfidbus (build/lib/libfidbus.so) driven
  through ctypes on the same daemon: fidbus_publish_seq with ACK and
  fidbus_client_recv, window 1024; fidbus_publish_ack in a loop (a ctypes
  call costs about a microsecond, small next to a round trip)

Clients use their defaults (reconnection on: acked frames are kept until
answered).

$FIDBUS_BUILD_DIR, else build/ in the repository, gives fidbusd, the
count plugin and fidbus-bench.
"""

import argparse
import asyncio
import ctypes
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE / "tests"))

import fidbus  # noqa: E402
import fidbus.aio  # noqa: E402
from harness import BUILD, COUNT, Daemon  # noqa: E402


def timed(fn: Callable[[], None], n: int) -> float:
    t = time.perf_counter()
    fn()
    return n / (time.perf_counter() - t)


class _Answer(ctypes.Structure):
    _fields_ = [("type", ctypes.c_uint64), ("seq", ctypes.c_uint64),
                ("code", ctypes.c_uint64), ("result", ctypes.c_uint64)]


def _lib() -> "ctypes.CDLL | None":
    so = BUILD / "lib" / "libfidbus.so"
    if not so.exists():
        return None
    lib = ctypes.CDLL(str(so))
    vp, u64, sz = ctypes.c_void_p, ctypes.c_uint64, ctypes.c_size_t
    lib.fidbus_client_connect.argtypes = [ctypes.POINTER(vp), ctypes.c_char_p, vp]
    lib.fidbus_publish_ack.argtypes = [vp, ctypes.c_char_p, vp, sz, ctypes.c_char_p, sz,
                                       ctypes.POINTER(u64)]
    lib.fidbus_publish_seq.argtypes = [vp, u64, ctypes.c_uint32, ctypes.c_char_p, vp, sz,
                                       ctypes.c_char_p, sz]
    lib.fidbus_client_recv.argtypes = [vp, ctypes.POINTER(_Answer), ctypes.c_int]
    lib.fidbus_client_close.argtypes = [vp]
    return lib


def c_acked_pipe(lib: ctypes.CDLL, c: ctypes.c_void_p, ev: bytes, payload: bytes,
                 a: int) -> None:
    """a acked publishes through libfidbus, at most 1024 in flight; every
    answer must be an ACK with result 1."""
    ans = _Answer()
    inflight = 0
    n = len(payload)
    for i in range(a):
        if lib.fidbus_publish_seq(c, (1 << 63) | i, 1, ev, None, 0, payload, n) != 0:
            raise RuntimeError("fidbus_publish_seq failed")
        inflight += 1
        if inflight == 1024:
            while inflight > 768:
                if lib.fidbus_client_recv(c, ctypes.byref(ans), -1) != 0 or ans.code:
                    raise RuntimeError(f"fidbus_client_recv failed (code {ans.code})")
                inflight -= 1
    while inflight:
        if lib.fidbus_client_recv(c, ctypes.byref(ans), -1) != 0 or ans.code:
            raise RuntimeError(f"fidbus_client_recv failed (code {ans.code})")
        inflight -= 1


SERVE_CHILD = """
import sys
sys.path.insert(0, sys.argv[2])
import fidbus
bus = fidbus.Client(sys.argv[1])
@bus.function("bench.serve@1.0.0", credit=1024)
def handler(ev):
    pass
bus.serve(on_ready=lambda: print("ready", flush=True))
print("served", bus.calls_served, flush=True)
"""


SERVE_CHILD_AIO = """
import asyncio, sys
sys.path.insert(0, sys.argv[2])
import fidbus.aio
async def main():
    bus = fidbus.aio.Client(sys.argv[1])
    await bus.connect()
    @bus.function("bench.serve@1.0.0", credit=1024)
    async def handler(ev):
        pass
    await bus.serve(on_ready=lambda: print("ready", flush=True))
    print("served", bus.calls_served, flush=True)
asyncio.run(main())
"""


def serve_rate(bus: str, payload: bytes, calls: int, child_src: str = SERVE_CHILD) -> float:
    """Calls/s one Python process serves (see the module's doc)."""
    lib = _lib()
    if lib is None:
        return 0.0
    child = subprocess.Popen([sys.executable, "-c", child_src, bus, str(HERE)],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        if child.stdout.readline().strip() != "ready":
            raise RuntimeError("the serving child did not start")
        c = ctypes.c_void_p()
        if lib.fidbus_client_connect(ctypes.byref(c), ("unix:" + bus).encode(), None) != 0:
            raise RuntimeError("cannot connect")
        c_acked_pipe(lib, c, b"serve.x", payload, 1000)  # warm up
        t = time.perf_counter()
        c_acked_pipe(lib, c, b"serve.x", payload, calls)
        rate = calls / (time.perf_counter() - t)
        lib.fidbus_client_close(c)
        child.terminate()  # SIGTERM: drains and exits 0
        out = child.stdout.read()
        if child.wait(30) != 0 or f"served {calls + 1000}" not in out:
            raise RuntimeError(f"the serving child: {out!r}")
        return rate
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def c_client_rates(bus: str, payload: bytes, a: int, o: int) -> Dict[str, float]:
    """libfidbus's acked publishes, pipelined and one at a time."""
    lib = _lib()
    if lib is None:
        return {}
    vp, u64 = ctypes.c_void_p, ctypes.c_uint64
    c = vp()
    if lib.fidbus_client_connect(ctypes.byref(c), ("unix:" + bus).encode(), None) != 0:
        return {}
    out: Dict[str, float] = {}
    ev, n = b"bench.py", len(payload)
    t = time.perf_counter()
    c_acked_pipe(lib, c, ev, payload, a)
    out["C acked-pipe"] = a / (time.perf_counter() - t)
    res = u64()
    t = time.perf_counter()
    for _ in range(o):
        if lib.fidbus_publish_ack(c, ev, None, 0, payload, n, ctypes.byref(res)) != 0:
            raise RuntimeError("fidbus_publish_ack failed")
    out["C acked-one"] = o / (time.perf_counter() - t)
    lib.fidbus_client_close(c)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--acked", type=int, default=300_000)
    ap.add_argument("--one", type=int, default=20_000)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--calls", type=int, default=200_000, help="served calls (0: skip)")
    ap.add_argument("--no-c", action="store_true", help="skip fidbus-bench")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="fbpybench."))
    dm = Daemon(tmp, COUNT + "[route all]\nevent = bench.*\nto = fidbus.count\n"
                "[remote bench]\ncredit = 1024\n"
                "[route serve]\nevent = serve.*\nto = bench.serve@1.0.0\n",
                log_level="warn", workers=args.workers).start()
    rates: Dict[str, float] = {}
    try:
        bus = fidbus.Client(dm.bus)
        ctl = fidbus.Control(dm.control)
        raw = fidbus.RawCBOR(b"\x58\x3e" + bytes(62))  # a 64-byte byte string item
        tags = {"region": "eu"}
        publish = bus.publish
        N, A, O = args.events, args.acked, args.one

        def unacked() -> None:
            for _ in range(N):
                publish("bench.py", None, raw)
            bus.ping()

        def unacked_dict() -> None:
            for i in range(N):
                publish("bench.py", tags, {"id": i, "ok": True})
            bus.ping()

        def acked_pipe() -> None:
            bus.publish_many(("bench.py", None, raw) for _ in range(A))

        def acked_one() -> None:
            pa = bus.publish_ack
            for _ in range(O):
                pa("bench.py", None, raw)

        async def aio() -> None:
            async with fidbus.aio.Client(dm.bus) as abus:
                async def unacked() -> None:
                    p = abus.publish
                    for i in range(N):
                        p("bench.py", None, raw)
                        if i % 8192 == 0:
                            await abus.flush()
                    await abus.ping()

                t = time.perf_counter()
                await unacked()
                rates["aio-unacked"] = N / (time.perf_counter() - t)
                t = time.perf_counter()
                await abus.publish_many(("bench.py", None, raw) for _ in range(A))
                rates["aio-acked-pipe"] = A / (time.perf_counter() - t)

        before = ctl.stats()["received"]
        rates["unacked"] = timed(unacked, N)
        rates["unacked-dict"] = timed(unacked_dict, N)
        rates["acked-pipe"] = timed(acked_pipe, A)
        rates["acked-one"] = timed(acked_one, O)
        asyncio.run(aio())
        crates = c_client_rates(dm.bus, raw.data, A, O)
        rates.update(crates)
        if args.calls:
            rates["serve (calls/s)"] = serve_rate(dm.bus, raw.data, args.calls)
            rates["aio-serve"] = serve_rate(dm.bus, raw.data, args.calls, SERVE_CHILD_AIO)
        got = ctl.stats()["received"] - before
        want = 3 * N + 2 * A + O + (A + O if crates else 0) + \
            (args.calls + 1000 if rates.get("serve (calls/s)") else 0) + \
            (args.calls + 1000 if rates.get("aio-serve") else 0)
        bus.close()
        ctl.close()
    finally:
        dm.stop()
    print(f"python {sys.version.split()[0]}, cbor2, fidbusd workers={args.workers}, "
          f"load {os.getloadavg()[0]:.2f}")
    for k, v in rates.items():
        print(f"  {k:15s} {v:12,.0f} events/s")
    print(f"  verify: {'OK' if got == want else 'FAIL'} sent={want} received={got}")
    if got != want:
        return 1

    exe = BUILD / "bench" / "fidbus-bench"
    if not args.no_c and os.access(exe, os.X_OK):
        env = dict(os.environ, FIDBUS_BUILD_DIR=str(BUILD))
        lines: List[str] = []
        for cmd in (["throughput", "--events", str(N * 4), "--conns", "1", "--payload",
                     "64", "--workers", str(args.workers)],):
            r = subprocess.run([str(exe)] + cmd, env=env, capture_output=True, text=True,
                               timeout=600)
            lines += [ln for ln in r.stdout.splitlines()
                      if re.search(r"events/s|verify", ln)]
        print("C client (fidbus-bench throughput, un-acked, 1 connection, 64 B payload):")
        for ln in lines:
            print("  " + ln.strip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
