#!/bin/sh
# Install what the clients' checks and test suites need (tests/clients.rs):
#   target/py            a Python venv with clients/python/requirements-dev.txt
#                        (the pinned stub generator, pytest) and the Python
#                        client itself, installed as a user would
#   clients/node         its npm packages (npm ci), built (npm run build)
# Needs python3 (with venv), node 18+ and npm, PyPI and the npm registry.
set -eu
cd "$(dirname "$0")/.."
pip_quiet="-q --disable-pip-version-check"
if [ ! -x target/py/bin/pip ]; then
    mkdir -p target
    rm -rf target/py
    if ! python3 -m venv target/py; then
        rm -rf target/py
        echo "python3 -m venv failed: install Debian's python3-venv (apt-get install python3-venv)" >&2
        exit 1
    fi
fi
# shellcheck disable=SC2086
target/py/bin/pip install $pip_quiet -r clients/python/requirements-dev.txt
# shellcheck disable=SC2086
target/py/bin/pip install $pip_quiet --force-reinstall --no-deps ./clients/python
(cd clients/node && npm ci --no-audit --no-fund --loglevel=error && npm run --silent build)
echo "client dependencies present: target/py ($(target/py/bin/python --version)), clients/node built"
