"""The control socket client: every command of proto/control.md as a
method returning the REPLY's result as a plain dict.

Commands run one at a time on the daemon, so this client sends one
REQUEST and waits for its REPLY (matched by seq). A REPLY may be up to
64 MiB (``route.list`` of many routes), whatever the bus's max_frame.
A REQUEST is never re-sent: if the connection is lost while one is in
flight the daemon may or may not have applied it, so
:class:`ConnectionLost` says so and the next call connects again.
"""

import socket as _socket
import time
from typing import Any, Dict, Iterable, Mapping, Optional, Union

from . import _addr
from . import _proto as P
from ._io import FrameReader, handshake, read_msg, send_all
from ._wire import encode_msg, text
from .errors import ConnectionLost, ControlError, Timeout

Result = Dict[str, Any]


def _drop_none(d: Mapping[str, Any]) -> Dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


class Control:
    """A connection to the control socket.

    ``socket``: its path (``unix:PATH`` or a plain path); default as
    fidbusctl: ``$FIDBUS_CONTROL``, else control.sock in
    ``$FIDBUS_RUNTIME_DIR`` or the trusted runtime dirs
    (``fidbus.default_control()``). ``timeout`` (seconds) bounds
    connecting and each command. Connects on first use.

    Failures: :class:`ControlError` with the REPLY's ``code`` (INVALID,
    NOT_FOUND, CONFLICT...) and message; :class:`ConnectError` when the
    socket cannot be reached."""

    def __init__(self, socket: Optional[str] = None, *, timeout: Optional[float] = 10.0,
                 max_frame: int = P.MAX_FRAME_DEFAULT) -> None:
        path = socket if socket else _addr.default_control()
        self.socket = path
        a = _addr.parse_address(path if path.startswith("unix:") else "unix:" + path)
        self._addr = a
        self.timeout = timeout
        self.max_frame = max_frame
        self._sock: Optional[_socket.socket] = None
        self._rd = FrameReader(P.CONTROL_REPLY_MAX)
        self._seq = 0
        self.server_name = ""

    # -------------------------------------------------------------- core

    def _deadline(self) -> Optional[float]:
        return None if self.timeout is None else time.monotonic() + self.timeout

    def _connect(self) -> _socket.socket:
        if self._sock is None:
            s = _addr.connect(self._addr, self.timeout, self.socket)
            self._rd = FrameReader(P.CONTROL_REPLY_MAX)
            try:
                hello = handshake(s, self._rd, self._deadline(), None, None, self.socket)
            except BaseException:
                s.close()
                raise
            self.server_name = text(hello.get(P.K_NAME))
            self._sock = s
        return self._sock

    def _drop(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _exchange(self, frame: bytes, seq: int, want: int, command: str) -> Dict[int, Any]:
        if len(frame) - 4 > self.max_frame:
            raise ControlError(P.TOO_LARGE, f"{command}: the request is {len(frame) - 4} "
                               f"bytes, over max_frame ({self.max_frame})", command)
        s = self._connect()
        deadline = self._deadline()
        try:
            send_all(s, frame, deadline)
            while True:
                m = read_msg(s, self._rd, deadline)
                if m.get(P.K_SEQ, 0) == seq and m[P.K_TYPE] in (want, P.ERROR):
                    return m
                if m[P.K_TYPE] == P.ERROR and P.K_SEQ not in m:
                    code = m.get(P.K_CODE, P.INTERNAL)
                    self._drop()
                    raise ControlError(code, text(m.get(P.K_MESSAGE)), command)
        except Timeout:
            self._drop()  # a late REPLY would be taken for the next one's
            raise
        except OSError as e:
            self._drop()
            raise ConnectionLost(f"{self.socket}: connection lost during '{command}' "
                                 f"(the daemon may or may not have applied it): "
                                 f"{e.strerror or e}") from None

    def request(self, command: str, args: Optional[Mapping[str, Any]] = None) -> Result:
        """Sends any command with its args map; the REPLY's result."""
        self._seq += 1
        seq = self._seq
        fields: Dict[int, Any] = {P.K_TYPE: P.REQUEST, P.K_SEQ: seq, P.K_COMMAND: command}
        if args:
            fields[P.K_ARGS] = dict(args)
        m = self._exchange(encode_msg(fields), seq, P.REPLY, command)
        code = m.get(P.K_CODE, P.INTERNAL)
        if m[P.K_TYPE] != P.REPLY or code != 0:
            raise ControlError(code if isinstance(code, int) and code else P.INTERNAL,
                               f"{command}: {text(m.get(P.K_MESSAGE))}", command)
        r = m.get(P.K_RESULT)
        return r if isinstance(r, dict) else {}

    def ping(self) -> None:
        """PING: answered after the REPLYs of every request before it."""
        self._seq += 1
        m = self._exchange(encode_msg({P.K_TYPE: P.PING, P.K_SEQ: self._seq}), self._seq,
                           P.ACK, "ping")
        if m[P.K_TYPE] != P.ACK:
            raise ControlError(m.get(P.K_CODE, P.INTERNAL), text(m.get(P.K_MESSAGE)),
                               "ping")

    def close(self) -> None:
        self._drop()

    def __enter__(self) -> "Control":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ---------------------------------------------------------- commands

    def status(self) -> Result:
        """version, pid, uptime_s, generation, workers, listeners, counts."""
        return self.request("status")

    def stats(self) -> Result:
        """Counters: received, dispatched, routes, functions..."""
        return self.request("stats")

    def plugin_list(self) -> Result:
        """{plugins}: the loaded plugin instances, in load order."""
        return self.request("plugin.list")

    def func_list(self) -> Result:
        """{functions}: every function with its funcID, sighash, plugin."""
        return self.request("func.list")

    def func_members(self, id: Optional[str] = None) -> Result:
        """{members}: the connections serving remote functions (of one
        function: ``id``, its funcID as 16 hex digits), each with its
        credit, inflight, calls, errors, timeouts."""
        return self.request("func.members", {"id": id} if id else {})

    def func_release(self, id: str) -> Result:
        """Lifts a function's quarantine: {id, released}."""
        return self.request("func.release", {"id": id})

    def route_list(self) -> Result:
        """{generation, routes}."""
        return self.request("route.list")

    @staticmethod
    def route(name: str, event: str, to: Iterable[str], *,
              tags: Optional[Mapping[str, str]] = None, mode: Optional[str] = None,
              split_by: Optional[str] = None, priority: Optional[int] = None,
              signature: Optional[str] = None) -> Result:
        """A route map (proto/control.md "Value rules") for route_apply's
        ``add``; keys left None are left out (the daemon's defaults)."""
        return _drop_none({"name": name, "event": event, "to": list(to), "tags": tags,
                           "mode": mode, "split_by": split_by, "priority": priority,
                           "signature": signature})

    def route_add(self, name: str, event: str, to: Iterable[str], *,
                  tags: Optional[Mapping[str, str]] = None, mode: Optional[str] = None,
                  split_by: Optional[str] = None, priority: Optional[int] = None,
                  signature: Optional[str] = None) -> Result:
        """Adds one route: {generation}. CONFLICT if the name exists."""
        return self.request("route.add", {"route": self.route(
            name, event, to, tags=tags, mode=mode, split_by=split_by, priority=priority,
            signature=signature)})

    def route_del(self, name: str) -> Result:
        """Deletes a route: {generation}."""
        return self.request("route.del", {"name": name})

    def route_apply(self, add: Optional[Iterable[Mapping[str, Any]]] = None,
                    delete: Optional[Iterable[str]] = None,
                    replace: Optional[bool] = None,
                    if_generation: Optional[int] = None) -> Result:
        """One transaction: delete the names in ``delete`` (``del`` on the
        wire), then with ``replace`` empty the set, then add ``add``:
        {generation}. With ``if_generation``, refused (CONFLICT, nothing
        changed) unless the running table is that generation."""
        args = self._apply_args(add, delete, replace)
        if if_generation is not None:
            args["if_generation"] = int(if_generation)
        return self.request("route.apply", args)

    @staticmethod
    def _apply_args(add: Optional[Iterable[Mapping[str, Any]]],
                    delete: Optional[Iterable[str]], replace: Optional[bool]) -> Result:
        args: Result = {}
        if add is not None:
            args["add"] = [dict(r) for r in add]
        if delete is not None:
            args["del"] = list(delete)
        if replace is not None:
            args["replace"] = bool(replace)
        return args

    def route_test(self, event: str, tags: Optional[Mapping[str, str]] = None,
                   apply: Optional[Mapping[str, Any]] = None) -> Result:
        """Which route and targets an event would get (now, or after
        ``apply``, a route_apply args map, e.g. ``{"add": [...]}``):
        {route, targets, generation}. Changes nothing."""
        args: Result = {"event": event}
        if tags is not None:
            args["tags"] = dict(tags)
        if apply is not None:
            a = dict(apply)
            if "delete" in a:
                a["del"] = a.pop("delete")
            args["apply"] = a
        return self.request("route.test", args)

    def plugin_load(self, path: str, name: Optional[str] = None,
                    config: Optional[Mapping[str, Union[str, int, bool]]] = None) -> Result:
        """Loads a plugin (absolute path): its plugin.list entry plus
        generation."""
        return self.request("plugin.load", _drop_none({"path": path, "name": name,
                                                       "config": config}))

    def plugin_unload(self, name: str) -> Result:
        """Unloads an instance: {generation}. CONFLICT while routed."""
        return self.request("plugin.unload", {"name": name})

    def plugin_reload(self, name: str, path: Optional[str] = None) -> Result:
        """Reloads an instance (from ``path`` or its own): its entry plus
        generation."""
        return self.request("plugin.reload", _drop_none({"name": name, "path": path}))

    def config_reload(self, dry_run: bool = False) -> Result:
        """Re-reads the daemon's config file and applies, per route and
        plugin, what the file changed since it was last applied (runtime
        changes the file did not touch stay): generation and what changed,
        with ``overridden`` for items changed in both places. With
        ``dry_run`` nothing is loaded, published or saved."""
        return self.request("config.reload", {"dry_run": True} if dry_run else None)

    def config_export(self) -> Result:
        """{config}: a config file text that gives a fresh daemon the
        running set."""
        return self.request("config.export")

    def tap(self, event: str = "*", tags: Optional[Mapping[str, str]] = None,
            buffer: Optional[int] = None) -> "Tap":
        """tap.open on a connection of its own. Returns once the daemon has
        opened the tap (so every event published after it is seen): a
        :class:`Tap`, an iterator of copies of the matching events. Refusals
        (BUSY: 16 taps open; INVALID) raise ControlError here."""
        return Tap(self, event, tags, buffer)

    def conn_list(self) -> Result:
        """{connections, total, truncated, missing_workers}: every bus and
        control connection with its id, kind, peer, counters and worker."""
        return self.request("conn.list")


class Tap:
    """A tap (Control.tap): iterate for a dict per copy of a matching event,
    {event, tags, payload (decoded; None when absent), generation, route
    (None when unrouted), conn (the publisher's connection; 0 for a
    plugin's publish), dropped (copies lost just before this one because
    the tap's buffer was full)}. Waits without a deadline; close() (or the
    with-block's end) closes it."""

    def __init__(self, ctl: Control, event: str, tags: Optional[Mapping[str, str]],
                 buffer: Optional[int]) -> None:
        self._ctl = Control(ctl.socket, timeout=ctl.timeout, max_frame=ctl.max_frame)
        args: Dict[str, Any] = {"event": event}
        if tags:
            args["tags"] = dict(tags)
        if buffer is not None:
            args["buffer"] = int(buffer)
        try:
            self.opened = self._ctl.request("tap.open", args)
        except BaseException:
            self._ctl.close()
            raise

    def __iter__(self) -> "Tap":
        return self

    def __next__(self) -> Result:
        s = self._ctl._connect()
        while True:
            m = read_msg(s, self._ctl._rd, None)
            if m.get(P.K_TYPE) == P.EVENT:
                return {"event": text(m.get(P.K_EVENT)), "tags": m.get(P.K_TAGS) or {},
                        "payload": m.get(P.K_PAYLOAD), "generation": m.get(P.K_GENERATION),
                        "route": m.get(P.K_ROUTE), "conn": m.get(P.K_CONN),
                        "dropped": m.get(P.K_DROPPED, 0)}

    def close(self) -> None:
        self._ctl.close()

    def __enter__(self) -> "Tap":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
