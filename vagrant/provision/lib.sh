#!/usr/bin/env bash
# Helpers shared by the provisioning scripts (sourced, not run). Every step is idempotent: files
# are replaced only when their content changes, downloads happen only when the pinned version is
# not installed yet, and units are restarted only when something they use changed.
# shellcheck shell=bash

REMORA_HOME=/opt/remora
# shellcheck disable=SC2034 # used by the scripts that source this file
FILES=$REMORA_HOME/vagrant/files
# shellcheck disable=SC2034
SECRETS=$REMORA_HOME/vagrant/secrets
CHANGED_UNITS=()

log() { echo "provision[$(hostname)]: $*"; }

# install_file <source> <dest> <mode> [owner:group] [unit-to-restart-on-change]
install_file() {
  local src=$1 dest=$2 mode=$3 owner=${4:-root:root} unit=${5:-}
  if [ -f "$dest" ] && cmp -s "$src" "$dest"; then
    chmod "$mode" "$dest"
    chown "$owner" "$dest"
    return 0
  fi
  install -D -m "$mode" -o "${owner%%:*}" -g "${owner##*:}" "$src" "$dest"
  log "installed $dest"
  if [ -n "$unit" ]; then CHANGED_UNITS+=("$unit"); fi
}

# install_text <dest> <mode> <owner:group> <unit-or-empty> <<< "content"
install_text() {
  local tmp
  tmp=$(mktemp)
  cat >"$tmp"
  install_file "$tmp" "$1" "$2" "$3" "${4:-}"
  rm -f "$tmp"
}

# fetch_verified <url> <dest> <sha256|sha512-base64-integrity|sums-url>
# Verifies a download against a checksum pinned in this repository, or, where none could be
# pinned honestly, against the checksum file published next to the download (which protects
# against corruption but not against a compromised server; the comment at the call says which).
fetch_verified() {
  local url=$1 dest=$2 check=$3 actual expected
  curl -fsSL --retry 3 -o "$dest.part" "$url"
  case $check in
    sha512-*)
      actual="sha512-$(openssl dgst -sha512 -binary "$dest.part" | base64 -w0)"
      expected=$check
      ;;
    https://*)
      expected=$(curl -fsSL --retry 3 "$check" | awk -v f="$(basename "$url")" '$2 == f || $2 == "*"f { print $1 }')
      actual=$(sha256sum "$dest.part" | awk '{ print $1 }')
      ;;
    *)
      expected=$check
      actual=$(sha256sum "$dest.part" | awk '{ print $1 }')
      ;;
  esac
  if [ -z "$expected" ] || [ "$actual" != "$expected" ]; then
    rm -f "$dest.part"
    echo "checksum mismatch for $url: expected ${expected:-<none found>}, got $actual" >&2
    exit 1
  fi
  mv "$dest.part" "$dest"
}

# Restarts (or starts) every unit whose files changed, and enables+starts the given units.
apply_units() {
  systemctl daemon-reload
  local unit
  for unit in "$@"; do systemctl enable --quiet "$unit"; done
  for unit in $(printf '%s\n' "${CHANGED_UNITS[@]}" | sort -u); do
    log "restarting $unit (its configuration changed)"
    systemctl restart "$unit"
  done
  for unit in "$@"; do systemctl start "$unit"; done
  CHANGED_UNITS=()
}

# wait_until <what> <seconds> <command...>
wait_until() {
  local what=$1 seconds=$2 i
  shift 2
  for ((i = 0; i < seconds; i++)); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 1
  done
  echo "timed out after ${seconds}s waiting for $what" >&2
  return 1
}
