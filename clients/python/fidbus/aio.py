"""The bus client on asyncio: one event loop, no threads.

    async with fidbus.aio.Client() as bus:
        bus.publish("order.created", {"region": "eu"}, payload={"id": 1})
        n = await bus.publish_ack("order.paid", payload={"id": 1})
        fut = bus.publish("order.shipped", ack=True)     # an asyncio.Future
        counts = await bus.publish_many([("a.b", None, i) for i in range(1000)])
        await bus.ping()

The same protocol, rules and errors as :class:`fidbus.Client`: every
PUBLISH carries a seq and every answer is matched by it; the id, tags and
frame size are checked before anything is queued; ``ping()`` is the
barrier and raises :class:`fidbus.UnackedErrors` for refused un-acked
publishes (unless ``on_error`` takes them).

``publish()`` is a plain method: it encodes into the client's buffer, which
is handed to the transport once per loop iteration (or at 64 KiB), so a
burst costs one write, not one per event. It never waits: a long burst
should ``await bus.flush()`` now and then (it waits for the transport to
drain); ``publish_many`` does so, and keeps at most ``window`` acked
publishes in flight.

Reconnection (default on) works as in :class:`fidbus.Client`: acked
publishes without an answer are re-sent byte for byte on the new
connection, with the PINGs still waited for; un-acked publishes still in
the client's own buffer are carried over (those handed to the transport
may be lost with the old connection).

Serving remote functions (``@bus.function``, ``await bus.serve()``): see
_aioserve.py; ``async def`` handlers run concurrently, within the credit.
"""

import asyncio
import hashlib
import hmac
import logging
from typing import Any, Awaitable, Dict, Iterable, List, Optional, Sequence, Union

from . import _proto as P
from ._aioserve import AioServingMixin
from ._base import (FLAGS_ACK, LEADS, NO_PAYLOAD, SEND_THRESHOLD, ClientBase, Payload, Tags,
                    item, keep_unacked)
from ._wire import RawCBOR, decode_msg, encode_msg, handle_frames, pack_be32, text, uint
from .errors import (BatchError, BufferFull, ConnectError, ConnectionLost, Error,
                     InvalidError, ProtocolError, PublishError, Timeout, UnackedErrors)

log = logging.getLogger("fidbus")


class Client(AioServingMixin, ClientBase):
    """An asyncio connection to the bus. Arguments as
    :class:`fidbus.Client`; nothing happens until ``await connect()`` (or
    ``async with``)."""

    def _start(self) -> None:
        self._reader: Optional[asyncio.StreamReader] = None
        self._writer: Optional[asyncio.StreamWriter] = None
        self._read_task: Optional["asyncio.Task[None]"] = None
        self._reconnect_task: Optional["asyncio.Task[None]"] = None
        self._connected: Optional[asyncio.Event] = None
        self._room: Optional[asyncio.Event] = None  # set: fewer than window in flight
        self._flush_scheduled = False
        self._inflight: Dict[int, "asyncio.Future[int]"] = {}
        self._frames: Dict[int, bytes] = {}  # acked frames kept for re-sending
        self._pings: Dict[int, "asyncio.Future[None]"] = {}
        self._serve_init()

    # ------------------------------------------------------------ connecting

    async def connect(self) -> "Client":
        """Connects and authenticates (:class:`fidbus.ConnectError`)."""
        self._connected = asyncio.Event()
        self._room = asyncio.Event()
        await self._open()
        return self

    async def __aenter__(self) -> "Client":
        return await self.connect()

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    async def _open(self) -> None:
        a = self._addr
        shown = self.address
        try:
            if a[0] == "unix":
                coro = asyncio.open_unix_connection(a[1], limit=1 << 20)
            else:
                coro = asyncio.open_connection(a[1], a[2], limit=1 << 20)  # type: ignore[misc]
            reader, writer = await asyncio.wait_for(coro, self.timeout)
        except asyncio.TimeoutError:
            raise ConnectError(f"cannot connect to {shown}: timed out",
                               address=shown) from None
        except OSError as e:
            raise ConnectError(f"cannot connect to {shown}: {e.strerror or e}",
                               errno=e.errno, address=shown) from None
        try:
            await asyncio.wait_for(self._handshake(reader, writer), self.timeout)
        except BaseException as e:
            writer.close()
            if isinstance(e, asyncio.TimeoutError):
                raise ConnectError(f"{shown}: no answer to the handshake in time",
                                   address=shown) from None
            if isinstance(e, (asyncio.IncompleteReadError, OSError)) and \
                    not isinstance(e, ConnectError):
                raise ConnectError(f"{shown}: connection lost during the handshake",
                                   address=shown) from None
            if isinstance(e, ProtocolError):
                raise ConnectError(f"{shown}: {e.message}", code=P.MALFORMED,
                                   address=shown) from None
            raise
        self._reader, self._writer = reader, writer
        self._read_task = asyncio.ensure_future(self._read_loop(reader))
        assert self._connected is not None
        self._connected.set()

    async def _read_msg(self, reader: asyncio.StreamReader, limit: int) -> Dict[int, Any]:
        h = await reader.readexactly(4)
        n = int.from_bytes(h, "big")
        if n == 0 or n > limit:
            raise ProtocolError(f"frame length {n} from the daemon (limit {limit})")
        return decode_msg(await reader.readexactly(n))

    async def _handshake(self, reader: asyncio.StreamReader,
                         writer: asyncio.StreamWriter) -> None:
        shown = self.address
        m = await self._read_msg(reader, 1 << 16)
        if m[P.K_TYPE] == P.ERROR:
            code = m.get(P.K_CODE, P.INTERNAL)
            raise ConnectError(f"{shown} refused the connection: {P.code_name(code)}: "
                               f"{text(m.get(P.K_MESSAGE))}", code=code, address=shown)
        if m[P.K_TYPE] != P.HELLO or m.get(P.K_VERSION) != P.PROTO_VERSION:
            raise ConnectError(f"{shown}: no protocol v1 HELLO", code=P.UNSUPPORTED,
                               address=shown)
        self.server_name = text(m.get(P.K_NAME))
        nonce = m.get(P.K_NONCE)
        if not nonce:
            return
        if self._key is None:
            raise ConnectError(f"{shown} requires a key and none was given (key_file=, "
                               f"or $FIDBUS_KEY_FILE)", code=P.UNAUTHORIZED, address=shown)
        auth: Dict[int, Any] = {P.K_TYPE: P.AUTH,
                                P.K_MAC: hmac.new(self._key, bytes(nonce),
                                                  hashlib.sha256).digest()}
        if self._name:
            auth[P.K_NAME] = self._name
        writer.write(encode_msg(auth) + encode_msg({P.K_TYPE: P.PING, P.K_SEQ: 1}))
        while True:
            a = await self._read_msg(reader, 1 << 16)
            if a[P.K_TYPE] == P.ACK and a.get(P.K_SEQ) == 1:
                return
            if a[P.K_TYPE] == P.ERROR:
                code = a.get(P.K_CODE, P.INTERNAL)
                raise ConnectError(f"{shown} refused the key: {P.code_name(code)}: "
                                   f"{text(a.get(P.K_MESSAGE))}", code=code, address=shown)

    # --------------------------------------------------------------- reading

    async def _read_loop(self, reader: asyncio.StreamReader) -> None:
        limit = max(self.max_frame, 1 << 16)
        why = "connection closed by the daemon"
        protocol = False
        buf = bytearray()
        try:
            while True:
                data = await reader.read(1 << 18)
                if not data:
                    break
                buf += data
                off = handle_frames(buf, limit, self._on_ack, self._on_msg,
                                    self._serve_on_call)
                if off:
                    del buf[:off]
        except ConnectionError:
            pass
        except ProtocolError as e:
            why, protocol = e.message, True
        except OSError as e:
            why = f"read failed: {e.strerror or e}"
        except asyncio.CancelledError:
            return
        self._lost(why, protocol)

    def _on_ack(self, seq: int, r: Any) -> None:
        fut = self._inflight.pop(seq, None)
        if fut is not None:
            self._forget_frame(seq)
            if not fut.done():
                fut.set_result(r if isinstance(r, int) else 0)
        else:
            pf = self._pings.pop(seq, None)
            if pf is not None:
                if not pf.done():
                    pf.set_result(None)
            else:
                self._serve_ack(seq, r)

    def _on_refused(self, seq: int, err: PublishError) -> None:
        fut = self._inflight.pop(seq, None)
        if fut is not None:
            self._forget_frame(seq)
            if not fut.done():
                fut.set_exception(err)
            return
        pf = self._pings.pop(seq, None)
        if pf is not None:
            if not pf.done():
                pf.set_exception(err)
            return
        if self._serve_refused(seq, err):
            return
        self._async_count += 1
        if self.on_error is not None:
            try:
                self.on_error(err)
            except Exception:
                log.exception("fidbus: on_error raised")
        else:
            self._async.append(err)

    def _forget_frame(self, seq: int) -> None:
        # hysteresis: a full window wakes its waiter when a quarter is free,
        # not at every answer
        if self._room is not None and len(self._inflight) <= self.window * 3 // 4:
            self._room.set()
        f = self._frames.pop(seq, None)
        if f is not None:
            self._pend_bytes -= len(f)

    # --------------------------------------------------------------- writing

    def _schedule_flush(self) -> None:
        if len(self._out) > SEND_THRESHOLD:
            self._write_out()
        elif not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._write_out)

    def _write_out(self) -> None:
        self._flush_scheduled = False
        if self._writer is not None and self._out:
            out, self._out = self._out, bytearray()
            try:
                self._writer.write(out)
            except (OSError, RuntimeError):
                pass  # the read loop notices the loss

    def publish(self, event: str, tags: Tags = None, payload: Payload = NO_PAYLOAD,
                ack: bool = False) -> Any:
        """Queues one PUBLISH (see :meth:`fidbus.Client.publish`). Without
        ``ack`` returns its seq; with it, an asyncio.Future of the handler
        count (not bound by ``window``: ``publish_many`` is)."""
        if self._dead is not None:
            raise self._dead
        try:
            n, evtags = self._cache._d[event if not tags else (event, tuple(tags.items()))]
        except (KeyError, TypeError):
            n, evtags = self._cache.get(event, tags)
        seq = self._next_seq()
        seqb = uint(seq)
        pl = None
        if payload is not NO_PAYLOAD:
            pl = payload.data if type(payload) is RawCBOR else self._enc.encode(payload)
            n += 1
        blen = 4 + len(seqb) + len(evtags) + (1 + len(pl) if pl is not None else 0)
        if ack:
            blen += 2
            n += 1
        if blen > self.max_frame:
            raise InvalidError(f"publish of {event!r} is a {blen}-byte frame, over "
                               f"max_frame ({self.max_frame})", P.TOO_LARGE)
        frame = b"".join((pack_be32(blen), LEADS[n], seqb, evtags,
                          b"" if pl is None else b"\x04", pl or b"",
                          FLAGS_ACK if ack else b""))
        if self._writer is None and \
                self._pend_bytes + len(self._out) + len(frame) > self._buffer_max:
            raise BufferFull(f"disconnected from {self.address} with "
                             f"{self._pend_bytes + len(self._out)} bytes kept; "
                             f"reconnect_buffer is {self._buffer_max}")
        if not ack:
            self._out += frame
            if self._writer is not None:
                self._schedule_flush()
            return seq
        fut: "asyncio.Future[int]" = asyncio.get_running_loop().create_future()
        self._inflight[seq] = fut
        if self._reconnect:
            self._frames[seq] = frame
            self._pend_bytes += len(frame)
        if self._writer is not None:
            self._out += frame
            self._schedule_flush()
        return fut

    async def _await(self, fut: Awaitable[Any], timeout: Optional[float]) -> Any:
        t = self.timeout if timeout is None else timeout
        try:
            return await asyncio.wait_for(asyncio.shield(fut), t)
        except asyncio.TimeoutError:
            raise Timeout(f"no answer from {self.address} within the timeout") from None

    async def publish_ack(self, event: str, tags: Tags = None,
                          payload: Payload = NO_PAYLOAD,
                          timeout: Optional[float] = None) -> int:
        """Publishes with ACK and waits: the handler count, or raises
        :class:`fidbus.PublishError`."""
        return int(await self._await(self.publish(event, tags, payload, ack=True),
                                     timeout))

    async def publish_many(self, items: Iterable[Union[str, Sequence[Any]]],
                           ack: bool = True, return_exceptions: bool = False
                           ) -> Optional[List[Any]]:
        """As :meth:`fidbus.Client.publish_many`: at most ``window`` acked
        publishes in flight."""
        futs: List["asyncio.Future[int]"] = []
        queued = 0
        for it in items:
            r = self.publish(*item(it), ack=ack)
            if ack:
                futs.append(r)
                while len(self._inflight) >= self.window:
                    assert self._room is not None
                    self._room.clear()
                    await self._await(self._room.wait(), None)
            else:
                queued += 1
                if queued % 4096 == 0:
                    await self.flush()
        if not ack:
            await self.flush()
            return None
        results: List[Any] = []
        for f in futs:
            try:
                # most are answered by now: no task for those
                results.append(f.result() if f.done() else await self._await(f, None))
            except Timeout:
                raise
            except Error as e:
                results.append(e)
        if not return_exceptions and any(isinstance(r, Error) for r in results):
            raise BatchError(results)
        return results

    async def flush(self, timeout: Optional[float] = None) -> None:
        """Hands the buffer to the transport and waits for it to drain (a
        disconnected, reconnecting client waits for the connection)."""
        if self._dead is not None:
            raise self._dead
        t = self.timeout if timeout is None else timeout
        try:
            await asyncio.wait_for(self._flush(), t)
        except asyncio.TimeoutError:
            raise Timeout(f"could not write to {self.address} within the timeout") \
                from None

    async def _flush(self) -> None:
        while True:
            if self._writer is None:
                if self._dead is not None:
                    raise self._dead
                assert self._connected is not None
                await self._connected.wait()
                continue
            w = self._writer
            self._write_out()
            try:
                await w.drain()
                return
            except (OSError, RuntimeError):
                if not self._reconnect:
                    await asyncio.sleep(0)  # let the read loop record the loss
                    if self._dead is not None:
                        raise self._dead
                    raise ConnectionLost(f"{self.address}: write failed") from None
                await asyncio.sleep(0)

    async def ping(self, timeout: Optional[float] = None) -> None:
        """The barrier (see :meth:`fidbus.Client.ping`)."""
        if self._dead is not None:
            raise self._dead
        seq = self._next_seq()
        fut: "asyncio.Future[None]" = asyncio.get_running_loop().create_future()
        self._pings[seq] = fut
        if self._writer is not None:
            self._out += encode_msg({P.K_TYPE: P.PING, P.K_SEQ: seq})
            self._write_out()
        try:
            await self._await(fut, timeout)
        finally:
            self._pings.pop(seq, None)
        if self._async:
            errs, self._async = self._async, []
            raise UnackedErrors(errs)

    @property
    def connected(self) -> bool:
        return self._writer is not None

    async def close(self) -> None:
        """Writes what is buffered (best effort), closes; pending futures
        fail with :class:`fidbus.ConnectionLost`."""
        if self._reconnect_task is not None:
            self._reconnect_task.cancel()
        w = self._writer
        if w is not None and self._dead is None:
            self._write_out()
            try:
                await asyncio.wait_for(w.drain(), self.timeout)
            except (OSError, RuntimeError, asyncio.TimeoutError):
                pass
        if self._read_task is not None:
            self._read_task.cancel()
        self._writer = None
        if w is not None:
            w.close()
        if self._dead is None:
            self._dead = ConnectionLost("the client is closed")
        self._fail_all(self._dead)

    def _fail_all(self, err: Error) -> None:
        futs = list(self._inflight.values()) + list(self._pings.values())
        self._inflight.clear()
        self._pings.clear()
        self._frames.clear()
        self._pend_bytes = 0
        for f in futs:
            if not f.done():
                f.set_exception(err)
                f.exception()  # retrieved: no "never retrieved" warning if unawaited

    # ----------------------------------------------------------- reconnecting

    def _lost(self, why: str, protocol: bool) -> None:
        if self._writer is not None:
            self._writer.close()
        self._writer = self._reader = None
        if self._connected is not None:
            self._connected.clear()
        why, err = self._loss(why, protocol)
        self._serve_lost()
        if self._dead is not None:
            return
        if not self._reconnect:
            self._dead = err
            self._out.clear()
            self._fail_all(err)
            return
        log.info("fidbus: lost %s: %s; reconnecting", self.address, why)
        # what was handed to the transport went with it; acked frames are
        # re-sent from _frames, so keep only the un-acked ones still here
        self._reconnect_task = asyncio.ensure_future(self._reconnect_loop())

    async def _reconnect_loop(self) -> None:
        backoff = 0.0
        while self._dead is None:
            held = self._out
            self._out = bytearray()
            try:
                await self._open()
            except ConnectError as e:
                self._out = held + self._out
                backoff, wait = self._backoff_step(backoff)
                log.debug("fidbus: reconnecting to %s failed: %s", self.address, e)
                await asyncio.sleep(wait)
                continue
            resend = bytearray()
            for f in self._frames.values():
                resend += f
            resend += keep_unacked(held, 0, self._frames)
            for seq in self._pings:
                resend += encode_msg({P.K_TYPE: P.PING, P.K_SEQ: seq})
            self._out = bytearray(self._serve_registrations()) + resend + self._out
            self.reconnects += 1
            self._write_out()
            return


__all__ = ["Client"]
