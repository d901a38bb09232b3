"""The package itself: pyproject.toml builds a wheel with the setuptools
backend (Debian's python3-setuptools), typed, depending on cbor2 only."""

import shutil
import subprocess
import sys
import zipfile

import fidbus
from harness import HERE

SRC = HERE.parent


def test_wheel_builds_with_setuptools(tmp_path):  # type: ignore[no-untyped-def]
    # a copy: setuptools writes its egg-info next to pyproject.toml
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(SRC / name, tmp_path / name)
    shutil.copytree(SRC / "fidbus", tmp_path / "fidbus",
                    ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path / "dist"
    r = subprocess.run([sys.executable, "-c",
                        "import sys; from setuptools import build_meta as b; "
                        "print(b.build_wheel(sys.argv[1]))", str(out)],
                       cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    (whl,) = out.glob("fidbus-*.whl")
    with zipfile.ZipFile(whl) as z:
        names = set(z.namelist())
        assert {"fidbus/__init__.py", "fidbus/client.py", "fidbus/aio.py",
                "fidbus/control.py", "fidbus/py.typed"} <= names
        meta = next(n for n in names if n.endswith("METADATA"))
        text = z.read(meta).decode()
    reqs = [ln for ln in text.splitlines() if ln.startswith("Requires-Dist:")]
    assert reqs == ["Requires-Dist: cbor2"]


def test_public_names():  # type: ignore[no-untyped-def]
    for name in fidbus.__all__:
        assert getattr(fidbus, name) is not None
    for cls in (fidbus.ConnectError, fidbus.ConnectionLost, fidbus.Timeout,
                fidbus.ProtocolError, fidbus.InvalidError, fidbus.BufferFull,
                fidbus.PublishError, fidbus.UnackedErrors, fidbus.BatchError,
                fidbus.ControlError):
        assert issubclass(cls, fidbus.Error)
    assert fidbus.code_name(6) == "HANDLER_FAILED" and fidbus.code_name(99) == "UNKNOWN"
    e = fidbus.PublishError(6, "1 of 2 handler calls failed", seq=7, result=1)
    assert (e.code, e.name, e.message, e.seq, e.result) == (
        6, "HANDLER_FAILED", "1 of 2 handler calls failed", 7, 1)
    assert str(e) == "HANDLER_FAILED: 1 of 2 handler calls failed"
