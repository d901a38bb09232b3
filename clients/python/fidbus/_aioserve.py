"""The serving half of :class:`fidbus.aio.Client`: ``function``,
``serve()`` (a coroutine) and ``stop()``, on the client's one event loop.

Unlike the blocking client, calls run concurrently: the read loop hands
each CALL (read in place, ``_serve.parse_call``) to a task when its handler
is an ``async def`` (a plain function runs at once, inside the read loop),
so a member holds up to its credit of calls at once. Answers are gathered
and written once per loop iteration: the calls that completed in call-id
order from the oldest one held go out as one RESULT ``upto`` (or one
RESULT each where a call failed), those that completed ahead of an older
one still running go out one RESULT each.
"""

import asyncio
import collections
import inspect
import logging
import signal
import threading
from typing import Any, Callable, Deque, Dict, List, Optional, Tuple

from . import _proto as P
from ._serve import (Event, Function, check_function, parse_call, parse_call_slow,
                     result_one, result_upto_ok)
from ._wire import encode_msg
from .errors import ConnectionLost, Error, RegisterError, Retry

log = logging.getLogger("fidbus")

_SENT: Any = object()  # answered on its own, ahead of an older call


class AioServingMixin:
    """Serving state and methods; fidbus.aio.Client calls the ``_serve_*``
    hooks."""

    _out: bytearray
    _next_seq: Callable[[], int]
    _write_out: Callable[[], None]
    _writer: Any

    def _serve_init(self) -> None:
        self._functions: Dict[str, Function] = {}
        self._by_id: Dict[int, Function] = {}
        self._regs: Dict[int, Tuple[Function, "asyncio.Future[Any]"]] = {}
        self._unregs: Dict[int, Tuple[Function, "asyncio.Future[Any]"]] = {}
        self._order: Deque[int] = collections.deque()  # call ids held, oldest first
        self._status: Dict[int, Any] = {}  # call id -> None (running) | (code, msg) | _SENT
        self._ahead: List[int] = []  # completed while an older call runs
        self._emit_scheduled = False
        self._tasks: "set[asyncio.Task[None]]" = set()
        self._conn_no = 0
        self._serve_loop: Optional[asyncio.AbstractEventLoop] = None
        self._wake: Optional[asyncio.Event] = None
        self._stop_req = False
        self._serve_error: Optional[Error] = None
        self._on_ready: Optional[Callable[[], Any]] = None
        self._started = False  # serve() past its first registrations
        self.calls_served = 0

    def function(self, canonical: str, signature: str = "", *, credit: Optional[int] = None,
                 timeout_ms: Optional[int] = None, idempotent: bool = False
                 ) -> Callable[[Callable[[Event], Any]], Callable[[Event], Any]]:
        """A decorator that serves ``canonical`` with the handler (as
        :meth:`fidbus.Client.function`). Nothing is sent here: ``serve()``
        registers, and raises :class:`RegisterError` there. An ``async
        def`` handler runs as a task, concurrently with the others up to
        the credit; a plain function runs at once in the read loop."""
        check_function(canonical, signature, credit, timeout_ms)

        def deco(fn: Callable[[Event], Any]) -> Callable[[Event], Any]:
            if canonical in self._functions:
                raise RegisterError(P.CONFLICT, "this client serves it already", canonical)
            self._functions[canonical] = Function(canonical, signature, credit, timeout_ms,
                                                  idempotent, fn,
                                                  inspect.iscoroutinefunction(fn))
            return fn

        return deco

    async def serve(self, on_ready: Optional[Callable[[], Any]] = None) -> None:
        """Registers the functions (a refusal raises :class:`RegisterError`
        and unregisters the others), then serves until ``stop()`` or, when
        the loop runs in the main thread, SIGTERM or SIGINT; then drains
        (UNREGISTER, the calls in hand finish and are answered) and
        returns. ``on_ready()`` as for :meth:`fidbus.Client.serve`."""
        if not self._functions:
            raise ValueError("serve(): no function registered (use @bus.function)")
        if self._serve_loop is not None:
            raise RuntimeError("serve() is already running")
        loop = asyncio.get_running_loop()
        self._serve_loop = loop
        self._wake = asyncio.Event()
        sigs: List[signal.Signals] = []
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGTERM, signal.SIGINT):
                try:
                    loop.add_signal_handler(s, self.stop)
                    sigs.append(s)
                except (NotImplementedError, RuntimeError):
                    pass
        try:
            futs = [self._send_register(f) for f in list(self._functions.values())]
            self._write_out()
            errs = [e for e in await asyncio.gather(*futs) if isinstance(e, Error)]
            if errs:
                self._stop_req = True
                await self._drain()
                raise errs[0]
            self._on_ready = on_ready
            self._started = True
            if on_ready is not None:
                on_ready()
            while not self._stop_req and self._serve_error is None:
                await self._wake.wait()
                self._wake.clear()
            if self._serve_error is not None:
                err, self._serve_error = self._serve_error, None
                raise err
            await self._drain()
        finally:
            for s in sigs:
                loop.remove_signal_handler(s)
            self._serve_loop = None
            self._wake = None
            self._stop_req = False
            self._started = False
            self._on_ready = None

    def stop(self) -> None:
        """Asks ``serve()`` to drain and return; from the loop, a handler,
        or any other thread."""
        self._stop_req = True
        loop, wake = self._serve_loop, self._wake
        if loop is None or wake is None:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            wake.set()
        else:
            loop.call_soon_threadsafe(wake.set)

    @property
    def serving(self) -> List[str]:
        return [f.canonical for f in self._functions.values() if f.funcid is not None]

    @property
    def held(self) -> int:
        """Calls read and not yet answered."""
        return sum(1 for s in self._status.values() if s is None or type(s) is tuple)

    # ------------------------------------------------------------ internals

    def _send_register(self, f: Function) -> "asyncio.Future[Any]":
        seq = self._next_seq()
        fut: "asyncio.Future[Any]" = asyncio.get_running_loop().create_future()
        self._regs[seq] = (f, fut)
        self._out += f.register_frame(seq)
        return fut

    async def _drain(self) -> None:
        futs = []
        for f in list(self._functions.values()):
            seq = self._next_seq()
            fut: "asyncio.Future[Any]" = asyncio.get_running_loop().create_future()
            self._unregs[seq] = (f, fut)
            self._out += f.unregister_frame(seq)
            futs.append(fut)
        self._write_out()
        if futs and self._writer is not None:
            await asyncio.gather(*futs, return_exceptions=True)
        self._functions.clear()
        self._by_id.clear()
        if self._tasks:  # calls of a lost connection still running
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def _serve_on_call(self, buf: bytearray, p: int, end: int) -> None:
        try:
            ev: Optional[Event] = parse_call(buf, p, end)
        except (ValueError, IndexError, UnicodeDecodeError):
            ev = parse_call_slow(bytes(buf[p:end]))
        if ev is None:
            log.warning("fidbus: a CALL without its keys; ignored")
            return
        cid = ev.call_id
        self._order.append(cid)
        self._status[cid] = None
        f = self._by_id.get(ev.funcid)
        if f is not None and f.is_async:
            t = asyncio.ensure_future(self._run_async(f, ev, self._conn_no))
            self._tasks.add(t)
            t.add_done_callback(self._tasks.discard)
            return
        code, msg = 0, ""
        try:
            if f is None:
                raise LookupError(f"this member serves no function {ev.funcid:016x}")
            f.fn(ev)
        except Retry as e:
            code, msg = P.RETRY, str(e) or "retry"
        except Exception as e:
            code, msg = P.HANDLER_FAILED, str(e) or type(e).__name__
        self._done(cid, code, msg, self._conn_no)

    async def _run_async(self, f: Function, ev: Event, conn: int) -> None:
        code, msg = 0, ""
        try:
            await f.fn(ev)
        except Retry as e:
            code, msg = P.RETRY, str(e) or "retry"
        except Exception as e:
            code, msg = P.HANDLER_FAILED, str(e) or type(e).__name__
        self._done(ev.call_id, code, msg, conn)

    def _done(self, cid: int, code: int, msg: str, conn: int) -> None:
        if conn != self._conn_no:
            return  # its connection is gone: the daemon redelivers or fails it
        self.calls_served += 1
        self._status[cid] = (code, msg)
        if self._order and self._order[0] != cid:
            self._ahead.append(cid)
        if not self._emit_scheduled:
            self._emit_scheduled = True
            asyncio.get_running_loop().call_soon(self._emit)

    def _emit(self) -> None:
        self._emit_scheduled = False
        order, status = self._order, self._status
        out: List[bytes] = []
        upto = 0
        while order and status[order[0]] is not None:
            cid = order.popleft()
            st = status.pop(cid)
            if st is _SENT:
                continue
            if st[0] == 0:
                upto = cid
                continue
            if upto:
                out.append(result_upto_ok(upto))
                upto = 0
            out.append(result_one(cid, st[0], st[1]))
        if upto:
            out.append(result_upto_ok(upto))
        for cid in self._ahead:
            st = status.get(cid)
            if type(st) is tuple:
                out.append(result_one(cid, st[0], st[1]) if st[0] else
                           encode_msg({P.K_TYPE: P.RESULT, P.K_SEQ: cid, P.K_CODE: 0}))
                status[cid] = _SENT
        self._ahead.clear()
        if out:
            self._out += b"".join(out)
            self._write_out()

    def _serve_ack(self, seq: int, r: Any) -> bool:
        reg = self._regs.pop(seq, None)
        if reg is not None:
            f, fut = reg
            f.funcid = r
            self._by_id[r] = f
            if not fut.done():
                fut.set_result(r)
            if not self._regs and self._started and self._on_ready is not None:
                self._on_ready()
            return True
        reg = self._unregs.pop(seq, None)
        if reg is not None:
            if not reg[1].done():
                reg[1].set_result(None)
            return True
        return False

    def _serve_refused(self, seq: int, err: Error) -> bool:
        reg = self._regs.pop(seq, None)
        if reg is not None:
            f, fut = reg
            e = RegisterError(err.code, err.message, f.canonical)
            self._functions.pop(f.canonical, None)
            if not fut.done():
                fut.set_result(e)  # serve() raises it while starting
            if self._started and self._serve_error is None:
                self._serve_error = e  # a re-registration refused: serve() raises it
                if self._wake is not None:
                    self._wake.set()
            return True
        reg = self._unregs.pop(seq, None)
        if reg is not None:  # NOT_FOUND: not served anyway
            if not reg[1].done():
                reg[1].set_result(None)
            return True
        return False

    def _serve_lost(self) -> None:
        """The connection went: its calls cannot be answered any more (the
        daemon redelivers or fails them). A REGISTER still unanswered is
        sent again on the next connection with the same waiter; without
        reconnection, serve() raises ConnectionLost."""
        self._conn_no += 1
        self._order.clear()
        self._status.clear()
        self._ahead.clear()
        self._by_id.clear()
        for f in self._functions.values():
            f.funcid = None
        for f, fut in self._unregs.values():
            if not fut.done():
                fut.set_result(None)  # left with the connection
        self._unregs.clear()
        if not getattr(self, "_reconnect", True):
            err = ConnectionLost(f"{getattr(self, 'address', '')}: connection lost while "
                                 f"serving")
            for f, fut in self._regs.values():
                if not fut.done():
                    fut.set_result(err)
            self._regs.clear()
            if self._serve_loop is not None and self._serve_error is None:
                self._serve_error = err
                if self._wake is not None:
                    self._wake.set()

    def _serve_registrations(self) -> bytes:
        """REGISTER frames for every function, for a new connection (a
        REGISTER the old one left unanswered keeps its waiter)."""
        out = bytearray()
        waiting: Dict[str, Optional["asyncio.Future[Any]"]] = {
            f.canonical: fut for f, fut in self._regs.values()}
        self._regs.clear()
        if self._serve_loop is None or self._stop_req:
            for w in waiting.values():
                if w is not None and not w.done():
                    w.set_result(None)
            return bytes(out)
        for f in self._functions.values():
            seq = self._next_seq()
            fut = waiting.pop(f.canonical, None) or \
                asyncio.get_running_loop().create_future()
            self._regs[seq] = (f, fut)
            out += f.register_frame(seq)
        return bytes(out)
