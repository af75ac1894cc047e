# shellcheck shell=bash disable=SC2034  # (YAML_PY and APT_UPDATED are for the sourcing script)
# scripts/lib.sh: what scripts/check-deploy and scripts/check-live share. Source it:
#
#   PROG=check-live; . "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
#
# say / die              one line to stdout / "$PROG: message" to stderr and exit 2
# apt_update_once        apt-get update, at most once per run
# apt_install PKG...     install Debian packages (quietly, bounded in time)
# need CMD PKG           make sure CMD is on PATH, installing Debian package PKG if it is not
# find_yaml_python [VENV] a python3 that can `import yaml` (a venv's, the PATH one, Debian's),
#                        installing Debian python3-yaml as a last resort; sets YAML_PY
# extract_rules PY SRC DST   the PrometheusRule's spec in SRC (a manifest or a kustomize
#                        build) as a Prometheus rule file DST: scripts/extract-rules

: "${PROG:=$(basename "$0")}"
LIB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

say() { printf '%s\n' "$*"; }
die() { printf '%s: %s\n' "$PROG" "$*" >&2; exit 2; }

APT_UPDATED=0
apt_update_once() {
  command -v apt-get >/dev/null || return 1
  ((APT_UPDATED)) && return 0
  say "    apt-get update"
  timeout 300 apt-get update -qq >/dev/null || return 1
  APT_UPDATED=1
}

apt_install() {
  command -v apt-get >/dev/null || die "need $* but apt-get is not available"
  apt_update_once || die "apt-get update failed"
  say "    apt-get install $*"
  DEBIAN_FRONTEND=noninteractive timeout 600 \
    apt-get install -y -qq --no-install-recommends "$@" >/dev/null || die "apt-get install $* failed"
}

need() {
  command -v "$1" >/dev/null && return 0
  apt_install "$2"
  command -v "$1" >/dev/null || die "$1 not found after installing Debian package $2"
}

YAML_PY=
find_yaml_python() {
  local c
  for c in ${1:+"$1/bin/python"} python3 /usr/bin/python3; do
    if "$c" -c 'import yaml' 2>/dev/null; then
      YAML_PY=$(command -v "$c")
      return 0
    fi
  done
  apt_install python3 python3-yaml
  /usr/bin/python3 -c 'import yaml' || die "python3-yaml installed but /usr/bin/python3 cannot import yaml"
  YAML_PY=/usr/bin/python3
}

extract_rules() {
  "$1" "$LIB_DIR/extract-rules" "$2" "$3"
}
