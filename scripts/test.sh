#!/bin/sh
# Run every Berth test: install missing test packages, then the unit and
# integration tests (which start real berthd processes; run as root).
set -eu
cd "$(dirname "$0")/.."
sh scripts/install-test-deps.sh
if [ "$(id -u)" != 0 ]; then
    echo "the tests mount filesystems and set file owners: run them as root" >&2
    exit 1
fi
# Two cores: one test binary at a time keeps the integration tests' daemons responsive.
exec cargo test --workspace --locked -- --test-threads=2
