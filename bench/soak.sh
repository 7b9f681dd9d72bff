#!/bin/bash
# Soak: RUNS `run --rm` cycles (4 at once) and EXECS exec cycles in one
# container, through the API (bench/load/main.rs), on a fresh berthd; then
# checks that its RSS (within 10%), descriptors, threads, mounts, shims and
# task bundles are back where they were after a warm-up. Exits 1 if not.
#
# usage: bench/soak.sh [RUNS] [EXECS]   (default 5000 5000; root; builds in
#        release mode, or takes the binaries from $BERTH_BIN)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
. bench/lib.sh
RUNS=${1:-5000}
EXECS=${2:-5000}
WORK=$(mktemp -d /var/tmp/berth-soak.XXXXXX)
BIN=${BERTH_BIN:-target/release}
B="$BIN/berthctl --address $WORK/state/berthd.sock"
trap stop_agents EXIT
for t in runc python3; do command -v $t >/dev/null || { echo "$t is needed (scripts/install-test-deps.sh)" >&2; exit 1; }; done
[ -n "${BERTH_BIN:-}" ] || cargo build --release --bins -q
REF=docker.io/bench/busybox:latest
python3 bench/mkimage.py "$WORK/busybox.tar" --layers 0 --name $REF >/dev/null
"$BIN/berthd" --root "$WORK/root" --state "$WORK/state" --log-level warn &
BERTHD_PID=$!
wait_sock "$WORK/state/berthd.sock"
$B load -q -i "$WORK/busybox.tar" >/dev/null
"$BIN/berth-load" soak --berth "$WORK/state/berthd.sock" --image $REF --runs "$RUNS" --execs "$EXECS" \
    --pid "$BERTHD_PID" --state "$WORK/state"
