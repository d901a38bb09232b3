"""The serving half of the blocking :class:`fidbus.Client`
(``Client.function``, ``serve``, ``stop``), kept apart from the publishing
half in client.py; both share one connection, one write buffer and one
read loop (``Client._pump``).

How a call flows: ``_pump`` reads; ``_wire.handle_frames`` hands each CALL
to ``_on_call``, which reads it in place (``_serve.parse_call``) and queues
an :class:`Event`; ``serve()`` runs the queued handlers one after the other
in call-id order, then appends their RESULTs to the write buffer (a run of
successes as one RESULT ``upto``), and the next ``_pump`` writes them with
whatever else is buffered: one write per batch read. Calls are only queued
while reading, never run there, so a handler may publish (and wait) on the
same connection: the reads its waits make queue more calls for the next
batch.
"""

import asyncio
import inspect
import logging
import os
import select
import signal
import threading
from typing import Any, Callable, Dict, List, Optional

from . import _proto as P
from ._serve import (Event, Function, check_function, parse_call, parse_call_slow,
                     result_one, result_upto_ok)
from .errors import Error, RegisterError, Retry

log = logging.getLogger("fidbus")


class ServingMixin:
    """Serving state and methods; Client calls the ``_serve_*`` hooks."""

    _out: bytearray
    _poll: Any
    _sock: Any
    _later: List[Callable[[], None]]
    # Client's (client.py): the loop that writes, reads and reconnects
    _run: Callable[..., None]
    _deadline: Callable[[Optional[float]], Optional[float]]
    _next_seq: Callable[[], int]

    def _serve_init(self) -> None:
        self._functions: Dict[str, Function] = {}  # wanted, by canonical name
        self._by_id: Dict[int, Function] = {}
        self._regs: Dict[int, Function] = {}  # REGISTER seq -> function, unanswered
        self._unregs: Dict[int, Function] = {}  # UNREGISTER seq -> function, unanswered
        self._calls: List[Event] = []  # read, not yet run
        self._held = 0  # calls read and not yet answered
        self._conn_no = 0  # which connection a call came on (results go back only there)
        self._stop_req = False
        self._draining = False
        self._serving = False
        self._serve_error: Optional[Error] = None
        self._on_ready: Optional[Callable[[], Any]] = None
        self._wake_r = self._wake_w = -1
        # stop() from another thread must not write to the pipe's fd after
        # serve() closed it (the number may already name another file)
        self._wake_lock = threading.Lock()
        self.calls_served = 0

    # ------------------------------------------------------------ API

    def function(self, canonical: str, signature: str = "", *, credit: Optional[int] = None,
                 timeout_ms: Optional[int] = None, idempotent: bool = False
                 ) -> Callable[[Callable[[Event], Any]], Callable[[Event], Any]]:
        """A decorator that serves the function ``canonical``
        (``ns.name@MAJOR.MINOR.PATCH``) with the decorated handler.

        It registers at once and waits for the daemon's answer, so a
        refusal raises here: :class:`RegisterError` with ``code``
        UNAUTHORIZED, CONFLICT, SIGNATURE_MISMATCH or INVALID. ``credit``
        (calls held at once) and ``timeout_ms`` (each call's deadline) left
        None take the daemon's ``[remote]`` section values; ``idempotent``
        lets the daemon run a call again after this member was lost or its
        deadline passed.

        The handler gets an :class:`Event` and returns (ok), raises
        :class:`fidbus.Retry` (RETRY: run it on another member) or any
        other exception (HANDLER_FAILED, with the exception's text). An
        ``async def`` handler is run to completion on ``serve()``'s own
        event loop. Calls run when ``serve()`` runs."""
        check_function(canonical, signature, credit, timeout_ms)

        def deco(fn: Callable[[Event], Any]) -> Callable[[Event], Any]:
            if canonical in self._functions:
                raise RegisterError(P.CONFLICT, "this client serves it already", canonical)
            f = Function(canonical, signature, credit, timeout_ms, idempotent, fn,
                         inspect.iscoroutinefunction(fn))
            self._functions[canonical] = f
            self._register(f)
            return fn

        return deco

    def serve(self, on_ready: Optional[Callable[[], Any]] = None) -> None:
        """Runs the registered functions' calls until stopped: by
        ``stop()`` (from any thread or a handler), or by SIGTERM or SIGINT
        when it runs in the main thread (it installs handlers for them
        there, and puts the old ones back on return). Stopping drains:
        each function is UNREGISTERed (no new calls), the calls in hand
        are run and answered, and ``serve()`` returns once the daemon has
        acknowledged every UNREGISTER; the functions are then no longer
        served. A lost connection is made again and the functions
        registered again (a refusal then raises :class:`RegisterError`).

        ``on_ready()``, when given, is called (in this thread) once serving
        starts and again each time the functions are registered again
        after a reconnection."""
        if not self._functions:
            raise ValueError("serve(): no function registered (use @bus.function)")
        if self._serving:
            raise RuntimeError("serve() is already running")
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        if self._poll is not None:
            self._poll.register(self._wake_r, select.POLLIN)
        old: Dict[signal.Signals, Any] = {}
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGTERM, signal.SIGINT):
                old[s] = signal.signal(s, self._on_signal)
        self._serving = True
        self._draining = False
        self._on_ready = on_ready
        loop: Optional[asyncio.AbstractEventLoop] = None
        try:
            if on_ready is not None and not self._regs:
                on_ready()
            while True:
                if self._serve_error is not None:
                    err, self._serve_error = self._serve_error, None
                    raise err
                if self._calls:
                    if loop is None and any(f.is_async for f in self._functions.values()):
                        loop = asyncio.new_event_loop()
                    self._run_calls(loop)
                if self._stop_req and not self._draining:
                    self._start_drain()
                if self._draining and not self._unregs and not self._calls:
                    if self._sock is not None and self._out:
                        self._run(None, self._deadline(None))  # the last bytes out
                    return
                self._run(self._serve_wake, None)
        finally:
            self._serving = False
            self._stop_req = False
            self._on_ready = None
            for s, h in old.items():
                signal.signal(s, h if h is not None else signal.SIG_DFL)
            if self._poll is not None:
                try:
                    self._poll.unregister(self._wake_r)
                except (KeyError, ValueError):
                    pass
            with self._wake_lock:
                os.close(self._wake_r)
                os.close(self._wake_w)
                self._wake_r = self._wake_w = -1
            if loop is not None:
                loop.close()

    def stop(self) -> None:
        """Asks ``serve()`` to drain and return; safe from any thread, a
        handler or a signal handler. Without a ``serve()`` running, the
        next one returns as soon as it has drained."""
        self._stop_req = True
        if threading.current_thread() is threading.main_thread() and \
                self._wake_lock.locked():
            return  # a signal handler that interrupted serve()'s own finally
        with self._wake_lock:
            if self._wake_w >= 0:
                try:
                    os.write(self._wake_w, b"x")
                except BlockingIOError:
                    pass  # the pipe is full: woken already

    @property
    def held(self) -> int:
        """Calls read from the daemon and not yet answered (the one
        running included); never above the sum of the credits."""
        return self._held

    @property
    def serving(self) -> List[str]:
        """The functions registered now (answered by the daemon)."""
        return [f.canonical for f in self._functions.values() if f.funcid is not None]

    # ---------------------------------------------------- the loop's parts

    def _on_signal(self, signum: int, frame: Any) -> None:
        log.info("fidbus: signal %d: draining", signum)
        self.stop()

    def _serve_wake(self) -> bool:
        return bool(self._calls) or (self._stop_req and not self._draining) or \
            (self._draining and not self._unregs) or self._serve_error is not None

    def _run_calls(self, loop: Optional[asyncio.AbstractEventLoop]) -> None:
        calls, self._calls = self._calls, []
        conn = self._conn_no
        by_id = self._by_id
        ok_upto = 0
        out: List[bytes] = []
        for ev in calls:
            f = by_id.get(ev.funcid)
            code = 0
            try:
                if f is None:
                    raise LookupError(f"this member serves no function {ev.funcid:016x}")
                r = f.fn(ev)
                if f.is_async and loop is not None:
                    loop.run_until_complete(r)
            except Retry as e:
                code, msg = P.RETRY, str(e) or "retry"
            except Exception as e:
                code, msg = P.HANDLER_FAILED, str(e) or type(e).__name__
                log.debug("fidbus: %s failed a call of %s", f.canonical if f else "-",
                          ev.id, exc_info=True)
            if self._conn_no != conn:
                return  # the connection went while it ran: nothing to answer there
            if code:
                if ok_upto:
                    out.append(result_upto_ok(ok_upto))
                    ok_upto = 0
                out.append(result_one(ev.call_id, code, msg))
            else:
                ok_upto = ev.call_id
        if ok_upto:
            out.append(result_upto_ok(ok_upto))
        self.calls_served += len(calls)
        self._held -= len(calls)
        self._out += b"".join(out)

    def _start_drain(self) -> None:
        self._draining = True
        if self._sock is None:  # disconnected: nothing is registered to leave
            self._functions.clear()
            self._by_id.clear()
            self._regs.clear()
            return
        # a REGISTER still unanswered (after a reconnection) is ahead in
        # the stream: the daemon takes the UNREGISTER after it
        for f in list(self._functions.values()):
            seq = self._next_seq()
            self._unregs[seq] = f
            self._out += f.unregister_frame(seq)
        if not self._unregs:
            self._functions.clear()
            self._by_id.clear()

    def _register(self, f: Function) -> None:
        f.answered = False
        f.error = None
        if self._sock is not None:
            self._send_register(f)
        self._run(lambda: f.answered, self._deadline(None),
                  lambda: None)
        if f.error is not None:
            self._functions.pop(f.canonical, None)
            raise f.error

    def _send_register(self, f: Function) -> None:
        seq = self._next_seq()
        self._regs[seq] = f
        self._out += f.register_frame(seq)

    # ------------------------------------------------ hooks from Client

    def _serve_on_call(self, buf: bytearray, p: int, end: int) -> None:
        try:
            ev: Optional[Event] = parse_call(buf, p, end)
        except (ValueError, IndexError, UnicodeDecodeError):
            ev = parse_call_slow(bytes(buf[p:end]))
        if ev is None:
            log.warning("fidbus: a CALL without its keys; ignored")
            return
        self._calls.append(ev)
        self._held += 1

    def _serve_ack(self, seq: int, r: Any) -> bool:
        f = self._regs.pop(seq, None)
        if f is not None:
            f.funcid = r
            f.answered = True
            self._by_id[r] = f
            if not self._regs and self._on_ready is not None and self._serving:
                self._later.append(self._on_ready)
            return True
        f = self._unregs.pop(seq, None)
        if f is not None:
            self._functions.pop(f.canonical, None)
            if f.funcid is not None:
                self._by_id.pop(f.funcid, None)
            return True
        return False

    def _serve_refused(self, seq: int, err: Error) -> bool:
        f = self._regs.pop(seq, None)
        if f is not None:
            f.error = RegisterError(err.code, err.message, f.canonical)
            f.answered = True
            self._functions.pop(f.canonical, None)
            if self._serving and self._serve_error is None:
                self._serve_error = f.error
            return True
        f = self._unregs.pop(seq, None)
        if f is not None:  # NOT_FOUND: it is not served anyway
            self._functions.pop(f.canonical, None)
            return True
        return False

    def _serve_lost(self) -> None:
        """The connection went: the calls read from it cannot be answered
        any more (the daemon redelivers or fails them), and nothing
        registered on it holds."""
        self._conn_no += 1
        self._calls = []
        self._held = 0
        self._by_id.clear()
        for f in self._functions.values():
            f.funcid = None
        self._regs.clear()
        if self._unregs or self._draining:
            self._unregs.clear()  # leaving anyway: the loss unregistered them
            self._functions.clear()

    def _serve_reconnected(self) -> None:
        """Registers every function again, ahead of any re-sent publish."""
        if not self._functions:
            return
        held, self._out = self._out, bytearray()
        for f in self._functions.values():
            self._send_register(f)
        self._out += held

    def _serve_clear_wake(self) -> None:
        try:
            while os.read(self._wake_r, 512):
                pass
        except OSError:
            pass
