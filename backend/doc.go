// Package backend owns smimeproxy's connections to the upstream IMAP server (RFC 9051, RFC 3501): dialling
// with the transport security rules of RFC 8314 (implicit TLS for imaps://, STARTTLS per RFC 3501 section
// 6.2.1 for imap:// when offered, plaintext only to a loopback host unless explicitly allowed), logging in
// with the client's own credentials (LOGIN, or AUTHENTICATE PLAIN per RFC 4616), and turning the upstream's
// unilateral responses (EXISTS, EXPUNGE, FETCH FLAGS; RFC 9051 section 7) into Updates for the proxy session
// that owns the connection.
//
// Commands themselves are sent with the go-imap v2 imapclient (Conn.Client); Conn.Do bounds each by a
// context by closing the connection when the context ends, since imapclient has no context support.
//
// Not supported: PREAUTH greetings over an unencrypted connection (refused, RFC 3501 section 6.2.1), SASL
// mechanisms other than PLAIN upstream, and upstream referrals.
package backend
