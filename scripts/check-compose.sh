#!/usr/bin/env bash
# CI step (scripts/test.sh): validates docker-compose.yml and its build files with scripts/validate-compose.sh
# (docker-compose config, pinned images, loopback-only ports, non-root image, doveconf), then checks that the
# validator catches broken files: each case copies the files it reads into a temporary root, breaks one, and
# requires validate-compose.sh to fail with the expected message. No Docker engine is needed or run. This is
# not part of "go test" (it needs docker-compose and doveconf from scripts/setup.sh). Fails loudly.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
fail() { echo "check-compose: $*" >&2; exit 1; }

out=$("$root/scripts/validate-compose.sh" 2>&1) || fail "validate-compose.sh failed on the tree: $out"
grep -q 'validate-compose: ok' <<<"$out" || fail "validate-compose.sh did not report ok: $out"

files=(docker-compose.yml Dockerfile .dockerignore scripts/validate-compose.sh deploy/compose/empty.toml
  deploy/compose/dovecot/Dockerfile deploy/compose/dovecot/dovecot.conf deploy/compose/dovecot/users
  deploy/compose/dovecot/seed.sh testdata/thunderbird/Bob.p12 testdata/thunderbird/alice.env.eml)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# case: name|file|text to replace|replacement|message validate-compose.sh must print
cases=(
  'yaml syntax|docker-compose.yml|services:|services:\n  - broken|docker-compose config rejected'
  'unpinned vault|docker-compose.yml|hashicorp/vault:1.19.5|hashicorp/vault:latest|not pinned'
  'public port|docker-compose.yml|"127.0.0.1:9143:9143"|"9143:9143"|all host interfaces'
  'root user|Dockerfile|USER 65532:65532|USER root|non-root'
  'dovecot config|deploy/compose/dovecot/dovecot.conf|ssl = required|ssl = maybe-not|doveconf rejected'
)
for c in "${cases[@]}"; do
  IFS='|' read -r name file old new want <<<"$c"
  dir="$tmp/$RANDOM$RANDOM"
  for f in "${files[@]}"; do
    mkdir -p "$dir/$(dirname "$f")"
    cp "$root/$f" "$dir/$f"
  done
  OLD="$old" NEW="$new" python3 - "$dir/$file" <<'PY' || fail "$name: $file does not contain '$old'"
import os, sys
p = sys.argv[1]
s = open(p).read()
old, new = os.environ["OLD"], os.environ["NEW"].replace("\\n", "\n")
if old not in s:
    sys.exit(1)
open(p, "w").write(s.replace(old, new, 1))
PY
  if got=$("$dir/scripts/validate-compose.sh" 2>&1); then
    fail "$name: validate-compose.sh accepted a broken $file"
  fi
  grep -qF "$want" <<<"$got" || fail "$name: validate-compose.sh failed without '$want': $got"
  echo "check-compose: catches $name" >&2
done
echo "check-compose: ok"
