#!/bin/sh
# Generate the Python client's stubs (clients/python/src/berth/v1) from
# proto/berth/v1 with the pinned grpcio-tools and mypy-protobuf of
# clients/python/requirements-dev.txt (installed in target/py by
# scripts/install-client-deps.sh). With --check, generate into a scratch
# directory and fail when the checked-in stubs differ (stale or edited).
set -eu
cd "$(dirname "$0")/.."
py=${BERTH_PY:-target/py/bin/python}
if [ ! -x "$py" ]; then
    echo "$py is missing: run scripts/install-client-deps.sh" >&2
    exit 1
fi
out=clients/python/src/berth/v1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# protoc finds its plugins on PATH: protoc-gen-mypy and protoc-gen-mypy_grpc are in the venv.
PATH="$(dirname "$py"):$PATH" "$py" -m grpc_tools.protoc -I proto \
    --python_out="$tmp" --grpc_python_out="$tmp" --mypy_out=quiet:"$tmp" --mypy_grpc_out=quiet:"$tmp" \
    proto/berth/v1/*.proto
printf '"""Stubs generated from proto/berth/v1 by scripts/gen-clients.sh: do not edit."""\n' > "$tmp/berth/v1/__init__.py"
if [ "${1:-}" = --check ]; then
    if ! diff -r "$tmp/berth/v1" "$out" > "$tmp/diff" 2>&1; then
        head -40 "$tmp/diff" >&2
        echo "clients/python/src/berth/v1 is not what proto/ generates: run scripts/gen-clients.sh and commit the result" >&2
        exit 1
    fi
    echo "python stubs are fresh"
else
    rm -rf "$out"
    mkdir -p "$out"
    cp "$tmp"/berth/v1/* "$out"/
    echo "generated $out"
fi
