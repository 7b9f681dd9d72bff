#!/bin/sh
# Start berthd on a fresh Debian 12: install what it needs at run time when
# it is missing (runc, the CNI plugins containers' networks use, iptables, iproute2),
# build the release binaries, and start the agent in the foreground.
# Arguments go to berthd (see `target/release/berthd --help`). Run as root.
set -eu
cd "$(dirname "$0")/.."
need=""
for pair in runc:/usr/sbin/runc containernetworking-plugins:/usr/lib/cni/bridge iptables:/usr/sbin/iptables iproute2:/usr/sbin/ip; do
    pkg=${pair%%:*}
    file=${pair#*:}
    [ -e "$file" ] || need="$need $pkg"
done
if [ -n "$need" ]; then
    echo "installing:$need"
    SUDO=""
    [ "$(id -u)" = 0 ] || SUDO=sudo
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    # shellcheck disable=SC2086
    $SUDO apt-get install -y -qq --no-install-recommends $need >/dev/null
fi
cargo build --release --locked
exec target/release/berthd "$@"
