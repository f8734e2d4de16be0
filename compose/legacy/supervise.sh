#!/usr/bin/env bash
# The legacy group: one container run the way a VM runs it, with a local Consul client agent, the
# application and the Remora agent as sibling processes under this deliberately small supervisor
# (what systemd does on a real VM):
#   - starts them in order: consul, app, remora agent;
#   - restarts a program that exits, after a backoff that doubles from 1 s up to 30 s (and
#     starts again from 1 s once a program has run for a minute);
#   - forwards SIGHUP to the Remora agent (it re-reads its service definitions);
#   - on SIGTERM/SIGINT stops them in reverse order (the agent first, so it deregisters and
#     drains before the app goes away) and exits.
# Settings come from the environment (see compose.yaml, service `legacy`).
set -uo pipefail

: "${NODE_NAME:=legacy-vm}"
: "${CONSUL_RETRY_JOIN:=consul-server-1}"
: "${REMORA_HOME:=/opt/remora}"
: "${TOKEN_FILE:=/run/remora/tokens/$NODE_NAME}"

PROGRAMS=(consul app agent)
declare -A PID=() DELAY=() STARTED=()
stopping=0

run_consul() {
  local joins=()
  for j in $CONSUL_RETRY_JOIN; do joins+=("-retry-join=$j"); done
  exec consul agent -node="$NODE_NAME" -data-dir=/var/lib/consul -config-dir=/etc/consul.d \
    -bind=0.0.0.0 -client=127.0.0.1 "${joins[@]}"
}

run_app() {
  exec node "$REMORA_HOME/compose/apps/demo-http.js"
}

run_agent() {
  exec "$REMORA_HOME/compose/bin/remora-env.sh" "REMORA_AGENT_NODE_TOKEN=$TOKEN_FILE" -- \
    node "$REMORA_HOME/bin/remora.js" agent --config /etc/remora/agent.json
}

log() { echo "supervise: $*" >&2; }

start() {
  "run_$1" &
  PID[$1]=$!
  STARTED[$1]=$SECONDS
  log "started $1 (pid ${PID[$1]})"
}

stop_all() {
  stopping=1
  local i name
  for ((i = ${#PROGRAMS[@]} - 1; i >= 0; i--)); do
    name=${PROGRAMS[$i]}
    if [ -n "${PID[$name]:-}" ] && kill -0 "${PID[$name]}" 2>/dev/null; then
      log "stopping $name (pid ${PID[$name]})"
      kill -TERM "${PID[$name]}" 2>/dev/null
      wait "${PID[$name]}" 2>/dev/null
    fi
  done
  exit 0
}

reload_agent() {
  [ -n "${PID[agent]:-}" ] && kill -HUP "${PID[agent]}" 2>/dev/null
  log "forwarded SIGHUP to the agent"
}

trap stop_all TERM INT
trap reload_agent HUP

for name in "${PROGRAMS[@]}"; do
  DELAY[$name]=1
  start "$name"
done

while [ "$stopping" -eq 0 ]; do
  exited=''
  # `wait -n` returns when one program exits, or early when a trapped signal arrives.
  wait -n -p exited
  [ "$stopping" -eq 1 ] && break
  [ -z "${exited:-}" ] && continue
  for name in "${PROGRAMS[@]}"; do
    if [ "${PID[$name]:-}" = "$exited" ]; then
      # a program that ran for a minute is healthy again: start over with a short delay
      [ $((SECONDS - STARTED[$name])) -ge 60 ] && DELAY[$name]=1
      log "$name exited; restarting in ${DELAY[$name]} s"
      sleep "${DELAY[$name]}"
      DELAY[$name]=$((DELAY[$name] * 2 > 30 ? 30 : DELAY[$name] * 2))
      start "$name"
    fi
  done
done
