#!/bin/sh
# Install the Debian packages Berth's tests use, when they are missing.
#   gcc, libc6-dev  compile the static probe a seccomp test runs in a container
#   busybox-static  the static binary the tests put in their images
#   skopeo, umoci   independent tools that read and write image archives
#   runc, crun      the OCI runtimes containers run with
#   docker-registry the CNCF distribution registry, run on 127.0.0.1 by the registry tests
#   openssl         makes the certificates of the TLS registry test
#   python3         Debian's, which any user can run (a test reads the agent's files as nobody)
#   python3-grpcio  grpcio for Debian's python3: a client of another gRPC stack, on the real socket
#   containernetworking-plugins, iptables, iproute2  the CNI plugins container networks run (bridge, portmap, firewall), and what the agent calls beside them
# Needs root (or sudo) and Debian's package archive.
set -eu

# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"
install_missing gcc:/usr/bin/gcc libc6-dev:/usr/lib/x86_64-linux-gnu/libc.a busybox-static:/bin/busybox skopeo:/usr/bin/skopeo umoci:/usr/bin/umoci runc:/usr/sbin/runc crun:/usr/bin/crun \
    docker-registry:/usr/bin/docker-registry openssl:/usr/bin/openssl python3:/usr/bin/python3 \
    python3-grpcio:/usr/lib/python3/dist-packages/grpc/__init__.py containernetworking-plugins:/usr/lib/cni/bridge \
    iptables:/usr/sbin/iptables iproute2:/usr/sbin/ip
echo "test dependencies present: gcc libc6-dev busybox-static skopeo umoci runc crun docker-registry openssl python3 python3-grpcio containernetworking-plugins iptables iproute2"
