package cms

import (
	"bytes"
	"crypto/x509"
	"encoding/asn1"
	"encoding/hex"
	"fmt"
	"math/big"
	"strings"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
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

// ParseRecipientKey inverts RecipientID.Key: "ski:<hex>" or "iss:<issuer DER hex>:<serial hex>". ok is false
// for anything else.
func ParseRecipientKey(key string) (id RecipientID, ok bool) {
	if h, found := strings.CutPrefix(key, "ski:"); found {
		b, err := hex.DecodeString(h)
		return RecipientID{SubjectKeyID: b}, err == nil && len(b) > 0
	}
	if rest, found := strings.CutPrefix(key, "iss:"); found {
		iss, serial, found := strings.Cut(rest, ":")
		b, err := hex.DecodeString(iss)
		n, nok := new(big.Int).SetString(serial, 16)
		if !found || err != nil || !nok {
			return RecipientID{}, false
		}
		return RecipientID{IssuerRaw: b, SerialNumber: n}, true
	}
	return RecipientID{}, false
}

// String is a short human-readable form for logs (no key material is involved).
func (id RecipientID) String() string {
	if len(id.SubjectKeyID) > 0 {
		return fmt.Sprintf("ski=%x", id.SubjectKeyID)
	}
	return fmt.Sprintf("issuer-serial=%x", id.SerialNumber)
}

// PeekRecipients returns the recipient identifiers (as Envelope.Recipients) of the EnvelopedData or
// AuthEnvelopedData ContentInfo (RFC 5652 sections 3 and 6.1, RFC 5083 section 2.1) that prefix starts: only
// the part up to the end of its RecipientInfos is needed, DER or BER. A caller can so tell whether it holds a
// key for a large message from its first kilobytes, before decoding or decrypting all of it. It fails with
// ErrNotEnveloped for other content types, ErrMalformed when prefix is broken or ends inside the
// RecipientInfos, and ErrTooLarge beyond the limits in doc.go.
func PeekRecipients(prefix []byte) ([]RecipientID, error) {
	if len(prefix) > MaxInputSize {
		prefix = prefix[:MaxInputSize]
	}
	// ContentInfo SEQUENCE, contentType, [0] EXPLICIT, (Auth)EnvelopedData SEQUENCE: headers only.
	p := 0
	open := func(tag byte) error {
		h, err := parseHeaderOpen(prefix, p)
		if err != nil {
			return err
		}
		if len(h.tag) != 1 || h.tag[0] != tag {
			return malformed("unexpected tag at offset %d", p)
		}
		p += h.hdrLen
		return nil
	}
	whole := func(tag byte) ([]byte, error) {
		if p >= len(prefix) || prefix[p] != tag {
			return nil, malformed("unexpected tag at offset %d", p)
		}
		c := &berConv{in: prefix}
		next, _, _, err := c.measure(p, len(prefix), 3)
		if err != nil {
			return nil, err
		}
		el := prefix[p:next]
		p = next
		der, _, err := toDER(el)
		return der, err
	}
	if err := open(0x30); err != nil {
		return nil, err
	}
	oidDER, err := whole(0x06)
	if err != nil {
		return nil, err
	}
	var oid asn1.ObjectIdentifier
	if s := cryptobyte.String(oidDER); !s.ReadASN1ObjectIdentifier(&oid) {
		return nil, malformed("bad content type")
	}
	if !oid.Equal(OIDEnvelopedData) && !oid.Equal(OIDAuthEnvelopedData) {
		return nil, fmt.Errorf("%w: content type %v", ErrNotEnveloped, oid)
	}
	if err := open(0xa0); err != nil {
		return nil, err
	}
	if err := open(0x30); err != nil {
		return nil, err
	}
	if _, err := whole(0x02); err != nil { // version
		return nil, err
	}
	if p < len(prefix) && prefix[p] == 0xa0 { // originatorInfo
		if _, err := whole(0xa0); err != nil {
			return nil, err
		}
	}
	setDER, err := whole(0x31)
	if err != nil {
		return nil, err
	}
	var ris cryptobyte.String
	if s := cryptobyte.String(setDER); !s.ReadASN1(&ris, cbasn1.SET) {
		return nil, malformed("bad recipient infos")
	}
	var e Envelope
	if err := e.readRecipientInfos(ris); err != nil {
		return nil, err
	}
	return e.Recipients(), nil
}
