#!/usr/bin/env bash
# Installs what `npm run bench` needs beyond the tests' tools: the load generators wrk and
# h2load, and psql (bench/usage.ts's COPY baseline). Idempotent; called by `npm run bench`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure-test-deps.sh

need=()
have() { command -v "$1" >/dev/null 2>&1; }
have wrk || need+=(wrk)
have h2load || need+=(nghttp2-client)
have psql || need+=(postgresql-client)

if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ] || ! have apt-get; then
    echo "ensure-bench-deps: missing ${need[*]}; install them (Debian: apt-get install ${need[*]})" >&2
    exit 1
  fi
  echo "ensure-bench-deps: installing ${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
