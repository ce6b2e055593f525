package cms

import (
	"crypto"
	"encoding/asn1"
	"errors"
)

// Errors returned by this package. Callers compare with errors.Is; returned errors wrap these with context.
var (
	// ErrNotEnveloped: the ContentInfo holds neither EnvelopedData nor AuthEnvelopedData.
	ErrNotEnveloped = errors.New("cms: not enveloped-data")
	// ErrNotSigned: the ContentInfo does not hold SignedData.
	ErrNotSigned = errors.New("cms: not signed-data")
	// ErrNoRecipient: no RecipientInfo names the given certificate.
	ErrNoRecipient = errors.New("cms: no recipient info for certificate")
	// ErrDecryption is deliberately vague (like crypto/rsa.ErrDecryption): every failure to unwrap the
	// content-encryption key or to decrypt/authenticate the content looks the same, to avoid adaptive attacks.
	ErrDecryption = errors.New("cms: decryption error")
	// ErrUnsupported: a well-formed structure uses an algorithm or version this package does not implement.
	ErrUnsupported = errors.New("cms: unsupported")
	// ErrMalformed: the input is not valid BER/DER or not a valid CMS structure.
	ErrMalformed = errors.New("cms: malformed")
	// ErrTooLarge: the input exceeds one of the limits documented in doc.go.
	ErrTooLarge = errors.New("cms: too large")
	// ErrKeyOperation wraps an error of the caller's key itself (a crypto.Decrypter or KeyAgreer, e.g. a
	// remote key store that is unreachable), other than rsa.ErrDecryption, so callers can tell an
	// unavailable key from a failed decryption. Such keys must report RSA padding failures as
	// rsa.ErrDecryption, or for PKCS #1 v1.5 with SessionKeyLen not at all, to stay free of padding oracles.
	ErrKeyOperation = errors.New("cms: private key operation failed")
)

// Content type OIDs (RFC 5652 section 4, RFC 5083 section 1).
var (
	OIDData              = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 1}
	OIDSignedData        = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 2}
	OIDEnvelopedData     = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 3}
	OIDAuthEnvelopedData = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 16, 1, 23}
)

// Info describes how a message was protected.
type Info struct {
	// ContentCipher is one of "aes-128-cbc", "aes-192-cbc", "aes-256-cbc", "3des-cbc", "aes-128-gcm",
	// "aes-192-gcm", "aes-256-gcm", "chacha20-poly1305".
	ContentCipher string
	// Authenticated is true for AEAD content encryption (GCM, ChaCha20-Poly1305), whose tag was checked.
	Authenticated bool
	// KeyAlgorithm names the key management, e.g. "rsa-pkcs1v15", "rsa-oaep-sha256",
	// "rsa-oaep-sha256-mgf1-sha1", "ecdh-p256-sha256kdf-aes128-wrap", "x25519-hkdf-sha256-aes128-wrap".
	KeyAlgorithm string
}

// KeyAgreer is the private half of a key-agreement key (EC or X25519/X448); a remote key store can implement it.
type KeyAgreer interface {
	// Public returns the public key: *ecdh.PublicKey, *ecdsa.PublicKey, or X448PublicKey.
	Public() crypto.PublicKey
	// SharedSecret returns the raw (EC)DH shared secret (RFC 5753 section 3.1.1: the x-coordinate, RFC 8418
	// section 2: the X25519/X448 output) with the originator's public key. peer is the raw public key: for
	// EC the uncompressed point (0x04||X||Y) as carried in the ECPoint BIT STRING, for X25519/X448 the 32/56
	// bytes.
	SharedSecret(peer []byte) ([]byte, error)
}

// X448PublicKey is an X448 public key (RFC 7748), as returned by Public of an X448 KeyAgreer.
type X448PublicKey []byte

// Envelope is a parsed EnvelopedData or AuthEnvelopedData. It holds references into the input given to Parse,
// which must not be modified while the Envelope is in use.
type Envelope struct {
	auth       bool
	owned      bool // encrypted may be decrypted in place
	spent      bool // encrypted was overwritten by an in-place decryption
	recipients []recipientInfo
	contentAlg algorithmIdentifier
	encrypted  []byte // encryptedContent (DER, concatenated from constructed OCTET STRINGs)
	authAttrs  []byte // AuthEnvelopedData authAttrs, full TLV as received ([1] IMPLICIT)
	mac        []byte
}

// Recipients returns the identifiers of every recipient of every RecipientInfo kind this package understands
// (KeyTransRecipientInfo and KeyAgreeRecipientInfo), in message order.
func (e *Envelope) Recipients() []RecipientID {
	var ids []RecipientID
	for _, ri := range e.recipients {
		ids = append(ids, ri.id)
	}
	return ids
}

// Authenticated reports whether the envelope is AuthEnvelopedData (RFC 5083).
func (e *Envelope) Authenticated() bool { return e.auth }
