#!/usr/bin/env bash
# Compiles proto/ (and the third-party protos it uses, from npm packages) into one
# Buf image at $1, from the tree at $2 (default: this checkout). protoc is Debian's.
set -euo pipefail
out=$1
root=${2:-.}
here=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$(dirname "$out")"
node "$here/scripts/validate-descriptor.mjs" "$out.validate"
nm=$here/node_modules
files=$(cd "$root/proto" && find licensd -name '*.proto' | sort)
protoc -I "$root/proto" -I "$nm/google-proto-files" -I "$nm/grpc-health-check/proto" \
  -I "$nm/@grpc/reflection/build/proto" --descriptor_set_in="$out.validate" \
  --include_imports --include_source_info -o "$out" \
  $files google/rpc/error_details.proto google/rpc/status.proto \
  health/v1/health.proto grpc/reflection/v1/reflection.proto grpc/reflection/v1alpha/reflection.proto
rm -f "$out.validate"
