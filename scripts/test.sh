#!/bin/sh
# Run every Berth test: install missing test packages, check formatting and
# clippy's lints, then the unit and integration tests (which start real berthd processes; run as root).
# Ends with one summary line: "N passed, N failed" (cargo's tests and the
# clients' suites together).
set -eu
cd "$(dirname "$0")/.."
sh scripts/install-test-deps.sh
if [ "$(id -u)" != 0 ]; then
    echo "the tests mount filesystems and set file owners: run them as root" >&2
    exit 1
fi
# The clients' packages: a Python venv in target/py, the Node client built.
sh scripts/install-client-deps.sh
# The lints the workspace declares, before any test runs.
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# Generated code is fresh, and the API keeps what the last release had.
sh scripts/gen-clients.sh --check
sh scripts/check-api-compat.sh
# The Python client's types (its package says it is typed).
(cd clients/python && ../../target/py/bin/python -m mypy --cache-dir ../../target/mypy src/berth examples tests)
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
# Two threads per test binary on two cores keeps the tests' agents responsive.
cargo test --workspace --all-targets --locked --no-fail-fast -- --test-threads=2 2>&1 | tee "$log" || status=1
# `tee` hides cargo's status in a pipe; failures also show in the summary lines.
grep -q '^error' "$log" && status=1
# Counted: cargo's "test result:" lines, and the clients' suites that
# tests/clients.rs runs: pytest's "N failed, N passed in Ts" and node's "# pass N".
awk '/^test result:/ || /^(=+ )?[0-9]+ (passed|failed)(, [0-9]+ [a-z]+)* in [0-9.]+s/ {
         for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed[;,]?$/) p += $i; if ($(i+1) ~ /^failed[;,]?$/) f += $i } }
     /^# pass [0-9]+$/ { p += $3 }
     /^# fail [0-9]+$/ { f += $3 }
     END { printf "%d passed, %d failed\n", p, f; exit (f > 0) }' "$log" || status=1
exit $status
