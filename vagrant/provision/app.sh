#!/usr/bin/env bash
# An app VM: Consul client joined to the server, the demo services under systemd, and the Remora
# agent with this VM's node token (issued by the server VM's provisioning into Consul KV).
# Idempotent.
#
#   app.sh <node-name> <private-ip> <server-ip> "<service> ..."
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source /opt/remora/vagrant/provision/lib.sh

TOKENS_KV=remora-lab/node-tokens
usage='usage: app.sh <node-name> <private-ip> <server-ip> "<service> ..."'
node_name=${1:?$usage}
ip=${2:?$usage}
server_ip=${3:?$usage}
services=${4:?$usage}

# --- Consul client ---------------------------------------------------------------------------
install_text /etc/consul.d/consul.hcl 0640 root:consul consul.service <<HCL
datacenter     = "dc1"
node_name      = "$node_name"
data_dir       = "/var/lib/consul"
server         = false
bind_addr      = "$ip"
advertise_addr = "$ip"
client_addr    = "127.0.0.1"
retry_join     = ["$server_ip"]
HCL
apply_units consul.service
wait_until "Consul to join $server_ip" 120 sh -c 'curl -fsS http://127.0.0.1:8500/v1/status/leader | grep -q :'

# --- demo services (plain apps that know nothing about the mesh) -----------------------------
install_file "$FILES/remora-demo@.service" /etc/systemd/system/remora-demo@.service 0644
demo_units=()
for svc in $services; do
  install_file "$FILES/demo/$node_name/$svc.env" "/etc/remora/demo/$svc.env" 0644 root:root "remora-demo@$svc.service"
  install_file "$FILES/services/$node_name/$svc.json" "/etc/remora/services.d/$svc.json" 0644 root:root
  demo_units+=("remora-demo@$svc.service")
done
apply_units "${demo_units[@]}"

# --- the Remora agent ------------------------------------------------------------------------
wait_until "this node's token in Consul KV ($TOKENS_KV/$node_name)" 300 consul kv get "$TOKENS_KV/$node_name"
install_file "$FILES/agent.json" /etc/remora/agent.json 0644 root:root remora-agent.service
install_file "$SECRETS/agent.creds" /etc/remora/nats-agent.creds 0640 root:remora remora-agent.service
install_text /etc/remora/agent.env 0600 root:root remora-agent.service <<ENV
REMORA_AGENT_NODE=$node_name
REMORA_AGENT_NODE_TOKEN=$(consul kv get "$TOKENS_KV/$node_name")
ENV
install_file "$REMORA_HOME/systemd/remora-agent.service" /etc/systemd/system/remora-agent.service 0644 root:root remora-agent.service
# queued connections move to a proxy's successor during `remora restart-proxies`
install_file "$REMORA_HOME/systemd/remora-sysctl.conf" /etc/sysctl.d/60-remora.conf 0644
sysctl -q -p /etc/sysctl.d/60-remora.conf
apply_units remora-agent.service
# A changed service definition needs no restart: the agent re-reads services.d on SIGHUP.
systemctl reload remora-agent.service
log "app provisioning done: $(echo "$services" | tr ' ' ',') on $node_name ($ip)"
