#!/bin/bash
# Pod starts through the CRI, berthd beside containerd 1.6's CRI plugin, in the same run,
# with the same CNI plugins (Debian's, in /usr/lib/cni: bridge, host-local, portmap,
# firewall), the same busybox image, the same pause program (berthd's own pause image,
# exported from berthd and imported into containerd as its sandbox image) and the same
# runc. A pod start is what a kubelet does for a new pod: RunPodSandbox, CreateContainer,
# StartContainer (`berth-load pods`, the same client for both):
#   single  SINGLE pods one after another, each removed before the next: median ms.
#   burst   BURST pods started at once: seconds until every one runs.
# Prints the figures and the ratios (containerd / berthd).
#
# usage: bench/pods.sh [SINGLE] [BURST]   (root; builds in release mode, or takes the
#        binaries from $BERTH_BIN when it is set)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
. bench/lib.sh
SINGLE=${1:-15}
BURST=${2:-30}
WORK=$(mktemp -d /var/tmp/berth-bench.XXXXXX)
BIN=${BERTH_BIN:-target/release}
B=$BIN/berthctl
CNI_BRIDGE=ctrd-bench0
cleanup() {
    stop_agents
    ip link del "$CNI_BRIDGE" 2>/dev/null || true
}
trap cleanup EXIT

for t in runc python3 bc; do command -v $t >/dev/null || { echo "$t is needed (scripts/install-test-deps.sh)" >&2; exit 1; }; done
[ -d /usr/lib/cni ] || { echo "the CNI plugins are needed (apt-get install containernetworking-plugins)" >&2; exit 1; }
[ -n "${BERTH_BIN:-}" ] || cargo build --release --bins -q
IMG=$WORK/busybox.tar
REF=docker.io/bench/busybox:latest
python3 bench/mkimage.py "$IMG" --layers 0 --name $REF

report() { # NAME FILE: the single median and the burst seconds from berth-load's output
    local single burst
    single=$(awk '/^single/ {for (i = 2; i <= NF; i++) print $i}' "$2" | median)
    burst=$(awk '/^burst/ {print $3}' "$2")
    printf '%-10s pod start: median %.1f ms over %d; %d pods at once: %.2f s\n' "$1" "$single" "$SINGLE" "$BURST" "$burst" >&2
    for call in run_pod_sandbox create_container start_container; do
        printf '           %-17s median %.1f ms\n' "$call" "$(awk -v c=$call '$1 == c {for (i = 2; i <= NF; i++) print $i}' "$2" | median)" >&2
    done
    echo "$single $burst"
}

# ---------------- berthd ----------------
"$BIN/berthd" --root "$WORK/berth-root" --state "$WORK/berth-state" --log-level warn &
BERTHD_PID=$!
wait_sock "$WORK/berth-state/cri.sock"
export BERTH_ADDRESS=$WORK/berth-state/berthd.sock
$B --namespace k8s.io load -q -i "$IMG" >/dev/null
"$BIN/berth-load" pods --cri "$WORK/berth-state/cri.sock" --image $REF --single "$SINGLE" --burst "$BURST" --tag berth > "$WORK/berth.out"
read -r BERTH_SINGLE BERTH_BURST < <(report berthd "$WORK/berth.out")
# The pause image berthd made for its pods, for containerd's pods too.
PAUSE=$($B --namespace k8s.io images --format '{{.Repository}}:{{.Tag}}' | grep '^berth.local/pause:')
$B --namespace k8s.io save -o "$WORK/pause.tar" "$PAUSE"
$B --namespace k8s.io rm -f $($B --namespace k8s.io ps -aq) >/dev/null 2>&1 || true
kill "$BERTHD_PID"
wait "$BERTHD_PID" 2>/dev/null || true
BERTHD_PID=

# ---------------- containerd's CRI ----------------
if ! command -v containerd >/dev/null || ! command -v ctr >/dev/null; then
    echo "containerd not installed (apt-get install containerd): no comparison"
    exit 0
fi
mkdir -p "$WORK/ctrd-root" "$WORK/ctrd-state" "$WORK/cni"
cat > "$WORK/cni/10-bench.conflist" <<JSON
{"cniVersion": "1.0.0", "name": "bench", "plugins": [
  {"type": "bridge", "bridge": "$CNI_BRIDGE", "isGateway": true, "ipMasq": true, "hairpinMode": true,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.231.0.0/16"}]], "routes": [{"dst": "0.0.0.0/0"}],
            "dataDir": "$WORK/cni-ipam"}},
  {"type": "portmap", "capabilities": {"portMappings": true}},
  {"type": "firewall"}
]}
JSON
cat > "$WORK/ctrd.toml" <<TOML
version = 2
root = "$WORK/ctrd-root"
state = "$WORK/ctrd-state"
[grpc]
  address = "$WORK/ctrd.sock"
[ttrpc]
  address = "$WORK/ctrd.sock.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  # The sandbox's oom_score_adj (-998) needs CAP_SYS_RESOURCE, which this machine lacks:
  # clamped to containerd's own, as a rootless setup does.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$WORK/cni"
TOML
containerd --config "$WORK/ctrd.toml" --log-level warn 2>"$WORK/ctrd.log" &
CTRD_PID=$!
wait_sock "$WORK/ctrd.sock"
C="ctr -a $WORK/ctrd.sock -n k8s.io"
$C images import "$IMG" >/dev/null
$C images import "$WORK/pause.tar" >/dev/null
if ! "$BIN/berth-load" pods --cri "$WORK/ctrd.sock" --image $REF --single "$SINGLE" --burst "$BURST" --tag ctrd > "$WORK/ctrd.out"; then
    echo "containerd's CRI failed; its log:" >&2
    tail -20 "$WORK/ctrd.log" >&2
    exit 1
fi
read -r CTRD_SINGLE CTRD_BURST < <(report containerd "$WORK/ctrd.out")

printf 'ratios (containerd / berthd): pod start %.2fx, %d pods at once %.2fx\n' \
    "$(echo "$CTRD_SINGLE / $BERTH_SINGLE" | bc -l)" "$BURST" "$(echo "$CTRD_BURST / $BERTH_BURST" | bc -l)"
