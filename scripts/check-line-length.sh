#!/usr/bin/env bash
# Prints each line of src/**/*.ts longer than 120 characters (Biome's lineWidth) as
# file:line: length, and exits 1 if there is any. Biome keeps code within the width but
# does not break strings, template literals (SQL) or comments; this catches those.
set -euo pipefail
cd "$(dirname "$0")/.."
long=$(git ls-files -z 'src/*.ts' 'clients/ts/src/*.ts' |
  LC_ALL=C.UTF-8 xargs -0 -r awk 'length > 120 { print FILENAME ":" FNR ": " length }')
[ -z "$long" ] || { echo "$long"; exit 1; }
