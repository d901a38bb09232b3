"""Exceptions raised by the fidbus client.

Every exception the package raises on purpose derives from :class:`Error`,
which carries the protocol code (``.code``, an int; 0 when the failure is
not a protocol one, such as a refused connection), its name (``.name``,
``"HANDLER_FAILED"``) and the message (``.message``: the daemon's own text
when the daemon answered).
"""

from typing import List, Optional, Sequence, Union

from . import _proto as P


class Error(Exception):
    """Base of every fidbus exception."""

    code: int
    name: str
    message: str

    def __init__(self, code: int, message: str) -> None:
        self.code = code
        self.name = P.code_name(code) if code else "ERROR"
        self.message = message
        super().__init__(f"{self.name}: {message}" if code else message)


class ConnectError(Error, ConnectionError):
    """Connecting failed: no socket, refused, timed out, or the daemon
    answered the handshake with an ERROR (``code`` BUSY, UNAUTHORIZED...).
    ``errno`` is set when the operating system said why."""

    def __init__(self, message: str, code: int = 0, errno: Optional[int] = None,
                 address: Optional[str] = None) -> None:
        super().__init__(code, message)
        self.errno = errno  # type: ignore[assignment]  # None: not the system's
        self.address = address


class ConnectionLost(Error, ConnectionError):
    """The connection went away and the client does not reconnect (or a
    control REQUEST was in flight: the daemon may or may not have applied
    it)."""

    def __init__(self, message: str, code: int = 0) -> None:
        super().__init__(code, message)


class Timeout(Error, TimeoutError):
    """A wait ran past the client's timeout. The connection stays usable;
    an answer that arrives later is dropped."""

    def __init__(self, message: str) -> None:
        super().__init__(0, message)


class ProtocolError(Error):
    """The peer sent something that is not fidbus protocol v1 (a frame or
    message this client cannot decode). The connection is closed."""

    def __init__(self, message: str, code: int = P.MALFORMED) -> None:
        super().__init__(code, message)


class InvalidError(Error, ValueError):
    """Refused by the client before anything was sent, by the daemon's own
    rules (proto/README.md "Limits"): an event id, tag, frame size or
    RawCBOR item the daemon would refuse. ``code`` is INVALID, or TOO_LARGE
    for a frame over max_frame or an item nested deeper than max_depth."""

    def __init__(self, message: str, code: int = P.INVALID) -> None:
        super().__init__(code, message)


class BufferFull(Error):
    """A reconnecting client holds more unsent or unanswered bytes than its
    ``reconnect_buffer`` allows; the publish was not queued."""

    def __init__(self, message: str) -> None:
        super().__init__(0, message)


class PublishError(Error):
    """The daemon answered a PUBLISH with ERROR. ``seq`` is the publish's
    seq; ``result`` the number of handler invocations that succeeded (for
    HANDLER_FAILED, else None)."""

    def __init__(self, code: int, message: str, seq: Optional[int] = None,
                 result: Optional[int] = None) -> None:
        super().__init__(code, message)
        self.seq = seq
        self.result = result


class UnackedErrors(Error):
    """Raised by ``ping()`` when PUBLISHes sent without ACK before it were
    answered with ERROR (and no ``on_error`` callback took them): a barrier
    that returned normally would say they succeeded. ``errors`` lists each
    :class:`PublishError` (with its ``seq``) in arrival order; ``code`` is
    the first one's."""

    def __init__(self, errors: Sequence[PublishError]) -> None:
        self.errors: List[PublishError] = list(errors)
        first = self.errors[0]
        more = f" (and {len(self.errors) - 1} more)" if len(self.errors) > 1 else ""
        super().__init__(first.code, f"un-acked publish seq {first.seq} failed: "
                         f"{first.message}{more}")


class BatchError(Error):
    """``publish_many`` with ACK: at least one publish failed. ``results``
    holds, in input order, the handler count of each publish or the
    :class:`Error` it failed with; ``code`` is the first failure's."""

    def __init__(self, results: Sequence[Union[int, Error]]) -> None:
        self.results = list(results)
        failed = [r for r in self.results if isinstance(r, Error)]
        first = failed[0]
        super().__init__(first.code, f"{len(failed)} of {len(self.results)} publishes "
                         f"failed; first: {first.message}")


class ControlError(Error):
    """A control command was answered with a non-zero code (REPLY), or the
    control socket answered the frame with ERROR."""

    def __init__(self, code: int, message: str, command: Optional[str] = None) -> None:
        super().__init__(code, message)
        self.command = command


class RegisterError(Error):
    """The daemon refused a REGISTER (raised by ``Client.function`` when
    it registers, and by ``serve()`` when a re-registration after a
    reconnection is refused): ``code`` UNAUTHORIZED (no ``[remote NS]``
    section allows this peer), CONFLICT (a plugin provides the funcID,
    other members registered another signature, or this connection already
    serves it), SIGNATURE_MISMATCH (a route expects another signature) or
    INVALID. ``function`` is the canonical name."""

    def __init__(self, code: int, message: str, function: str) -> None:
        super().__init__(code, f"register {function}: {message}")
        self.function = function


class Retry(Exception):
    """Raised by a served function's handler: it could not run the call
    now. The member answers RETRY and the daemon gives the call to another
    member while attempts remain (proto/README.md "Remote functions": a
    RETRY counts as an attempt and did not run, so it is delivered again
    even when not idempotent)."""
