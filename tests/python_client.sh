#!/bin/sh
# ctest python.client: the pure-Python client's pytest suite
# (clients/python/tests) against this build's fidbusd ($FIDBUS_BUILD_DIR).
# Skipped (exit 77) only when Debian's python3-cbor2 or python3-pytest is
# missing; `tools/dev.sh deps` installs both. /usr/bin/python3 on purpose:
# those packages are Debian's, not another interpreter's on PATH.
set -eu
cd "$1"
if ! /usr/bin/python3 -c 'import cbor2, pytest' 2>/dev/null; then
    echo "python.client: python3-cbor2 or python3-pytest is not installed: skipped"
    exit 77
fi
PYTHONDONTWRITEBYTECODE=1 exec /usr/bin/python3 -m pytest -q -p no:cacheprovider \
    clients/python/tests
