# Shared set-up of scripts/demo and .ci/run: source it, then call the functions.
# Every step is idempotent: what is already there is kept.

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$REPO/.venv"
# Compiled PyTensor graphs are cached inside the repository (git-ignored).
export PYTENSOR_FLAGS="base_compiledir=$REPO/.cache/pytensor"

step() { printf '\n==> %s\n' "$*"; }

_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

_installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"
}

# apt_install [--update] PACKAGE...: install the Debian packages that are missing.
apt_install() {
    local update=0 missing=() pkg
    if [ "${1:-}" = "--update" ]; then update=1; shift; fi
    export DEBIAN_FRONTEND=noninteractive
    if [ "$update" -eq 1 ]; then
        step "apt-get update"
        _root apt-get update
    fi
    for pkg in "$@"; do _installed "$pkg" || missing+=("$pkg"); done
    if [ "${#missing[@]}" -eq 0 ]; then
        step "Debian packages present: $*"
        return
    fi
    [ "$update" -eq 1 ] || { step "apt-get update"; _root apt-get update; }
    step "apt-get install ${missing[*]}"
    _root apt-get install -y --no-install-recommends "${missing[@]}"
}

# ensure_venv [EXTRAS]: create .venv when absent (installing python3-venv if venv cannot),
# then pip install -e the repository into it, e.g. ensure_venv or ensure_venv test.
ensure_venv() {
    local spec="$REPO"
    if [ -n "${1:-}" ]; then spec="$REPO[$1]"; fi
    if [ ! -x "$VENV/bin/python" ]; then
        step "python3 -m venv .venv"
        if ! python3 -m venv "$VENV"; then
            rm -rf "$VENV"
            apt_install python3-venv
            python3 -m venv "$VENV"
        fi
    fi
    step "pip install -e '$spec'"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e "$spec"
}
