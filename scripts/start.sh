#!/bin/sh
# Start berthd on a fresh Debian 12: install what it needs at run time when
# it is missing (runc, the CNI plugins containers' networks use, iptables, iproute2),
# build the release binaries, and start the agent in the foreground.
# Arguments go to berthd (see `target/release/berthd --help`). Run as root.
set -eu
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
install_missing runc:/usr/sbin/runc containernetworking-plugins:/usr/lib/cni/bridge iptables:/usr/sbin/iptables iproute2:/usr/sbin/ip
cargo build --release --locked
exec target/release/berthd "$@"
