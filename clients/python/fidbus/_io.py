"""Blocking helpers over a non-blocking socket, against a deadline: the
connection handshake (HELLO, AUTH, the PING that proves the key), used by
the bus client on every (re)connection and by the control client."""

import hmac
import hashlib
import select
import socket
import time
from typing import Any, Dict, Optional

from . import _proto as P
from ._wire import decode_msg, encode_msg, pack_be32, text, unpack_be32
from .errors import ConnectError, ProtocolError, Timeout


def poll_ms(deadline: Optional[float]) -> int:
    """poll() timeout in ms for a monotonic deadline; -1 without one."""
    if deadline is None:
        return -1
    left = deadline - time.monotonic()
    return 0 if left <= 0 else int(left * 1000) + 1


class FrameReader:
    """Reassembles frames from what a socket delivers."""

    __slots__ = ("buf", "limit")

    def __init__(self, limit: int) -> None:
        self.buf = bytearray()
        self.limit = limit

    def next(self) -> Optional[bytes]:
        buf = self.buf
        if len(buf) < 4:
            return None
        n = unpack_be32(buf, 0)[0]
        if n == 0 or n > self.limit:
            raise ProtocolError(f"frame length {n} from the daemon (limit {self.limit})")
        if len(buf) < 4 + n:
            return None
        body = bytes(buf[4:4 + n])
        del buf[:4 + n]
        return body


def wait_for(sock: socket.socket, event: int, deadline: Optional[float], doing: str) -> None:
    """Waits until sock is ready for event (POLLIN, POLLOUT);
    :class:`Timeout` ("timed out DOING") once the deadline has passed."""
    p = select.poll()
    p.register(sock, event)
    if not p.poll(poll_ms(deadline)) and deadline is not None and \
            time.monotonic() >= deadline:
        raise Timeout(f"timed out {doing}")


def send_all(sock: socket.socket, data: bytes, deadline: Optional[float]) -> None:
    view = memoryview(data)
    while view:
        try:
            n = sock.send(view)
            view = view[n:]
            continue
        except BlockingIOError:
            pass
        wait_for(sock, select.POLLOUT, deadline, "writing to the daemon")


def read_msg(sock: socket.socket, rd: FrameReader, deadline: Optional[float]
             ) -> Dict[int, Any]:
    """The next message; ConnectionResetError at end of stream."""
    while True:
        body = rd.next()
        if body is not None:
            return decode_msg(body)
        try:
            data = sock.recv(1 << 18)
            if not data:
                raise ConnectionResetError("connection closed by the daemon")
            rd.buf += data
            continue
        except BlockingIOError:
            pass
        wait_for(sock, select.POLLIN, deadline, "waiting for the daemon")


def handshake(sock: socket.socket, rd: FrameReader, deadline: Optional[float],
              key: Optional[bytes], name: Optional[str], shown: str) -> Dict[int, Any]:
    """Reads HELLO; when it carries a nonce, sends AUTH (HMAC-SHA256 of the
    nonce with the key, daemon/bus/auth.c) and a PING whose ACK proves the
    key was taken. Returns the HELLO; ConnectError when refused."""
    try:
        m = read_msg(sock, rd, deadline)
        if m[P.K_TYPE] == P.ERROR:
            code = m.get(P.K_CODE, P.INTERNAL)
            raise ConnectError(f"{shown} refused the connection: {P.code_name(code)}: "
                               f"{text(m.get(P.K_MESSAGE))}", code=code, address=shown)
        if m[P.K_TYPE] != P.HELLO:
            raise ConnectError(f"{shown}: first frame is not HELLO", code=P.MALFORMED,
                               address=shown)
        if m.get(P.K_VERSION) != P.PROTO_VERSION:
            raise ConnectError(f"{shown} speaks protocol version {m.get(P.K_VERSION)}, "
                               f"this client {P.PROTO_VERSION}", code=P.UNSUPPORTED,
                               address=shown)
        nonce = m.get(P.K_NONCE)
        if not nonce:
            return m
        if key is None:
            raise ConnectError(f"{shown} requires a key and none was given (key_file=, "
                               f"or $FIDBUS_KEY_FILE)", code=P.UNAUTHORIZED, address=shown)
        mac = hmac.new(key, bytes(nonce), hashlib.sha256).digest()
        auth: Dict[int, Any] = {P.K_TYPE: P.AUTH, P.K_MAC: mac}
        if name:
            auth[P.K_NAME] = name
        send_all(sock, encode_msg(auth) + encode_msg({P.K_TYPE: P.PING, P.K_SEQ: 1}),
                 deadline)
        while True:
            a = read_msg(sock, rd, deadline)
            if a[P.K_TYPE] == P.ACK and a.get(P.K_SEQ) == 1:
                return m
            if a[P.K_TYPE] == P.ERROR:
                code = a.get(P.K_CODE, P.INTERNAL)
                raise ConnectError(f"{shown} refused the key: {P.code_name(code)}: "
                                   f"{text(a.get(P.K_MESSAGE))}", code=code, address=shown)
    except Timeout:
        raise ConnectError(f"{shown}: no answer to the handshake in time",
                           address=shown) from None
    except OSError as e:
        if isinstance(e, ConnectError):
            raise
        raise ConnectError(f"{shown}: connection lost during the handshake: {e}",
                           address=shown) from None
    except ProtocolError as e:
        raise ConnectError(f"{shown}: {e.message}", code=P.MALFORMED,
                           address=shown) from None


__all__ = ["FrameReader", "handshake", "poll_ms", "read_msg", "send_all", "pack_be32"]
