package keystore

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"

	"github.com/smimeproxy/smimeproxy/crypto/cms"
)

// Fingerprint returns the SHA-256 fingerprint of cert's DER encoding in lowercase hex.
func Fingerprint(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.Raw)
	return hex.EncodeToString(sum[:])
}

// IDOf returns the key ID derived from cert: the first 16 hex digits of its SHA-256 fingerprint, so importing
// the same certificate twice yields the same ID.
func IDOf(cert *x509.Certificate) string { return Fingerprint(cert)[:16] }

// EntryOf describes cert as stored with the given storage kind.
func EntryOf(cert *x509.Certificate, storage string) Entry {
	e := Entry{
		ID:          IDOf(cert),
		Fingerprint: Fingerprint(cert),
		Subject:     cert.Subject.String(),
		Emails:      append([]string(nil), cert.EmailAddresses...),
		NotBefore:   cert.NotBefore,
		NotAfter:    cert.NotAfter,
		Storage:     storage,
	}
	for _, id := range cms.RecipientIDsOf(cert) {
		e.RecipientIDs = append(e.RecipientIDs, id.Key())
	}
	return e
}

// matchesAny reports whether any of ids names cert.
func matchesAny(cert *x509.Certificate, ids []cms.RecipientID) bool {
	for _, id := range ids {
		if id.Matches(cert) {
			return true
		}
	}
	return false
}
