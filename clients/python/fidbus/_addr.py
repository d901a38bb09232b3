"""Finding and connecting to the daemon's sockets, and the TCP key.

The same rules as fidbusctl and libfidbus, so a Python program finds the
bus fidbusctl finds and trusts what it trusts:

- the address forms of lib/client_addr.c: ``unix:PATH``, a plain path, or
  ``tcp:HOST:PORT`` (``tcp:[::1]:7878``); any other ``scheme:`` is refused
  rather than taken as a file name;
- the default search of ctl/main.c (``default_path``): ``$FIDBUS_BUS`` (or
  ``$FIDBUS_CONTROL``), else the socket in ``$FIDBUS_RUNTIME_DIR`` when set,
  used as given, whether the socket exists or not (an explicit setting
  never falls back to another daemon); else the first of
  ``$XDG_RUNTIME_DIR/fidbus``, ``/run/fidbus``, ``/tmp/fidbus-$UID`` that
  holds the socket and that no other user could have made or can write
  (lib/trusted_dir.c); else ``/run/fidbus``;
- the key file rules of lib/client_key.c (``fidbus_key_load``).
"""

import errno as E
import os
import socket
import stat
from typing import Optional, Tuple, Union

from .errors import ConnectError

KEY_MIN = 16
KEY_MAX = 4096
_SUN_PATH_MAX = 108  # sizeof(sockaddr_un.sun_path) on Linux, NUL included

Address = Union[Tuple[str, str], Tuple[str, str, int]]


def parse_address(addr: str) -> Address:
    """("unix", path) or ("tcp", host, port); ConnectError if unusable."""
    if not isinstance(addr, str) or not addr:
        raise ConnectError(f"invalid address {addr!r}", address=str(addr))
    if addr.startswith("tcp:"):
        rest = addr[4:]
        if rest.startswith("["):
            end = rest.find("]")
            if end < 0 or rest[end + 1:end + 2] != ":":
                raise ConnectError(f"invalid address {addr!r}: want tcp:[V6]:PORT",
                                   address=addr)
            host, port = rest[1:end], rest[end + 2:]
        else:
            host, sep, port = rest.rpartition(":")
            if not sep or ":" in host:
                raise ConnectError(f"invalid address {addr!r}: want tcp:HOST:PORT "
                                   f"(an IPv6 host in brackets)", address=addr)
        if (not host or len(host) > 255 or not port or len(port) > 5 or
                not port.isdigit() or not port.isascii() or not 0 < int(port) < 65536):
            raise ConnectError(f"invalid address {addr!r}", address=addr)
        return ("tcp", host, int(port))
    path = addr
    if addr.startswith("unix:"):
        path = addr[5:]
    else:
        n = 0
        while n < len(addr) and (addr[n].isascii() and (addr[n].isalnum() or addr[n] in "+-.")):
            n += 1
        if n > 0 and addr[n:n + 1] == ":":
            raise ConnectError(f"invalid address {addr!r}: unknown scheme "
                               f"'{addr[:n]}:' (use unix:PATH, tcp:HOST:PORT, or ./{addr} "
                               f"for such a file)", address=addr)
    if not path:
        raise ConnectError(f"invalid address {addr!r}", address=addr)
    if len(os.fsencode(path)) >= _SUN_PATH_MAX:
        raise ConnectError(f"socket path too long ({len(os.fsencode(path))} bytes, at "
                           f"most {_SUN_PATH_MAX - 1}): {path}", errno=E.ENAMETOOLONG,
                           address=addr)
    return ("unix", path)


def _search_dir_ok(d: str) -> bool:
    """ctl/main.c search_dir_ok: owned by us or root and not writable by
    group or others; or made by root in a parent only root can write."""
    try:
        fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        st = os.fstat(fd)
        me = os.geteuid()
        gw = st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
        if gw:
            return False
        if st.st_uid in (me, 0):
            return True
        try:
            pst = os.stat("..", dir_fd=fd)
        except OSError:
            return False
        return pst.st_uid == 0 and not pst.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    finally:
        os.close(fd)


def default_path(env: str, name: str) -> str:
    """Where fidbusctl looks for ``name`` (bus.sock, control.sock)."""
    e = os.environ.get(env)
    if e:
        return e
    rt = os.environ.get("FIDBUS_RUNTIME_DIR")
    if rt:
        return f"{rt}/{name}"
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg:
        d = f"{xdg}/fidbus"
        if os.path.exists(f"{d}/{name}") and _search_dir_ok(d):
            return f"{d}/{name}"
    if os.path.exists(f"/run/fidbus/{name}") and _search_dir_ok("/run/fidbus"):
        return f"/run/fidbus/{name}"
    d = f"/tmp/fidbus-{os.getuid()}"
    if os.path.exists(f"{d}/{name}") and _search_dir_ok(d):
        return f"{d}/{name}"
    return f"/run/fidbus/{name}"


def default_bus() -> str:
    """The bus address fidbusctl would use."""
    return default_path("FIDBUS_BUS", "bus.sock")


def default_control() -> str:
    """The control socket fidbusctl would use."""
    return default_path("FIDBUS_CONTROL", "control.sock")


def load_key(path: str) -> bytes:
    """The shared TCP key in ``path`` with fidbusd's rules: a regular file,
    mode 0600 or 0400, owned by the caller or root (a root caller accepts
    any owner), 16-4096 bytes after removing one trailing newline."""
    def fail(why: str, err: Optional[int] = None) -> ConnectError:
        return ConnectError(f"key file {path}: {why}", errno=err)

    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK)
    except OSError as e:
        raise fail(e.strerror or str(e), e.errno) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise fail("not a regular file", E.EINVAL)
        me = os.geteuid()
        if st.st_mode & 0o077 or (me != 0 and st.st_uid not in (me, 0)):
            raise fail("group or other users may access it, or another user owns it "
                       "(it must be mode 0600 or 0400, owned by the user reading it "
                       "or root)", E.EPERM)
        if st.st_size > KEY_MAX + 1:
            raise fail("longer than 4096 bytes", E.EFBIG)
        data = b""
        while len(data) < KEY_MAX + 2:
            chunk = os.read(fd, KEY_MAX + 2 - len(data))
            if not chunk:
                break
            data += chunk
    finally:
        os.close(fd)
    if data.endswith(b"\n"):
        data = data[:-1]
    if len(data) > KEY_MAX:
        raise fail("longer than 4096 bytes", E.EFBIG)
    if len(data) < KEY_MIN:
        raise fail("shorter than 16 bytes (not counting one trailing newline)",
                   E.ENODATA)
    return data


def connect(a: Address, timeout: Optional[float], shown: str) -> socket.socket:
    """A connected, non-blocking stream socket; ConnectError naming
    ``shown`` otherwise."""
    try:
        if a[0] == "unix":
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.settimeout(timeout)
                s.connect(a[1])
            except BaseException:
                s.close()
                raise
        else:
            s = socket.create_connection((a[1], a[2]), timeout=timeout)  # type: ignore[misc]
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except socket.timeout:
        raise ConnectError(f"cannot connect to {shown}: timed out", errno=E.ETIMEDOUT,
                           address=shown) from None
    except socket.gaierror as e:
        raise ConnectError(f"cannot connect to {shown}: {e.strerror}", errno=E.ENXIO,
                           address=shown) from None
    except OSError as e:
        raise ConnectError(f"cannot connect to {shown}: {e.strerror or e}", errno=e.errno,
                           address=shown) from None
    s.setblocking(False)
    return s
