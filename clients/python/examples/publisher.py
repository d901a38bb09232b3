#!/usr/bin/python3
"""Publish events without waiting for answers, then one PING as a barrier.

    FIDBUS_BUS=unix:/run/fidbus/bus.sock python3 publisher.py [COUNT]

The client finds the bus as fidbusctl does ($FIDBUS_BUS, $FIDBUS_RUNTIME_DIR,
then the runtime dirs). Un-acked publishes are buffered and written in big
writes; the daemon answers only those it refuses, and ping() raises them.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from the tree

import fidbus  # noqa: E402


def main() -> int:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    with fidbus.Client() as bus:
        for i in range(n):
            bus.publish("order.created", {"region": "eu-west"},
                        payload={"id": i, "amount": 9.99, "items": ["book"]})
        bus.ping()  # every event above has been handled when this returns
    print(f"published {n} events")
    return 0


if __name__ == "__main__":
    sys.exit(main())
