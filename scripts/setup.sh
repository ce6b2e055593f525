#!/usr/bin/env bash
# Installs what the tests and the benchmark need on a fresh Debian machine (idempotent): Dovecot (the real
# upstream IMAP server in tests), isync (mbsync, a real client), OpenSSL (fixtures, reference decryption),
# Python 3 (imaplib, a real client; imaptest's gen-mbox.py), docker-compose (only to validate
# docker-compose.yml), and builds the Vault dev server and Dovecot's imaptest (../shared/imaptest) into their
# caches. Fails loudly if anything cannot be installed.
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
# Dovecot's imaptest (cmd/smimeproxy/imaptest_test.go) lives next to the repository in ../shared/imaptest:
# build it once now, before the tests (build.sh installs its own build dependencies; a warm run is a no-op).
# gen-mbox.py needs python3 and openssl, installed above.
imaptest=${SMIMEPROXY_IMAPTEST_DIR:-$(cd "$(dirname "$0")/.." && pwd)/../shared/imaptest}
if [ -x "$imaptest/build.sh" ]; then
  "$imaptest/build.sh" >/dev/null
else
  case "${CI:-}" in
    ""|false|0) echo "setup: warning: no $imaptest/build.sh: the TestImaptest* tests will skip (in CI they fail)" >&2 ;;
    *) echo "setup: no $imaptest/build.sh (Dovecot's imaptest, needed by the TestImaptest* tests)" >&2; exit 1 ;;
  esac
fi
