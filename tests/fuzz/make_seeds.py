#!/usr/bin/env python3
"""Writes the REQUEST seeds of corpus/request/ (run from tests/fuzz/).

A few lines of CBOR encoding (RFC 8949, shortest form) so the seeds need
no Python package; each file is one frame body: a REQUEST map
{0: 6, 1: seq, 9: command, 10: args}."""
import struct, os

def head(major, n):
    if n < 24: return bytes([major << 5 | n])
    for ai, fmt in ((24, '>B'), (25, '>H'), (26, '>I'), (27, '>Q')):
        if n < 1 << (8 * struct.calcsize(fmt)):
            return bytes([major << 5 | ai]) + struct.pack(fmt, n)

def enc(v):
    if v is None: return b'\xf6'
    if v is True: return b'\xf5'
    if v is False: return b'\xf4'
    if isinstance(v, int): return head(0, v) if v >= 0 else head(1, -1 - v)
    if isinstance(v, str):
        b = v.encode(); return head(3, len(b)) + b
    if isinstance(v, bytes): return head(2, len(v)) + v
    if isinstance(v, list): return head(4, len(v)) + b''.join(enc(x) for x in v)
    if isinstance(v, dict):
        return head(5, len(v)) + b''.join(enc(k) + enc(x) for k, x in v.items())
    raise TypeError(v)

def request(seq, command, args=None):
    m = {0: 6, 1: seq, 9: command}
    if args is not None: m[10] = args
    return enc(m)

canary = {"name": "canary", "event": "order.created", "tags": {"user": "*", "version": "v2"},
          "to": ["acme.audit@2.1.0:95", "acme.audit:5"], "mode": "split", "split_by": "user",
          "priority": 3, "signature": None}
plain = {"name": "everything", "event": "*", "to": ["fidbus.log", "fidbus.count@1.0.0"]}
seeds = {
    "status": request(1, "status"),
    "route_add": request(2, "route.add", {"route": canary}),
    "route_add_plain": request(3, "route.add", {"route": plain}),
    "route_del": request(4, "route.del", {"name": "canary"}),
    "route_apply": request(5, "route.apply", {"add": [canary, plain], "del": ["old"], "replace": False}),
    "route_test": request(6, "route.test", {"event": "order.created", "tags": {"user": "u1"},
                                            "apply": {"add": [plain], "replace": True}}),
    "plugin_load": request(7, "plugin.load", {"path": "/usr/lib/fidbus/plugins/log.so", "name": "log2",
                                              "config": {"file": "-", "format": "json"}}),
    "plugin_reload": request(8, "plugin.reload", {"name": "log", "path": "/tmp/log.so"}),
    "func_release": request(9, "func.release", {"id": "db123dc2ef959d8a"}),
    "args_only": enc({"route": plain}),
}
os.makedirs("corpus/request", exist_ok=True)
for name, body in seeds.items():
    with open(os.path.join("corpus/request", name), "wb") as f:
        f.write(body)
