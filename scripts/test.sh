#!/usr/bin/env bash
# The project's test command (README, .ci/run): installs and builds what the tests need, then runs every Go
# test against real Dovecot, a real Vault dev server and real clients. Fails loudly.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
./scripts/setup.sh
SMIMEPROXY_VAULT_BIN=$(./scripts/build-vault.sh)
export SMIMEPROXY_VAULT_BIN
echo "== gofmt" >&2
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go' -not -path './tools/*'))
if [ -n "$unformatted" ]; then
  echo "gofmt: not formatted:" >&2
  echo "$unformatted" >&2
  exit 1
fi
echo "== go vet" >&2
go vet ./...
echo "== go test" >&2
go test -count=1 -timeout 40m "$@" ./...
