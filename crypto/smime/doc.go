// Package smime decides which S/MIME messages to decrypt and builds the message served in place of the
// ciphertext (S/MIME 4.0, RFC 8551; S/MIME 3.2, RFC 5751). It owns the MIME layer above package cms: finding
// the encryption layer, decoding its transfer encoding, asking a Keyring for keys, and splicing the decrypted
// entity under the original header. It is pure apart from calling the Keyring: no I/O, no logging.
//
// What is decrypted (the EFAIL rule, as in Thunderbird since bug 1806161): only an encryption layer that is the
// whole message, i.e. the top-level body is application/pkcs7-mime (or application/x-pkcs7-mime, or
// application/octet-stream named smime.p7m) holding EnvelopedData or AuthEnvelopedData (RFC 8551 section
// 3.3), or that layer is the entire content under exactly one outer signature: the first part of a
// multipart/signed (RFC 8551 section 3.5.3) or the eContent of an opaque signed-data (section 3.5.2). An
// encrypted part beside other parts (multipart/mixed with attacker HTML, the EFAIL direct exfiltration) or
// deeper is never decrypted: such messages are served unchanged and reported as NotEncrypted. The decision is
// made from the CMS content type inside, not from the smime-type label, which may be missing.
//
// What is served for a decrypted message (serve has the details): one X-Smimeproxy-Status header field, then
// the outer header fields minus the Content-* fields of the replaced layer and minus every line that is not a
// well-formed header field (no colon, a bad name, a bare CR: removed so that no reader merges attacker text
// with the decrypted content, EFAIL), then the decrypted MIME entity, its body byte for byte (line endings
// canonicalised to CRLF, RFC 8551 section 3.1.1), so an inner signature still verifies. Protected header fields (RFC 9788:
// the hp parameter on the Cryptographic Payload, or the older protected-headers parameter; also the older
// wrapped message/rfc822 with forwarded=no) replace their unprotected outer copies; when the decrypted entity
// is signed (multipart/signed, or opaque signed-data whose eContent is read for this), they are copied up
// from the signed payload, which itself stays byte for byte. Without such protection the outer fields are
// served and the decrypted entity's header contributes only its MIME fields (Content-*, MIME-Version): an
// inner From or Subject, which an attacker can change in a CBC ciphertext, is never shown.
//
// Status fields (status.go has the one definition: an X-Smimeproxy-* name, or one hidden after a bare CR,
// anywhere in the header) received from upstream are always removed from what Process serves (anti-spoofing).
//
// Limits: messages larger than Options.MaxSize are not decrypted (reason too-large); layering is looked at
// to a fixed depth (top level, one signature layer, the encrypted entity, one message/rfc822 wrapper and one
// signed payload), never recursively, so MIME nesting deeper than that is never walked: a message nested
// 20,000 levels deep costs time linear in its size (TestProcessDeepNesting). Every header is read in one
// linear pass.
// The parser never panics on hostile input; FuzzProcess checks that.
//
// Memory: the base64 body is decoded once into a buffer that package cms decrypts in place (cms.ParseOwned);
// the served message is written with one allocation of its exact size.
package smime
