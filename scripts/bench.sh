#!/usr/bin/env bash
# Runs the end-to-end decryption benchmark (cmd/smimebench, issue 6): it starts its own Dovecot and Vault dev
# server on 127.0.0.1, so it needs what scripts/setup.sh installs (run that first on a fresh machine) and root
# (Dovecot). Arguments go to smimebench, e.g. scripts/bench.sh -quick, or -n 1000 -size 100000 -big 50000000.
# Results are a table on stdout; progress on stderr. Fails loudly when a prerequisite is missing.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
fail() { echo "bench: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || fail "must run as root (the benchmark starts Dovecot, which drops privileges itself)"
command -v go >/dev/null || fail "go not found"
[ -x /usr/sbin/dovecot ] || fail "dovecot not installed at /usr/sbin/dovecot: run scripts/setup.sh"
command -v openssl >/dev/null || fail "openssl not found: run scripts/setup.sh"
id mail >/dev/null 2>&1 || fail "no system user 'mail' to own the test maildirs"
# The key store and the serve child use a Vault dev server: its binary is cached by scripts/build-vault.sh (a
# warm run only prints the path; a cold build takes ~10 min on 2 cores).
if [ -z "${SMIMEPROXY_VAULT_BIN:-}" ]; then
  bin=$("$root/scripts/build-vault.sh") || fail "cannot build the Vault dev server (scripts/build-vault.sh)"
  [ -x "$bin" ] || fail "no Vault binary at $bin"
fi
exec go run ./cmd/smimebench "$@"
