"""fidbus.Control: every command of proto/control.md against a real fidbusd."""

import os

import pytest

import fidbus
from fidbus import _proto as P
from harness import BUILD


def test_read_commands(daemon):  # type: ignore[no-untyped-def]
    with fidbus.Control(daemon.control) as ctl:
        st = ctl.status()
        assert st["routes"] == 2 and st["plugins"] == 3 and st["generation"] == 1
        assert ctl.server_name.startswith("fidbusd")
        assert "received" in ctl.stats()
        names = [p["name"] for p in ctl.plugin_list()["plugins"]]
        assert names == ["log", "count", "fail"]
        funcs = ctl.func_list()["functions"]
        assert {f["canonical"] for f in funcs} >= {"fidbus.log@1.0.0", "fidbus.count@1.0.0"}
        rl = ctl.route_list()
        assert rl["generation"] == 1 and [r["name"] for r in rl["routes"]] == ["all",
                                                                             "failing"]
        assert "[route all]" in ctl.config_export()["config"]
        ctl.ping()


def test_conn_list(daemon):  # type: ignore[no-untyped-def]
    with fidbus.Control(daemon.control) as ctl, fidbus.Client(daemon.bus) as bus:
        bus.publish_ack("ev.conns")
        conns = ctl.conn_list()
        kinds = sorted(c["kind"] for c in conns["connections"])
        assert kinds == ["control", "unix"] and conns["truncated"] is False
        me = [c for c in conns["connections"] if c["kind"] == "unix"][0]
        assert me["pid"] == os.getpid() and me["frames_in"] >= 1


def test_func_release(daemon):  # type: ignore[no-untyped-def]
    with fidbus.Control(daemon.control) as ctl:
        fid = ctl.func_list()["functions"][0]["id"]
        assert ctl.func_release(fid) == {"id": fid, "released": False}
        with pytest.raises(fidbus.ControlError) as ei:
            ctl.func_release("0123456789abcdef")
        assert ei.value.code == P.NOT_FOUND and ei.value.command == "func.release"
        with pytest.raises(fidbus.ControlError) as ei:
            ctl.func_release("nothex")
        assert ei.value.name == "INVALID"


def test_routes(daemon):  # type: ignore[no-untyped-def]
    with fidbus.Control(daemon.control) as ctl, fidbus.Client(daemon.bus) as bus:
        assert ctl.route_add(name="extra", event="x.*", to=["fidbus.count"],
                             tags={"region": "*"}, priority=5) == {"generation": 2}
        assert bus.publish_ack("x.y", {"region": "eu"}) == 1
        with pytest.raises(fidbus.ControlError) as ei:
            ctl.route_add(name="extra", event="x.*", to=["fidbus.count"])
        assert ei.value.code == P.CONFLICT and "already exists" in ei.value.message
        with pytest.raises(fidbus.ControlError) as ei:
            ctl.route_add(name="nf", event="x.*", to=["acme.nothing"])
        assert ei.value.code == P.NOT_FOUND
        t = ctl.route_test("x.y", {"region": "eu"})
        assert t["route"] == "extra" and len(t["targets"]) == 1
        t = ctl.route_test("x.y", apply={"delete": ["extra"]})
        assert t["route"] is None and t["generation"] == 3
        assert ctl.route_list()["generation"] == 2  # route.test changed nothing
        r = ctl.route_apply(add=[ctl.route("extra", "x.*", ["fidbus.log", "fidbus.count"])],
                            delete=["extra"])
        assert r == {"generation": 3}
        assert bus.publish_ack("x.y") == 2
        assert ctl.route_del("extra") == {"generation": 4}
        with pytest.raises(fidbus.ControlError) as ei:
            ctl.route_del("extra")
        assert ei.value.code == P.NOT_FOUND
        assert ctl.route_apply() == {"generation": 5}
        with pytest.raises(fidbus.ControlError) as ei:
            ctl.route_apply(delete=["failing"], if_generation=4)
        assert ei.value.code == P.CONFLICT
        assert ctl.route_apply(if_generation=5) == {"generation": 6}
        with pytest.raises(fidbus.PublishError):
            bus.publish_ack("x.y")


def test_plugins(daemon):  # type: ignore[no-untyped-def]
    so = str(BUILD / "plugins" / "count.so")
    with fidbus.Control(daemon.control) as ctl:
        with pytest.raises(fidbus.ControlError) as ei:
            ctl.plugin_load(so)  # the same functions again
        assert ei.value.code == P.CONFLICT
        with pytest.raises(fidbus.ControlError) as ei:
            ctl.plugin_load("/nonexistent/x.so", name="x")
        assert ei.value.code == P.NOT_FOUND
        with pytest.raises(fidbus.ControlError) as ei:
            ctl.plugin_unload("count")  # routed
        assert ei.value.code == P.CONFLICT
        r = ctl.plugin_reload("count")
        assert r["name"] == "count" and r["path"] == so and r["generation"] == 2
        ctl.route_del("all")
        assert ctl.plugin_unload("log") == {"generation": 4}
        r = ctl.plugin_load(str(BUILD / "plugins" / "log.so"), name="log2",
                            config={"file": str(daemon.dir / "log2.txt"), "format": "json"})
        assert r["name"] == "log2" and r["generation"] == 5 and len(r["functions"]) == 1
        with pytest.raises(fidbus.ControlError) as ei:
            ctl.plugin_unload("nope")
        assert ei.value.code == P.NOT_FOUND


def test_config_reload(daemon):  # type: ignore[no-untyped-def]
    with fidbus.Control(daemon.control) as ctl:
        ctl.route_del("all")
        # the file is unchanged: the runtime delete stands, nothing flips
        dry = ctl.config_reload(dry_run=True)
        assert dry["dry_run"] is True and dry["changed"] is False
        r = ctl.config_reload()
        assert r["changed"] is False and r["overridden"] == []
        assert r["unchanged_plugins"] == ["count", "fail", "log"]
        assert r["restart_needed"] == [] and r["generation"] == 2
        assert [x["name"] for x in ctl.route_list()["routes"]] != [] and not any(
            x["name"] == "all" for x in ctl.route_list()["routes"])


def test_unknown_command_and_raw_request(daemon):  # type: ignore[no-untyped-def]
    with fidbus.Control(daemon.control) as ctl:
        with pytest.raises(fidbus.ControlError) as ei:
            ctl.request("no.such")
        assert ei.value.code == P.UNSUPPORTED and "unknown command" in ei.value.message
        assert ctl.request("status")["routes"] == 2  # the connection goes on
        with pytest.raises(fidbus.ControlError) as ei:
            ctl.request("route.del", {"name": 5})
        assert ei.value.code == P.INVALID


def test_control_reconnects_after_daemon_restart(daemon):  # type: ignore[no-untyped-def]
    ctl = fidbus.Control(daemon.control)
    assert ctl.status()["routes"] == 2
    daemon.stop()
    with pytest.raises((fidbus.ConnectionLost, fidbus.ConnectError)):
        ctl.status()
    daemon.start()
    assert ctl.status()["routes"] == 2
    ctl.close()



def test_tap(daemon):  # type: ignore[no-untyped-def]
    with fidbus.Control(daemon.control) as ctl, fidbus.Client(daemon.bus) as bus:
        with ctl.tap("ev.*") as tap:
            assert tap.opened["buffer"] == 1048576 and tap.opened["max_taps"] == 16
            bus.publish_ack("ev.tap", {"k": "v"}, payload={"x": 1})
            bus.publish("other.event")  # does not match the tap (nor a route)
            bus.publish_ack("ev.tap2")
            a, b = next(tap), next(tap)
        assert (a["event"], a["tags"], a["payload"], a["route"]) == (
            "ev.tap", {"k": "v"}, {"x": 1}, "all")
        assert b["event"] == "ev.tap2" and b["payload"] is None and b["dropped"] == 0
        me = [c for c in ctl.conn_list()["connections"] if c["kind"] == "unix"][0]
        assert a["conn"] == b["conn"] == me["id"]
        with pytest.raises(fidbus.ControlError) as ei:
            ctl.tap("ev.*", buffer=1)
        assert ei.value.code == P.INVALID
