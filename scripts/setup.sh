#!/usr/bin/env bash
# Installs what the tests and the benchmark need on a fresh Debian machine (idempotent): Dovecot (the real
# upstream IMAP server in tests), isync (mbsync, a real client), OpenSSL (fixtures, reference decryption),
# Python 3 (imaplib, a real client; imaptest's gen-mbox.py), neomutt in tmux and Node.js/npm (imapflow) as
# real clients (cmd/smimeproxy/clients_test.go), docker-compose (only to validate docker-compose.yml), and builds
# the Vault dev server and Dovecot's imaptest (../shared/imaptest) and installs imapflow (npm ci) into their
# caches. Fails loudly if anything cannot be installed. Safe when two run at once (apt and npm under locks or
# into fresh directories).
set -euo pipefail
need=()
command -v dovecot >/dev/null || [ -x /usr/sbin/dovecot ] || need+=(dovecot-imapd)
command -v mbsync >/dev/null || need+=(isync)
command -v openssl >/dev/null || need+=(openssl)
command -v python3 >/dev/null || need+=(python3)
command -v curl >/dev/null || need+=(curl)
command -v docker-compose >/dev/null || need+=(docker-compose)
command -v systemd-analyze >/dev/null || need+=(systemd)   # verifies deploy/systemd units
command -v neomutt >/dev/null || need+=(neomutt)
command -v tmux >/dev/null || need+=(tmux)
command -v node >/dev/null || need+=(nodejs)
command -v npm >/dev/null || need+=(npm)
# The submission front end's tests (submit/): Postfix as the upstream submission server delivering by LMTP into
# Dovecot, swaks as a real SMTP client. Postfix is installed unconfigured (the tests run their own instance).
[ -x /usr/lib/dovecot/lmtp ] || need+=(dovecot-lmtpd)
command -v postfix >/dev/null || [ -x /usr/sbin/postfix ] || need+=(postfix)
command -v swaks >/dev/null || need+=(swaks)
if [ ${#need[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  echo "setup: installing ${need[*]}" >&2
  # One apt-get update per install, and one setup at a time in apt (a second run waits, then finds all there).
  $sudo flock /tmp/smimeproxy-setup-apt.lock sh -c \
    'echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
     apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"' sh "${need[@]}" >&2
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
  # The TestImaptest* tests are integration-tier: with SMIMEPROXY_INTEGRATION=1 (scripts/test.sh, CI) they fail
  # without it, so fail here, early.
  echo "setup: no $imaptest/build.sh (Dovecot's imaptest, needed by the integration tier's TestImaptest* tests;" \
    "set SMIMEPROXY_IMAPTEST_DIR if it is elsewhere)" >&2
  exit 1
fi
# imapflow (tests/clients/imapflow, a real Node.js client): npm ci into a cache directory named after the lock
# file's hash, never into the repository; built in a fresh directory and renamed into place, so two setups at
# once do not collide. clients_test.go finds it at the same path.
flowsrc="$(cd "$(dirname "$0")/.." && pwd)/tests/clients/imapflow"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/smimeproxy"
flow="$cache/imapflow-$(sha256sum "$flowsrc/package-lock.json" | cut -c1-16)"
if [ ! -d "$flow/node_modules/imapflow" ]; then
  mkdir -p "$cache"
  tmp=$(mktemp -d "$cache/imapflow-tmp.XXXXXX")
  cp "$flowsrc/package.json" "$flowsrc/package-lock.json" "$tmp/"
  (cd "$tmp" && timeout 600 npm ci --ignore-scripts --no-audit --no-fund --loglevel=error) >&2
  mv -T "$tmp" "$flow" 2>/dev/null || rm -rf "$tmp"   # another setup finished first
fi
