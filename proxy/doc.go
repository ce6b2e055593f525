// Package proxy owns smimeproxy's client-facing side: a relay of the IMAP stream (RFC 9051, RFC 3501 and every
// extension the upstream server offers) between each client connection and its own upstream connection
// (package backend), which steps in only where serving decrypted mail requires it.
//
// The relay (relay.go) reads both directions as units: one command or one response with its literals
// (wire.go). What it does not need to change goes through byte for byte, in the server's order: greeting,
// sequence numbers, EXISTS, EXPUNGE, VANISHED, RECENT, unsolicited FETCH, MODSEQ, response codes, IDLE,
// pipelined commands. Large literals stream. It steps in at:
//
//   - capabilities (caps.go): the upstream's list minus COMPRESS, SASL mechanisms that cannot be replayed and,
//     with decryption on, PREVIEW, SNIPPET and URLAUTH; STARTTLS is the relay's own offer (starttls.go), made
//     only when Options.StartTLS is set;
//   - login (cmd.go): LOGIN and AUTHENTICATE (PLAIN, LOGIN, XOAUTH2, OAUTHBEARER, SASL-IR) are relayed and
//     recorded, so the user's keys are known and side connections can log in the same way;
//   - FETCH (fetch.go, served.go): a sequence FETCH of body-dependent items gets UID added; a response for a
//     message the index (index.go) says is encrypted has its body-dependent items computed from the served
//     copy (or from its stored metadata, Options.MetaSource), its other items kept as sent; plain responses
//     pass unchanged (minus the added UID);
//   - SEARCH, SORT, THREAD with BODY, TEXT, LARGER, SMALLER, FROM, TO, CC, BCC, SUBJECT or HEADER keys
//     (search.go): those keys are evaluated over the served copies and substituted by UID sets, everything
//     else stays the server's; SORT by SIZE, DATE, SUBJECT, FROM, TO, CC, DISPLAYFROM or DISPLAYTO is
//     ordered by the relay over served sizes and headers (sort.go), and a SEARCH RETURN (UPDATE)
//     it rewrote keeps its context in the relay (context.go);
//   - APPEND, MULTIAPPEND, CATENATE (append.go): the APPEND guard keeps served plaintext from going upstream.
//
// The relay's own upstream commands (classifying new messages, reading ciphertext, copying an original) go
// over side connections (side.go) of the same user, never over the client's connection, so they cannot
// change its sequence numbers or take its state updates.
//
// Decryption itself is behind the Rewriter interface and its helpers (hooks.go), each a field of Options set
// by the caller (cmd/smimeproxy wires a decrypt.Decrypter into all of them), implemented by package decrypt,
// which does not import this package (the types both use are in internal/rewriting).
package proxy
