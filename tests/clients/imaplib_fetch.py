#!/usr/bin/env python3
"""Independent IMAP client for smimeproxy tests: python imaplib against the proxy.

usage: imaplib_fetch.py HOST PORT USER PASSWORD OUTDIR

Logs in, selects INBOX, fetches every message with UID FETCH (RFC822.SIZE RFC822) and BODY.PEEK[], checks
RFC822.SIZE == len(RFC822) == len(BODY[]), writes OUTDIR/uid-N.eml, checks an empty SEARCH, a NOT DELETED
SEARCH, STORE and LOGOUT. Exits non-zero on any mismatch.
"""
import imaplib
import os
import re
import sys

host, port, user, pw, out = sys.argv[1:6]
m = imaplib.IMAP4(host, int(port), timeout=60)
typ, _ = m.login(user, pw)
assert typ == "OK", typ
typ, data = m.select("INBOX")
assert typ == "OK", (typ, data)
n = int(data[0])
typ, data = m.uid("SEARCH", None, "ALL")
uids = [int(x) for x in data[0].split()]
assert len(uids) == n, (uids, n)
for uid in uids:
    typ, data = m.uid("FETCH", str(uid), "(RFC822.SIZE BODY.PEEK[])")
    assert typ == "OK", typ
    meta, body = data[0]
    size = int(re.search(rb"RFC822\.SIZE (\d+)", meta).group(1))
    assert size == len(body), (uid, size, len(body))
    typ, data2 = m.uid("FETCH", str(uid), "(RFC822)")
    assert typ == "OK", typ
    assert b"RFC822 {" in data2[0][0], data2[0][0]
    assert data2[0][1] == body, uid
    with open(os.path.join(out, "uid-%d.eml" % uid), "wb") as f:
        f.write(body)
    print("uid", uid, "size", size, "ok")
typ, data = m.search(None, "SUBJECT", '"no such thing at all"')
assert typ == "OK" and data == [b""], (typ, data)
typ, data = m.search(None, "NOT", "DELETED")
assert typ == "OK" and len(data[0].split()) == n, (typ, data)
typ, data = m.store("1", "+FLAGS", "(\\Flagged)")
assert typ == "OK" and b"\\Flagged" in data[0], (typ, data)
m.close()
m.logout()
print("imaplib ok")
