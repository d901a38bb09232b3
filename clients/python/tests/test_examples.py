"""Every example under examples/ runs against a real daemon, so none rots."""

import os
import subprocess
import sys

import fidbus
from harness import COUNT, HERE, LOG

EXAMPLES = HERE.parent / "examples"


def run(dm, name, *args):  # type: ignore[no-untyped-def]
    env = {k: v for k, v in os.environ.items() if not k.startswith("FIDBUS_")}
    env.update(FIDBUS_BUS=dm.bus, FIDBUS_CONTROL=dm.control, PYTHONDONTWRITEBYTECODE="1")
    r = subprocess.run([sys.executable, str(EXAMPLES / name), *args], env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def test_publisher(make_daemon):  # type: ignore[no-untyped-def]
    dm = make_daemon(COUNT + "[route all]\nevent = *\nto = fidbus.count\n")
    assert "published 500 events" in run(dm, "publisher.py", "500")
    dm.stop()
    assert dm.count()["order.created"] == 500


def test_acked_pipeline(make_daemon):  # type: ignore[no-untyped-def]
    dm = make_daemon(COUNT + "[route all]\nevent = *\nto = fidbus.count\n")
    out = run(dm, "acked_pipeline.py", "300")
    assert "order.paid ran 1 handlers" in out and "acked 300 of 300, then 300 more" in out


def test_canary(make_daemon):  # type: ignore[no-untyped-def]
    dm = make_daemon(LOG + COUNT + "[route orders]\nevent = order.*\nto = fidbus.log\n")
    out = run(dm, "canary.py")
    assert "split 90/10" in out and "promoted: generation 3" in out, out
    with fidbus.Control(dm.control) as ctl:
        (r,) = ctl.route_list()["routes"]
        assert r["name"] == "orders" and [t["target"] for t in r["to"]] == ["fidbus.count"]


def test_serve(make_daemon):  # type: ignore[no-untyped-def]
    dm = make_daemon(COUNT + f"[remote acme]\nusers = {os.getuid()}\n"
                     "[route audit]\nevent = order.*\nto = acme.audit@1.0.0\n"
                     "[route done]\nevent = audit.*\nto = fidbus.count\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FIDBUS_")}
    env.update(FIDBUS_BUS=dm.bus, PYTHONDONTWRITEBYTECODE="1")
    p = subprocess.Popen([sys.executable, str(EXAMPLES / "serve.py"), "--stop-after", "3"],
                         env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout is not None
        assert p.stdout.readline() == "serving acme.audit@1.0.0\n"
        with fidbus.Client(dm.bus) as bus:
            try:
                bus.publish_ack("order.empty")
                raise AssertionError("no payload should fail")
            except fidbus.PublishError as e:
                assert e.name == "HANDLER_FAILED"
            assert bus.publish_many(("order.paid", {"region": "eu"}, {"id": i})
                                    for i in range(3)) == [1, 1, 1]
        out, _ = p.communicate(timeout=60)
        assert p.returncode == 0, out
        assert "audit order.paid {'region': 'eu'} {'id': 2} (attempt 1)" in out
        assert out.endswith("drained after 3 calls\n"), out
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    dm.stop()
    assert dm.count()["audit.done"] == 3
