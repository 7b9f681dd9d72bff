#!/bin/bash
# Pull benchmark: a five-layer, 200 MB image (busybox plus five 40 MB random
# layers) pulled from Debian's docker-registry on 127.0.0.1 by berthd
# (`berthctl pull`) and by containerd (`ctr images pull --plain-http`), the
# two taking turns, each run from an empty store (the image is removed and
# collected in between). Both fetch and unpack. Prints medians, MB/s and the ratio.
#
# usage: bench/pull.sh [RUNS]      (root; builds berthd in release mode)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-5}
WORK=$(mktemp -d /var/tmp/berth-bench.XXXXXX)
B=target/release/berthctl
cleanup() {
    [ -n "${BERTHD_PID:-}" ] && kill "$BERTHD_PID" 2>/dev/null || true
    [ -n "${CTRD_PID:-}" ] && kill "$CTRD_PID" 2>/dev/null || true
    [ -n "${REG_PID:-}" ] && kill "$REG_PID" 2>/dev/null || true
    wait 2>/dev/null || true
    umount -R "$WORK"/ctrd-root 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
for t in docker-registry skopeo python3 bc; do command -v $t >/dev/null || { echo "$t is needed (scripts/install-test-deps.sh)" >&2; exit 1; }; done
. bench/lib.sh
cargo build --release --bins -q

# The registry, and the image in it (pushed by skopeo, an independent client).
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$WORK/registry.yml" <<YML
version: 0.1
log:
  level: error
storage:
  filesystem:
    rootdirectory: $WORK/registry
http:
  addr: 127.0.0.1:$PORT
YML
docker-registry serve "$WORK/registry.yml" >"$WORK/registry.log" 2>&1 &
REG_PID=$!
for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break; sleep 0.05; done
python3 bench/mkimage.py "$WORK/image.tar" --layers 5 --layer-mb 40 --name docker.io/bench/random:latest
REF=127.0.0.1:$PORT/bench/random:latest
skopeo copy -q --dest-tls-verify=false "oci-archive:$WORK/image.tar" "docker://$REF"
MB=$(du -m "$WORK/registry" | tail -1 | cut -f1)
echo "image in the registry: $MB MB"

target/release/berthd --root "$WORK/berth-root" --state "$WORK/berth-state" --log-level warn &
BERTHD_PID=$!
wait_sock "$WORK/berth-state/berthd.sock"
export BERTH_ADDRESS=$WORK/berth-state/berthd.sock
HAVE_CTRD=
if start_containerd "$WORK"; then
    HAVE_CTRD=1
    C="ctr -a $WORK/ctrd.sock -n bench"
fi

: > "$WORK/berth.times"
: > "$WORK/ctrd.times"
for _ in $(seq 1 "$RUNS"); do
    sync; echo 1 > /proc/sys/vm/drop_caches 2>/dev/null || true
    t0=$(now); $B pull -q "$REF" >/dev/null; t1=$(now)
    echo "$t1 - $t0" | bc -l >> "$WORK/berth.times"
    $B rmi "$REF" >/dev/null
    if [ -n "$HAVE_CTRD" ]; then
        sync; echo 1 > /proc/sys/vm/drop_caches 2>/dev/null || true
        t0=$(now); $C images pull --plain-http "$REF" >/dev/null; t1=$(now)
        echo "$t1 - $t0" | bc -l >> "$WORK/ctrd.times"
        $C images rm --sync "$REF" >/dev/null
    fi
done
BERTH_MED=$(median < "$WORK/berth.times")
printf 'berthd     pull: median %.3f s over %d runs (%.0f MB/s)\n' "$BERTH_MED" "$RUNS" "$(echo "$MB / $BERTH_MED" | bc -l)"
[ -n "$HAVE_CTRD" ] || exit 0
CTRD_MED=$(median < "$WORK/ctrd.times")
printf 'containerd pull: median %.3f s over %d runs (%.0f MB/s)\n' "$CTRD_MED" "$RUNS" "$(echo "$MB / $CTRD_MED" | bc -l)"
printf 'ratio: berthd pulls %.2fx faster\n' "$(echo "$CTRD_MED / $BERTH_MED" | bc -l)"
