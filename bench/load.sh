#!/bin/bash
# The agent under load, berthd beside containerd on the same machine, image
# and runc, in the same run:
#   starts    CONTAINERS busybox containers running `sleep`, started one
#             after another: the time of each start (the first ones against
#             the last ones), then one `ps` of them all.
#   load      CLIENTS concurrent gRPC clients (bench/load/main.rs, one
#             connection each) for SECONDS: half lists, the rest gets,
#             image inspects and stats, plus 10 event subscriptions and a
#             churn of run --rm; p50/p99/max per call, errors, the agent's
#             RSS, descriptors and threads sampled every second, and its
#             idle RSS before and after. Twice: each client calling again
#             as soon as it has its answer (saturation: the clients share
#             the machine's cores with the agent), then all of them together
#             at RATE calls a second (a poll). containerd gets the same mix
#             through its own services (a list is Containers.List plus
#             Tasks.List, as `ps` needs both), the churn by `ctr run --rm`.
#   removal   the containers removed one after another (first against last).
# Containers run with `--net none` (containerd's `ctr run` joins no network).
# A load with errors still gives its figures (berth-load then exits 1).
#
# usage: bench/load.sh [CONTAINERS] [CLIENTS] [SECONDS] [RATE]   (default 200
#        100 20 1000; root; builds in release mode, or takes the binaries from
#        $BERTH_BIN)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
. bench/lib.sh
N=${1:-200}
CLIENTS=${2:-100}
SECS=${3:-20}
RATE=${4:-1000}
WORK=$(mktemp -d /var/tmp/berth-load.XXXXXX)
BIN=${BERTH_BIN:-target/release}
B=$BIN/berthctl
cleanup() {
    [ -z "${CHURN_PID:-}" ] || kill "$CHURN_PID" 2>/dev/null || true
    stop_agents
}
trap cleanup EXIT

for t in runc python3 bc; do command -v $t >/dev/null || { echo "$t is needed (scripts/install-test-deps.sh)" >&2; exit 1; }; done
[ -n "${BERTH_BIN:-}" ] || cargo build --release --bins -q
IMG=$WORK/busybox.tar
REF=docker.io/bench/busybox:latest
python3 bench/mkimage.py "$IMG" --layers 0 --name $REF >/dev/null
rss_mb() { echo "scale=1; $(awk '/^VmRSS:/ {print $2}' "/proc/$1/status") / 1024" | bc -l; }
# Milliseconds of each line of a command's runs, into a file: time_each FILE CMD...
ms() { echo "($2 - $1) * 1000" | bc -l; }
first_last() { # FILE: "median of the first 20 / of the last 20"
    printf '%.1f ms / %.1f ms' "$(head -20 "$1" | median)" "$(tail -20 "$1" | median)"
}
result() { sed -n 's/^RESULT //p' "$1" | python3 -c "import json,sys; print(json.load(sys.stdin).get('$2', 0))"; }

# ---------------- berthd ----------------
"$BIN/berthd" --root "$WORK/berth-root" --state "$WORK/berth-state" --log-level warn &
BERTHD_PID=$!
wait_sock "$WORK/berth-state/berthd.sock"
export BERTH_ADDRESS=$WORK/berth-state/berthd.sock
$B load -q -i "$IMG" >/dev/null
$B run --rm --net none $REF true
: > "$WORK/berth.starts"
for i in $(seq 1 "$N"); do
    t0=$(now); $B run -d --net none --name "l$i" $REF sleep 3600 >/dev/null; t1=$(now)
    ms "$t0" "$t1" >> "$WORK/berth.starts"
done
printf 'berthd     %d starts: first 20 / last 20 (medians) %s; all %.1f s\n' "$N" "$(first_last "$WORK/berth.starts")" \
    "$(paste -sd+ "$WORK/berth.starts" | bc -l | awk '{print $1/1000}')"
: > "$WORK/berth.ps"
for i in $(seq 1 20); do t0=$(now); $B ps -q >/dev/null; t1=$(now); ms "$t0" "$t1" >> "$WORK/berth.ps"; done
printf 'berthd     ps of %d containers: median %.1f ms\n' "$N" "$(median < "$WORK/berth.ps")"
BERTH_IDLE0=$(rss_mb "$BERTHD_PID")
"$BIN/berth-load" load --berth "$BERTH_ADDRESS" --clients "$CLIENTS" --duration "$SECS" --churn-image $REF --pid "$BERTHD_PID" \
    | tee "$WORK/berth.load" || true
"$BIN/berth-load" load --berth "$BERTH_ADDRESS" --clients "$CLIENTS" --duration "$SECS" --rate "$RATE" --churn-image $REF \
    --pid "$BERTHD_PID" | tee "$WORK/berth.paced" || true
sleep 35
BERTH_IDLE1=$(rss_mb "$BERTHD_PID")
printf 'berthd     idle RSS %.1f MB before the load, %.1f MB 35 s after it (the agent trims every 30 s)\n' "$BERTH_IDLE0" "$BERTH_IDLE1"
: > "$WORK/berth.rm"
for i in $(seq 1 "$N"); do t0=$(now); $B rm -f "l$i" >/dev/null; t1=$(now); ms "$t0" "$t1" >> "$WORK/berth.rm"; done
printf 'berthd     %d removals: first 20 / last 20 (medians) %s\n' "$N" "$(first_last "$WORK/berth.rm")"

# ---------------- containerd ----------------
start_containerd "$WORK" || exit 0
C="ctr -a $WORK/ctrd.sock -n bench"
$C images import "$IMG" >/dev/null
$C run --rm $REF warm true
: > "$WORK/ctrd.starts"
for i in $(seq 1 "$N"); do
    t0=$(now); $C run -d $REF "l$i" sleep 3600 >/dev/null; t1=$(now)
    ms "$t0" "$t1" >> "$WORK/ctrd.starts"
done
printf 'containerd %d starts: first 20 / last 20 (medians) %s; all %.1f s\n' "$N" "$(first_last "$WORK/ctrd.starts")" \
    "$(paste -sd+ "$WORK/ctrd.starts" | bc -l | awk '{print $1/1000}')"
: > "$WORK/ctrd.ps"
for i in $(seq 1 20); do t0=$(now); $C t ls -q >/dev/null 2>&1 || $C t ls >/dev/null; t1=$(now); ms "$t0" "$t1" >> "$WORK/ctrd.ps"; done
printf 'containerd ctr t ls of %d tasks: median %.1f ms\n' "$N" "$(median < "$WORK/ctrd.ps")"
CTRD_IDLE0=$(rss_mb "$CTRD_PID")
( i=0; while :; do i=$((i + 1)); $C run --rm $REF "churn$i" true >/dev/null 2>&1 || true; done ) &
CHURN_PID=$!
"$BIN/berth-load" load --containerd "$WORK/ctrd.sock" --namespace bench --clients "$CLIENTS" --duration "$SECS" --pid "$CTRD_PID" \
    | tee "$WORK/ctrd.load" || true
"$BIN/berth-load" load --containerd "$WORK/ctrd.sock" --namespace bench --clients "$CLIENTS" --duration "$SECS" --rate "$RATE" \
    --pid "$CTRD_PID" | tee "$WORK/ctrd.paced" || true
kill "$CHURN_PID" 2>/dev/null || true
wait "$CHURN_PID" 2>/dev/null || true
CHURN_PID=
sleep 35
CTRD_IDLE1=$(rss_mb "$CTRD_PID")
printf 'containerd idle RSS %.1f MB before the load, %.1f MB 35 s after it\n' "$CTRD_IDLE0" "$CTRD_IDLE1"
: > "$WORK/ctrd.rm"
for i in $(seq 1 "$N"); do
    t0=$(now); $C t kill -s KILL "l$i" >/dev/null 2>&1 || true; $C t rm -f "l$i" >/dev/null 2>&1 || true; $C c rm "l$i" >/dev/null; t1=$(now)
    ms "$t0" "$t1" >> "$WORK/ctrd.rm"
done
printf 'containerd %d removals: first 20 / last 20 (medians) %s\n' "$N" "$(first_last "$WORK/ctrd.rm")"

# ---------------- ratios ----------------
for run in load paced; do
    [ $run = load ] && echo "saturation:" || echo "$RATE calls/s:"
    for k in list get inspect stats; do
        b=$(result "$WORK/berth.$run" "${k}_p99_ms"); c=$(result "$WORK/ctrd.$run" "${k}_p99_ms")
        printf '  %-8s p99 berthd %.1f ms, containerd %.1f ms: %.1fx\n' "$k" "$b" "$c" "$(echo "$c / $b" | bc -l)"
    done
    printf '  RSS under load: berthd %.1f MB at most, containerd %.1f MB\n' \
        "$(result "$WORK/berth.$run" rss_max_mb)" "$(result "$WORK/ctrd.$run" rss_max_mb)"
done
