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
