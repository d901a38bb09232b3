"""A real fidbusd from the build tree in a private temp dir, as
tests/e2e/harness.c runs it; used by conftest.py and ../bench.py.

The build dir is $FIDBUS_BUILD_DIR (set by ctest), else build/ at the top
of the repository. Readiness is the daemon's sd_notify "READY=1" datagram
on a NOTIFY_SOCKET bound here (READY promises every listener is bound),
with a pidfd to notice a daemon that exits first: never a sleep.
"""

import json
import os
import select
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import List, Optional

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent.parent
BUILD = Path(os.environ.get("FIDBUS_BUILD_DIR") or REPO / "build")
TIMEOUT = 10.0

LOG = "[plugin log]\npath = @B@/plugins/log.so\nfile = @D@/log.txt\n"
COUNT = ("[plugin count]\npath = @B@/plugins/count.so\nreport_file = @D@/count.json\n"
         "interval_ms = 0\n")


def tp(name: str) -> str:
    """[plugin NAME] for tests/plugins/NAME.so."""
    return f"[plugin {name}]\npath = @B@/tests/plugins/{name}.so\n"


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return int(port)


class Daemon:
    """One fidbusd with its config, sockets and files under ``dir``."""

    def __init__(self, dir: Path, sections: str = "", *, max_frame: Optional[int] = None,
                 tcp_key: Optional[bytes] = None, tcp_none: bool = False,
                 extra_daemon: str = "", log_level: str = "info",
                 workers: int = 2) -> None:
        self.dir = dir
        self.bus = str(dir / "bus.sock")
        self.control = str(dir / "control.sock")
        self.conf = dir / "fidbusd.conf"
        self.errfile = dir / "fidbusd.out"
        self.proc: Optional[subprocess.Popen] = None  # type: ignore[type-arg]
        self.tcp_addr = ""
        self.key_file = str(dir / "tcp.key")
        head = (f"[daemon]\nworkers = {workers}\nruntime_dir = {dir}/run\n"
                f"state_dir = {dir}/state\nlog_level = {log_level}\n{extra_daemon}")
        if max_frame:
            head += f"max_frame = {max_frame}\n"
        head += f"\n[listen]\nunix = {self.bus}\n"
        if tcp_key is not None or tcp_none:
            port = free_port()
            self.tcp_addr = f"tcp:127.0.0.1:{port}"
            head += f"tcp = 127.0.0.1:{port}\n"
            if tcp_key is not None:
                fd = os.open(self.key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                os.write(fd, tcp_key + b"\n")
                os.close(fd)
                head += f"tcp_auth = key\ntcp_key_file = {self.key_file}\n"
            else:
                head += "tcp_auth = none\n"
        head += f"\n[control]\nsocket = {self.control}\n\n"
        body = sections.replace("@B@", str(BUILD)).replace("@D@", str(dir))
        self.conf.write_text(head + body)

    def start(self) -> "Daemon":
        """Spawns the daemon and waits for READY=1. If it exits because its
        TCP port was taken since free_port() looked, the config gets another
        port and the daemon another try (3 in all), as tests/e2e/harness.c
        does."""
        for attempt in range(3):
            seen = self.errfile.stat().st_size if self.errfile.exists() else 0
            try:
                return self._start_once()
            except AssertionError:
                new = self.errfile.read_text(errors="replace")[seen:]
                if not self.tcp_addr or "in use" not in new.lower() or attempt == 2:
                    raise
                old = self.tcp_addr[len("tcp:"):]
                port = free_port()
                self.tcp_addr = f"tcp:127.0.0.1:{port}"
                self.conf.write_text(self.conf.read_text().replace(
                    f"tcp = {old}\n", f"tcp = 127.0.0.1:{port}\n"))
        raise AssertionError("unreachable")

    def _start_once(self) -> "Daemon":
        exe = BUILD / "daemon" / "fidbusd"
        assert os.access(exe, os.X_OK), f"{exe}: not built (set FIDBUS_BUILD_DIR)"
        notify_path = str(self.dir / "notify.sock")
        if os.path.exists(notify_path):
            os.unlink(notify_path)
        ns = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        ns.bind(notify_path)
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("NOTIFY_SOCKET", "LISTEN_", "FIDBUS_"))}
        env["NOTIFY_SOCKET"] = notify_path
        out = open(self.errfile, "ab")
        self.proc = subprocess.Popen([str(exe), "-c", str(self.conf)], env=env,
                                     stdin=subprocess.DEVNULL, stdout=out,
                                     stderr=subprocess.STDOUT)
        out.close()
        pidfd = os.pidfd_open(self.proc.pid)
        try:
            p = select.poll()
            p.register(ns, select.POLLIN)
            p.register(pidfd, select.POLLIN)
            deadline = time.monotonic() + TIMEOUT
            while True:
                left = deadline - time.monotonic()
                assert left > 0, f"fidbusd sent no READY=1 in time:\n{self.output()}"
                for fd, _ in p.poll(int(left * 1000) + 1):
                    if fd == ns.fileno():
                        dg = ns.recv(4096).decode()
                        if "READY=1" in dg.split("\n"):
                            assert os.path.exists(self.bus)
                            return self
                    else:
                        self.proc.wait()
                        raise AssertionError(f"fidbusd exited ({self.proc.returncode}) "
                                             f"before READY=1:\n{self.output()}")
        finally:
            os.close(pidfd)
            ns.close()

    def output(self) -> str:
        try:
            return self.errfile.read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def stop(self) -> None:
        """SIGTERM, and the daemon must exit 0 with no sanitizer report
        (an ASan or UBSan build of the tree is tested the same way)."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            rc = self.proc.wait(TIMEOUT)
            assert rc == 0, f"fidbusd exited {rc}:\n{self.output()}"
        self.proc = None
        out = self.output()
        for mark in ("runtime error:", "ERROR: AddressSanitizer", "ERROR: LeakSanitizer",
                     "WARNING: ThreadSanitizer"):
            assert mark not in out, f"sanitizer report from fidbusd:\n{out}"

    def kill(self) -> None:
        """SIGKILL: the daemon goes away without a word."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(TIMEOUT)
        self.proc = None

    def count(self) -> dict:  # type: ignore[type-arg]
        """The count plugin's report (written at fini: stop the daemon
        first)."""
        return json.loads((self.dir / "count.json").read_text())

    def log_lines(self) -> List[str]:
        p = self.dir / "log.txt"
        return p.read_text().splitlines() if p.exists() else []
