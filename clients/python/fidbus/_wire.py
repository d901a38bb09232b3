"""Encoding, validation and framing shared by the clients.

The envelope is built by hand around bytes that are already CBOR
(proto/README.md "Message encoding"): a definite-length map with unsigned
keys in ascending order and shortest-form heads, as lib/msg_encode.c
writes it. ``payload``, ``result`` and ``args`` are embedded CBOR items,
never byte strings wrapping them. Only the items themselves go through
cbor2 (once); the envelope around them is a few concatenated bytes, so a
publisher of the same event id and tags pays for their encoding and
validation once (see :class:`EnvelopeCache`).

Validation follows lib/msg.c: the rules the daemon applies before it
answers INVALID, MALFORMED or TOO_LARGE.
"""

import io
import re
import struct
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

import cbor2  # type: ignore[import]  # no stubs in Debian's python3-cbor2

from . import _proto as P
from .errors import InvalidError, ProtocolError

_BE32 = struct.Struct(">I")
pack_be32 = _BE32.pack
unpack_be32 = _BE32.unpack_from

_ID_RE = re.compile(r"[A-Za-z0-9_.:-]{1,255}", re.ASCII)
_KEY_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}", re.ASCII)


def head(major: int, n: int) -> bytes:
    """A shortest-form CBOR head of major type ``major`` and argument n."""
    m = major << 5
    if n < 24:
        return bytes((m | n,))
    if n < 0x100:
        return bytes((m | 24, n))
    if n < 0x10000:
        return bytes((m | 25,)) + n.to_bytes(2, "big")
    if n < 0x100000000:
        return bytes((m | 26,)) + n.to_bytes(4, "big")
    if n < 0x10000000000000000:
        return bytes((m | 27,)) + n.to_bytes(8, "big")
    raise InvalidError(f"integer {n} does not fit 64 bits")


_UINT_SMALL = [bytes((i,)) for i in range(24)] + [bytes((24, i)) for i in range(24, 256)]


def uint(n: int) -> bytes:
    """Shortest-form CBOR unsigned integer."""
    if n < 256:
        return _UINT_SMALL[n]
    if n < 0x10000:
        return b"\x19" + n.to_bytes(2, "big")
    if n < 0x100000000:
        return b"\x1a" + n.to_bytes(4, "big")
    return head(0, n)


def tstr(s: str) -> bytes:
    b = s.encode("utf-8")
    return head(3, len(b)) + b


def bstr(b: bytes) -> bytes:
    return head(2, len(b)) + b


# ------------------------------------------------------------ validation


def check_event_id(event: str) -> bytes:
    """The id's bytes, or InvalidError: 1-255 bytes of [A-Za-z0-9_.:-]."""
    if not isinstance(event, str):
        raise InvalidError(f"event id must be a str, not {type(event).__name__}")
    if not _ID_RE.fullmatch(event):
        if not event:
            why = "is empty"
        elif len(event.encode("utf-8", "replace")) > P.MAX_ID_LEN:
            why = f"is longer than {P.MAX_ID_LEN} bytes"
        else:
            why = "has a character outside [A-Za-z0-9_.:-]"
        raise InvalidError(f"event id {event[:80]!r} {why}")
    return event.encode("ascii")


def encode_tags(tags: Mapping[str, str]) -> bytes:
    """The CBOR map of tags, or InvalidError by the daemon's rules: at most
    32; key 1-64 bytes of [A-Za-z0-9_.-]; value 0-255 bytes of UTF-8 with
    no NUL. (Keys are unique: they come from a mapping.)"""
    try:
        items = list(tags.items())
    except AttributeError:
        raise InvalidError(f"tags must be a mapping of str to str, not "
                           f"{type(tags).__name__}") from None
    if len(items) > P.MAX_TAGS:
        raise InvalidError(f"{len(items)} tags: at most {P.MAX_TAGS}")
    out = [head(5, len(items))]
    for k, v in items:
        if not isinstance(k, str) or not _KEY_RE.fullmatch(k):
            raise InvalidError(f"tag key {k!r}: must be 1-{P.MAX_TAG_KEY_LEN} bytes "
                               f"of [A-Za-z0-9_.-]")
        if not isinstance(v, str):
            raise InvalidError(f"tag {k!r}: value must be a str, not {type(v).__name__}")
        try:
            vb = v.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidError(f"tag {k!r}: value is not valid UTF-8 "
                               f"(a lone surrogate)") from None
        if len(vb) > P.MAX_TAG_VALUE_LEN:
            raise InvalidError(f"tag {k!r}: value is {len(vb)} bytes, at most "
                               f"{P.MAX_TAG_VALUE_LEN}")
        if b"\0" in vb:
            raise InvalidError(f"tag {k!r}: value contains a NUL byte")
        kb = k.encode("ascii")
        out.append(head(3, len(kb)) + kb + head(3, len(vb)) + vb)
    return b"".join(out)


class EnvelopeCache:
    """Validated, encoded ``event`` and ``tags`` entries, by (event, tags).

    A value is ``(n, evtags)``: the number of map entries of a PUBLISH with
    them, a seq and nothing else (type, seq, event, maybe tags), and the
    encoded event and tags entries that follow the seq. Bounded: cleared
    when full, so a publisher of ever-new ids costs one validation per
    event and no more memory."""

    MAX = 4096

    def __init__(self) -> None:
        self._d: Dict[Any, Tuple[int, bytes]] = {}

    def get(self, event: str, tags: Optional[Mapping[str, str]]) -> Tuple[int, bytes]:
        eid = check_event_id(event)
        evtags = b"\x02" + head(3, len(eid)) + eid
        n = 3  # type, seq, event
        if tags:
            evtags += b"\x03" + encode_tags(tags)
            n += 1
        try:
            key: Any = event if not tags else (event, tuple(tags.items()))
            hash(key)
        except TypeError:
            return n, evtags  # valid, but not a dict key (a str subclass value)
        if len(self._d) >= self.MAX:
            self._d.clear()
        self._d[key] = (n, evtags)
        return n, evtags


# ------------------------------------------------------------- RawCBOR


def scan_item(b: bytes, i: int = 0, max_depth: int = P.MAX_DEPTH_DEFAULT) -> int:
    """Offset just past the one well-formed CBOR item starting at b[i].

    Raises InvalidError (MALFORMED) for what RFC 8949 calls not
    well-formed, (TOO_LARGE) for nesting deeper than max_depth counted as
    the daemon does: arrays, maps and tags open at the deepest point, the
    item itself included (proto/README.md "Limits"). Iterative: a deep
    item costs no recursion."""
    n = len(b)
    kinds: List[int] = []  # 4 array, 5 map, 6 tag; +10 when indefinite
    left: List[int] = []  # items still due (definite), items seen (indefinite)

    def bad(why: str) -> InvalidError:
        return InvalidError(f"payload is not well-formed CBOR: {why}", P.MALFORMED)

    def arg(ai: int, at: int) -> Tuple[int, int]:
        if ai < 24:
            return ai, at
        w = 1 << (ai - 24)
        if at + w > n:
            raise bad("truncated")
        return int.from_bytes(b[at:at + w], "big"), at + w

    while True:
        if i >= n:
            raise bad("truncated")
        ib = b[i]
        i += 1
        major, ai = ib >> 5, ib & 31
        if ib == 0xFF:
            if not kinds or kinds[-1] < 10:
                raise bad("unexpected break")
            if kinds[-1] == 15 and left[-1] % 2:
                raise bad("indefinite map with a key and no value")
            kinds.pop()
            left.pop()
        elif ai == 31:
            if major in (2, 3):
                while True:  # chunks of the same major type, definite
                    if i >= n:
                        raise bad("truncated")
                    c = b[i]
                    i += 1
                    if c == 0xFF:
                        break
                    if c >> 5 != major or (c & 31) > 27:
                        raise bad("bad chunk in an indefinite-length string")
                    ln, i = arg(c & 31, i)
                    if i + ln > n:
                        raise bad("truncated")
                    i += ln
            elif major in (4, 5):
                kinds.append(major + 10)
                left.append(0)
                if len(kinds) > max_depth:
                    raise InvalidError(f"payload nests deeper than {max_depth}",
                                       P.TOO_LARGE)
                continue
            else:
                raise bad("indefinite length on a type that has none")
        elif ai > 27:
            raise bad("reserved additional information")
        else:
            val, i = arg(ai, i)
            if major == 7 and ai == 24 and val < 32:
                raise bad("two-byte simple value below 32")
            if major in (2, 3):
                if i + val > n:
                    raise bad("truncated")
                i += val
            elif major in (4, 5, 6) and (val or major == 6):
                kinds.append(major)
                left.append(val * 2 if major == 5 else (val if major == 4 else 1))
                if len(kinds) > max_depth:
                    raise InvalidError(f"payload nests deeper than {max_depth}",
                                       P.TOO_LARGE)
                continue
        # One item is complete: count it in the containers it closes.
        while kinds:
            if kinds[-1] >= 10:
                left[-1] += 1
                break
            left[-1] -= 1
            if left[-1]:
                break
            kinds.pop()
            left.pop()
        if not kinds:
            return i


class RawCBOR:
    """One CBOR data item given as its encoded bytes, sent byte-exact as a
    payload (non-shortest heads, indefinite lengths, tags and all).

    The bytes are checked once, here, as the daemon checks them: exactly
    one well-formed item, nested no deeper than ``max_depth`` (default 64).
    Reuse one RawCBOR for many publishes and the check is paid once.
    ``RawCBOR.trusted(b)`` skips it (the daemon still refuses a bad item,
    with an ERROR on that publish's seq)."""

    __slots__ = ("data",)

    def __init__(self, data: bytes, max_depth: int = P.MAX_DEPTH_DEFAULT) -> None:
        data = bytes(data)
        if scan_item(data, 0, max_depth) != len(data):
            raise InvalidError("payload has bytes after its one CBOR item", P.MALFORMED)
        self.data = data

    @classmethod
    def trusted(cls, data: bytes) -> "RawCBOR":
        r = cls.__new__(cls)
        r.data = bytes(data)
        return r

    def decode(self) -> Any:
        """The item as a Python value (cbor2)."""
        return cbor2.loads(self.data)

    def __bytes__(self) -> bytes:
        return self.data

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RawCBOR) and other.data == self.data

    def __hash__(self) -> int:
        return hash(self.data)

    def __repr__(self) -> str:
        return f"RawCBOR({self.data.hex()})"


class PayloadEncoder:
    """Encodes payloads with one reused cbor2 encoder: ``cbor2.dumps``
    makes a stream and an encoder per call, several times the cost of the
    encoding itself for a small value. One per client (not thread-safe,
    like the client)."""

    __slots__ = ("_fp", "_enc")

    def __init__(self) -> None:
        self._fp = io.BytesIO()
        self._enc = cbor2.CBOREncoder(self._fp)

    def encode(self, payload: Any) -> bytes:
        """The CBOR bytes of a payload: RawCBOR as given, anything else
        through cbor2 (bytes become a byte string item)."""
        if type(payload) is RawCBOR:
            return payload.data
        fp = self._fp
        try:
            self._enc.encode(payload)
            return fp.getvalue()
        except (cbor2.CBOREncodeError, TypeError, ValueError) as e:
            raise InvalidError(f"payload cannot be encoded as CBOR: {e}") from None
        finally:
            fp.seek(0)
            fp.truncate()


# ------------------------------------------------------------- messages


def encode_msg(fields: Mapping[int, Any], raw: Mapping[int, bytes] = {}) -> bytes:
    """One whole frame for a small message: fields encoded with cbor2,
    raw ones copied as already-encoded items, keys in ascending order."""
    keys = sorted(set(fields) | set(raw))
    parts = [head(5, len(keys))]
    for k in keys:
        parts.append(uint(k))
        parts.append(raw[k] if k in raw else cbor2.dumps(fields[k]))
    body = b"".join(parts)
    return pack_be32(len(body)) + body


def decode_msg(body: bytes) -> Dict[int, Any]:
    """A received message as {key: value}; ProtocolError if it is not a
    CBOR map with a type."""
    try:
        m = cbor2.loads(body)
    except Exception as e:  # cbor2 raises several types for bad input
        raise ProtocolError(f"undecodable frame from the daemon: {e}") from None
    if not isinstance(m, dict) or not isinstance(m.get(P.K_TYPE), int):
        raise ProtocolError("frame from the daemon is not a message map")
    return m


def text(v: Any) -> str:
    if isinstance(v, str):
        return v
    if v is None:
        return ""
    return str(v)


def handle_frames(buf: bytearray, limit: int, on_ack: Callable[[int, int], None],
                  on_msg: Callable[[Dict[int, Any]], None],
                  on_call: Optional[Callable[[bytearray, int, int], None]] = None) -> int:
    """Hands every whole frame at the front of buf to on_ack(seq, result)
    (an ACK as the daemon writes it, lib/msg_encode.c fidbus_enc_ack:
    ``a3 00 04 01 SEQ 08 RESULT``, read without cbor2) or on_msg(message);
    returns how many bytes it used, for the caller to cut once (cutting
    per frame would move the rest of the buffer for each small ACK).
    A CALL goes to on_call(buf, start, end) when given, to be read in
    place (_serve.parse_call). ProtocolError (with ``consumed`` set) for a bad length or body."""
    end = len(buf)
    off = 0
    try:
        while end - off >= 4:
            n = unpack_be32(buf, off)[0]
            if n == 0 or n > limit:
                raise ProtocolError(f"frame length {n} from the daemon (limit {limit})")
            nxt = off + 4 + n
            if nxt > end:
                break
            p = off + 4
            if n <= 15 and buf[p] == 0xA3 and buf[p + 1] == 0 and \
                    buf[p + 2] == P.ACK and buf[p + 3] == P.K_SEQ:
                ib = buf[p + 4]
                seq, q = 0, 0
                if ib < 24:
                    seq, q = ib, p + 5
                elif ib <= 0x1B:
                    w = 1 << (ib - 24)
                    seq, q = int.from_bytes(buf[p + 5:p + 5 + w], "big"), p + 5 + w
                if q and q + 2 == nxt and buf[q] == P.K_RESULT and buf[q + 1] < 24:
                    on_ack(seq, buf[q + 1])
                    off = nxt
                    continue
            if on_call is not None and buf[p + 1] == 0 and buf[p + 2] == P.CALL:
                off = nxt
                on_call(buf, p, nxt)
                continue
            msg = decode_msg(bytes(buf[p:nxt]))
            off = nxt
            on_msg(msg)
    except ProtocolError as e:
        e.consumed = off  # type: ignore[attr-defined]
        raise
    return off
