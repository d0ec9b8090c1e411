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
# examples/go (a program using the module) builds in the same GOPATH as licensd.dev/example-go.
ln -s "$root/examples/go" "$work/src/licensd.dev/example-go"
# The build cache is content-addressed, so keeping it between runs is safe and saves
# recompiling gRPC every time; -trimpath keeps the temporary directories out of the cache keys.
export GO111MODULE=off GOPATH="$work:$gocode" GOCACHE="${GOCACHE:-$root/build/go-cache}" GOFLAGS=-trimpath
cd "$work/src/licensd.dev/client"
if [ $# -gt 0 ]; then
  go "$@"
  exit
fi
pkgs=$(go list ./...)
go build ./...
go vet ./... licensd.dev/example-go
go test -count=1 ./...

# Module mode too, as users with a network build it: go.mod's requirements (and their
# go versions) are served from Debian's sources through a vendor directory, so a package
# imported from a module go.mod does not list fails here, not on a user's machine.
deps=$(go list -deps -f '{{if not .Standard}}{{.ImportPath}}{{end}}' ./... | grep -v '^licensd.dev/')
mod=$work/module
mkdir -p "$mod/vendor"
cp -r "$root/clients/go/." "$mod/"
# go.mod's require lines ("path version"), longest path first so a package finds its module.
requires=$(awk '/^require \(/{r=1; next} r && /^\)/{r=0} r && NF {print $1, $2}' "$mod/go.mod" | awk '{print length($1), $0}' | sort -rn | cut -d' ' -f2-)
{
  while read -r path version; do
    mine=$(echo "$deps" | grep -E "^${path//./\\.}(/|$)" || true)
    deps=$(echo "$deps" | grep -vE "^${path//./\\.}(/|$)" || true)
    [ -n "$mine" ] || continue
    govers=$(awk '/^go /{print $2; exit}' "$gocode/src/$path/go.mod" 2>/dev/null)
    echo "# $path $version"
    echo "## explicit${govers:+; go $govers}"
    echo "$mine"
    mkdir -p "$mod/vendor/$(dirname "$path")"
    ln -s "$gocode/src/$path" "$mod/vendor/$path"
  done <<<"$requires"
} >"$mod/vendor/modules.txt"
if [ -n "$deps" ]; then
  echo "check-go: go.mod requires no module for: $deps" >&2
  exit 1
fi
(cd "$mod" && GO111MODULE=on GOFLAGS="-mod=vendor -trimpath" GOPROXY=off GOPATH="$work/modcache" go build ./...)
echo "clients/go: $(echo "$pkgs" | wc -l) packages build, vet and test clean, in GOPATH and module mode ($(go version | cut -d' ' -f3))"
