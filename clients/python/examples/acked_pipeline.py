#!/usr/bin/python3
"""Acked publishes, pipelined: many in flight, each answer on its own future.

    FIDBUS_BUS=unix:/run/fidbus/bus.sock python3 acked_pipeline.py [COUNT]

Each future resolves to the number of handlers that ran, or raises the
daemon's ERROR for that very publish (NO_ROUTE, HANDLER_FAILED, BUSY...).
With reconnect on (the default), publishes not yet answered when the
daemon goes away are sent again once it is back: at least once.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from the tree

import fidbus  # noqa: E402


def main() -> int:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    with fidbus.Client(window=256) as bus:
        # one by one, waiting for each answer
        print("order.paid ran", bus.publish_ack("order.paid", payload={"id": 1}),
              "handlers")
        # pipelined: at most `window` in flight
        futs = [bus.publish("order.shipped", {"carrier": "dhl"}, payload={"id": i}, ack=True)
                for i in range(n)]
        failed = 0
        for f in futs:
            try:
                f.result()
            except fidbus.PublishError as e:
                failed += 1
                print(f"seq {e.seq}: {e.name}: {e.message}")
        # or all at once: counts in order, BatchError if any failed
        counts = bus.publish_many([("order.refunded", None, {"id": i}) for i in range(n)])
        assert counts is not None
    print(f"acked {n - failed} of {n}, then {len(counts)} more")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
