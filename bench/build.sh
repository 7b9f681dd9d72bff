#!/bin/bash
# Build benchmark: the same Dockerfile and context built by berthd (`berthctl
# build`) and, when Debian's buildah is installed, by buildah (`buildah bud
# --layers --runtime runc`, overlay storage), side by side in the same run,
# the two taking turns run by run. Each tool has a fresh root and the same
# busybox base image in its store before anything is timed. Three timings a
# run, each tool:
#   cold       the base present, no cached step (the app image removed, the
#              build cache pruned)
#   unchanged  the same context again: every step cached
#   one file   one 4 KiB file of the context rewritten, then built again
# Prints the medians per phase and the ratios (buildah / berthd).
#
# usage: bench/build.sh [RUNS]      (root; default 5 runs)
# The binaries come from $BERTH_BIN when it is set (nothing is built);
# otherwise berthd is built in release mode (under $CARGO_TARGET_DIR if set).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
. bench/lib.sh
RUNS=${1:-5}
WORK=$(mktemp -d /var/tmp/berth-bench.XXXXXX)
LIMIT=300   # seconds any one build, untimed or timed, may take

# Stop a process we started: TERM, at most 10 s, then KILL.
stop() {
    local pid=$1
    [ -n "$pid" ] || return 0
    kill "$pid" 2>/dev/null || return 0
    for _ in $(seq 1 200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    stop "${BERTHD_PID:-}"
    if [ -n "${BUILDAH:-}" ]; then
        # shellcheck disable=SC2086 # $BUILDAH is words on purpose
        timeout 60 $BUILDAH rmi -a -f >/dev/null 2>&1 || true
    fi
    wait 2>/dev/null || true
    # With whatever either tool left mounted there.
    remove_work "$WORK"
}
trap cleanup EXIT

for t in runc python3 bc timeout; do command -v $t >/dev/null || { echo "$t is needed (scripts/install-test-deps.sh)" >&2; exit 1; }; done
[ -x /bin/busybox ] || { echo "install busybox-static (scripts/install-test-deps.sh)" >&2; exit 1; }
if [ -n "${BERTH_BIN:-}" ]; then
    BIN=$BERTH_BIN
else
    cargo build --release --bins -q
    BIN=${CARGO_TARGET_DIR:-target}/release
fi
for b in berthd berthctl; do [ -x "$BIN/$b" ] || { echo "no $BIN/$b" >&2; exit 1; }; done
B=$BIN/berthctl

# Run a build command, bounded; on failure show its output and stop the script.
must() {
    local log=$1; shift
    if ! timeout "$LIMIT" "$@" >"$log" 2>&1; then
        echo "failed: $*" >&2
        tail -n 30 "$log" >&2
        exit 1
    fi
}

# Time a build command (wall clock, ms) into the file $1; its output goes to $2.
timed() {
    local times=$1 log=$2 t0 t1; shift 2
    sync
    t0=$(now)
    must "$log" "$@"
    t1=$(now)
    echo "($t1 - $t0) * 1000" | bc -l >> "$times"
}

# ---------------- the base image's context and the workload's ----------------
mkdir -p "$WORK/base" "$WORK/ctx/app"
cp /bin/busybox "$WORK/base/busybox"
cat > "$WORK/base/Dockerfile" <<'EOF'
FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox","--install","-s","/bin"]
EOF
python3 - "$WORK/ctx/app" <<'EOF'
import os, sys
d = sys.argv[1]
for i in range(1000):
    with open(f"{d}/f{i:04d}.bin", "wb") as f:
        f.write(os.urandom(4096))
with open(f"{d}/big.bin", "wb") as f:
    f.write(os.urandom(20 << 20))
EOF
cat > "$WORK/ctx/Dockerfile" <<'EOF'
FROM bench-base:latest
COPY app/ /app/
RUN mkdir /gen && for i in $(seq 1 500); do echo $i > /gen/f$i; done
ENV APP=bench
WORKDIR /app
CMD ["sh"]
EOF
CTX=$WORK/ctx
echo "context: 1,000 files of 4 KiB and one of 20 MiB ($(du -sm "$CTX" | cut -f1) MB)"
# The one-file change: new random bytes in the same 4 KiB file.
change_one() { head -c 4096 /dev/urandom > "$CTX/app/f0500.bin"; }

# ---------------- berthd, with the base built in it (untimed) ----------------
"$BIN/berthd" --root "$WORK/berth-root" --state "$WORK/berth-state" --log-level warn 2>"$WORK/berthd.log" &
BERTHD_PID=$!
wait_sock "$WORK/berth-state/berthd.sock"
export BERTH_ADDRESS=$WORK/berth-state/berthd.sock
must "$WORK/berth-base.log" "$B" build --progress plain -t bench-base:latest "$WORK/base"
berth_build() { timed "$1" "$2" "$B" build --progress plain -t bench-app:latest "$CTX"; }
# The app image gone and the whole build cache (entries, their layers, the
# agent's mirror of the context) pruned: the next build runs every step and
# receives the whole context, as buildah reads it.
berth_cold() {
    "$B" rmi bench-app:latest >/dev/null 2>&1 || true
    must "$WORK/berth-prune.log" "$B" builder prune -a
}

# ---------------- buildah, with the base built in it (untimed) ----------------
BUILDAH=
if command -v buildah >/dev/null; then
    BUILDAH="buildah --root $WORK/buildah-root --runroot $WORK/buildah-runroot --storage-driver overlay"
    BUD="bud --layers --runtime runc ${BUILDAH_OPTS:-}"
    # shellcheck disable=SC2086 # $BUILDAH and $BUD are words on purpose
    must "$WORK/buildah-base.log" $BUILDAH $BUD -t bench-base:latest "$WORK/base"
    # shellcheck disable=SC2086
    buildah_build() { timed "$1" "$2" $BUILDAH $BUD -t bench-app:latest "$CTX"; }
    # The app image and every cached intermediate image gone; the base (and
    # its own parent) stays.
    # shellcheck disable=SC2086
    buildah_cold() {
        $BUILDAH rmi bench-app:latest >/dev/null 2>&1 || true
        must "$WORK/buildah-prune.log" $BUILDAH rmi --prune
    }
else
    echo "buildah not installed (apt-get install buildah): no comparison"
fi

# ---------------- the runs, the two tools taking turns ----------------
PHASES="cold unchanged onefile"
for p in $PHASES; do : > "$WORK/berth.$p"; : > "$WORK/buildah.$p"; done
for i in $(seq 1 "$RUNS"); do
    berth_cold
    berth_build "$WORK/berth.cold" "$WORK/berth.cold.log"
    berth_build "$WORK/berth.unchanged" "$WORK/berth.unchanged.log"
    change_one
    berth_build "$WORK/berth.onefile" "$WORK/berth.onefile.log"
    if [ -n "$BUILDAH" ]; then
        buildah_cold
        buildah_build "$WORK/buildah.cold" "$WORK/buildah.cold.log"
        buildah_build "$WORK/buildah.unchanged" "$WORK/buildah.unchanged.log"
        change_one
        buildah_build "$WORK/buildah.onefile" "$WORK/buildah.onefile.log"
    fi
    echo "run $i of $RUNS done"
done

# What the last run of each phase did, as the tools report it.
for p in $PHASES; do
    printf 'berthd  %-9s %s\n' "$p:" "$(grep '^built in' "$WORK/berth.$p.log" || echo '(no summary line)')"
    printf '        steps: %s\n' "$(grep -E '^#[0-9]+ (DONE|CACHED)' "$WORK/berth.$p.log" | tr '\n' ' ')"
    [ -z "$BUILDAH" ] || printf 'buildah %-9s %d of 5 steps from the cache\n' "$p:" "$(grep -c 'Using cache' "$WORK/buildah.$p.log" || true)"
done
echo

label() { case $1 in cold) echo "cold" ;; unchanged) echo "unchanged rebuild" ;; onefile) echo "one file changed" ;; esac; }
target() { case $1 in cold) echo 3 ;; unchanged) echo 10 ;; onefile) echo 3 ;; esac; }
printf '%-18s | %-10s | %-10s | %-7s | %s\n' "median of $RUNS" "berthd" "buildah" "ratio" "target"
for p in $PHASES; do
    bm=$(median < "$WORK/berth.$p")
    if [ -n "$BUILDAH" ]; then
        hm=$(median < "$WORK/buildah.$p")
        r=$(echo "$hm / $bm" | bc -l)
        met=$(echo "$r >= $(target "$p")" | bc -l)
        printf '%-18s | %7.3f s  | %7.3f s  | %5.2fx  | %dx (%s)\n' "$(label "$p")" "$(echo "$bm / 1000" | bc -l)" \
            "$(echo "$hm / 1000" | bc -l)" "$r" "$(target "$p")" "$([ "$met" = 1 ] && echo met || echo not met)"
    else
        printf '%-18s | %7.3f s  | %-10s | %-7s |\n' "$(label "$p")" "$(echo "$bm / 1000" | bc -l)" "-" "-"
    fi
done
echo
for p in $PHASES; do
    printf 'runs (ms) %-9s berthd: %s\n' "$p" "$(xargs printf '%.0f ' < "$WORK/berth.$p")"
    [ -z "$BUILDAH" ] || printf 'runs (ms) %-9s buildah: %s\n' "$p" "$(xargs printf '%.0f ' < "$WORK/buildah.$p")"
done
