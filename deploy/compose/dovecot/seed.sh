#!/bin/sh
# Generates Dovecot's TLS certificate once into $TLS_DIR (self-signed leaf for "dovecot"; smimeproxy trusts it
# as its upstream CA file), seeds bob's INBOX once from $SEED_DIR (S/MIME messages encrypted to Bob), then runs
# Dovecot in the foreground. The variables exist for the test that runs this script outside a container
# (deploy/deploy_test.go).
set -eu
seed=${SEED_DIR:-/seed}
owner=${MAIL_OWNER:-vmail}
group=${MAIL_GROUP:-vmail}
inbox=${MAIL_ROOT:-/srv/mail}/bob/Maildir
conf=${DOVECOT_CONF:-/etc/dovecot/dovecot.conf}
tls=${TLS_DIR:-/tls}
if [ ! -s "$tls/dovecot.pem" ]; then
  install -d -m 0755 "$tls"
  (umask 077 && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 365 \
    -subj "/CN=dovecot" -addext "subjectAltName=DNS:dovecot,DNS:localhost,IP:127.0.0.1" \
    -addext "basicConstraints=critical,CA:FALSE" -addext "extendedKeyUsage=serverAuth" \
    -keyout "$tls/dovecot.key" -out "$tls/dovecot.pem.tmp" 2>/dev/null)
  chmod 0644 "$tls/dovecot.pem.tmp"
  mv "$tls/dovecot.pem.tmp" "$tls/dovecot.pem"
  echo "tls: generated $tls/dovecot.pem"
fi
if [ ! -d "$inbox/cur" ]; then
  install -d -o "$owner" -g "$group" "$inbox" "$inbox/cur" "$inbox/new" "$inbox/tmp"
  n=0
  for f in alice.env.eml alice.dsig.SHA256.multipart.env.eml alice.sig.SHA256.opaque.env.eml alice.dsig.SHA256.multipart.eml; do
    [ -f "$seed/$f" ] || continue
    n=$((n + 1))
    install -o "$owner" -g "$group" -m 0600 "$seed/$f" "$inbox/new/$(date +%s).seed$n.dovecot"
  done
  echo "seed: $n messages in bob's INBOX"
fi
exec /usr/sbin/dovecot -F -c "$conf"
