#!/bin/sh
# One-shot bootstrap of the compose datacenter, run by the `bootstrap` container once control is
# up: issues a node token for every agent (written to the shared tokens volume, one file per node)
# and creates the demo intentions. Safe to run again: existing tokens are kept.
#
#   bootstrap.sh <tokens-dir> <node>=<service-glob>[,<glob>...] ... [-- <source>><destination> ...]
#
# Needs REMORA_CLI_NATS_SERVERS, REMORA_CLI_NATS_CREDS_FILE (operator credentials) and
# REMORA_CLI_OPERATOR_TOKEN in the environment (compose/bin/remora-env.sh provides the token).
set -eu

remora() { node /opt/remora/bin/remora.js "$@"; }

# Control may still be starting: retry a command for up to ~2 minutes.
retry() {
  attempt=1
  until "$@"; do
    if [ "$attempt" -ge 60 ]; then
      echo "bootstrap: giving up on: $*" >&2
      return 1
    fi
    attempt=$((attempt + 1))
    sleep 2
  done
}

issue_token() { # issue_token <node> <globs-with-commas> <file>
  node_name=$1
  globs=$(echo "$2" | tr ',' ' ')
  # shellcheck disable=SC2086 # one argument per glob is intended
  out=$(remora token create "$node_name" $globs) || return 1
  token=$(printf '%s\n' "$out" | awk 'NF { line = $NF } END { print line }')
  [ -n "$token" ] || return 1
  umask 077
  printf '%s\n' "$token" >"$3.tmp"
  chmod 0644 "$3.tmp" # read by the agents' unprivileged user in other containers
  mv "$3.tmp" "$3"
}

tokens_dir=${1:?usage: bootstrap.sh <tokens-dir> <node>=<globs>... [-- <src>><dst>...]}
shift
mkdir -p "$tokens_dir"

while [ "$#" -gt 0 ] && [ "$1" != "--" ]; do
  node_name=${1%%=*}
  globs=${1#*=}
  file="$tokens_dir/$node_name"
  if [ -s "$file" ]; then
    echo "bootstrap: token for $node_name already present"
  else
    retry issue_token "$node_name" "$globs" "$file"
    echo "bootstrap: issued the node token for $node_name ($globs)"
  fi
  shift
done
[ "$#" -gt 0 ] && shift

for pair in "$@"; do
  src=${pair%%>*}
  dst=${pair#*>}
  retry remora intention create "$src" "$dst"
  echo "bootstrap: intention $src -> $dst allow"
done
echo "bootstrap: done"
