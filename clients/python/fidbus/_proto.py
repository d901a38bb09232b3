"""Wire constants of fidbus protocol v1 (proto/README.md, <fidbus/proto.h>).

Kept in one place so the rest of the package names them instead of using
bare numbers; the values must follow lib/include/fidbus/proto.h.
"""

from typing import Dict

PROTO_VERSION = 1

# Limits (proto/README.md "Limits").
MAX_FRAME_DEFAULT = 1048576
MAX_DEPTH_DEFAULT = 64
MAX_ID_LEN = 255
MAX_TAGS = 32
MAX_TAG_KEY_LEN = 64
MAX_TAG_VALUE_LEN = 255
FRAME_HEADER = 4
CONTROL_REPLY_MAX = 67108864

# Message types (key 0).
HELLO = 1
AUTH = 2
PUBLISH = 3
ACK = 4
ERROR = 5
REQUEST = 6
REPLY = 7
PING = 8
REGISTER = 16
UNREGISTER = 17
CALL = 18
RESULT = 19
EVENT = 20  # tap.open: a copy of an event

# Map keys.
K_TYPE = 0
K_SEQ = 1
K_EVENT = 2
K_TAGS = 3
K_PAYLOAD = 4
K_FLAGS = 5
K_CODE = 6
K_MESSAGE = 7
K_RESULT = 8
K_COMMAND = 9
K_ARGS = 10
K_VERSION = 11
K_NAME = 12
K_NONCE = 13
K_MAC = 14
K_FUNCTION = 15
K_ID = 16
K_SIGNATURE = 17
K_CREDIT = 18
K_TIMEOUT_MS = 19
K_GENERATION = 20
K_ATTEMPT = 21
K_UPTO = 22
K_ROUTE = 23  # EVENT (taps)
K_CONN = 24
K_DROPPED = 25
K_UID = 26  # CALL: the publisher's uid and pid (Unix publishers)
K_PID = 27

FLAG_ACK = 1
FLAG_IDEMPOTENT = 2  # REGISTER: a call may run again

# Status / error codes (key 6).
OK = 0
MALFORMED = 1
UNSUPPORTED = 2
TOO_LARGE = 3
UNAUTHORIZED = 4
NO_ROUTE = 5
HANDLER_FAILED = 6
BUSY = 7
NOT_FOUND = 8
CONFLICT = 9
INVALID = 10
SIGNATURE_MISMATCH = 11
INTERNAL = 12
UNAVAILABLE = 13
RETRY = 14

CODE_NAMES: Dict[int, str] = {
    OK: "OK",
    MALFORMED: "MALFORMED",
    UNSUPPORTED: "UNSUPPORTED",
    TOO_LARGE: "TOO_LARGE",
    UNAUTHORIZED: "UNAUTHORIZED",
    NO_ROUTE: "NO_ROUTE",
    HANDLER_FAILED: "HANDLER_FAILED",
    BUSY: "BUSY",
    NOT_FOUND: "NOT_FOUND",
    CONFLICT: "CONFLICT",
    INVALID: "INVALID",
    SIGNATURE_MISMATCH: "SIGNATURE_MISMATCH",
    INTERNAL: "INTERNAL",
    UNAVAILABLE: "UNAVAILABLE",
    RETRY: "RETRY",
}


def code_name(code: int) -> str:
    """Upper-case name of a protocol code ("NO_ROUTE"), "UNKNOWN" otherwise."""
    return CODE_NAMES.get(code, "UNKNOWN")
