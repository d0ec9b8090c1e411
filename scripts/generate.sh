#!/usr/bin/env bash
# Rebuilds gen/ts, gen/python and clients/go/gen (the Go module's stubs) from proto/.
# Run as `npm run generate` (so node_modules/.bin and its Node 22 come first on PATH).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build-image.sh build/image.binpb

rm -rf gen/ts gen/python clients/go/gen
buf generate build/image.binpb --template buf.gen.yaml \
  --path licensd --path google/rpc --path health --path grpc/reflection
buf generate build/image.binpb --template buf.gen.python.yaml \
  --path licensd --path google/rpc --path buf/validate
# Go: into the module clients/go (buf.gen.go.yaml says why). google/rpc is not generated
# for Go: the module uses genproto's errdetails, which gRPC already links, and a second
# copy of the same proto files would collide in the protobuf registry.
buf generate build/image.binpb --template buf.gen.go.yaml --path licensd --path buf/validate

# Python packages: every generated folder but gen/python/google itself gets an
# __init__.py; leaving google/ without one lets it merge with the system's
# google.protobuf (a namespace package). gen/python is the one generated copy: the
# licensd-client package (clients/python/pyproject.toml) takes its stubs from here when
# it is built, so CI's freshness check of gen/ covers the package too.
find gen/python -type d ! -path gen/python ! -path gen/python/google -exec touch {}/__init__.py \;
