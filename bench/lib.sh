# Shared by the benchmark scripts (sourced, not run).

now() { date +%s.%N; }
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
# Unmount whatever is left mounted under $1 (deepest first), then remove it.
remove_work() {
    awk -v w="$1" 'index($2, w) == 1 {print $2}' /proc/mounts | sort -r | while read -r m; do
        umount -l "$m" 2>/dev/null || true
    done
    rm -rf "$1"
}
# The end of a run: berthd's containers removed (with $B), containerd's
# (socket $WORK/ctrd.sock, namespace bench), both agents stopped (BERTHD_PID,
# CTRD_PID, when set), then $WORK removed with whatever either left mounted.
stop_agents() {
    if [ -n "${BERTHD_PID:-}" ]; then
        # shellcheck disable=SC2046 # the ids are words
        $B rm -f $($B ps -aq 2>/dev/null) >/dev/null 2>&1 || true
        kill "$BERTHD_PID" 2>/dev/null || true
    fi
    if [ -n "${P:-}" ]; then
        # shellcheck disable=SC2086 # $P is words on purpose
        timeout 60 $P rm -f -t 0 -a >/dev/null 2>&1 || true
    fi
    if [ -n "${CTRD_PID:-}" ]; then
        for c in $(ctr -a "$WORK/ctrd.sock" -n bench c ls -q 2>/dev/null); do
            ctr -a "$WORK/ctrd.sock" -n bench t kill -s KILL "$c" >/dev/null 2>&1 || true
            ctr -a "$WORK/ctrd.sock" -n bench t rm -f "$c" >/dev/null 2>&1 || true
            ctr -a "$WORK/ctrd.sock" -n bench c rm "$c" >/dev/null 2>&1 || true
        done
        kill "$CTRD_PID" 2>/dev/null || true
    fi
    wait 2>/dev/null || true
    remove_work "$WORK"
}
wait_sock() { for _ in $(seq 1 500); do [ -S "$1" ] && return 0; sleep 0.02; done; echo "no socket $1" >&2; return 1; }

# Start a containerd of its own under $1 (root, state, socket $1/ctrd.sock);
# sets CTRD_PID. Returns 1 when containerd is not installed.
start_containerd() {
    local work=$1
    if ! command -v containerd >/dev/null || ! command -v ctr >/dev/null; then
        echo "containerd not installed (apt-get install containerd): no comparison"
        return 1
    fi
    mkdir -p "$work/ctrd-root" "$work/ctrd-state"
    cat > "$work/ctrd.toml" <<TOML
version = 2
root = "$work/ctrd-root"
state = "$work/ctrd-state"
[grpc]
  address = "$work/ctrd.sock"
[ttrpc]
  address = "$work/ctrd.sock.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
TOML
    containerd --config "$work/ctrd.toml" --log-level warn 2>"$work/ctrd.log" &
    CTRD_PID=$!
    wait_sock "$work/ctrd.sock"
}
