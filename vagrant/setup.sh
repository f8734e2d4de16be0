#!/usr/bin/env bash
# Prepares the Vagrant lab on the host: generates the secrets the VMs need into ./secrets (NATS
# NKey credentials per role, the operator token, the Consul gossip key). The VMs receive them
# with the rest of the repository (rsync to /opt/remora). Node tokens are issued inside the lab
# by the server VM's provisioning. Safe to run again: existing secrets are kept unless --force.
#
#   ./setup.sh [--force]    then:  vagrant up
set -euo pipefail
cd "$(dirname "$0")"
root=$(cd .. && pwd)

force=()
if [ "${1:-}" = "--force" ]; then force=(--force); fi

for tool in vagrant rsync; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "setup: $tool is required on the host (e.g. sudo apt-get install -y $tool)" >&2
    exit 1
  fi
done

# The generator needs Node >= 22.18 and the repository's npm dependencies (the `nats` package).
node_bin=""
for candidate in "$root/node_modules/.bin/node" "$(command -v node || true)"; do
  if [ -n "$candidate" ] && [ -x "$candidate" ] &&
    "$candidate" -e 'const [a,b]=process.versions.node.split(".").map(Number); process.exit(a>22||(a===22&&b>=18)?0:1)'; then
    node_bin=$candidate
    break
  fi
done
if [ -z "$node_bin" ] || [ ! -d "$root/node_modules/nats" ]; then
  echo "setup: run 'npm ci' in $root first (it provides Node 24 and the nats package)" >&2
  exit 1
fi

"$node_bin" "$root/compose/gen-secrets.js" secrets --datacenter dc1 "${force[@]}"
echo "setup: done. Next: vagrant up   (then: curl -s http://192.168.56.11:8080/)"
