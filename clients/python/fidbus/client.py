"""The blocking bus client: publish, pipelined acked publish, PING, flush,
reconnection. Mirrors lib/client.c and lib/client_reconnect.c.

One client owns one stream socket (non-blocking underneath) and one write
buffer. Publishes are encoded straight into the buffer and written when it
holds 64 KiB, by ``flush()``, or by any call that waits. Every call that
moves bytes also reads and handles what the daemon sends (``_pump``): a
burst of bad publishes is answered with ERRORs, and a client that wrote
without reading could deadlock with a daemon blocked on writing them.

Every PUBLISH carries a seq, so every ERROR lands where it belongs: on the
future of an acked publish, on ``ping()`` (or ``on_error``) for an un-acked
one. Answers are matched by seq, never by order.

Not thread-safe: use one client per thread (``fidbus.aio`` for asyncio).
"""

import logging
import select
import socket
import time
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Union

from . import _addr
from . import _proto as P
from ._base import (FLAGS_ACK, LEADS, NO_PAYLOAD, SEND_THRESHOLD, ClientBase, Payload, Tags,
                    item, keep_unacked)
from ._io import FrameReader, handshake, poll_ms
from ._serving import ServingMixin
from ._wire import RawCBOR, encode_msg, handle_frames, pack_be32, text, uint, unpack_be32
from .errors import (BatchError, BufferFull, ConnectError, ConnectionLost, Error,
                     InvalidError, ProtocolError, PublishError, Timeout, UnackedErrors)

log = logging.getLogger("fidbus")


_MAX_KEPT_ERRORS = 10000


class _Lost(Exception):
    """The connection went away and the client reconnects (internal)."""


class PublishFuture:
    """The pending answer to one acked PUBLISH.

    ``result()`` gives the number of handler invocations that succeeded or
    raises the :class:`PublishError` the daemon answered (or
    :class:`ConnectionLost` when the client could not deliver it). Waiting
    drives the client's I/O, so it works without any thread. Callbacks
    added with ``add_done_callback`` run inside whichever client call reads
    the answer."""

    __slots__ = ("seq", "frame", "_client", "_state", "_value", "_callbacks")

    def __init__(self, client: "Client", seq: int) -> None:
        self.seq = seq
        self.frame: Optional[bytes] = None  # kept for re-sending
        self._client = client
        self._state = 0  # 0 pending, 1 result, 2 exception
        self._value: Any = None
        self._callbacks: Optional[List[Callable[["PublishFuture"], Any]]] = None

    def done(self) -> bool:
        """True once answered (or failed)."""
        return self._state != 0

    def result(self, timeout: Optional[float] = None) -> int:
        """The handler count; raises the publish's error. ``timeout``
        defaults to the client's; :class:`Timeout` leaves the publish in
        flight (it is still re-sent after a reconnection)."""
        if not self._state:
            self._client._wait_for(lambda: self._state != 0, timeout)
        if self._state == 2:
            raise self._value
        return self._value  # type: ignore[no-any-return]

    def exception(self, timeout: Optional[float] = None) -> Optional[BaseException]:
        """The error, or None for a success (waits like ``result``)."""
        if not self._state:
            self._client._wait_for(lambda: self._state != 0, timeout)
        return self._value if self._state == 2 else None

    def add_done_callback(self, fn: Callable[["PublishFuture"], Any]) -> None:
        """Calls fn(future) once answered (at once if it already is)."""
        if self._state:
            fn(self)
        elif self._callbacks is None:
            self._callbacks = [fn]
        else:
            self._callbacks.append(fn)

    def _resolve(self, state: int, value: Any) -> None:
        self._state = state
        self._value = value
        self.frame = None
        if self._callbacks:
            # run once the client's buffers are consistent again: a
            # callback may well call into the client
            self._client._later.append(self._fire)

    def _fire(self) -> None:
        cbs, self._callbacks = self._callbacks, None
        for fn in cbs or ():
            try:
                fn(self)
            except Exception:
                log.exception("fidbus: a publish callback raised")

    def __repr__(self) -> str:
        st = ("pending", "done", "failed")[self._state]
        return f"<PublishFuture seq={self.seq} {st}>"


class Client(ServingMixin, ClientBase):
    """A connection to the bus.

    ``addr``: ``unix:PATH``, a path or ``tcp:HOST:PORT``; default as
    fidbusctl (``$FIDBUS_BUS``, ``$FIDBUS_RUNTIME_DIR``, then trusted
    runtime dirs; see ``fidbus.default_bus()``). ``key_file`` (default
    ``$FIDBUS_KEY_FILE``) or ``key`` (bytes): the shared key for a TCP
    listener that requires AUTH. ``name``: sent in AUTH.

    ``timeout`` (seconds, None = forever): for connecting and for each call
    that waits. ``max_frame``: the daemon's ``[daemon] max_frame``; a
    publish whose frame is larger is refused here. ``window``: at most so
    many acked publishes in flight; one more waits for an answer.

    ``reconnect`` (default True): a lost connection is made again, with
    backoff from 50 ms doubling up to ``reconnect_max`` seconds; acked
    publishes without an answer are re-sent byte for byte (same seq), so
    they are delivered at least once; un-acked publishes still unsent are
    carried over, those already written to the old socket may be lost.
    While disconnected, publishes are buffered up to ``reconnect_buffer``
    bytes (then :class:`BufferFull`). With ``reconnect=False`` a lost
    connection raises :class:`ConnectionLost`, fails every pending future,
    and the client stays unusable.

    ``on_error(err)``: called with the :class:`PublishError` (its ``seq``
    set) of an un-acked publish the daemon refused; without it such errors
    are kept and raised by the next ``ping()`` as :class:`UnackedErrors`.

    The constructor connects (and authenticates): :class:`ConnectError`.
    """

    def _start(self) -> None:
        self._sock: Optional[socket.socket] = None
        self._poll: Any = None
        self._partial = 0  # bytes at the front of _out: the rest of a frame begun
        self._rd = FrameReader(max(self.max_frame, 1 << 16))
        self._inflight: Dict[int, PublishFuture] = {}
        self._pings: Dict[int, Any] = {}
        self._later: List[Callable[[], None]] = []  # callbacks due after a drain
        self._backoff = 0.0
        self._next_attempt = 0.0
        self._serve_init()
        self._attach(self._connect(self._deadline(None)))

    # ------------------------------------------------------------ basics

    def _deadline(self, timeout: Optional[float]) -> Optional[float]:
        t = self.timeout if timeout is None else timeout
        return None if t is None else time.monotonic() + t

    def _connect(self, deadline: Optional[float]) -> socket.socket:
        left = None if deadline is None else max(0.001, deadline - time.monotonic())
        sock = _addr.connect(self._addr, left, self.address)
        try:
            rd = FrameReader(self._rd.limit)
            hello = handshake(sock, rd, deadline, self._key, self._name, self.address)
        except BaseException:
            sock.close()
            raise
        self.server_name = text(hello.get(P.K_NAME))
        self._rd = rd  # a PING ACK the handshake read may be followed by nothing else
        return sock

    def _attach(self, sock: socket.socket) -> None:
        self._sock = sock
        self._poll = select.poll()
        self._poll.register(sock, select.POLLIN)
        if self._wake_r >= 0:
            self._poll.register(self._wake_r, select.POLLIN)

    def fileno(self) -> int:
        """The socket, for select(); -1 while disconnected."""
        return self._sock.fileno() if self._sock else -1

    @property
    def connected(self) -> bool:
        return self._sock is not None

    # ----------------------------------------------------------- publish

    def publish(self, event: str, tags: Tags = None, payload: Payload = NO_PAYLOAD,
                ack: bool = False) -> Any:
        """Queues one PUBLISH.

        ``payload``: any value cbor2 can encode (encoded once, here), or
        :class:`RawCBOR` sent byte-exact; left out, the event has none.
        The id and tags are checked here by the daemon's rules
        (:class:`InvalidError`), and a frame over ``max_frame`` is refused
        (:class:`InvalidError`, code TOO_LARGE), before anything is sent.

        Without ``ack``: returns the seq. The daemon answers only a failure
        (see ``on_error`` / ``ping()``). With ``ack``: returns a
        :class:`PublishFuture`; when ``window`` publishes are already in
        flight this first waits for an answer."""
        if self._dead is not None:
            raise self._dead
        try:
            n, evtags = self._cache._d[event if not tags else (event, tuple(tags.items()))]
        except (KeyError, TypeError):
            n, evtags = self._cache.get(event, tags)
        seq = self._seq = (self._seq + 1) & 0x7FFFFFFFFFFFFFFF
        seqb = uint(seq)
        if payload is NO_PAYLOAD:
            pl = None
            blen = 4 + len(seqb) + len(evtags)
        else:
            pl = payload.data if type(payload) is RawCBOR else self._enc.encode(payload)
            n += 1
            blen = 5 + len(seqb) + len(evtags) + len(pl)
        if ack:
            blen += 2
            n += 1
        if blen > self.max_frame:
            self._seq -= 1
            raise InvalidError(f"publish of {event!r} is a {blen}-byte frame, over "
                               f"max_frame ({self.max_frame})", P.TOO_LARGE)
        if not ack:
            out = self._out
            if self._sock is None:
                self._check_room(blen + 4)
            out += pack_be32(blen)
            out += LEADS[n]
            out += seqb
            out += evtags
            if pl is not None:
                out += b"\x04"
                out += pl
            if len(out) > SEND_THRESHOLD:
                self._send_some()
            return seq
        frame = b"".join((pack_be32(blen), LEADS[n], seqb, evtags,
                          b"" if pl is None else b"\x04", pl or b"", FLAGS_ACK))
        return self._send_acked(seq, frame)

    def _send_acked(self, seq: int, frame: bytes) -> PublishFuture:
        if len(self._inflight) >= self.window:
            w = self.window
            self._wait_for(lambda: len(self._inflight) < w, None)
        if self._reconnect:
            if self._sock is None:
                self._check_room(len(frame))
            elif self._pend_bytes + len(frame) > self._buffer_max:
                self._wait_for(lambda: self._pend_bytes + len(frame) <= self._buffer_max,
                               None)
        fut = PublishFuture(self, seq)
        self._inflight[seq] = fut
        if self._reconnect:
            fut.frame = frame
            self._pend_bytes += len(frame)
        if self._sock is not None:
            self._out += frame
            if len(self._out) > SEND_THRESHOLD:
                self._send_some()
        return fut

    def _check_room(self, more: int) -> None:
        """While disconnected: keep within reconnect_buffer, and try one
        reconnection if the backoff allows."""
        if self._reconnect and time.monotonic() >= self._next_attempt:
            self._reconnect_once(self._deadline(None))
            if self._sock is not None:
                return
        if self._pend_bytes + len(self._out) + more > self._buffer_max:
            raise BufferFull(f"disconnected from {self.address} with "
                             f"{self._pend_bytes + len(self._out)} bytes kept; "
                             f"reconnect_buffer is {self._buffer_max}")

    def publish_ack(self, event: str, tags: Tags = None, payload: Payload = NO_PAYLOAD,
                    timeout: Optional[float] = None) -> int:
        """Publishes with ACK and waits: the number of handler invocations
        that succeeded, or raises :class:`PublishError` (NO_ROUTE,
        HANDLER_FAILED with ``.result``, BUSY...)."""
        self._probe()
        fut: PublishFuture = self.publish(event, tags, payload, ack=True)
        return fut.result(timeout)

    def publish_many(self, items: Iterable[Union[str, Sequence[Any]]], ack: bool = True,
                     return_exceptions: bool = False) -> Optional[List[Any]]:
        """Publishes each item pipelined, at most ``window`` in flight.

        An item is an event id, or a tuple ``(event,)``, ``(event, tags)``
        or ``(event, tags, payload)``. With ``ack`` (default) waits for
        every answer and returns, in order, each publish's handler count;
        if some failed, raises :class:`BatchError` (its ``results`` hold
        the counts and the errors), or with ``return_exceptions`` returns
        the errors in the list. Without ``ack`` queues them all and returns
        None (``flush()`` or ``ping()`` after it)."""
        futs: List[PublishFuture] = []
        publish = self.publish
        for it in items:
            if type(it) is tuple and len(it) == 3:
                r = publish(it[0], it[1], it[2], ack)
            else:
                r = publish(*item(it), ack=ack)
            if ack:
                futs.append(r)
        if not ack:
            return None
        results: List[Any] = []
        for f in futs:
            try:
                results.append(f.result())
            except Error as e:
                if isinstance(e, Timeout):
                    raise
                results.append(e)
        if not return_exceptions and any(isinstance(r, Error) for r in results):
            raise BatchError(results)
        return results

    # ------------------------------------------------------ flush, ping

    def flush(self, timeout: Optional[float] = None) -> None:
        """Writes everything buffered (reading answers meanwhile). A
        reconnecting client that is disconnected reconnects first."""
        if self._dead is not None:
            raise self._dead
        self._probe()
        self._run(None, self._deadline(timeout))

    def ping(self, timeout: Optional[float] = None) -> None:
        """The barrier: returns once the daemon has fully handled every
        message sent before it, blocking handlers included. Then raises
        :class:`UnackedErrors` if un-acked publishes were refused (and no
        ``on_error`` took them)."""
        if self._dead is not None:
            raise self._dead
        self._probe()
        seq = self._next_seq()
        frame = encode_msg({P.K_TYPE: P.PING, P.K_SEQ: seq})
        self._pings[seq] = None

        def send() -> None:
            self._out += frame

        if self._sock is not None:
            send()
        try:
            self._run(lambda: self._pings[seq] is not None, self._deadline(timeout), send)
        finally:
            ans = self._pings.pop(seq)
        if isinstance(ans, Error):
            raise ans
        if self._async:
            raise UnackedErrors(self.take_errors())

    def close(self) -> None:
        """Writes what is buffered (best effort, no reconnection), closes
        the socket; futures still pending fail with ConnectionLost."""
        if self._sock is not None and self._dead is None and self._out:
            try:
                self._pump(None, self._deadline(None))
            except (Error, _Lost, OSError):
                pass
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._dead is None:
            self._dead = ConnectionLost("the client is closed")
        self._fail_all(self._dead)

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        s = getattr(self, "_sock", None)
        if s is not None:
            s.close()

    # ------------------------------------------------------------ the pump

    def _wait_for(self, done: Callable[[], bool], timeout: Optional[float]) -> None:
        if self._dead is not None and not done():
            raise self._dead
        self._run(done, self._deadline(timeout))

    def _run(self, done: Optional[Callable[[], bool]], deadline: Optional[float],
             on_reconnect: Optional[Callable[[], None]] = None) -> None:
        """_pump, reconnecting (until the deadline) when the client does."""
        while True:
            if done is not None and done():
                return
            if self._dead is not None:
                raise self._dead
            if self._sock is None:
                self._wait_connected(deadline)
                if self._sock is None:
                    continue  # woken by stop(): done() decides
                if on_reconnect is not None:
                    on_reconnect()
            try:
                self._pump(done, deadline)
                return
            except _Lost:
                continue

    def _send_some(self) -> None:
        """After a publish filled the buffer: write it out now."""
        if self._sock is None:
            return
        try:
            self._pump(None, self._deadline(None))
        except _Lost:
            pass  # kept for the next connection; a publish never waits for one

    def _pump(self, done: Optional[Callable[[], bool]], deadline: Optional[float]) -> None:
        """Writes what is buffered and reads answers until done() (or, with
        done None, until everything is written), on this connection."""
        sock = self._sock
        assert sock is not None
        while True:
            if done is not None and done():
                return
            out = self._out
            if out:
                try:
                    n = sock.send(out)
                except BlockingIOError:
                    n = 0
                except OSError as e:
                    self._read_what_is_left()
                    self._conn_lost("connection closed by the daemon"
                                    if isinstance(e, (BrokenPipeError, ConnectionResetError))
                                    else f"write failed: {e.strerror or e}")
                if n:
                    if n == len(out):
                        out.clear()
                        self._partial = 0
                    else:
                        if self._reconnect:
                            self._note_partial(n)
                        del out[:n]
                if not out and done is None:
                    return
            elif done is None:
                return
            self._poll.modify(sock, select.POLLIN | (select.POLLOUT if out else 0))
            ev = self._poll.poll(poll_ms(deadline))
            if not ev:
                if deadline is not None and time.monotonic() >= deadline:
                    raise Timeout(f"no answer from {self.address} within the timeout")
                continue
            for fd, pe in ev:
                if fd == self._wake_r:
                    self._serve_clear_wake()
                elif pe & (select.POLLIN | select.POLLHUP | select.POLLERR):
                    self._read()

    def _read(self) -> None:
        sock = self._sock
        assert sock is not None
        try:
            data = sock.recv(1 << 18)
        except BlockingIOError:
            return
        except (ConnectionResetError, BrokenPipeError):
            data = b""  # a reset is the daemon going away too
        except OSError as e:
            self._conn_lost(f"read failed: {e.strerror or e}")
        if not data:
            self._conn_lost("connection closed by the daemon")
        self._rd.buf += data
        self._drain()

    def _read_what_is_left(self) -> None:
        """After a failed write: what the daemon said before it went away."""
        try:
            while self._sock is not None:
                data = self._sock.recv(1 << 18)
                if not data:
                    break
                self._rd.buf += data
        except OSError:
            pass
        try:
            self._drain()
        except ProtocolError:
            pass

    def _drain(self) -> None:
        """Handles every whole frame received. Frames are parsed in place
        and the buffer cut once at the end (cutting per frame would move
        the rest of the buffer for each small ACK); callbacks run after."""
        buf = self._rd.buf
        off = 0
        try:
            off = handle_frames(buf, self._rd.limit, self._on_ack, self._on_msg,
                                self._serve_on_call)
        except ProtocolError as e:
            off = e.consumed  # type: ignore[attr-defined]
            del buf[:off]
            off = 0
            self._conn_lost(e.message, protocol=True)
        finally:
            if off:
                del buf[:off]
            if self._later:
                self._run_later()

    def _run_later(self) -> None:
        later, self._later = self._later, []
        for fn in later:
            fn()

    def _on_ack(self, seq: int, r: Any) -> None:
        fut = self._inflight.pop(seq, None)
        if fut is not None:
            if fut.frame is not None:
                self._pend_bytes -= len(fut.frame)
            fut._resolve(1, r if isinstance(r, int) else 0)
        elif seq in self._pings:
            self._pings[seq] = True
        else:
            self._serve_ack(seq, r)

    def _on_refused(self, seq: int, err: PublishError) -> None:
        fut = self._inflight.pop(seq, None)
        if fut is not None:
            if fut.frame is not None:
                self._pend_bytes -= len(fut.frame)
            fut._resolve(2, err)
        elif seq in self._pings:
            self._pings[seq] = err
        elif self._serve_refused(seq, err):
            pass
        else:
            self._async_count += 1
            if self.on_error is not None:
                self._later.append(lambda: self._call_on_error(err))
            elif len(self._async) < _MAX_KEPT_ERRORS:
                self._async.append(err)

    def _call_on_error(self, err: PublishError) -> None:
        if self.on_error is not None:
            try:
                self.on_error(err)
            except Exception:
                log.exception("fidbus: on_error raised")

    def _note_partial(self, n: int) -> None:
        """n of the buffered bytes were written, not all: remember how much
        of the frame the cut falls in is left (lost with the socket)."""
        out = self._out
        pos = self._partial
        while pos < n:
            pos += 4 + unpack_be32(out, pos)[0]
        self._partial = pos - n

    def _probe(self) -> None:
        """Notices a connection the daemon closed while the client was idle
        (a restart) before a call writes into it."""
        if not self._reconnect or self._sock is None or self._rd.buf:
            return
        try:
            data = self._sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            try:
                self._conn_lost("connection closed by the daemon")
            except _Lost:
                pass

    # -------------------------------------------------------- connection loss

    def _conn_lost(self, why: str, protocol: bool = False) -> Any:
        """Drops the connection. Reconnecting: keeps the un-acked publishes
        not yet begun (acked ones are re-sent from their futures, a PING by
        the wait that wanted it) and raises _Lost. Otherwise the client is
        dead: ConnectionLost, and every pending future fails with it."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        why, err = self._loss(why, protocol)
        self._serve_lost()
        if not self._reconnect:
            self._dead = err
            self._out.clear()
            self._fail_all(err)
            raise err
        log.info("fidbus: lost %s: %s; reconnecting", self.address, why)
        self._out = keep_unacked(self._out, self._partial, self._inflight)
        self._partial = 0
        self._rd.buf.clear()
        self._backoff = 0.0
        self._next_attempt = time.monotonic()
        raise _Lost()

    def _fail_all(self, err: Error) -> None:
        futs, self._inflight = self._inflight, {}
        self._pend_bytes = 0
        for f in futs.values():
            f._resolve(2, err)
        if self._later:
            self._run_later()

    def _reconnect_once(self, deadline: Optional[float]) -> bool:
        try:
            sock = self._connect(deadline)
        except ConnectError as e:
            self._backoff, wait = self._backoff_step(self._backoff)
            self._next_attempt = time.monotonic() + wait
            log.debug("fidbus: reconnecting to %s failed: %s", self.address, e)
            return False
        held = self._out
        self._out = bytearray()
        for f in self._inflight.values():
            if f.frame is not None:
                self._out += f.frame
        self._out += held
        self._serve_reconnected()
        self._partial = 0
        self._backoff = 0.0
        self.reconnects += 1
        self._attach(sock)
        return True

    def _wait_connected(self, deadline: Optional[float]) -> None:
        while self._sock is None:
            now = time.monotonic()
            if now >= self._next_attempt:
                if self._reconnect_once(deadline):
                    return
                continue
            if deadline is not None and now >= deadline:
                raise Timeout(f"not reconnected to {self.address} within the timeout")
            wait = self._next_attempt - now
            if deadline is not None:
                wait = min(wait, deadline - now)
            if self._wake_r >= 0:  # serving: stop() ends the wait
                p = select.poll()
                p.register(self._wake_r, select.POLLIN)
                if p.poll(int(wait * 1000) + 1):
                    self._serve_clear_wake()
                    if self._stop_req:
                        return
                continue
            time.sleep(wait)  # the backoff itself: there is nothing to wait on

