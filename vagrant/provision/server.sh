#!/usr/bin/env bash
# The server VM: Consul server, nats-server (pinned release) with per-role NKey users, Jaeger
# all-in-one (pinned release), and Remora control; then issues each app VM's node token into
# Consul KV (where that VM's provisioning picks it up) and creates the demo intention.
# Idempotent.
#
#   server.sh <server-ip> "<node>=<service>[,<service>...] ..."
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source /opt/remora/vagrant/provision/lib.sh

NATS_VERSION=2.10.22
# No SHA-256 for the nats-server archive is pinned here (it could not be verified offline when
# this was written); the download is checked against the SHA256SUMS file of the same release.
NATS_SHA256=${NATS_SHA256:-https://github.com/nats-io/nats-server/releases/download/v${NATS_VERSION}/SHA256SUMS}
JAEGER_VERSION=1.62.0
# Jaeger publishes jaeger-<v>-linux-amd64.sha256sum.txt with the checksums of the files inside the
# archive; the extracted binary is checked against it (nothing is pinned here, for the same reason).
JAEGER_SUMS=https://github.com/jaegertracing/jaeger/releases/download/v${JAEGER_VERSION}/jaeger-${JAEGER_VERSION}-linux-amd64.sha256sum.txt
TOKENS_KV=remora-lab/node-tokens

ip=${1:?usage: server.sh <server-ip> "<node>=<services> ..."}
nodes=${2:?usage: server.sh <server-ip> "<node>=<services> ..."}

# --- Consul server (single-server lab) ------------------------------------------------------
install_text /etc/consul.d/consul.hcl 0640 root:consul consul.service <<HCL
datacenter       = "dc1"
node_name        = "server"
data_dir         = "/var/lib/consul"
server           = true
bootstrap_expect = 1
bind_addr        = "$ip"
advertise_addr   = "$ip"
client_addr      = "127.0.0.1 $ip"
ui_config {
  enabled = true
}
HCL
apply_units consul.service
wait_until "a Consul leader" 60 sh -c 'curl -fsS http://127.0.0.1:8500/v1/status/leader | grep -q :'

# --- nats-server ----------------------------------------------------------------------------
if [ "$(/usr/local/bin/nats-server --version 2>/dev/null)" != "nats-server: v$NATS_VERSION" ]; then
  tmp=$(mktemp -d)
  archive=nats-server-v${NATS_VERSION}-linux-amd64.tar.gz
  fetch_verified "https://github.com/nats-io/nats-server/releases/download/v${NATS_VERSION}/$archive" "$tmp/$archive" "$NATS_SHA256"
  tar -xzf "$tmp/$archive" -C "$tmp"
  install -m 0755 "$tmp/nats-server-v${NATS_VERSION}-linux-amd64/nats-server" /usr/local/bin/nats-server
  rm -rf "$tmp"
  log "installed $(/usr/local/bin/nats-server --version)"
fi
install_file "$FILES/nats-server.conf" /etc/nats/nats-server.conf 0644 root:root nats-server.service
install_file "$SECRETS/nats-auth.conf" /etc/nats/nats-auth.conf 0644 root:root nats-server.service
install_file "$FILES/nats-server.service" /etc/systemd/system/nats-server.service 0644 root:root nats-server.service

# --- Jaeger ---------------------------------------------------------------------------------
if [ "$(cat /usr/local/lib/jaeger.version 2>/dev/null)" != "$JAEGER_VERSION" ]; then
  tmp=$(mktemp -d)
  dir=jaeger-${JAEGER_VERSION}-linux-amd64
  curl -fsSL --retry 3 -o "$tmp/jaeger.tgz" "https://github.com/jaegertracing/jaeger/releases/download/v${JAEGER_VERSION}/$dir.tar.gz"
  tar -xzf "$tmp/jaeger.tgz" -C "$tmp"
  expected=$(curl -fsSL --retry 3 "$JAEGER_SUMS" | awk -v f="$dir/jaeger-all-in-one" '$2 == f || $2 == "*"f { print $1 }')
  actual=$(sha256sum "$tmp/$dir/jaeger-all-in-one" | awk '{ print $1 }')
  if [ -z "$expected" ] || [ "$expected" != "$actual" ]; then
    echo "checksum mismatch for jaeger-all-in-one: expected ${expected:-<none found>}, got $actual" >&2
    exit 1
  fi
  install -m 0755 "$tmp/$dir/jaeger-all-in-one" /usr/local/bin/jaeger-all-in-one
  echo "$JAEGER_VERSION" >/usr/local/lib/jaeger.version
  rm -rf "$tmp"
  log "installed Jaeger $JAEGER_VERSION"
fi
install_file "$FILES/jaeger.service" /etc/systemd/system/jaeger.service 0644 root:root jaeger.service

# --- Remora control -------------------------------------------------------------------------
install_file "$FILES/control.json" /etc/remora/control.json 0644 root:root remora-control.service
install_file "$SECRETS/control.creds" /etc/remora/nats-control.creds 0640 root:remora remora-control.service
install_file "$SECRETS/operator.creds" /etc/remora/nats-operator.creds 0600 root:root
install_text /etc/remora/control.env 0600 root:root remora-control.service <<ENV
REMORA_CONTROL_OPERATOR_TOKEN=$(cat "$SECRETS/operator-token")
ENV
install_file "$REMORA_HOME/systemd/remora-control.service" /etc/systemd/system/remora-control.service 0644 root:root remora-control.service
apply_units nats-server.service jaeger.service remora-control.service

# --- node tokens for the app VMs, and the demo intention --------------------------------------
operator() {
  REMORA_CLI_NATS_SERVERS=nats://127.0.0.1:4222 \
    REMORA_CLI_NATS_CREDS_FILE=/etc/remora/nats-operator.creds \
    REMORA_CLI_OPERATOR_TOKEN=$(cat "$SECRETS/operator-token") \
    /usr/local/bin/node "$REMORA_HOME/bin/remora.js" "$@"
}
for entry in $nodes; do
  node_name=${entry%%=*}
  if consul kv get "$TOKENS_KV/$node_name" >/dev/null 2>&1; then
    log "node token for $node_name already issued"
    continue
  fi
  token=''
  for _ in $(seq 60); do
    # control may still be starting; one argument per service glob is intended
    # shellcheck disable=SC2046
    token=$(operator token create "$node_name" $(echo "${entry#*=}" | tr ',' ' ') 2>/dev/null | awk 'NF { line = $NF } END { print line }') || token=''
    [ -n "$token" ] && break
    sleep 2
  done
  [ -n "$token" ] || { echo "control did not issue a token for $node_name" >&2; exit 1; }
  consul kv put "$TOKENS_KV/$node_name" "$token" >/dev/null
  log "issued the node token for $node_name (${entry#*=})"
done
wait_until "the intention web -> api" 60 operator intention create web api
log "server provisioning done: Consul UI http://$ip:8500/, Jaeger http://$ip:16686/"
