// Package tlscert owns smimeproxy's client-facing TLS: the server certificate the proxy presents to mail
// clients (loaded from PEM files, or generated as a self-signed ECDSA P-256 leaf for 127.0.0.1, ::1 and
// localhost) and the *tls.Config built from it (TLS 1.2 or later, RFC 8996 having deprecated 1.0 and 1.1).
//
// How serve uses it (the listening policy, see CheckListen):
//   - A loopback listener (127.0.0.0/8, ::1, localhost) may be plaintext: the traffic never leaves the machine.
//   - Any other listener requires TLS: either implicit TLS (IMAPS, RFC 8314 section 3.2: the TLS handshake
//     starts the connection) or STARTTLS (RFC 9051 section 6.2.1), and a plaintext LOGIN or AUTHENTICATE before
//     STARTTLS is refused with LOGINDISABLED advertised (RFC 9051 section 6.2.3).
//
// The generated certificate is a leaf (not a CA: it cannot be used to sign anything else), so trusting it in a
// mail client trusts only this proxy. Cert exposes the PEM bytes so a key store (Vault) can keep it across
// restarts; this package does no I/O besides reading the files it is given.
package tlscert
