"""What the blocking client (client.py) and the asyncio client (aio.py)
share: the constructor's options and checks, seq numbering, the reading of
an ERROR into a :class:`PublishError`, the error accessors, the backoff
step, the loss of a connection as an error, and which buffered frames a
reconnection keeps.

The publish path itself stays in each client: it is the hot path, and a
call per event into a shared helper would cost more than the copy.
"""

import os
import random
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

from . import _addr
from . import _proto as P
from ._wire import EnvelopeCache, PayloadEncoder, text
from .errors import ConnectionLost, Error, ProtocolError, PublishError


class _NoPayload:
    __slots__ = ()

    def __repr__(self) -> str:
        return "NO_PAYLOAD"


#: The default of ``payload=``: a PUBLISH without payload (key 4 absent).
#: ``payload=None`` sends CBOR null.
NO_PAYLOAD: Any = _NoPayload()

Tags = Optional[Mapping[str, str]]
Payload = Any

SEND_THRESHOLD = 65536
BACKOFF_FIRST = 0.05
# map head + type + seq key, by number of entries
LEADS = [bytes((0xA0 + n, 0, P.PUBLISH, 1)) for n in range(8)]
FLAGS_ACK = bytes((P.K_FLAGS, P.FLAG_ACK))


class ClientBase:
    """The options both clients take and the state they keep alike. The
    subclass sets up its own state (and the blocking one connects) in
    ``_start()``, which the constructor calls last."""

    _inflight: Dict[int, Any]  # acked publishes unanswered, by seq (each its own future type)

    def __init__(self, addr: Optional[str] = None, key_file: Optional[str] = None, *,
                 key: Optional[bytes] = None, name: Optional[str] = None,
                 timeout: Optional[float] = 10.0, max_frame: int = P.MAX_FRAME_DEFAULT,
                 window: int = 1024, reconnect: bool = True, reconnect_max: float = 5.0,
                 reconnect_buffer: int = 1 << 20,
                 on_error: Optional[Callable[[PublishError], Any]] = None) -> None:
        self.address = addr if addr else _addr.default_bus()
        self._addr = _addr.parse_address(self.address)
        if key is None:
            kf = key_file or os.environ.get("FIDBUS_KEY_FILE") or None
            key = _addr.load_key(kf) if kf else None
        self._key = bytes(key) if key is not None else None
        self._name = name
        self.timeout = timeout
        if not 1 <= max_frame < 1 << 32:
            raise ValueError("max_frame must be 1 .. 2**32-1")
        self.max_frame = max_frame
        if window < 1:
            raise ValueError("window must be at least 1")
        self.window = window
        self._reconnect = reconnect
        self._backoff_max = max(reconnect_max, BACKOFF_FIRST)
        # every frame the client may send must fit, or it could never be kept
        self._buffer_max = max(reconnect_buffer, max_frame + 4)
        self.on_error = on_error

        self._out = bytearray()
        self._seq = 0
        self._pend_bytes = 0
        self._async: List[PublishError] = []
        self._async_count = 0
        self._conn_error: Optional[PublishError] = None
        self._dead: Optional[Error] = None
        self._cache = EnvelopeCache()
        self._enc = PayloadEncoder()
        self._rng = random.Random()
        self.reconnects = 0
        self.server_name = ""
        self._start()

    def _start(self) -> None:
        raise NotImplementedError

    def _next_seq(self) -> int:
        self._seq = s = (self._seq + 1) & 0x7FFFFFFFFFFFFFFF
        return s

    @property
    def unanswered(self) -> int:
        """Acked publishes sent or queued and not yet answered."""
        return len(self._inflight)

    @property
    def async_errors(self) -> int:
        """ERRORs received for un-acked publishes so far."""
        return self._async_count

    def take_errors(self) -> List[PublishError]:
        """The un-acked publishes' errors kept so far (oldest first), which
        the next ``ping()`` would otherwise raise; clears them."""
        errs, self._async = self._async, []
        return errs

    def _on_ack(self, seq: int, r: Any) -> None:
        raise NotImplementedError

    def _on_refused(self, seq: int, err: PublishError) -> None:
        """The ERROR err answered the PUBLISH or PING seq."""
        raise NotImplementedError

    def _on_msg(self, m: Dict[int, Any]) -> None:
        """A message from the daemon other than an ACK the frame parser
        took itself (``_wire.handle_frames``)."""
        t = m[P.K_TYPE]
        if t == P.ACK:
            self._on_ack(m.get(P.K_SEQ, 0), m.get(P.K_RESULT, 0))
        elif t == P.ERROR:
            err = error_of(m)
            if isinstance(err.seq, int):
                self._on_refused(err.seq, err)
            else:
                self._conn_error = err  # says why, if the daemon now closes
        # HELLO (only first), REPLY (not on the bus), unknown types: ignored

    def _backoff_step(self, prev: float) -> Tuple[float, float]:
        """The next backoff after ``prev`` (0: none yet), and how long to
        wait now. Jitter: the upper half of the step, so clients cut off
        together do not come back in lockstep."""
        nxt = min(prev * 2, self._backoff_max) if prev else BACKOFF_FIRST
        return nxt, nxt / 2 + self._rng.random() * nxt / 2

    def _loss(self, why: str, protocol: bool) -> Tuple[str, Error]:
        """Why the connection went (with the ERROR the daemon sent before
        closing, if any), and the error a client that does not reconnect
        dies with."""
        ce, self._conn_error = self._conn_error, None
        if ce is not None:
            why = f"{why} ({ce.name}: {ce.message})"
        err: Error = (ProtocolError(f"{self.address}: {why}") if protocol else
                      ConnectionLost(f"{self.address}: {why}", ce.code if ce else 0))
        return why, err


def error_of(m: Dict[int, Any]) -> PublishError:
    """An ERROR message as the :class:`PublishError` it reports."""
    code = m.get(P.K_CODE)
    if not isinstance(code, int) or code == 0:
        code = P.INTERNAL
    r = m.get(P.K_RESULT)
    return PublishError(code, text(m.get(P.K_MESSAGE)), m.get(P.K_SEQ),
                        r if isinstance(r, int) else None)


def frame_seq(out: bytearray, pos: int) -> int:
    """The seq of the PUBLISH frame at ``pos`` of ``out``."""
    # our PUBLISH frames: length, map head, 00 03, 01, seq
    ib = out[pos + 8]
    if ib < 24:
        return ib
    w = 1 << (ib - 24)
    return int.from_bytes(out[pos + 9:pos + 9 + w], "big")


def keep_unacked(out: bytearray, pos: int, acked: Dict[int, Any]) -> bytearray:
    """The frames of ``out`` from ``pos`` on that a reconnection sends
    again as they are: the PUBLISHes whose seq is not in ``acked`` (those
    are re-sent from their kept frames); PINGs are left out (re-sent by
    the wait that wants them)."""
    keep = bytearray()
    while pos + 4 <= len(out):
        end = pos + 4 + int.from_bytes(out[pos:pos + 4], "big")
        if out[pos + 5:pos + 7] == b"\x00\x03" and frame_seq(out, pos) not in acked:
            keep += out[pos:end]
        pos = end
    return keep


def item(it: Any) -> "tuple[str, Tags, Payload]":
    """publish_many's item: an id, or (event,), (event, tags), (event, tags,
    payload)."""
    if isinstance(it, str):
        return it, None, NO_PAYLOAD
    if not 1 <= len(it) <= 3:
        raise ValueError("publish_many: an item is an event id or (event, tags, payload)")
    return (it[0], it[1] if len(it) > 1 else None, it[2] if len(it) > 2 else NO_PAYLOAD)
