// Package cms decrypts CMS EnvelopedData (RFC 5652) and AuthEnvelopedData (RFC 5083), the encryption layer of
// S/MIME (RFC 8551). It is pure: bytes in, bytes out, no I/O.
package cms
