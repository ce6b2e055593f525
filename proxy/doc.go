// Package proxy owns smimeproxy's client-facing IMAP side (RFC 9051 IMAP4rev2 and RFC 3501 IMAP4rev1, served
// as IMAP4rev1 with extensions): every client connection gets a go-imap v2 imapserver session that relays each
// command to its own upstream connection (package backend), opened at login with the client's credentials.
// Upstream UIDs, UIDVALIDITY and sequence numbers pass through unchanged.
//
// Relayed: CAPABILITY (after login, the proxy's extensions intersected with the upstream's), LOGIN,
// AUTHENTICATE PLAIN, LIST/LSUB (LIST-EXTENDED, LIST-STATUS, SPECIAL-USE), STATUS (STATUS=SIZE), NAMESPACE,
// SELECT/EXAMINE, FETCH (all RFC 9051 items and BINARY per RFC 3516), SEARCH (the full grammar, ESEARCH
// results computed locally), STORE, COPY, MOVE, EXPUNGE, UID EXPUNGE, APPEND, CREATE, DELETE, RENAME,
// SUBSCRIBE, UNSUBSCRIBE, IDLE, NOOP, CLOSE, UNSELECT, LOGOUT.
//
// Not supported (not advertised): IMAP4rev2 itself, CONDSTORE/QRESYNC (RFC 7162), ID (RFC 2971), SORT/THREAD
// (RFC 5256), COMPRESS, NOTIFY, SEARCHRES, MULTIAPPEND, CATENATE, METADATA, QUOTA, ACL, SASL mechanisms other
// than PLAIN. The UNSEEN and RECENT counts of SELECT and STATUS RECENT are not relayed (imapclient does not
// parse them; STATUS RECENT answers 0).
//
// Implementation notes:
//   - Each connection has its own imapserver.Server (server.go), so that the capability set written after
//     LOGIN is per user. Every session method runs under session.begin/end: one command at a time, a
//     per-command upstream timeout, panics logged and turned into BYE.
//   - FETCH (fetch.go) streams: upstream literals are copied to the client as they arrive. Client writes are
//     batched while a FETCH runs (cork.go). ENVELOPE and BODYSTRUCTURE pass through go-imap's parsed forms, so
//     they are equal in meaning to the upstream's, not byte for byte (encoded words are re-encoded as UTF-8).
//   - With a Rewriter, FETCHes asking for body-dependent items take rewrite.go's path: BODYSTRUCTURE first,
//     Rewriter.Candidate per message, rewritten answers for candidates, the streaming relay for the rest.
//   - Candidates of one FETCH are rewritten on up to GOMAXPROCS goroutines ahead of the writer (parallel.go);
//     upstream commands stay one at a time. Header-only FETCHes (header sync) take one upstream round
//     (onepass.go). Part numbers and BINARY of rewritten messages follow Dovecot (binary.go).
//   - A Rewriter may also implement HeaderGuard (pass 1 fetches the status field so forged ones are stripped
//     from plain mail), AppendGuard (append.go: served plaintext never goes back upstream in clear) and
//     TextMatcher (search.go: SEARCH BODY/TEXT evaluated over the served copies of encrypted messages).
//   - Unilateral upstream responses (EXISTS, EXPUNGE, FETCH FLAGS) are queued by backend and written at the
//     next poll point or during IDLE; NOOP and CHECK send an upstream NOOP first so that polling clients see
//     new mail; EXPUNGE is held back after FETCH, STORE and SEARCH (RFC 9051 section
//     7.5.1). imapclient collects unilateral FETCH responses in a goroutine, so a FETCH immediately followed by
//     an EXPUNGE may be relayed after it with a stale sequence number.
//   - Upstream loss: the session says BYE (RFC 9051 section 7.1.5) and closes; Server.Close stops accepting,
//     waits for running commands (bounded) and says BYE to every client.
package proxy
