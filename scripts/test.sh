#!/bin/sh
# Run every Berth test: install missing test packages, check formatting and
# clippy's lints, then the unit and integration tests (which start real berthd processes; run as root).
# Ends with one summary line: "N passed, N failed".
set -eu
cd "$(dirname "$0")/.."
sh scripts/install-test-deps.sh
if [ "$(id -u)" != 0 ]; then
    echo "the tests mount filesystems and set file owners: run them as root" >&2
    exit 1
fi
# The lints the workspace declares, before any test runs.
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
# Two threads per test binary on two cores keeps the tests' agents responsive.
cargo test --workspace --all-targets --locked -- --test-threads=2 2>&1 | tee "$log" || status=1
# `tee` hides cargo's status in a pipe; failures also show in the summary lines.
grep -q '^error' "$log" && status=1
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed;?$/) p += $i; if ($(i+1) ~ /^failed;?$/) f += $i } }
     END { printf "%d passed, %d failed\n", p, f; exit (f > 0) }' "$log" || status=1
exit $status
