#!/usr/bin/env bash
# Builds the real HashiCorp Vault v1.19.5 server (tools/vault, its own Go module) once into a cache directory
# keyed by the module's content hash, and prints the binary's path. A warm run is a no-op.
# Cold build: ~10 min and ~5 GB RAM on 2 cores (see tools/vault/README.md).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
src="$root/tools/vault"
hash=$(cat "$src/go.mod" "$src/go.sum" "$src/main.go" | sha256sum | cut -c1-16)
cache="${SMIMEPROXY_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/smimeproxy}/vault-$hash"
bin="$cache/vault"
if [ -x "$bin" ]; then
  echo "$bin"
  exit 0
fi
mkdir -p "$cache"
echo "building Vault v1.19.5 into $cache (cold build takes ~10 min)..." >&2
(cd "$src" && go build -trimpath -ldflags='-s -w' -o "$bin.tmp" .) >&2
mv "$bin.tmp" "$bin"
echo "$bin"
