#!/usr/bin/env bash
# Compiles and vets every generated Go package (gen/go, import path licensd.dev/gen/go) with
# the Go toolchain and the gRPC/protobuf libraries Debian packages, offline: GOPATH mode, with
# gen/go linked into a temporary GOPATH beside Debian's Go sources (no module proxy is reachable).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
gocode=/usr/share/gocode
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/src/licensd.dev/gen"
ln -s "$root/gen/go" "$work/src/licensd.dev/gen/go"
export GO111MODULE=off GOPATH="$work:$gocode" GOCACHE="$work/cache" GOFLAGS=
cd "$work/src/licensd.dev/gen/go"
pkgs=$(go list ./...)
go build ./...
go vet ./...
echo "gen/go: $(echo "$pkgs" | wc -l) packages build and vet clean ($(go version | cut -d' ' -f3))"
