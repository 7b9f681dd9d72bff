#!/bin/sh
# The v1 API only grows: compare the protos (proto/, or the directory given)
# with the descriptor set of the last release (proto/releases/) using buf's
# breaking-change rules (FILE: no field, message, enum value, rpc or service
# removed, renumbered, retyped or renamed). buf comes from the Node client's
# packages (scripts/install-client-deps.sh).
#
# At a release: buf build proto -o proto/releases/VERSION.binpb
set -eu
root="$(cd "$(dirname "$0")/.." && pwd)"
protos=${1:-$root/proto}
buf="$root/clients/node/node_modules/.bin/buf"
if [ ! -x "$buf" ]; then
    echo "$buf is missing: run scripts/install-client-deps.sh" >&2
    exit 1
fi
last=$(ls "$root"/proto/releases/*.binpb | sort -V | tail -1)
"$buf" breaking "$protos" --against "$last" --config '{"version":"v2","breaking":{"use":["FILE"]}}'
echo "the API is compatible with $(basename "$last" .binpb)"
