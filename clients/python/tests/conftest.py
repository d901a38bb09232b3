"""pytest fixtures: a real fidbusd per test (harness.py)."""

import sys
from pathlib import Path
from typing import Iterator, List

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # the flat layout: import fidbus from the tree
sys.path.insert(0, str(HERE))

from harness import COUNT, LOG, Daemon, tp  # noqa: E402


@pytest.fixture
def make_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator:  # type: ignore[type-arg]
    """make_daemon(sections, **opts) -> a started Daemon, stopped (exit 0
    checked) at the end of the test."""
    made: List[Daemon] = []

    def make(sections: str = "", start: bool = True, **kw: object) -> Daemon:
        # short paths: a Unix socket path has at most 107 bytes
        d = Path(tmp_path_factory.mktemp("fb", numbered=True))
        dm = Daemon(d, sections, **kw)  # type: ignore[arg-type]
        made.append(dm)
        return dm.start() if start else dm

    yield make
    for dm in made:
        dm.stop()


@pytest.fixture
def daemon(make_daemon):  # type: ignore[no-untyped-def]
    """A daemon with log and count, every event to both, "nr.*" unrouted,
    "fail.*" to a handler that always fails."""
    return make_daemon(LOG + COUNT + tp("fail") +
                       "[route all]\nevent = ev.*\nto = fidbus.log, fidbus.count\n"
                       "[route failing]\nevent = fail.*\nto = test.fail, fidbus.count\n")
