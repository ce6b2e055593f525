// Package backend owns smimeproxy's connections to the upstream IMAP server (RFC 9051, RFC 3501): dialling
// with the transport security rules of RFC 8314 (implicit TLS for imaps://, STARTTLS per RFC 3501 section
// 6.2.1 for imap:// when offered, plaintext only to a loopback host unless explicitly allowed).
//
// DialStream returns the raw, secured stream the proxy relays a client's session over, with the greeting and
// its current capability list. Dial returns a Conn driven by the go-imap v2 imapclient (Conn.Client) for the
// proxy's own commands (side connections, health probes), logged in with LOGIN or a replayed SASL exchange
// (Authenticate); Conn.Do bounds each command by a context by closing the connection when the context ends,
// since imapclient has no context support.
//
// Not supported: PREAUTH greetings (the proxy needs the user to log in) and upstream referrals.
package backend
