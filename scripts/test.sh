#!/usr/bin/env bash
# The project's test command (README, .ci/run): installs and builds what the tests need, then runs both test
# tiers (internal/testenv/tier.go): the fast tier (plain "go test ./...": no services), then the integration
# tier (SMIMEPROXY_INTEGRATION=1: real Dovecot, Postfix, a real Vault dev server and real clients; a missing
# one fails), plus vet, tidy, staticcheck, -race, a fuzz smoke and the docker-compose check. Fails loudly.
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
echo "== go mod tidy -diff" >&2
go mod tidy -diff
echo "== staticcheck" >&2
# Installed into a temporary directory, then renamed into the cache: safe when two runs build at once.
bin="$HOME/.cache/smimeproxy/bin"
mkdir -p "$bin"
if [ ! -x "$bin/staticcheck-v0.8.2" ]; then
  tmp=$(mktemp -d "$bin/.staticcheck.XXXXXX")
  GOBIN="$tmp" go install honnef.co/go/tools/cmd/staticcheck@v0.8.2
  mv -f "$tmp/staticcheck" "$bin/staticcheck-v0.8.2"
  rmdir "$tmp"
fi
"$bin/staticcheck-v0.8.2" ./...
echo "== go test: fast tier (no services)" >&2
env -u SMIMEPROXY_INTEGRATION go test -count=1 -timeout 10m "$@" ./...
echo "== go test: integration tier (SMIMEPROXY_INTEGRATION=1)" >&2
SMIMEPROXY_INTEGRATION=1 go test -count=1 -timeout 40m "$@" ./...
echo "== go test -race (the packages with goroutines, integration tier)" >&2
SMIMEPROXY_INTEGRATION=1 go test -race -count=1 -timeout 30m "$@" ./proxy/ ./decrypt/ ./backend/ ./vaultcfg/ ./internal/observe/ ./submit/
echo "== fuzz smoke (every target, a few seconds each)" >&2
grep -rl --include='*_test.go' '^func Fuzz' . | sort | while read -r f; do
  for name in $(sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(.*/\1/p' "$f"); do
    echo "   $name ($(dirname "$f"))" >&2
    if ! out=$(go test -run '^$' -fuzz "^$name\$" -fuzztime 4s "$(dirname "$f")" 2>&1); then
      echo "$out" >&2
      exit 1
    fi
  done
done
echo "== docker-compose.yml (CI only, not go test)" >&2
./scripts/check-compose.sh
