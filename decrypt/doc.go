// Package decrypt joins the IMAP proxy to the S/MIME engine: it decides from a BODYSTRUCTURE which messages may
// be S/MIME encrypted (RFC 8551 section 3.2), decrypts them with the logged-in user's keys only, caches what it
// served, marks served messages so that an APPEND of one can be recognised and turned back into a COPY of the
// ciphertext, re-encrypts appended messages to the user's own certificate, and searches served plaintext.
//
// It implements the proxy's Rewriter and its helpers (proxy/hooks.go); the proxy owns IMAP, this package owns
// what bytes a client sees for an encrypted message. Cryptography itself lives in crypto/smime and crypto/cms; keys come from a
// keystore.Store.
//
// Implementation notes:
//   - Decrypted bytes are held in process memory only (a byte-bounded LRU cache keyed by user, mailbox,
//     UIDVALIDITY and UID) and are never logged or written to disk.
//   - A session's user selects the key set: Rewrite passes MessageRef.User (mapped by Options.KeyUser), and
//     nothing else, to Store.Lookup, with the request's context (a client that goes away cancels its Vault
//     Transit call; concurrent fetches of one message share one decryption, cache.go). The cache key includes
//     the user, so one user never sees another user's decrypted copy.
//   - A failure of the key store (e.g. Vault down) serves the message as undecryptable with reason
//     key-unavailable (smime.Result.Err holds the cause, logged) and is not cached, so the next fetch tries
//     again.
//   - Served messages carry X-Smimeproxy-Status with ref= and mac= parameters: ref names the source message,
//     mac is HMAC-SHA256 under a per-process (or configured) key over the user, ref and a SHA-256 of the
//     served bytes without the status field. Origin accepts only a valid mac for the same user and the same
//     bytes, so a marker cannot be forged or replayed across users, and an edited copy is not taken for the
//     original (its edits are stored, encrypted). With a random per-process key, messages served before a
//     restart are no longer recognised.
//   - Neither package imports the other (their shared types are in internal/rewriting): the helper interfaces
//     of proxy (Origin, EncryptAppend, NeedsStrip, StatusFields, MatchText, ...) are methods of *Decrypter that
//     cmd/smimeproxy sets as fields of proxy.Options (hooks.go; checked in hooks_test.go).
package decrypt
