// Command smimebench is the end-to-end decryption benchmark of smimeproxy (issue 6). In one run it starts a
// real Dovecot (and, by default, a Vault dev server holding the key) on 127.0.0.1, seeds n S/MIME-encrypted
// messages (AES-256-CBC, RSA-2048 PKCS#1 v1.5 key transport, RFC 8551 section 3.3) and their plain twins,
// and measures, in batches of UID FETCH BODY.PEEK[] (RFC 9051 section 6.4.5):
//
//   - the plain twins directly from Dovecot and through the proxy (ratio proxy ÷ direct);
//   - the first fetch of the encrypted messages through the proxy (fresh decrypt cache): the decryption
//     overhead per message, (encrypted − plain) ÷ n, against the crypto floor measured in the same run (one
//     RSA-2048 private operation, base64 decoding and AES-256-CBC over each message, in-process);
//   - the second fetch (decrypt cache warm) against plain through the proxy;
//   - `openssl cms -decrypt` run as one process per message (a sample), against the proxy's first fetch per
//     message, IMAP transfer included;
//   - the peak RSS (VmHWM) of a `smimeproxy serve` child process fetching one big encrypted message.
//
// Every served message is checked: a decrypted message must carry the decrypted status and the body of its
// plain twin. Results go to stdout as a table with PASS or MISS per goal; progress goes to stderr. The exit
// status is non-zero only for a setup or correctness failure, never for a missed goal.
//
// Run it with scripts/bench.sh (which checks the prerequisites) or `go run ./cmd/smimebench -h`. It must run as
// root (Dovecot) from within the repository (the Vault binary and ./cmd/smimeproxy are found there).
package main
