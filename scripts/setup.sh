#!/usr/bin/env bash
# Installs what the tests and the benchmark need on a fresh Debian machine (idempotent): Dovecot (the real
# upstream IMAP server in tests), isync (mbsync, a real client), OpenSSL (fixtures, reference decryption),
# Python 3 (imaplib, a real client), docker-compose (only to validate docker-compose.yml), and builds the Vault
# dev server into the cache. Fails loudly if anything cannot be installed.
set -euo pipefail
need=()
command -v dovecot >/dev/null || [ -x /usr/sbin/dovecot ] || need+=(dovecot-imapd)
command -v mbsync >/dev/null || need+=(isync)
command -v openssl >/dev/null || need+=(openssl)
command -v python3 >/dev/null || need+=(python3)
command -v curl >/dev/null || need+=(curl)
command -v docker-compose >/dev/null || need+=(docker-compose)
command -v systemd-analyze >/dev/null || need+=(systemd)   # verifies deploy/systemd units
if [ ${#need[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  echo "setup: installing ${need[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >&2
fi
# Debian starts the packaged dovecot service on install; tests run their own instance, so stop it (harmless
# when it is not running, e.g. in containers without systemd).
if command -v systemctl >/dev/null && systemctl is-active --quiet dovecot 2>/dev/null; then
  systemctl stop dovecot || true
fi
"$(dirname "$0")/build-vault.sh" >/dev/null
