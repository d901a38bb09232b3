#!/usr/bin/python3
"""Serves the remote function acme.audit@1.0.0 until SIGTERM or SIGINT
(then drains: no new calls, the calls in hand answered, exit 0).

The daemon's config must allow it and route events to it, e.g.:

    [remote acme]
    users = alice
    [route audit]
    event = order.*
    to = acme.audit@1.0.0

    FIDBUS_BUS=... python3 examples/serve.py [--stop-after N]

``--stop-after N`` returns after N calls (the tests use it).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from the tree

import fidbus  # noqa: E402

stop_after = int(sys.argv[2]) if sys.argv[1:2] == ["--stop-after"] else 0
bus = fidbus.Client()
seen = 0


@bus.function("acme.audit@1.0.0", signature="event:any", credit=16, idempotent=True)
def audit(ev: fidbus.Event) -> None:
    global seen
    if ev.payload is None:
        raise ValueError(f"{ev.id}: no payload to audit")  # -> HANDLER_FAILED
    print(f"audit {ev.id} {ev.tags} {ev.payload} (attempt {ev.attempt})", flush=True)
    bus.publish("audit.done", {"of": ev.id})  # publishing from a handler: same connection
    seen += 1
    if seen == stop_after:
        bus.stop()


bus.serve(on_ready=lambda: print("serving", ", ".join(bus.serving), flush=True))
print(f"drained after {seen} calls", flush=True)
bus.close()
