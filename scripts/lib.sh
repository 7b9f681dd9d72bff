# shellcheck shell=sh
# Shared by the scripts (sourced, POSIX sh).

# install_missing PACKAGE:FILE...: install (apt-get, as root or through
# sudo) every Debian package whose FILE is missing.
install_missing() {
    need=""
    for pair in "$@"; do
        [ -e "${pair#*:}" ] || need="$need ${pair%%:*}"
    done
    [ -n "$need" ] || return 0
    echo "installing:$need"
    SUDO=""
    [ "$(id -u)" = 0 ] || SUDO=sudo
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    # shellcheck disable=SC2086 # the packages are words
    $SUDO apt-get install -y -qq --no-install-recommends $need >/dev/null
}
