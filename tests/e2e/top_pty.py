#!/usr/bin/env python3
"""Drives `fidbusctl top` on a pseudo-terminal (tests/e2e/test_e2e_conns.c).

usage: top_pty.py FIDBUSCTL CONTROL_SOCKET q|sigint|sigterm|pipe

Runs top with stdin, stdout and stderr on the pty's slave side, waits for
its first full screen (the FUNCTION table's header), then ends it with the
key 'q' or the signal, and checks that it exits with status 0 within a few
seconds and leaves the terminal as it found it: the same termios settings
(echo and line mode back on) and the alternate screen left, cursor shown.
With `pipe`, top's stdout is a pipe instead (stdin /dev/null): it must
print plain-text blocks, one a second, without escape sequences, until
SIGTERM ends it with status 0.
Prints "ok" and exits 0, or prints why and exits 1.
"""
import os
import select
import signal
import subprocess
import sys
import termios
import time


def pipe_mode(ctl, sock):
    p = subprocess.Popen([ctl, "--socket", sock, "top"], stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out = b""
    deadline = time.monotonic() + 8
    while out.count(b"FUNCTION") < 2 and time.monotonic() < deadline:
        r, _, _ = select.select([p.stdout], [], [], 0.2)
        if r:
            chunk = os.read(p.stdout.fileno(), 65536)
            if not chunk:
                break
            out += chunk
    if out.count(b"FUNCTION") < 2:
        p.kill()
        print("not two blocks from top on a pipe: %r" % out[-2000:])
        return 1
    p.send_signal(signal.SIGTERM)
    try:
        rest, err = p.communicate(timeout=5)
    except subprocess.TimeoutExpired:
        p.kill()
        print("top on a pipe did not exit on SIGTERM")
        return 1
    out += rest
    if p.returncode != 0 or b"\033" in out:
        print("top on a pipe: exit %d, stderr %r, output %r" % (p.returncode, err,
                                                               out[-2000:]))
        return 1
    print("ok")
    return 0


def main():
    ctl, sock, how = sys.argv[1], sys.argv[2], sys.argv[3]
    if how == "pipe":
        return pipe_mode(ctl, sock)
    master, slave = os.openpty()
    before = termios.tcgetattr(slave)
    if not (before[3] & termios.ECHO and before[3] & termios.ICANON):
        print("the fresh pty is not in echo/line mode")
        return 1
    p = subprocess.Popen([ctl, "--socket", sock, "top"], stdin=slave, stdout=slave,
                         stderr=slave, close_fds=True, start_new_session=True)
    out = b""
    # within the harness's 10 s bound on the whole run (fb_e2e_run)
    deadline = time.monotonic() + 8

    def read_some(timeout):
        nonlocal out
        r, _, _ = select.select([master], [], [], timeout)
        if r:
            try:
                out += os.read(master, 65536)
            except OSError:
                pass

    while b"FUNCTION" not in out and time.monotonic() < deadline and p.poll() is None:
        read_some(0.2)
    if b"FUNCTION" not in out:
        read_some(0.2)
        p.kill()
        print("no screen from top (exit %r): %r" % (p.wait(), out[-2000:]))
        return 1
    # The raw mode is in place once the screen is drawn (term_enter runs
    # before the first draw).
    during = termios.tcgetattr(slave)
    if during[3] & termios.ICANON or during[3] & termios.ECHO:
        print("top did not put the terminal in raw mode")
        p.kill()
        return 1
    if how == "q":
        os.write(master, b"q")
    elif how == "sigint":
        p.send_signal(signal.SIGINT)
    else:
        p.send_signal(signal.SIGTERM)
    rc = None
    while time.monotonic() < deadline:
        read_some(0.1)
        rc = p.poll()
        if rc is not None:
            break
    if rc is None:
        p.kill()
        print("top did not exit after %s" % how)
        return 1
    read_some(0.2)
    after = termios.tcgetattr(slave)
    if rc != 0:
        print("top exited with %d after %s: %r" % (rc, how, out[-2000:]))
        return 1
    if after != before:
        print("terminal settings not restored: %r != %r" % (after, before))
        return 1
    if b"\033[?1049l" not in out or b"\033[?25h" not in out:
        print("screen not restored: %r" % out[-200:])
        return 1
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
