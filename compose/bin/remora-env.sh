#!/bin/sh
# Runs a command with environment variables read from secret files, so that tokens never appear
# in compose files, `docker inspect` output or command lines:
#
#   remora-env.sh REMORA_AGENT_NODE_TOKEN=/run/remora/tokens/web-pod -- node bin/remora.js agent ...
#
# Each file is waited for (REMORA_ENV_WAIT_S seconds, default 120) because some are written by the
# bootstrap container after control starts. Trailing newlines are dropped.
set -eu

wait_s=${REMORA_ENV_WAIT_S:-120}
while [ "$#" -gt 0 ] && [ "$1" != "--" ]; do
  name=${1%%=*}
  file=${1#*=}
  waited=0
  while [ ! -s "$file" ]; do
    if [ "$waited" -ge "$wait_s" ]; then
      echo "remora-env: $file (for $name) did not appear within ${wait_s}s; run compose/setup.sh and check the bootstrap container's log" >&2
      exit 78
    fi
    sleep 1
    waited=$((waited + 1))
  done
  value=$(cat "$file")
  export "$name=$value"
  shift
done
[ "$#" -gt 0 ] && shift
if [ "$#" -eq 0 ]; then
  echo "usage: remora-env.sh VAR=file... -- command [args...]" >&2
  exit 2
fi
exec "$@"
