#!/usr/bin/env bash
# Installs what the tests and code generation need from Debian and starts the machine's
# PostgreSQL when it is installed but down. Idempotent and quick when all is there; called
# by `npm test` (pretest), .ci/run and scripts/ensure-bench-deps.sh. The load generators
# only the benchmarks use (wrk, h2load) are installed by scripts/ensure-bench-deps.sh.
set -euo pipefail

need=()
have() { command -v "$1" >/dev/null 2>&1; }
have protoc || need+=(protobuf-compiler)
have grpc_python_plugin || need+=(protobuf-compiler-grpc)
have protoc-gen-go || need+=(protoc-gen-go)
have protoc-gen-go-grpc || need+=(protoc-gen-go-grpc)
# The Go module clients/go is built and tested in CI (scripts/check-go.sh) against Debian's Go
# gRPC, protobuf and genproto (errdetails) libraries. golang/protobuf must be the 1.5 package
# (an API v2 shim; it replaces the 1.3 one gRPC's package would otherwise pull in): with 1.3,
# gRPC's codec panics marshalling any generated message with a oneof.
have go || need+=(golang-go)
[ -d /usr/share/gocode/src/google.golang.org/grpc ] || need+=(golang-google-grpc-dev)
[ -d /usr/share/gocode/src/google.golang.org/protobuf ] || need+=(golang-google-protobuf-dev)
[ -d /usr/share/gocode/src/google.golang.org/genproto/googleapis/rpc/errdetails ] || need+=(golang-google-genproto-dev)
grep -q google.golang.org/protobuf /usr/share/gocode/src/github.com/golang/protobuf/proto/proto.go 2>/dev/null ||
  need+=(golang-github-golang-protobuf-1-5-dev)
# @licensd/client's portability test runs the verifiers in headless Chromium (playwright-core drives it).
have chromium || need+=(chromium)
# test/support/pgbouncer.ts runs PgBouncer (transaction pooling) in front of the test PostgreSQL.
[ -x /usr/sbin/pgbouncer ] || have pgbouncer || need+=(pgbouncer)
# The failover test (test/cluster/failover.test.ts) builds a pg_auto_failover formation (monitor, primary,
# synchronous standby) from Debian's PostgreSQL 15 binaries.
{ have pg_autoctl && [ -f /usr/lib/postgresql/15/lib/pgautofailover.so ]; } || need+=(postgresql-15-auto-failover)
have curl || need+=(curl)
have jq || need+=(jq)
have openssl || need+=(openssl)
/usr/bin/python3 -c 'import grpc, google.protobuf' >/dev/null 2>&1 || need+=(python3-grpcio python3-protobuf)
/usr/bin/python3 -c 'import cryptography.hazmat.primitives.asymmetric.ed25519' >/dev/null 2>&1 || need+=(python3-cryptography)
# The Python client package (clients/python) is installed by the tests into a fresh venv
# (`python3 -m venv --system-site-packages`, then `pip install --no-build-isolation`), offline.
/usr/bin/python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || need+=(python3-venv)
/usr/bin/python3 -m pip --version >/dev/null 2>&1 || need+=(python3-pip)
/usr/bin/python3 -c 'import setuptools, wheel' >/dev/null 2>&1 || need+=(python3-setuptools python3-wheel)

if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ] || ! have apt-get; then
    echo "ensure-test-deps: missing ${need[*]}; install them (Debian: apt-get install ${need[*]})" >&2
    exit 1
  fi
  echo "ensure-test-deps: installing ${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# The tests use the PostgreSQL on 127.0.0.1:5432 (LICENSD_TEST_DATABASE_URL overrides it).
# Start the machine's cluster if it is installed and down; with none installed at all,
# test/support/global-setup.ts starts an embedded PostgreSQL instead.
if [ -z "${LICENSD_TEST_DATABASE_URL:-}" ] && have pg_lsclusters && have pg_ctlcluster; then
  if ! (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null; then
    for v in $(ls /etc/postgresql 2>/dev/null); do
      echo "ensure-test-deps: starting PostgreSQL $v" >&2
      pg_ctlcluster --skip-systemctl-redirect "$v" main start || true
    done
  fi
fi
