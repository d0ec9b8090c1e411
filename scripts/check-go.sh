#!/usr/bin/env bash
# Builds, vets and tests the Go module clients/go (module licensd.dev/client: the stubs
# `npm run generate` writes into clients/go/gen plus the hand-written package) with the Go
# toolchain and the gRPC/protobuf libraries Debian packages, offline: no module proxy is
# reachable, so it runs in GOPATH mode, with the module linked at its import path in a
# temporary GOPATH beside Debian's Go sources.
#
#   scripts/check-go.sh               build, vet and `go test` every package
#   scripts/check-go.sh GO-ARGS...    run `go GO-ARGS...` in the module in that setup instead
#                                     (test/e2e/go-client.test.ts builds its program this way)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
gocode=/usr/share/gocode
# golang/protobuf 1.3 (the other Debian package) predates protobuf's API v2: gRPC's codec
# marshals with it, and panics on any generated message with a oneof.
if ! grep -q 'google.golang.org/protobuf' "$gocode/src/github.com/golang/protobuf/proto/proto.go" 2>/dev/null; then
  echo "check-go: needs golang-github-golang-protobuf-1-5-dev (bash scripts/ensure-test-deps.sh)" >&2
  exit 1
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/src/licensd.dev"
ln -s "$root/clients/go" "$work/src/licensd.dev/client"
# The build cache is content-addressed, so keeping it between runs is safe and saves
# recompiling gRPC every time.
export GO111MODULE=off GOPATH="$work:$gocode" GOCACHE="${GOCACHE:-$root/build/go-cache}" GOFLAGS=
cd "$work/src/licensd.dev/client"
if [ $# -gt 0 ]; then
  go "$@"
  exit
fi
pkgs=$(go list ./...)
go build ./...
go vet ./...
go test -count=1 ./...
echo "clients/go: $(echo "$pkgs" | wc -l) packages build, vet and test clean ($(go version | cut -d' ' -f3))"
