"""Connecting: addresses, the default search, TCP AUTH, losing the daemon."""

import errno
import os
from pathlib import Path

import pytest

import fidbus
from fidbus import _addr
from fidbus import _proto as P
from harness import COUNT, tp

KEY = b"0123456789abcdef-a-test-key"


def test_missing_socket(tmp_path):  # type: ignore[no-untyped-def]
    with pytest.raises(fidbus.ConnectError) as ei:
        fidbus.Client(str(tmp_path / "nothing.sock"))
    assert ei.value.errno == errno.ENOENT and "nothing.sock" in str(ei.value)
    with pytest.raises(fidbus.ConnectError):
        fidbus.Control(str(tmp_path / "nothing.sock")).status()


@pytest.mark.parametrize("addr", ["udp:1.2.3.4:5", "tcp:host", "tcp:h:0", "tcp:h:99999",
                                  "tcp:::1:5", "tcp:[::1]5", "unix:", "", "/" + "x" * 120])
def test_bad_addresses(addr):  # type: ignore[no-untyped-def]
    with pytest.raises(fidbus.ConnectError):
        fidbus.Client(addr)


def test_address_forms(daemon):  # type: ignore[no-untyped-def]
    assert _addr.parse_address("tcp:[::1]:7878") == ("tcp", "::1", 7878)
    assert _addr.parse_address("./odd:name") == ("unix", "./odd:name")
    for a in (daemon.bus, "unix:" + daemon.bus):
        with fidbus.Client(a) as bus:
            assert bus.publish_ack("ev.x") == 2


def test_default_search(daemon, monkeypatch, tmp_path):  # type: ignore[no-untyped-def]
    for k in ("FIDBUS_BUS", "FIDBUS_CONTROL", "FIDBUS_RUNTIME_DIR", "XDG_RUNTIME_DIR",
              "FIDBUS_KEY_FILE"):
        monkeypatch.delenv(k, raising=False)
    # $FIDBUS_BUS / $FIDBUS_CONTROL first
    monkeypatch.setenv("FIDBUS_BUS", daemon.bus)
    monkeypatch.setenv("FIDBUS_CONTROL", daemon.control)
    with fidbus.Client() as bus, fidbus.Control() as ctl:
        assert bus.publish_ack("ev.x") == 2
        assert ctl.status()["routes"] == 2
    monkeypatch.delenv("FIDBUS_BUS")
    monkeypatch.delenv("FIDBUS_CONTROL")
    # $FIDBUS_RUNTIME_DIR: used as given, socket or not, never a fallback
    monkeypatch.setenv("FIDBUS_RUNTIME_DIR", str(daemon.dir))
    assert fidbus.default_bus() == daemon.bus
    with fidbus.Client() as bus, fidbus.Control() as ctl:
        assert bus.publish_ack("ev.x") == 2
        ctl.ping()
    empty = tmp_path / "empty"
    empty.mkdir(mode=0o777)
    os.chmod(empty, 0o777)  # even one others can write: the user said so
    monkeypatch.setenv("FIDBUS_RUNTIME_DIR", str(empty))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(daemon.dir.parent))
    with pytest.raises(fidbus.ConnectError) as ei:
        fidbus.Client()
    assert str(empty / "bus.sock") in str(ei.value)
    monkeypatch.delenv("FIDBUS_RUNTIME_DIR")
    # $XDG_RUNTIME_DIR/fidbus: only when no other user could have made it
    xdg = tmp_path / "xdg"
    (xdg / "fidbus").mkdir(parents=True)
    os.chmod(xdg / "fidbus", 0o700)
    os.symlink(daemon.bus, xdg / "fidbus" / "bus.sock")
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(xdg))
    assert fidbus.default_bus() == str(xdg / "fidbus" / "bus.sock")
    with fidbus.Client() as bus:
        assert bus.publish_ack("ev.x") == 2
    for mode in (0o770, 0o702, 0o777):
        os.chmod(xdg / "fidbus", mode)
        assert fidbus.default_bus() != str(xdg / "fidbus" / "bus.sock")
    os.chmod(xdg / "fidbus", 0o700)
    os.chown(xdg / "fidbus", 4242, 4242)  # another user's (and its parent not root's
    os.chown(xdg, 4242, 4242)  # only): refused
    assert fidbus.default_bus() != str(xdg / "fidbus" / "bus.sock")
    os.chown(xdg, 0, 0)  # made by root in a dir only root writes: fine
    os.chmod(xdg, 0o755)
    assert fidbus.default_bus() == str(xdg / "fidbus" / "bus.sock")
    os.unlink(xdg / "fidbus" / "bus.sock")
    assert fidbus.default_bus() != str(xdg / "fidbus" / "bus.sock")


def test_tcp_auth(make_daemon, tmp_path, monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.delenv("FIDBUS_KEY_FILE", raising=False)
    dm = make_daemon(COUNT + "[route all]\nevent = *\nto = fidbus.count\n", tcp_key=KEY)
    with fidbus.Client(dm.tcp_addr, key_file=dm.key_file, name="pytest") as bus:
        assert bus.publish_ack("ev.x") == 1
        bus.publish_many([("ev.y", None, i) for i in range(100)], ack=False)
        bus.ping()
    with fidbus.Client(dm.tcp_addr, key=KEY) as bus:
        assert bus.publish_ack("ev.x") == 1
    monkeypatch.setenv("FIDBUS_KEY_FILE", dm.key_file)
    with fidbus.Client(dm.tcp_addr) as bus:
        assert bus.publish_ack("ev.x") == 1
    monkeypatch.delenv("FIDBUS_KEY_FILE")
    with pytest.raises(fidbus.ConnectError) as ei:
        fidbus.Client(dm.tcp_addr)
    assert ei.value.code == P.UNAUTHORIZED and "requires a key" in ei.value.message
    with pytest.raises(fidbus.ConnectError) as ei:
        fidbus.Client(dm.tcp_addr, key=b"x" * 16)
    assert ei.value.code == P.UNAUTHORIZED and ei.value.name == "UNAUTHORIZED"


@pytest.mark.parametrize("content,mode,why", [
    (KEY, 0o644, "group or other"),
    (KEY, 0o640, "group or other"),
    (b"short\n", 0o600, "shorter than 16"),
    (b"k" * 4097, 0o600, "longer than 4096"),
])
def test_key_file_rules(tmp_path, content, mode, why):  # type: ignore[no-untyped-def]
    p = tmp_path / "k"
    p.write_bytes(content)
    os.chmod(p, mode)
    with pytest.raises(fidbus.ConnectError) as ei:
        fidbus.load_key(str(p))
    assert why in str(ei.value)


def test_key_file_trailing_newline(tmp_path):  # type: ignore[no-untyped-def]
    p = tmp_path / "k"
    p.write_bytes(KEY + b"\n")
    os.chmod(p, 0o400)
    assert fidbus.load_key(str(p)) == KEY
    with pytest.raises(fidbus.ConnectError):
        fidbus.load_key(str(tmp_path))  # not a regular file


GATE = (tp("gate") + "gate = @D@/gate\nfile = @D@/gate.txt\n"
        "[route g]\nevent = g.*\nto = test.gate\n" + COUNT +
        "[route all]\nevent = ev.*\nto = fidbus.count\n")


def test_daemon_killed_mid_publish_reconnects_and_resends(make_daemon):  # type: ignore[no-untyped-def]
    dm = make_daemon(GATE)
    bus = fidbus.Client(dm.bus, reconnect_max=0.2)
    # held by the shut gate: sent, handled later, never answered by this daemon
    held = [bus.publish("g.held", payload=i, ack=True) for i in range(3)]
    bus.flush()
    dm.kill()
    # while it is gone: buffered, acked ones kept for re-sending
    more = [bus.publish("ev.more", payload=i, ack=True) for i in range(50)]
    unacked = bus.publish("ev.unacked")
    Path(dm.dir / "gate").touch()  # the next daemon lets them through
    dm.start()
    assert [f.result() for f in held] == [1, 1, 1]
    assert [f.result() for f in more] == [1] * 50
    bus.ping()
    assert bus.reconnects >= 1 and bus.unanswered == 0 and unacked
    # re-sent byte for byte: the same seqs reached the handler
    seqs = sorted(int(ln.split()[1]) for ln in (dm.dir / "gate.txt").read_text().splitlines())
    assert seqs == sorted(f.seq for f in held)
    bus.close()
    dm.stop()
    assert dm.count()["ev.more"] == 50 and dm.count()["ev.unacked"] == 1


def test_daemon_restarted_while_idle(make_daemon):  # type: ignore[no-untyped-def]
    dm = make_daemon(GATE)
    with fidbus.Client(dm.bus) as bus:
        assert bus.publish_ack("ev.a") == 1
        dm.stop()
        dm.start()
        assert bus.publish_ack("ev.b") == 1
        bus.publish("ev.c")
        bus.ping()
        assert bus.reconnects == 1


def test_daemon_killed_without_reconnect(make_daemon):  # type: ignore[no-untyped-def]
    dm = make_daemon(GATE)
    bus = fidbus.Client(dm.bus, reconnect=False)
    fut = bus.publish("g.held", ack=True)
    bus.flush()
    dm.kill()
    with pytest.raises(fidbus.ConnectionLost) as ei:
        fut.result()
    assert "closed by the daemon" in str(ei.value)
    for call in (lambda: bus.publish("ev.x"), lambda: bus.publish_ack("ev.x"), bus.ping,
                 bus.flush):
        with pytest.raises(fidbus.ConnectionLost):
            call()
    bus.close()
    dm.start()


def test_reconnect_gives_up_at_the_timeout(make_daemon):  # type: ignore[no-untyped-def]
    dm = make_daemon(GATE)
    bus = fidbus.Client(dm.bus, timeout=0.5, reconnect_max=0.1, max_frame=1024,
                        reconnect_buffer=4096)
    dm.kill()
    with pytest.raises(fidbus.Timeout):
        bus.publish_ack("ev.x")
    with pytest.raises(fidbus.BufferFull):
        for _ in range(1000):
            bus.publish("ev.fill", payload=bytes(100))
    dm.start()
    bus.ping()
    bus.close()
