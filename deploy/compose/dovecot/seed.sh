#!/bin/sh
# Seeds bob's INBOX once from /seed (S/MIME messages encrypted to Bob), then runs Dovecot in the foreground.
set -eu
inbox=/srv/mail/bob/Maildir
if [ ! -d "$inbox/cur" ]; then
  install -d -o vmail -g vmail "$inbox" "$inbox/cur" "$inbox/new" "$inbox/tmp"
  n=0
  for f in /seed/alice.env.eml /seed/alice.dsig.SHA256.multipart.env.eml /seed/alice.sig.SHA256.opaque.env.eml /seed/alice.dsig.SHA256.multipart.eml; do
    [ -f "$f" ] || continue
    n=$((n + 1))
    install -o vmail -g vmail -m 0600 "$f" "$inbox/new/$(date +%s).seed$n.dovecot"
  done
  echo "seed: $n messages in bob's INBOX"
fi
exec /usr/sbin/dovecot -F
