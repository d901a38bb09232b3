"""fidbus: the official pure-Python client for fidbusd.

    import fidbus

    with fidbus.Client() as bus:                     # finds the bus as fidbusctl does
        bus.publish("order.created", {"region": "eu"}, payload={"id": 42})
        n = bus.publish_ack("order.paid", payload={"id": 42})   # handlers that ran
        bus.ping()                                   # barrier: all of the above handled

    ctl = fidbus.Control()
    ctl.route_add(name="audit", event="order.*", to=["acme.audit"])

Protocol: proto/README.md; control commands: proto/control.md.
"""

from . import _proto as proto
from ._addr import default_bus, default_control, load_key, parse_address
from ._proto import code_name
from ._wire import RawCBOR
from ._base import NO_PAYLOAD
from ._serve import Event
from .client import Client, PublishFuture
from .control import Control, Tap
from .errors import (BatchError, BufferFull, ConnectError, ConnectionLost, ControlError,
                     Error, InvalidError, ProtocolError, PublishError, RegisterError,
                     Retry, Timeout, UnackedErrors)

__version__ = "0.1.0"

__all__ = [
    "BatchError", "BufferFull", "Client", "ConnectError", "ConnectionLost", "Control", "Tap",
    "ControlError", "Error", "Event", "InvalidError", "NO_PAYLOAD", "ProtocolError",
    "PublishError", "PublishFuture", "RawCBOR", "RegisterError", "Retry", "Timeout", "UnackedErrors", "code_name",
    "default_bus", "default_control", "load_key", "parse_address", "proto",
]
