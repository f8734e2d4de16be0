#!/usr/bin/env bash
# Prepares the compose environment: builds the Remora images and generates the secrets into
# ./secrets (NATS NKey credentials per role, the operator token, the Consul gossip key). Node
# tokens are issued later by the `bootstrap` container, once control runs. Safe to run again:
# existing secrets are kept unless you pass --force.
#
#   ./setup.sh [--force]     then:  docker-compose up -d
set -euo pipefail
cd "$(dirname "$0")"

force=()
if [ "${1:-}" = "--force" ]; then force=(--force); fi

if command -v docker-compose >/dev/null 2>&1; then
  compose=(docker-compose)
elif docker compose version >/dev/null 2>&1; then
  compose=(docker compose)
else
  echo "setup: neither docker-compose nor the docker compose plugin is installed" >&2
  echo "       install one, e.g.: sudo apt-get install -y docker-compose" >&2
  exit 1
fi

echo "setup: building the Remora images (remora:local, remora-legacy:local)"
"${compose[@]}" -f compose.yaml build bootstrap legacy

mkdir -p secrets
chmod 0700 secrets
echo "setup: generating secrets into $(pwd)/secrets"
# The generator runs inside the image just built (Node 24 and the nats package are there), as the
# calling user so that the files belong to them.
docker run --rm --user "$(id -u):$(id -g)" \
  -v "$(pwd)/secrets:/out" \
  remora:local node /opt/remora/compose/gen-secrets.js /out --datacenter dc1 "${force[@]}"

cat <<'MSG'
setup: done. Next:
  docker-compose up -d                 # or: docker compose up -d
  docker-compose logs -f bootstrap     # node tokens and intentions
  curl -s http://127.0.0.1:8080/       # web calls api through the mesh
  Jaeger UI: http://127.0.0.1:16686/   Consul UI: http://127.0.0.1:8500/
MSG
