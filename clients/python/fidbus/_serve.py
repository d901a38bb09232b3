"""Serving remote functions (proto/README.md "Remote functions"): the handler's :class:`Event`, the in-place reading of a CALL,
a registration's checks and frames, and the RESULT frames.

A CALL is read straight from the receive buffer (``parse_call``): the
envelope's few unsigned integers and the event id are read by hand, the
tags and payload are only cut out as bytes and decoded by cbor2 when the
handler asks (``Event.tags``, ``Event.payload``). Decoding every CALL with
cbor2 would cost more than the rest of serving it.
"""

import re
from typing import Any, Callable, Dict, Optional, Tuple

import cbor2  # type: ignore[import]

from . import _proto as P
from ._wire import decode_msg, encode_msg, pack_be32, scan_item, uint
from .errors import InvalidError

_NAME = r"[A-Za-z0-9_-]{1,64}"
_CANON_RE = re.compile(rf"{_NAME}\.{_NAME}@[0-9]+\.[0-9]+\.[0-9]+", re.ASCII)
SIGNATURE_MAX = 4096
MESSAGE_MAX = 1024  # bytes of a HANDLER_FAILED/RETRY message: an exception text, cut


class Event:
    """One call of a served function: the event that was routed to it.

    ``id`` the event id, ``tags`` a dict (decoded on first use),
    ``payload`` the decoded payload (cbor2, on first use; None when the
    event has none: ``has_payload`` tells the two apart), ``raw_payload``
    its CBOR bytes exactly as published (None when absent),
    ``generation`` of the route table that routed it, ``attempt`` (1, then
    2... when delivered again), ``call_id`` (the CALL's seq on this
    connection), ``funcid`` (the function's funcID), and ``uid``/``pid``
    of the process that published it (a Unix publisher; -1 otherwise)."""

    __slots__ = ("id", "call_id", "funcid", "generation", "attempt", "raw_payload",
                 "uid", "pid", "_tags_raw", "_tags", "_payload", "_conn")

    def __init__(self, id: str, call_id: int, funcid: int, generation: int, attempt: int,
                 tags_raw: Optional[bytes], raw_payload: Optional[bytes],
                 uid: int = -1, pid: int = -1) -> None:
        self.id = id
        self.uid = uid
        self.pid = pid
        self.call_id = call_id
        self.funcid = funcid
        self.generation = generation
        self.attempt = attempt
        self.raw_payload = raw_payload
        self._tags_raw = tags_raw
        self._tags: Optional[Dict[str, str]] = None
        self._payload: Any = _UNSET
        self._conn = 0

    @property
    def tags(self) -> Dict[str, str]:
        if self._tags is None:
            self._tags = cbor2.loads(self._tags_raw) if self._tags_raw else {}
        return self._tags

    @property
    def has_payload(self) -> bool:
        return self.raw_payload is not None

    @property
    def payload(self) -> Any:
        if self._payload is _UNSET:
            self._payload = (cbor2.loads(self.raw_payload) if self.raw_payload is not None
                             else None)
        return self._payload

    def __repr__(self) -> str:
        return (f"<fidbus.Event {self.id} call {self.call_id} attempt {self.attempt} "
                f"generation {self.generation}>")


_UNSET: Any = object()


def _uint_at(b: bytes, i: int) -> Tuple[int, int]:
    ib = b[i]
    if ib < 24:
        return ib, i + 1
    if 24 <= ib <= 27:
        w = 1 << (ib - 24)
        if i + 1 + w > len(b):
            raise ValueError("truncated")
        return int.from_bytes(b[i + 1:i + 1 + w], "big"), i + 1 + w
    raise ValueError("not an unsigned integer")


def _item_end(b: bytes, i: int, end: int) -> int:
    """Offset past the CBOR item at b[i]: by hand for a scalar or a
    definite string, scan_item for the rest."""
    ib = b[i]
    major = ib >> 5
    ai = ib & 31
    if major in (0, 1, 7) and ai < 28:
        return i + 1 + (0 if ai < 24 else 1 << (ai - 24))
    if major in (2, 3) and ai < 28:
        n, j = _len_at(b, i)
        return j + n
    return int(scan_item(bytes(b[i:end]))) + i


def _len_at(b: bytes, i: int) -> Tuple[int, int]:
    ai = b[i] & 31
    if ai < 24:
        return ai, i + 1
    w = 1 << (ai - 24)
    return int.from_bytes(b[i + 1:i + 1 + w], "big"), i + 1 + w


def parse_call(b: bytes, p: int, end: int) -> Event:
    """The CALL whose body is b[p:end] (a map: checked by the caller's
    look at its first bytes). ValueError when it is not one this client
    can read in place (parse_call_slow then tries cbor2)."""
    ib = b[p]
    if not 0xA0 <= ib <= 0xB7:
        raise ValueError("not a definite map")
    n = ib - 0xA0
    i = p + 1
    seq = fid = gen = att = uid = pid = -1
    eid = ""
    tags = payload = None
    for _ in range(n):
        k = b[i]
        if k >= 24:
            if k != 24:
                raise ValueError("key")
            k = b[i + 1]  # keys 24-255 in one more byte (uid 26, pid 27)
            i += 1
        i += 1
        if k in (1, 16, 20, 21, 0, 26, 27):
            v, i = _uint_at(b, i)
            if k == 1:
                seq = v
            elif k == 16:
                fid = v
            elif k == 20:
                gen = v
            elif k == 21:
                att = v
            elif k == 26:
                uid = v
            elif k == 27:
                pid = v
        elif k == 2:
            if b[i] >> 5 != 3 or (b[i] & 31) > 27:
                raise ValueError("event")
            ln, j = _len_at(b, i)
            i = j + ln
            eid = b[j:i].decode("utf-8")
        elif k == 3:
            j = _item_end(b, i, end)
            tags = bytes(b[i:j])
            i = j
        elif k == 4:
            j = _item_end(b, i, end)
            payload = bytes(b[i:j])
            i = j
        else:
            i = _item_end(b, i, end)
        if i > end:
            raise ValueError("truncated")
    if i != end or seq < 0 or fid < 0 or gen < 0 or att < 1 or not eid:
        raise ValueError("incomplete CALL")
    return Event(eid, seq, fid, gen, att, tags, payload, uid, pid)


def parse_call_slow(body: bytes) -> Optional[Event]:
    """A CALL cbor2 can read but parse_call could not (not as fidbusd
    writes one): the payload is encoded again, so not byte-exact. None
    when it is not a CALL at all."""
    m = decode_msg(body)
    try:
        ev = Event(m[P.K_EVENT], m[P.K_SEQ], m[P.K_ID], m[P.K_GENERATION], m[P.K_ATTEMPT],
                   cbor2.dumps(m[P.K_TAGS]) if P.K_TAGS in m else None,
                   cbor2.dumps(m[P.K_PAYLOAD]) if P.K_PAYLOAD in m else None,
                   m.get(P.K_UID, -1), m.get(P.K_PID, -1))
    except (KeyError, TypeError):
        return None
    return ev


class Function:
    """One served function: its registration and its handler."""

    __slots__ = ("canonical", "signature", "credit", "timeout_ms", "idempotent", "fn",
                 "is_async", "funcid", "answered", "error")

    def __init__(self, canonical: str, signature: str, credit: Optional[int],
                 timeout_ms: Optional[int], idempotent: bool,
                 fn: Callable[[Event], Any], is_async: bool) -> None:
        self.canonical = canonical
        self.signature = signature
        self.credit = credit
        self.timeout_ms = timeout_ms
        self.idempotent = idempotent
        self.fn = fn
        self.is_async = is_async
        self.funcid: Optional[int] = None
        self.answered = False
        self.error: Any = None

    def register_frame(self, seq: int) -> bytes:
        f: Dict[int, Any] = {P.K_TYPE: P.REGISTER, P.K_SEQ: seq,
                             P.K_FUNCTION: self.canonical, P.K_SIGNATURE: self.signature}
        if self.idempotent:
            f[P.K_FLAGS] = P.FLAG_IDEMPOTENT
        if self.credit is not None:
            f[P.K_CREDIT] = self.credit
        if self.timeout_ms is not None:
            f[P.K_TIMEOUT_MS] = self.timeout_ms
        return encode_msg(f)

    def unregister_frame(self, seq: int) -> bytes:
        return encode_msg({P.K_TYPE: P.UNREGISTER, P.K_SEQ: seq,
                           P.K_FUNCTION: self.canonical})


def check_function(canonical: str, signature: str, credit: Optional[int],
                   timeout_ms: Optional[int]) -> None:
    """The codec's checks of a REGISTER (proto/README.md), before sending."""
    if not isinstance(canonical, str) or not _CANON_RE.fullmatch(canonical):
        raise InvalidError(f"function {canonical!r}: must be ns.name@MAJOR.MINOR.PATCH, "
                           f"each name 1-64 of [A-Za-z0-9_-]")
    if not isinstance(signature, str):
        raise InvalidError("signature must be a str")
    sb = signature.encode("utf-8")
    if len(sb) > SIGNATURE_MAX or b"\0" in sb:
        raise InvalidError(f"signature of {canonical}: at most {SIGNATURE_MAX} bytes, "
                           f"no NUL")
    for what, v in (("credit", credit), ("timeout_ms", timeout_ms)):
        if v is not None and (not isinstance(v, int) or not 1 <= v < 1 << 64):
            raise InvalidError(f"{what} of {canonical}: a positive integer (None: the "
                               f"daemon's [remote] default)")


_RESULT_UPTO_OK = bytes((0xA3, 0, P.RESULT, P.K_CODE, 0, P.K_UPTO))


def result_upto_ok(call_id: int) -> bytes:
    """RESULT upto=call_id code 0: every call held up to it went well."""
    u = uint(call_id)
    return pack_be32(6 + len(u)) + _RESULT_UPTO_OK + u


def result_one(call_id: int, code: int, message: str) -> bytes:
    """RESULT for one call with a code and a message (cut to MESSAGE_MAX
    bytes of UTF-8)."""
    mb = message.encode("utf-8", "replace")
    if len(mb) > MESSAGE_MAX:
        message = mb[:MESSAGE_MAX].decode("utf-8", "ignore")
    return encode_msg({P.K_TYPE: P.RESULT, P.K_SEQ: call_id, P.K_CODE: code,
                       P.K_MESSAGE: message})
