#!/usr/bin/env bash
# Validates docker-compose.yml and the files it uses without a Docker engine (none is needed, none is run):
#   - 'docker-compose config' parses and resolves the file (Debian's docker-compose package);
#   - the services, pinned images and build files are the expected ones;
#   - the Dovecot config parses with doveconf when Dovecot is installed (same 2.3 series as the image).
# Fails loudly (non-zero exit, message on stderr) on the first problem.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
fail() { echo "validate-compose: $*" >&2; exit 1; }

command -v docker-compose >/dev/null || fail "docker-compose not found (apt-get install docker-compose, or run scripts/setup.sh)"
resolved=$(docker-compose -f docker-compose.yml config) || fail "docker-compose config rejected docker-compose.yml"
services=$(docker-compose -f docker-compose.yml config --services | sort | tr '\n' ' ')
[ "$services" = "dovecot keys-init smimeproxy vault vault-init " ] || fail "unexpected services: $services"

vault_images=$(grep -E '^\s+image: hashicorp/vault' <<<"$resolved" | sort -u | sed 's/^ *//')
[ "$vault_images" = "image: hashicorp/vault:1.19.5" ] || fail "vault image is not pinned to hashicorp/vault:1.19.5: $vault_images"
grep -q 'condition: service_completed_successfully' <<<"$resolved" || fail "init steps are not awaited"
grep -q "127.0.0.1:1143:1143\|host_ip: 127.0.0.1" <<<"$resolved" || fail "smimeproxy port is not published on loopback only"
if grep -Eq '^\s+- "?(0\.0\.0\.0:)?[0-9]+:[0-9]+"?$' docker-compose.yml; then
  fail "a port is published on all host interfaces"
fi

for f in Dockerfile .dockerignore deploy/compose/empty.toml deploy/compose/dovecot/Dockerfile \
  deploy/compose/dovecot/dovecot.conf deploy/compose/dovecot/users deploy/compose/dovecot/seed.sh \
  testdata/thunderbird/Bob.p12 testdata/thunderbird/alice.env.eml; do
  [ -f "$f" ] || fail "missing $f"
done
grep -q '^FROM golang:1.26' Dockerfile || fail "Dockerfile does not build with golang:1.26"
grep -q '^USER 65532' Dockerfile || fail "Dockerfile does not run as a non-root user"
sh -n deploy/compose/dovecot/seed.sh || fail "seed.sh has a syntax error"

if command -v doveconf >/dev/null || [ -x /usr/bin/doveconf ]; then
  out=$(doveconf -n -c deploy/compose/dovecot/dovecot.conf 2>&1) || fail "doveconf rejected deploy/compose/dovecot/dovecot.conf: $out"
  if grep -qi 'warning\|obsolete' <<<"$out"; then fail "doveconf warns: $out"; fi
else
  echo "validate-compose: doveconf not installed, Dovecot config not parsed" >&2
fi
echo "validate-compose: ok (docker-compose.yml resolves; 5 services; not run: no Docker engine here)"
