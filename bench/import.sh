#!/bin/bash
# Import benchmark: the same archive (busybox + five 40 MB random layers) imported
# by berthd (`berthctl image import`) and, when Debian's containerd is installed,
# by containerd (`ctr images import`), side by side in the same run. Each run
# starts from an empty store (the image is removed and collected in between).
# Prints medians, the ratio, and each agent's idle memory (RSS).
#
# usage: bench/import.sh [RUNS]      (root; builds berthd in release mode, or
#        takes the binaries from $BERTH_BIN)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
. bench/lib.sh
RUNS=${1:-5}
WORK=$(mktemp -d /var/tmp/berth-bench.XXXXXX)
cleanup() {
    [ -n "${BERTHD_PID:-}" ] && kill "$BERTHD_PID" 2>/dev/null || true
    [ -n "${CTRD_PID:-}" ] && kill "$CTRD_PID" 2>/dev/null || true
    wait 2>/dev/null || true
    # The agent's network namespaces and containerd's snapshots are mounts.
    remove_work "$WORK"
}
trap cleanup EXIT

[ -x /bin/busybox ] || { echo "install busybox-static (scripts/install-test-deps.sh)" >&2; exit 1; }
BIN=${BERTH_BIN:-target/release}
[ -n "${BERTH_BIN:-}" ] || cargo build --release --bins -q
IMG=$WORK/image.tar
python3 bench/mkimage.py "$IMG" --layers 5 --layer-mb 40
echo "archive: $(du -m "$IMG" | cut -f1) MB"

rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }

# --- berthd ---
"$BIN/berthd" --root "$WORK/berth-root" --state "$WORK/berth-state" --log-level warn &
BERTHD_PID=$!
wait_sock "$WORK/berth-state/berthd.sock"
export BERTH_ADDRESS=$WORK/berth-state/berthd.sock
sleep 1
BERTH_IDLE=$(rss_kb $BERTHD_PID)
: > "$WORK/berth.times"
for i in $(seq 1 "$RUNS"); do
    sync; echo 1 > /proc/sys/vm/drop_caches 2>/dev/null || true
    t0=$(now); "$BIN/berthctl" image import -q "$IMG" >/dev/null; t1=$(now)
    echo "$t1 - $t0" | bc -l >> "$WORK/berth.times"
    "$BIN/berthctl" rmi docker.io/bench/random:latest >/dev/null
done
BERTH_AFTER=$(rss_kb $BERTHD_PID)
BERTH_MED=$(median < "$WORK/berth.times")
printf 'berthd     import: median %.3f s over %d runs (%s)\n' "$BERTH_MED" "$RUNS" "$(tr '\n' ' ' < "$WORK/berth.times")"
printf 'berthd     idle RSS: %d kB (after the runs: %d kB)\n' "$BERTH_IDLE" "$BERTH_AFTER"
kill $BERTHD_PID; wait $BERTHD_PID 2>/dev/null || true; BERTHD_PID=

# --- containerd ---
start_containerd "$WORK" || exit 0
sleep 1
CTRD_IDLE=$(rss_kb $CTRD_PID)
: > "$WORK/ctrd.times"
for i in $(seq 1 "$RUNS"); do
    sync; echo 1 > /proc/sys/vm/drop_caches 2>/dev/null || true
    t0=$(now); ctr -a "$WORK/ctrd.sock" images import "$IMG" >/dev/null; t1=$(now)
    echo "$t1 - $t0" | bc -l >> "$WORK/ctrd.times"
    ctr -a "$WORK/ctrd.sock" images rm --sync docker.io/bench/random:latest >/dev/null
done
CTRD_MED=$(median < "$WORK/ctrd.times")
printf 'containerd import: median %.3f s over %d runs (%s)\n' "$CTRD_MED" "$RUNS" "$(tr '\n' ' ' < "$WORK/ctrd.times")"
printf 'containerd idle RSS: %d kB\n' "$CTRD_IDLE"
printf 'ratio: berthd is %.2fx faster at import; idle memory %.2fx smaller\n' \
    "$(echo "$CTRD_MED / $BERTH_MED" | bc -l)" "$(echo "$CTRD_IDLE / $BERTH_IDLE" | bc -l)"
