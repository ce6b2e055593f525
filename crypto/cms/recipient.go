package cms

import (
	"bytes"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"math/big"
)

// RecipientID names the certificate a RecipientInfo was made for: either IssuerAndSerialNumber or
// SubjectKeyIdentifier (RFC 5652 section 6.2.1 RecipientIdentifier, section 6.2.2
// KeyAgreeRecipientIdentifier). Exactly one of the two forms is set.
type RecipientID struct {
	// IssuerRaw is the DER encoding of the issuer Name; with SerialNumber it forms IssuerAndSerialNumber.
	IssuerRaw    []byte
	SerialNumber *big.Int
	// SubjectKeyID is the subjectKeyIdentifier value (RFC 5280 section 4.2.1.2).
	SubjectKeyID []byte
}

// RecipientIDsOf returns the identifiers under which cert may be named as a recipient: its issuer and serial
// number, and its subject key identifier when it has one.
func RecipientIDsOf(cert *x509.Certificate) []RecipientID {
	ids := []RecipientID{{IssuerRaw: cert.RawIssuer, SerialNumber: cert.SerialNumber}}
	if len(cert.SubjectKeyId) > 0 {
		ids = append(ids, RecipientID{SubjectKeyID: cert.SubjectKeyId})
	}
	return ids
}

// Matches reports whether id names cert.
func (id RecipientID) Matches(cert *x509.Certificate) bool {
	if cert == nil {
		return false
	}
	if len(id.SubjectKeyID) > 0 {
		return len(cert.SubjectKeyId) > 0 && bytes.Equal(id.SubjectKeyID, cert.SubjectKeyId)
	}
	return id.SerialNumber != nil && cert.SerialNumber != nil &&
		id.SerialNumber.Cmp(cert.SerialNumber) == 0 && bytes.Equal(id.IssuerRaw, cert.RawIssuer)
}

// Key returns a stable string form of id, usable as a map key and in metadata: "ski:<hex>" or
// "iss:<sha-free hex of issuer DER>:<serial hex>".
func (id RecipientID) Key() string {
	if len(id.SubjectKeyID) > 0 {
		return "ski:" + hex.EncodeToString(id.SubjectKeyID)
	}
	serial := ""
	if id.SerialNumber != nil {
		serial = id.SerialNumber.Text(16)
	}
	return "iss:" + hex.EncodeToString(id.IssuerRaw) + ":" + serial
}

// String is a short human-readable form for logs (no key material is involved).
func (id RecipientID) String() string {
	if len(id.SubjectKeyID) > 0 {
		return fmt.Sprintf("ski=%x", id.SubjectKeyID)
	}
	return fmt.Sprintf("issuer-serial=%x", id.SerialNumber)
}
