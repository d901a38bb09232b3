#!/usr/bin/python3
"""A canary rollout through the control socket: send 10% of one event's
traffic to a new handler, look at its counters, then promote it.

    FIDBUS_BUS=... FIDBUS_CONTROL=... python3 canary.py STABLE CANARY

STABLE and CANARY are function targets (default fidbus.log, fidbus.count).
Each step is one transaction (route.apply): the running table changes with
one pointer swap, and every event sees the old table or the new one.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from the tree

import fidbus  # noqa: E402

ROUTE = "orders"
EVENT = "order.*"


def main() -> int:
    stable = sys.argv[1] if len(sys.argv) > 1 else "fidbus.log"
    canary = sys.argv[2] if len(sys.argv) > 2 else "fidbus.count"
    ctl = fidbus.Control()
    names = [r["name"] for r in ctl.route_list()["routes"]]
    start = [ROUTE] if ROUTE in names else []

    # 1. 90/10 by user: one user always lands on the same side
    split = ctl.route(ROUTE, EVENT, [f"{stable}:90", f"{canary}:10"], mode="split",
                      split_by="user")
    gen = ctl.route_apply(add=[split], delete=start)["generation"]
    print(f"generation {gen}: {ROUTE} split 90/10 between {stable} and {canary}")

    # 2. traffic, then the canary's own counters
    before = ctl.stats()["functions"]
    with fidbus.Client() as bus:
        bus.publish_many([("order.created", {"user": f"u{i}"}, {"n": i})
                          for i in range(1000)])
    after = ctl.stats()["functions"]
    fid = {f["canonical"].split("@")[0]: f["id"] for f in ctl.func_list()["functions"]}
    c = fid[canary]
    calls = after[c]["calls"] - before.get(c, {}).get("calls", 0)
    errors = after[c]["errors"] - before.get(c, {}).get("errors", 0)
    print(f"canary {canary}: {calls} calls, {errors} errors")

    # 3. promote, or roll back
    if errors == 0 and calls > 0:
        route = ctl.route(ROUTE, EVENT, [canary])
        print(f"promoted: generation {ctl.route_apply(add=[route], delete=[ROUTE])['generation']}")
    else:
        route = ctl.route(ROUTE, EVENT, [stable])
        print(f"rolled back: generation {ctl.route_apply(add=[route], delete=[ROUTE])['generation']}")
    ctl.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
