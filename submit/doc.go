// Package submit is the sending half of smimeproxy: an SMTP submission front end (RFC 6409) on 127.0.0.1 that
// signs outgoing mail with the user's key in Vault and encrypts it to the recipients' certificates from the
// user's address book (S/MIME 4.0, RFC 8551), then relays it to the user's real submission server.
//
// The mail client authenticates as it would to its real submission server: AUTH PLAIN (RFC 4616) or LOGIN is
// relayed upstream (smtps://, RFC 8314 implicit TLS, or smtp:// with STARTTLS, RFC 3207; the certificate is
// verified), and the login names the key-store user (Options.KeyUser, the same mapping as the IMAP side).
// Nothing is relayed before the client has authenticated upstream.
//
// Per message (Policy): sign (default always) with the sender's key; encrypt never, if-possible (every
// recipient, To, Cc and Bcc as given by RCPT TO, has a valid certificate in the address book) or always
// (refused with 550 5.7.1 naming the recipients without one). A subject tag ("[encrypt]", "[sign]",
// "[nosign]") or the header field X-Smimeproxy-Send ("encrypt", "noencrypt", "sign", "nosign") overrides the
// policy for one message and is removed before sending. The encrypted copy is readable by every recipient and
// by the sender (the sender's own certificate is a recipient too). AES-256-GCM AuthEnvelopedData is used only
// when every recipient of the copy announced it in its SMIMECapabilities, else AES-256-CBC.
//
// Header protection (Options.ProtectSubject, RFC 9788): the real header fields travel inside the signature and
// the encryption (hp="cipher" on the payload) and the stored outer header has "Subject: [...]"; the proxy's IMAP
// side serves the real Subject again. Off by default: clients without RFC 9788 support show "[...]".
//
// Bcc: a RCPT TO address that is in none of the To, Cc (and Resent-To, Resent-Cc) header fields is a Bcc
// recipient; when encrypting, each gets its own copy in its own upstream transaction, encrypted to it and the
// sender only, so no RecipientInfo of the visible copy names it. A Bcc header field is always removed.
//
// Mail the client already signed or encrypted (top-level multipart/signed or application/pkcs7-mime) is
// relayed byte for byte. All other mail is canonicalized before signing (crypto/smime Canonicalize: CRLF, 8-bit
// and binary parts re-encoded as quoted-printable or base64), so a signature survives any transport.
//
// Errors: the key store or address book failing (Vault unreachable, sealed) answers 451 4.7.0 and the client
// retries; upstream replies (AUTH, MAIL, RCPT, DATA) are relayed with their codes; the message is accepted
// only after every upstream transaction was accepted. When a later Bcc copy fails after earlier copies were
// accepted, the client gets the error and a retry sends the earlier copies again (duplicates, never loss).
//
// Never logged: passwords, message content, key material.
package submit
