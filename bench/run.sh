#!/bin/bash
# Container benchmarks, berthd beside containerd on the same busybox image and
# the same runc, in the same run:
#   run cycle  `berthctl run --rm IMAGE true` vs `ctr run --rm IMAGE ID true`:
#              create, start, exit, delete; median of RUNS, the two agents
#              taking turns so that drift in the machine hits both alike.
#   fan-out    FANOUT containers running `sleep` started one after another:
#              time until all run, memory of the agent plus its shims (RSS and
#              PSS), disk used by the containers' writable layers.
#   networks   the run cycle and the fan-out on the default network
#              (`berthctl run`, CNI bridge) beside berthd's own `--net none`
#              and, when Debian's podman is installed, `podman run` on its
#              default network (CNI bridge too).
# Against containerd (whose `ctr run` joins no network) berthd runs with
# `--net none`. Prints medians and ratios.
#
# usage: bench/run.sh [RUNS] [FANOUT]     (root; builds berthd in release mode,
#        or takes berthd and berthctl from $BERTH_BIN when it is set)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
. bench/lib.sh
RUNS=${1:-20}
FANOUT=${2:-50}
WORK=$(mktemp -d /var/tmp/berth-bench.XXXXXX)
BIN=${BERTH_BIN:-target/release}
B=$BIN/berthctl
trap stop_agents EXIT

for t in runc python3 bc; do command -v $t >/dev/null || { echo "$t is needed (scripts/install-test-deps.sh)" >&2; exit 1; }; done
[ -n "${BERTH_BIN:-}" ] || cargo build --release --bins -q
IMG=$WORK/busybox.tar
REF=docker.io/bench/busybox:latest
python3 bench/mkimage.py "$IMG" --layers 0 --name $REF

# Sums of RSS and PSS (kB) over pids.
mem_kb() {
    local rss=0 pss=0 p
    for p in "$@"; do
        rss=$((rss + $(awk '/^Rss:/ {print $2}' /proc/$p/smaps_rollup)))
        pss=$((pss + $(awk '/^Pss:/ {print $2}' /proc/$p/smaps_rollup)))
    done
    echo "$rss $pss"
}

# ---------------- both agents, up side by side ----------------
"$BIN/berthd" --root "$WORK/berth-root" --state "$WORK/berth-state" --log-level warn &
BERTHD_PID=$!
wait_sock "$WORK/berth-state/berthd.sock"
export BERTH_ADDRESS=$WORK/berth-state/berthd.sock
$B load -q -i "$IMG" >/dev/null

HAVE_CTRD=
if start_containerd "$WORK"; then
    HAVE_CTRD=1
    C="ctr -a $WORK/ctrd.sock -n bench"
    $C images import "$IMG" >/dev/null
fi

# ---------------- run cycle, the two agents taking turns ----------------
for i in 1 2 3; do
    $B run --rm --net none $REF true
    [ -z "$HAVE_CTRD" ] || $C run --rm $REF "warm$i" true
done
: > "$WORK/berth.cycle"
: > "$WORK/ctrd.cycle"
for i in $(seq 1 "$RUNS"); do
    t0=$(now); $B run --rm --net none $REF true; t1=$(now)
    echo "($t1 - $t0) * 1000" | bc -l >> "$WORK/berth.cycle"
    if [ -n "$HAVE_CTRD" ]; then
        t0=$(now); $C run --rm $REF "cycle$i" true; t1=$(now)
        echo "($t1 - $t0) * 1000" | bc -l >> "$WORK/ctrd.cycle"
    fi
done
BERTH_CYCLE=$(median < "$WORK/berth.cycle")
printf 'berthd     run cycle: median %.1f ms over %d runs\n' "$BERTH_CYCLE" "$RUNS"
if [ -n "$HAVE_CTRD" ]; then
    CTRD_CYCLE=$(median < "$WORK/ctrd.cycle")
    printf 'containerd run cycle: median %.1f ms over %d runs\n' "$CTRD_CYCLE" "$RUNS"
fi

# ---------------- run cycle on the default network ----------------
# berthd: the CNI bridge (the first run fills the pool of namespaces attached
# ahead of time) beside its own --net none; podman: its default network.
HAVE_PODMAN=
if command -v podman >/dev/null; then
    HAVE_PODMAN=1
    # This machine lacks CAP_SYS_RESOURCE: podman's default ulimits cannot be set.
    printf '[containers]\ndefault_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]\n[engine]\nruntime = "runc"\n' > "$WORK/containers.conf"
    P="env CONTAINERS_CONF=$WORK/containers.conf podman --root $WORK/podman-root --runroot $WORK/podman-runroot --storage-driver overlay"
    $P load -q -i "$IMG" >/dev/null
else
    echo "podman not installed (apt-get install podman): no podman figures"
fi
for i in 1 2 3; do
    $B run --rm $REF true
    [ -z "$HAVE_PODMAN" ] || $P run --rm $REF true
done
: > "$WORK/berth.bridge"; : > "$WORK/berth.none"; : > "$WORK/podman.bridge"
for i in $(seq 1 "$RUNS"); do
    t0=$(now); $B run --rm $REF true; t1=$(now)
    echo "($t1 - $t0) * 1000" | bc -l >> "$WORK/berth.bridge"
    t0=$(now); $B run --rm --net none $REF true; t1=$(now)
    echo "($t1 - $t0) * 1000" | bc -l >> "$WORK/berth.none"
    if [ -n "$HAVE_PODMAN" ]; then
        t0=$(now); $P run --rm $REF true; t1=$(now)
        echo "($t1 - $t0) * 1000" | bc -l >> "$WORK/podman.bridge"
    fi
done
BRIDGE=$(median < "$WORK/berth.bridge")
NONE=$(median < "$WORK/berth.none")
printf 'berthd     run cycle, default network: median %.1f ms; --net none %.1f ms; the network costs %.1f ms\n' \
    "$BRIDGE" "$NONE" "$(echo "$BRIDGE - $NONE" | bc -l)"
if [ -n "$HAVE_PODMAN" ]; then
    PODMAN=$(median < "$WORK/podman.bridge")
    printf 'podman     run cycle, default network: median %.1f ms; ratio %.2fx\n' "$PODMAN" "$(echo "$PODMAN / $BRIDGE" | bc -l)"
fi

# ---------------- fan-out: berthd ----------------
disk0=$(du -sk "$WORK/berth-root/snapshots" | cut -f1)
t0=$(now)
for i in $(seq 1 "$FANOUT"); do $B run -d --net none --name "f$i" $REF sleep 600 >/dev/null; done
until [ "$($B ps -q | wc -l)" -eq "$FANOUT" ]; do sleep 0.01; done
t1=$(now)
BERTH_FAN=$(echo "$t1 - $t0" | bc -l)
disk1=$(du -sk "$WORK/berth-root/snapshots" | cut -f1)
SHIMS=$(pgrep -f "berth-shim $WORK/berth-state" || true)
read -r BERTH_RSS BERTH_PSS <<<"$(mem_kb $BERTHD_PID $SHIMS)"
read -r SHIM_RSS SHIM_PSS <<<"$(mem_kb $SHIMS)"
NSHIMS=$(echo "$SHIMS" | wc -w)
printf 'berthd     fan-out: %d containers running after %.2f s\n' "$FANOUT" "$BERTH_FAN"
printf 'berthd     memory: agent + %d shims %.1f MB RSS, %.1f MB PSS; per shim %.2f MB RSS, %.2f MB PSS\n' \
    "$NSHIMS" "$(echo "$BERTH_RSS / 1024" | bc -l)" "$(echo "$BERTH_PSS / 1024" | bc -l)" \
    "$(echo "$SHIM_RSS / $NSHIMS / 1024" | bc -l)" "$(echo "$SHIM_PSS / $NSHIMS / 1024" | bc -l)"
printf 'berthd     disk: writable layers of %d containers %d kB\n' "$FANOUT" "$((disk1 - disk0))"
$B rm -f $($B ps -aq) >/dev/null

# ---------------- fan-out on the default network ----------------
# berthd on its default network (beside its --net none fan-out above) and
# podman on its own; each container is removed before the next tool starts.
t0=$(now)
for i in $(seq 1 "$FANOUT"); do $B run -d --name "b$i" $REF sleep 600 >/dev/null; done
until [ "$($B ps -q | wc -l)" -eq "$FANOUT" ]; do sleep 0.01; done
t1=$(now)
BERTH_NET_FAN=$(echo "$t1 - $t0" | bc -l)
$B rm -f $($B ps -aq) >/dev/null
printf 'berthd     fan-out, default network: %d containers running after %.2f s (--net none: %.2f s)\n' \
    "$FANOUT" "$BERTH_NET_FAN" "$BERTH_FAN"
if [ -n "$HAVE_PODMAN" ]; then
    t0=$(now)
    for i in $(seq 1 "$FANOUT"); do $P run -d --name "p$i" $REF sleep 600 >/dev/null; done
    until [ "$($P ps -q | wc -l)" -eq "$FANOUT" ]; do sleep 0.01; done
    t1=$(now)
    PODMAN_FAN=$(echo "$t1 - $t0" | bc -l)
    $P rm -f -t 0 -a >/dev/null
    printf 'podman     fan-out, default network: %d containers running after %.2f s; ratio %.2fx\n' \
        "$FANOUT" "$PODMAN_FAN" "$(echo "$PODMAN_FAN / $BERTH_NET_FAN" | bc -l)"
fi
[ -n "$HAVE_CTRD" ] || exit 0

# ---------------- fan-out: containerd ----------------
disk0=$(du -sk "$WORK/ctrd-root/io.containerd.snapshotter.v1.overlayfs" | cut -f1)
t0=$(now)
for i in $(seq 1 "$FANOUT"); do $C run -d $REF "f$i" sleep 600 >/dev/null; done
until [ "$($C t ls | grep -c RUNNING)" -eq "$FANOUT" ]; do sleep 0.01; done
t1=$(now)
CTRD_FAN=$(echo "$t1 - $t0" | bc -l)
disk1=$(du -sk "$WORK/ctrd-root/io.containerd.snapshotter.v1.overlayfs" | cut -f1)
CSHIMS=$(pgrep -f "containerd-shim-runc-v2 -namespace bench .*-address $WORK/ctrd.sock" || true)
read -r CTRD_RSS CTRD_PSS <<<"$(mem_kb $CTRD_PID $CSHIMS)"
read -r CSHIM_RSS CSHIM_PSS <<<"$(mem_kb $CSHIMS)"
NCSHIMS=$(echo "$CSHIMS" | wc -w)
printf 'containerd fan-out: %d containers running after %.2f s\n' "$FANOUT" "$CTRD_FAN"
printf 'containerd memory: daemon + %d shims %.1f MB RSS, %.1f MB PSS; per shim %.2f MB RSS, %.2f MB PSS\n' \
    "$NCSHIMS" "$(echo "$CTRD_RSS / 1024" | bc -l)" "$(echo "$CTRD_PSS / 1024" | bc -l)" \
    "$(echo "$CSHIM_RSS / $NCSHIMS / 1024" | bc -l)" "$(echo "$CSHIM_PSS / $NCSHIMS / 1024" | bc -l)"
printf 'containerd disk: writable layers of %d containers %d kB\n' "$FANOUT" "$((disk1 - disk0))"

echo
printf 'ratio: run cycle %.2fx faster; fan-out %.2fx faster; agent+shims memory %.1fx smaller (RSS), %.1fx (PSS)\n' \
    "$(echo "$CTRD_CYCLE / $BERTH_CYCLE" | bc -l)" "$(echo "$CTRD_FAN / $BERTH_FAN" | bc -l)" \
    "$(echo "$CTRD_RSS / $BERTH_RSS" | bc -l)" "$(echo "$CTRD_PSS / $BERTH_PSS" | bc -l)"
