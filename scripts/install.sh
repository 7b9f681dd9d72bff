#!/bin/sh
# Install Berth: build the release binaries, copy berthd, berthctl and berth-shim
# (which berthd finds next to itself) into PREFIX/bin, and generate berthctl's man pages
# (PREFIX/share/man/man1, one page per command) and its shell completions (where bash,
# zsh and fish look for them under PREFIX/share) from the binaries just built.
#
#   sh scripts/install.sh [PREFIX]      PREFIX defaults to /usr/local
#
# BERTH_BINARIES=DIR installs the binaries found in DIR instead of building them.
set -eu
cd "$(dirname "$0")/.."
prefix=${1:-/usr/local}
bin=${BERTH_BINARIES:-}
if [ -z "$bin" ]; then
    cargo build --release --locked
    bin=target/release
fi
man="$prefix/share/man/man1"
bash_dir="$prefix/share/bash-completion/completions"
zsh_dir="$prefix/share/zsh/site-functions"
fish_dir="$prefix/share/fish/vendor_completions.d"
install -d "$prefix/bin" "$man" "$bash_dir" "$zsh_dir" "$fish_dir"
for b in berthd berthctl berth-shim; do
    install -m 0755 "$bin/$b" "$prefix/bin/$b"
done
ctl="$prefix/bin/berthctl"
"$ctl" man "$man" >/dev/null
"$ctl" completion bash >"$bash_dir/berthctl"
"$ctl" completion zsh >"$zsh_dir/_berthctl"
"$ctl" completion fish >"$fish_dir/berthctl.fish"
echo "installed berthd, berthctl and berth-shim in $prefix/bin, man pages in $man"
