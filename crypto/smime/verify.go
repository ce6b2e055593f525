package smime

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"net/mail"
	"strings"
	"time"

	"github.com/smimeproxy/smimeproxy/crypto/cms"
)

// Signature verification at the MIME level (RFC 8551 section 3.5, RFC 1847 section 2.1). Verify finds the
// signature layer of one entity (the whole message, or a decrypted entity the caller passes in: the EFAIL rule
// of the package doc decides which layers count, Verify never looks deeper), verifies the CMS signature with
// package cms and then decides trust:
//
//   - Chain: crypto/x509 path validation to VerifyOptions.Roots (default the system roots) plus
//     VerifyOptions.CAs, with the message's certificates as intermediates, extended key usage
//     emailProtection or anyExtendedKeyUsage (RFC 8550 section 4.4.4), and a keyUsage, when present, that
//     allows digitalSignature or nonRepudiation (section 4.4.2).
//   - Address book: the signer's certificate is, byte for byte, one of VerifyOptions.Trusted.
//   - Validity is checked at the time of verification (VerifyOptions.Now), not at the signingTime attribute,
//     which the signer (or whoever holds a stolen, since expired key) chooses freely; signingTime is reported
//     as information only. This is also what `openssl cms -verify` does. Old mail signed with a certificate
//     that has since expired therefore shows reason=expired.
//   - The sender: the From address must be one of the certificate's rfc822Name subjectAltNames or legacy
//     emailAddress subject attributes (RFC 8550 section 3), compared case-insensitively.
//
// No network is used: no AIA fetching of intermediates, no CRL or OCSP (revocation is not checked).

// Reasons a signature is not valid (Signature.Reason and the reason parameter of HeaderValue).
const (
	SigBadDigest       = "bad-digest"       // the signed content was changed
	SigBadSignature    = "bad-signature"    // the signature value or the signed attributes do not verify
	SigNoCertificate   = "no-certificate"   // the signer's certificate is neither in the message nor trusted
	SigExpired         = "expired"          // a certificate of the chain is past its notAfter
	SigNotYetValid     = "not-yet-valid"    // the signer's certificate is before its notBefore
	SigUntrusted       = "untrusted"        // no chain to a trusted root, wrong key usage, not in the address book
	SigAddressMismatch = "address-mismatch" // the From address is not in the certificate
	SigUnsupported     = "unsupported"      // an algorithm package cms does not implement
	SigMalformed       = "malformed"        // broken MIME structure, transfer encoding or CMS
	SigWeak            = "weak"             // everything verified, but the digest is SHA-1 (RFC 8551 section 2.1)
)

// Trust says why a valid signature's certificate is trusted.
const (
	TrustChain       = "chain"        // x509 path to a root
	TrustAddressBook = "address-book" // the user marked this very certificate trusted
	TrustNone        = "none"         // not trusted (Signature.Valid is then false)
)

// VerifyOptions tune Verify. A nil *VerifyOptions means the zero value.
type VerifyOptions struct {
	// Roots are the trust anchors. Nil means the system roots (x509.SystemCertPool, which reads the system's
	// certificate files once per process).
	Roots *x509.CertPool
	// CAs are further trust anchors added to Roots (a configured CA bundle). Default none.
	CAs []*x509.Certificate
	// Trusted are certificates the user marked trusted (the address book): a signer certificate equal to one
	// of them is trusted without a chain, and they are searched for the signer when the message does not
	// carry its certificate. Default none.
	Trusted []*x509.Certificate
	// From is the sender's address to match against the certificate. Empty means the From header field of
	// the entity given to Verify (a decrypted inner entity usually has none: pass the outer message's).
	From string
	// Now is the time at which certificates must be valid. Zero means time.Now().
	Now time.Time
}

// Signature is the outcome of Verify.
type Signature struct {
	// Valid is true when the signature verified, the certificate is trusted and valid now, the From address
	// matches, and the digest is not weak. Otherwise Reason is one of the Sig* constants.
	Valid  bool
	Reason string
	// Detail is a one-line explanation for logs (no key material, no content).
	Detail string
	// Trust is TrustChain or TrustAddressBook when the certificate is trusted, else TrustNone.
	Trust string
	// Signer is the matched From address for a valid signature, else the certificate's first email address.
	Signer string
	// Cert is the signer's certificate (nil when not found); Fingerprint its SHA-256, lowercase hex.
	Cert        *x509.Certificate
	Fingerprint string
	// Chain is the verified chain (leaf first) for Trust == TrustChain.
	Chain []*x509.Certificate
	// Signed holds what package cms read from the signature (certificates, signing time, digest, weak flag,
	// SMIMECapabilities, and for opaque signed-data the encapsulated entity in Signed.Content); nil when
	// the signature itself did not verify.
	Signed *cms.Signed
	// Opaque is true for application/pkcs7-mime signed-data, false for multipart/signed.
	Opaque bool
}

// HeaderValue returns the status text for the message, e.g.
// "valid; signer=alice@example.org; cert=sha256:…; trust=chain" or "invalid; reason=bad-digest".
func (s *Signature) HeaderValue() string {
	if s.Valid {
		return "valid; signer=" + s.Signer + "; cert=sha256:" + s.Fingerprint + "; trust=" + s.Trust
	}
	return "invalid; reason=" + s.Reason
}

// Verify verifies the signature layer of entity, a whole message or a decrypted MIME entity: a
// multipart/signed whose protocol is application/pkcs7-signature or application/x-pkcs7-signature (RFC 8551
// section 3.5.3), or an application/(x-)pkcs7-mime body holding SignedData (section 3.5.2; also
// application/octet-stream named smime.p7m). It returns nil when entity has no such layer. The signed part of
// a multipart/signed is verified exactly as it appears between the boundaries (RFC 1847 section 2.1); only
// when that fails with a digest mismatch and the part has bare LF line ends (a message stored with LF) is it
// verified again with CRLF line ends (RFC 8551 section 3.1.1). entity is not modified.
func Verify(entity []byte, opts *VerifyOptions) *Signature {
	var o VerifyOptions
	if opts != nil {
		o = *opts
	}
	if o.Now.IsZero() {
		o.Now = time.Now()
	}
	top := parseEntity(entity)
	if o.From == "" {
		o.From = fromAddress(top.get("From"))
	}
	copts := &cms.VerifyOptions{Certificates: o.Trusted}
	mt, params := top.contentType()
	var signed *cms.Signed
	var err error
	opaque := false
	switch {
	case mt == "multipart/signed":
		switch strings.ToLower(params["protocol"]) {
		case "application/pkcs7-signature", "application/x-pkcs7-signature":
		default:
			return nil
		}
		parts := multipartParts(top.body, params["boundary"], 2)
		if len(parts) != 2 {
			return &Signature{Reason: SigMalformed, Detail: "multipart/signed without exactly two parts", Trust: TrustNone}
		}
		sigPart := parseEntity(parts[1])
		der, derr := decodeBody(&sigPart)
		if derr != nil {
			return &Signature{Reason: SigMalformed, Detail: derr.Error(), Trust: TrustNone}
		}
		signed, err = cms.Verify(der, parts[0], copts)
		var ve *cms.VerifyError
		if errors.As(err, &ve) && ve.Reason == cms.BadDigest && hasBareLF(parts[0]) {
			if s2, err2 := cms.Verify(der, toCRLF(parts[0]), copts); err2 == nil {
				signed, err = s2, nil
			}
		}
	default:
		ok, smimeType := smimeLabel(&top)
		if !ok || smimeType == "certs-only" {
			return nil
		}
		buf, derr := decodeBody(&top)
		if derr != nil {
			if smimeType == "signed-data" {
				return &Signature{Reason: SigMalformed, Detail: derr.Error(), Trust: TrustNone, Opaque: true}
			}
			return nil
		}
		signed, err = cms.Verify(buf, nil, copts)
		if errors.Is(err, cms.ErrNotSigned) {
			return nil // enveloped-data, or something else: not a signature layer
		}
		var ve *cms.VerifyError
		if err != nil && !errors.As(err, &ve) && smimeType != "signed-data" {
			return nil // not readable as CMS and not labelled signed: not reported as a signature
		}
		opaque = true
	}
	if err != nil {
		return verifyFailure(err, opaque)
	}
	return judge(signed, &o, opaque)
}

func verifyFailure(err error, opaque bool) *Signature {
	s := &Signature{Detail: err.Error(), Trust: TrustNone, Opaque: opaque}
	var ve *cms.VerifyError
	switch {
	case errors.As(err, &ve):
		switch ve.Reason {
		case cms.BadDigest:
			s.Reason = SigBadDigest
		case cms.NoSignerCertificate:
			s.Reason = SigNoCertificate
		case cms.Unsupported:
			s.Reason = SigUnsupported
		default:
			s.Reason = SigBadSignature
		}
		if ve.Signer != nil {
			s.Cert, s.Fingerprint = ve.Signer, certFingerprint(ve.Signer)
			if len(ve.Signer.EmailAddresses) > 0 {
				s.Signer = ve.Signer.EmailAddresses[0]
			}
		}
	case errors.Is(err, cms.ErrUnsupported):
		s.Reason = SigUnsupported
	default:
		s.Reason = SigMalformed
	}
	return s
}

// judge decides trust, validity and the sender address for a cryptographically verified signature.
func judge(signed *cms.Signed, o *VerifyOptions, opaque bool) *Signature {
	leaf := signed.Signer
	s := &Signature{Cert: leaf, Fingerprint: certFingerprint(leaf), Signed: signed, Trust: TrustNone, Opaque: opaque}
	emails := certEmails(leaf)
	if len(emails) > 0 {
		s.Signer = emails[0]
	}
	fail := func(reason, detail string) *Signature {
		s.Reason, s.Detail = reason, detail
		return s
	}
	// The leaf's own validity first, so that an expired or premature certificate says so whatever its chain.
	if o.Now.After(leaf.NotAfter) {
		return fail(SigExpired, "signer certificate expired "+leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	if o.Now.Before(leaf.NotBefore) {
		return fail(SigNotYetValid, "signer certificate valid from "+leaf.NotBefore.UTC().Format(time.RFC3339))
	}
	// RFC 8550 section 4.4.2: a keyUsage extension must allow signing.
	if leaf.KeyUsage != 0 && leaf.KeyUsage&(x509.KeyUsageDigitalSignature|x509.KeyUsageContentCommitment) == 0 {
		return fail(SigUntrusted, "signer certificate key usage does not allow signatures")
	}
	if chain, err := verifyChain(leaf, signed.Certificates, o); err == nil {
		s.Trust, s.Chain = TrustChain, chain
	} else {
		inBook := false
		for _, c := range o.Trusted {
			if c != nil && bytes.Equal(c.Raw, leaf.Raw) {
				inBook = true
				break
			}
		}
		if !inBook {
			var ce x509.CertificateInvalidError
			if errors.As(err, &ce) && ce.Reason == x509.Expired {
				return fail(SigExpired, err.Error())
			}
			return fail(SigUntrusted, err.Error())
		}
		s.Trust = TrustAddressBook
	}
	if !addressIn(o.From, emails) {
		s.Trust = TrustNone
		return fail(SigAddressMismatch, "sender address is not in the signer certificate")
	}
	s.Signer = strings.ToLower(o.From)
	if signed.Weak {
		return fail(SigWeak, "signature digest is "+signed.Digest)
	}
	s.Valid = true
	return s
}

// verifyChain validates leaf with crypto/x509 (see the comment at the top of this file).
func verifyChain(leaf *x509.Certificate, msgCerts []*x509.Certificate, o *VerifyOptions) ([]*x509.Certificate, error) {
	roots := o.Roots
	if roots == nil {
		sys, err := x509.SystemCertPool()
		if err != nil || sys == nil {
			sys = x509.NewCertPool()
		}
		roots = sys
	}
	if len(o.CAs) > 0 {
		roots = roots.Clone()
		for _, c := range o.CAs {
			roots.AddCert(c)
		}
	}
	inter := x509.NewCertPool()
	for _, c := range msgCerts {
		if c != leaf {
			inter.AddCert(c)
		}
	}
	chains, err := leaf.Verify(x509.VerifyOptions{
		Roots:         roots,
		Intermediates: inter,
		CurrentTime:   o.Now,
		// x509 accepts certificates with anyExtendedKeyUsage, or without the extension, for any usage.
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection},
	})
	if err != nil {
		return nil, err
	}
	return chains[0], nil
}

// oidEmailAddress is the legacy PKCS #9 emailAddress attribute in a subject name (RFC 5280 section 4.1.2.6).
var oidEmailAddress = []int{1, 2, 840, 113549, 1, 9, 1}

// certEmails returns the rfc822Name subjectAltNames of cert, then its legacy subject emailAddress values.
func certEmails(cert *x509.Certificate) []string {
	out := append([]string(nil), cert.EmailAddresses...)
	for _, n := range cert.Subject.Names {
		if n.Type.Equal(oidEmailAddress) {
			if v, ok := n.Value.(string); ok {
				out = append(out, v)
			}
		}
	}
	return out
}

// addressIn reports whether addr equals one of emails, case-insensitively (RFC 8550 section 3 compares the
// whole address; local parts are case-insensitive in practice).
func addressIn(addr string, emails []string) bool {
	if addr == "" {
		return false
	}
	for _, e := range emails {
		if strings.EqualFold(strings.TrimSpace(e), addr) {
			return true
		}
	}
	return false
}

// fromAddress returns the first address of a From field value (RFC 5322 section 3.6.2), or "".
func fromAddress(v string) string {
	if v == "" {
		return ""
	}
	if list, err := mail.ParseAddressList(v); err == nil && len(list) > 0 {
		return list[0].Address
	}
	return ""
}

func certFingerprint(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.Raw)
	return hex.EncodeToString(sum[:])
}

// hasBareLF reports whether b has a LF not preceded by CR.
func hasBareLF(b []byte) bool {
	for i := bytes.IndexByte(b, '\n'); i >= 0; {
		if i == 0 || b[i-1] != '\r' {
			return true
		}
		j := bytes.IndexByte(b[i+1:], '\n')
		if j < 0 {
			return false
		}
		i += j + 1
	}
	return false
}

// toCRLF returns a copy of b with every bare LF turned into CRLF.
func toCRLF(b []byte) []byte {
	out := make([]byte, 0, len(b)+len(b)/32)
	for i, c := range b {
		if c == '\n' && (i == 0 || b[i-1] != '\r') {
			out = append(out, '\r')
		}
		out = append(out, c)
	}
	return out
}
