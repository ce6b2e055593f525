#!/usr/bin/env python3
"""Scripted Python imaplib session for smimeproxy end-to-end tests (an independent IMAP client).

usage: imaplib_script.py < script.json > results.json

The script is a JSON object: {"host": H, "port": P, "user": U, "password": PW, "ops": [...]}. Each op is one of
  {"op": "select", "mailbox": M, "readonly": bool}
  {"op": "fetch", "set": "1:*", "items": "(RFC822.SIZE BODY.PEEK[])"}   (UID FETCH)
  {"op": "search", "criteria": ["BODY", "\"word\""]}                     (UID SEARCH, CHARSET UTF-8)
  {"op": "append", "mailbox": M, "message": base64}
  {"op": "noop"}
and is run in order on one connection (LOGIN first, LOGOUT last). The output is a JSON object
{"results": [...]}, one per op: {"typ": "OK"|"NO"|..., "data": [...], "error": "..."} where data lists imaplib's
response items, each ["b", base64(bytes)] or ["t", base64(head), base64(literal)] (a literal and the line
before it). A BAD answer or a broken connection sets error and ends the session (later ops are not run).
"""
import base64
import imaplib
import json
import sys


def enc(b):
    if b is None:
        return ""
    if isinstance(b, str):
        b = b.encode()
    return base64.b64encode(b).decode()


def items(data):
    out = []
    for d in data or []:
        if isinstance(d, tuple):
            out.append(["t", enc(d[0]), enc(d[1])])
        else:
            out.append(["b", enc(d)])
    return out


def main():
    spec = json.load(sys.stdin)
    res = []
    m = imaplib.IMAP4(spec["host"], int(spec["port"]), timeout=60)
    typ, _ = m.login(spec["user"], spec["password"])
    assert typ == "OK", typ
    for op in spec["ops"]:
        try:
            kind = op["op"]
            if kind == "select":
                typ, data = m.select(op["mailbox"], readonly=op.get("readonly", False))
            elif kind == "fetch":
                typ, data = m.uid("FETCH", op["set"], op["items"])
            elif kind == "search":
                typ, data = m.uid("SEARCH", "CHARSET", "UTF-8", *op["criteria"])
            elif kind == "append":
                typ, data = m.append(op["mailbox"], None, None, base64.b64decode(op["message"]))
            elif kind == "noop":
                typ, data = m.noop()
            else:
                raise ValueError("unknown op %r" % kind)
            res.append({"typ": typ, "data": items(data), "error": ""})
        except Exception as e:  # BAD, BYE, socket errors: report and stop
            res.append({"typ": "", "data": [], "error": "%s: %s" % (type(e).__name__, e)})
            break
    try:
        m.logout()
    except Exception:
        pass
    json.dump({"results": res}, sys.stdout)


main()
