package cms

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"time"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// Signature verification of SignedData (RFC 5652 section 5). Verify checks the cryptography only: that a
// SignerInfo's signature over the content (or over its signed attributes, which bind the content by
// messageDigest) was made with the key of the certificate its SignerIdentifier names. Whether that certificate
// is trustworthy (chain, validity, EKU, the sender's address) is the caller's decision; crypto/smime makes it.

// Limits on parts of a signed-data (see doc.go).
const (
	maxSignerInfos  = 64
	maxCertificates = 256
)

// Signature and attribute OIDs (RFC 3370 section 3, RFC 4055 section 3, RFC 5754, RFC 5758, RFC 8419,
// RFC 5652 section 11, RFC 8551 section 2.5.2).
var (
	oidSHA1WithRSA      = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 5}
	oidSHA224WithRSA    = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 14}
	oidSHA256WithRSA    = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 11}
	oidSHA384WithRSA    = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 12}
	oidSHA512WithRSA    = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 13}
	oidRSASSAPSS        = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 10}
	oidECDSAWithSHA1    = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 1}
	oidECDSAWithSHA224  = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 1}
	oidECDSAWithSHA256  = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 2}
	oidECDSAWithSHA384  = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 3}
	oidECDSAWithSHA512  = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 4}
	oidEd25519          = asn1.ObjectIdentifier{1, 3, 101, 112}
	oidAttrContentType  = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 3}
	oidAttrMessageDig   = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 4}
	oidAttrSigningTime  = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 5}
	oidAttrCapabilities = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 15}
)

// VerifyReason says why a signature did not verify.
type VerifyReason int

const (
	// BadDigest: the content does not match the messageDigest signed attribute (or the encapsulated content
	// differs from the detached content given), i.e. the content was changed after signing.
	BadDigest VerifyReason = iota + 1
	// BadSignature: the signature value does not verify with the signer certificate's key, e.g. the signed
	// attributes were changed or the certificate is not the signer's.
	BadSignature
	// NoSignerCertificate: no certificate in the message or in VerifyOptions.Certificates matches the
	// SignerIdentifier.
	NoSignerCertificate
	// Unsupported: a digest or signature algorithm this package does not implement (MD5, DSA, ...), or a key
	// type that does not fit the signature algorithm.
	Unsupported
)

func (r VerifyReason) String() string {
	switch r {
	case BadDigest:
		return "bad-digest"
	case BadSignature:
		return "bad-signature"
	case NoSignerCertificate:
		return "no-certificate"
	case Unsupported:
		return "unsupported"
	}
	return "unknown"
}

// VerifyError is the error Verify returns for a well-formed signed-data whose signature does not verify
// (like crypto/x509's CertificateInvalidError): callers switch on Reason. Broken structures fail with
// ErrMalformed or ErrTooLarge instead. A VerifyError with Reason Unsupported matches ErrUnsupported.
type VerifyError struct {
	Reason VerifyReason
	// Signer is the certificate the SignerIdentifier named, when one was found.
	Signer *x509.Certificate
	Detail string
}

func (e *VerifyError) Error() string {
	return "cms: signature not verified: " + e.Reason.String() + ": " + e.Detail
}

// Unwrap lets errors.Is(err, ErrUnsupported) match Reason Unsupported.
func (e *VerifyError) Unwrap() error {
	if e.Reason == Unsupported {
		return ErrUnsupported
	}
	return nil
}

// VerifyOptions tune Verify. A nil *VerifyOptions means the zero value.
type VerifyOptions struct {
	// Certificates are searched for the signer's certificate after the certificates the message carries
	// (RFC 5652 section 5.1 lets a sender omit its certificate): e.g. the address book. Default none.
	Certificates []*x509.Certificate
}

// Capability is one SMIMECapability (RFC 8551 section 2.5.2): an algorithm the signer accepts, in order of
// preference.
type Capability struct {
	ID asn1.ObjectIdentifier
	// Parameters is the DER of the parameters, or nil when absent.
	Parameters []byte
}

// Signed is the result of a successful Verify.
type Signed struct {
	// Signer is the certificate whose key made the signature. It is not validated: see package smime.
	Signer *x509.Certificate
	// SignerFromMessage reports whether Signer came from the message's certificates rather than from
	// VerifyOptions.Certificates.
	SignerFromMessage bool
	// Certificates are all certificates the message carries (the signer's and intermediates), in order;
	// certificates Go cannot parse are left out.
	Certificates []*x509.Certificate
	// SigningTime is the signingTime signed attribute (RFC 5652 section 11.3); zero when absent. It is the
	// signer's claim, not a trusted time.
	SigningTime time.Time
	// Digest is the digest algorithm, e.g. "sha256"; Weak is true for "sha1" (RFC 8551 section 2.1: SHA-1
	// SHOULD NOT be used for new signatures).
	Digest string
	Weak   bool
	// SignatureAlgorithm is e.g. "rsa-pkcs1v15", "rsa-pss", "ecdsa-p256", "ed25519".
	SignatureAlgorithm string
	// Capabilities is the parsed SMIMECapabilities signed attribute, CapabilitiesRaw its DER value (the
	// SEQUENCE); both nil when absent.
	Capabilities    []Capability
	CapabilitiesRaw []byte
	// ContentType is the eContentType (id-data for S/MIME).
	ContentType asn1.ObjectIdentifier
	// Content is the encapsulated content of an opaque signed-data (RFC 8551 section 3.5.2), or the detached
	// content given to Verify. It may alias the input.
	Content []byte
}

// signerInfo is one parsed SignerInfo (RFC 5652 section 5.3).
type signerInfo struct {
	sid         RecipientID
	digestAlg   algorithmIdentifier
	signedAttrs []byte // full TLV as received ([0] IMPLICIT), nil when absent
	sigAlg      algorithmIdentifier
	signature   []byte
}

// signedData is a parsed SignedData (RFC 5652 section 5.1).
type signedData struct {
	eType    asn1.ObjectIdentifier
	eContent []byte // nil when detached
	certs    []*x509.Certificate
	signers  []signerInfo
}

// Verify parses a DER or BER ContentInfo holding SignedData (RFC 5652 section 5) and verifies its
// signatures. detached is the signed content of a detached signature (multipart/signed, RFC 8551 section
// 3.5.3) exactly as signed (canonical CRLF MIME entity), or nil for opaque signed-data, whose encapsulated
// content is then verified and returned in Signed.Content. When both are present they must be equal.
//
// The signer's certificate is found by IssuerAndSerialNumber or SubjectKeyIdentifier (RFC 5652 section
// 5.3) among the message's certificates, then opts.Certificates. With signed attributes, the contentType and
// messageDigest attributes must be present and match (section 5.4, 11.1, 11.2), and the signature covers the
// DER of the attributes as a SET OF (section 5.4); without them it covers the content itself. Supported:
// RSA PKCS #1 v1.5 and RSASSA-PSS (RFC 4056), ECDSA on P-256/384/521 (RFC 5753), Ed25519 (RFC 8419, signed
// attributes digested with SHA-512), each with SHA-1 (reported Weak), SHA-224, SHA-256, SHA-384 or SHA-512.
//
// With several SignerInfos the first that verifies wins; if none does, the error is the first one's. A
// signature that does not verify yields a *VerifyError; ErrNotSigned, ErrMalformed and ErrTooLarge mean the
// input is not a usable signed-data. Verify does not check the certificate's validity or trust.
func Verify(ber []byte, detached []byte, opts *VerifyOptions) (*Signed, error) {
	var o VerifyOptions
	if opts != nil {
		o = *opts
	}
	sd, err := parseSignedData(ber)
	if err != nil {
		return nil, err
	}
	content := sd.eContent
	if detached != nil {
		if sd.eContent != nil && !bytes.Equal(sd.eContent, detached) {
			return nil, &VerifyError{Reason: BadDigest, Detail: "encapsulated content differs from the detached content"}
		}
		content = detached
	} else if sd.eContent == nil {
		return nil, malformed("detached signature without content")
	}
	if len(sd.signers) == 0 {
		return nil, malformed("signed-data without signer infos")
	}
	var first error
	for i := range sd.signers {
		res, err := sd.verifySigner(&sd.signers[i], content, &o)
		if err == nil {
			res.Content = content
			return res, nil
		}
		if first == nil {
			first = err
		}
	}
	return nil, first
}

func parseSignedData(ber []byte) (*signedData, error) {
	sd, err := openSignedData(ber)
	if err != nil {
		return nil, err
	}
	var digestAlgs, eci cryptobyte.String
	var version int64
	if !sd.ReadASN1Integer(&version) || !sd.ReadASN1(&digestAlgs, cbasn1.SET) || !sd.ReadASN1(&eci, cbasn1.SEQUENCE) {
		return nil, malformed("bad signed-data")
	}
	if version < 1 || version > 5 {
		return nil, fmt.Errorf("%w: signed-data version %d", ErrUnsupported, version)
	}
	out := &signedData{}
	if !eci.ReadASN1ObjectIdentifier(&out.eType) {
		return nil, malformed("bad encapsulated content type")
	}
	if !eci.Empty() {
		// eContent [0] EXPLICIT OCTET STRING; constructed (streamed) strings were joined by the DER rewrite.
		var explicit, ec cryptobyte.String
		if !eci.ReadASN1(&explicit, tagCtx0C) || !eci.Empty() || !explicit.ReadASN1(&ec, cbasn1.OCTET_STRING) ||
			!explicit.Empty() {
			return nil, malformed("bad signed-data encapsulated content")
		}
		out.eContent = ec // aliases der (the input, or the DER rewrite of it)
	}
	// certificates [0] IMPLICIT CertificateSet OPTIONAL (RFC 5652 section 10.2.3): only X.509 Certificate
	// (a SEQUENCE) is used; attribute and other certificate formats are skipped.
	if sd.PeekASN1Tag(tagCtx0C) {
		var certs cryptobyte.String
		if !sd.ReadASN1(&certs, tagCtx0C) {
			return nil, malformed("bad certificates")
		}
		n := 0
		for !certs.Empty() {
			var el cryptobyte.String
			var tag cbasn1.Tag
			if !certs.ReadAnyASN1Element(&el, &tag) {
				return nil, malformed("bad certificate")
			}
			if n++; n > maxCertificates {
				return nil, fmt.Errorf("%w: more than %d certificates", ErrTooLarge, maxCertificates)
			}
			if tag != cbasn1.SEQUENCE {
				continue
			}
			if c, err := x509.ParseCertificate(el); err == nil {
				out.certs = append(out.certs, c)
			}
		}
	}
	// crls [1] IMPLICIT RevocationInfoChoices OPTIONAL: not used (no revocation checking).
	if sd.PeekASN1Tag(tagCtx1C) && !sd.SkipASN1(tagCtx1C) {
		return nil, malformed("bad crls")
	}
	var sis cryptobyte.String
	if !sd.ReadASN1(&sis, cbasn1.SET) || !sd.Empty() {
		return nil, malformed("bad signer infos")
	}
	for !sis.Empty() {
		if len(out.signers) >= maxSignerInfos {
			return nil, fmt.Errorf("%w: more than %d signer infos", ErrTooLarge, maxSignerInfos)
		}
		var si cryptobyte.String
		if !sis.ReadASN1(&si, cbasn1.SEQUENCE) {
			return nil, malformed("bad signer info")
		}
		s, err := readSignerInfo(si)
		if err != nil {
			return nil, err
		}
		out.signers = append(out.signers, s)
	}
	return out, nil
}

// readSignerInfo reads a SignerInfo (RFC 5652 section 5.3).
func readSignerInfo(s cryptobyte.String) (signerInfo, error) {
	var si signerInfo
	var version int64
	if !s.ReadASN1Integer(&version) {
		return si, malformed("bad signer info version")
	}
	var err error
	if si.sid, err = readCertID(&s, "signer"); err != nil {
		return si, err
	}
	var ok bool
	if si.digestAlg, ok = readAlgorithm(&s); !ok {
		return si, malformed("bad digest algorithm")
	}
	if s.PeekASN1Tag(tagCtx0C) {
		var attrs cryptobyte.String
		if !s.ReadASN1Element(&attrs, tagCtx0C) {
			return si, malformed("bad signed attributes")
		}
		if len(attrs) > maxSmallField {
			return si, fmt.Errorf("%w: signed attributes of %d bytes", ErrTooLarge, len(attrs))
		}
		si.signedAttrs = attrs
	}
	if si.sigAlg, ok = readAlgorithm(&s); !ok {
		return si, malformed("bad signature algorithm")
	}
	var sig cryptobyte.String
	if !s.ReadASN1(&sig, cbasn1.OCTET_STRING) {
		return si, malformed("bad signature value")
	}
	if len(sig) > maxSmallField {
		return si, fmt.Errorf("%w: signature of %d bytes", ErrTooLarge, len(sig))
	}
	si.signature = sig
	if s.PeekASN1Tag(tagCtx1C) && !s.SkipASN1(tagCtx1C) {
		return si, malformed("bad unsigned attributes")
	}
	if !s.Empty() {
		return si, malformed("trailing data in signer info")
	}
	return si, nil
}

// signerCert finds the certificate named by sid: the message's first, then extra.
func signerCert(sid RecipientID, msg, extra []*x509.Certificate) (*x509.Certificate, bool) {
	for _, c := range msg {
		if sid.Matches(c) {
			return c, true
		}
	}
	for _, c := range extra {
		if sid.Matches(c) {
			return c, false
		}
	}
	return nil, false
}

func (sd *signedData) verifySigner(si *signerInfo, content []byte, o *VerifyOptions) (*Signed, error) {
	cert, fromMsg := signerCert(si.sid, sd.certs, o.Certificates)
	if cert == nil {
		return nil, &VerifyError{Reason: NoSignerCertificate, Detail: "no certificate for signer " + si.sid.String()}
	}
	fail := func(r VerifyReason, format string, args ...any) error {
		return &VerifyError{Reason: r, Signer: cert, Detail: fmt.Sprintf(format, args...)}
	}
	if !nullOrAbsent(si.digestAlg.params) {
		return nil, fail(Unsupported, "digest algorithm parameters")
	}
	h, hname, ok := hashByOID(si.digestAlg.oid)
	if !ok {
		return nil, fail(Unsupported, "digest algorithm %v", si.digestAlg.oid)
	}
	res := &Signed{
		Signer:            cert,
		SignerFromMessage: fromMsg,
		Certificates:      sd.certs,
		Digest:            hname,
		Weak:              h == crypto.SHA1,
		ContentType:       sd.eType,
	}
	hh := h.New()
	hh.Write(content)
	digest := hh.Sum(nil)

	// What the signature covers: the content, or the signed attributes (RFC 5652 section 5.4).
	signedBytes := content
	if si.signedAttrs != nil {
		if err := res.readSignedAttrs(si.signedAttrs, digest); err != nil {
			if ve, ok := err.(*VerifyError); ok {
				ve.Signer = cert
			}
			return nil, err
		}
		// "A separate encoding of the signedAttrs field is performed for message digest calculation. The
		// IMPLICIT [0] tag in the signedAttrs is not used for the DER encoding, rather an EXPLICIT SET OF
		// tag is used." The attributes are DER as received (section 5.3); only the tag changes.
		signedBytes = make([]byte, len(si.signedAttrs))
		copy(signedBytes, si.signedAttrs)
		signedBytes[0] = 0x31
	} else if !sd.eType.Equal(OIDData) {
		// Section 5.3: signedAttrs MUST be present when the content type is not id-data.
		return nil, fail(BadSignature, "no signed attributes for content type %v", sd.eType)
	}
	alg, err := verifySignature(cert.PublicKey, si, h, signedBytes)
	res.SignatureAlgorithm = alg
	if err != nil {
		return nil, &VerifyError{Reason: reasonOf(err), Signer: cert, Detail: err.Error()}
	}
	return res, nil
}

// errBadSig is the internal error for a signature value that does not verify.
var errBadSig = errors.New("signature value does not verify")

func reasonOf(err error) VerifyReason {
	if errors.Is(err, ErrUnsupported) {
		return Unsupported
	}
	return BadSignature
}

// readSignedAttrs checks the contentType and messageDigest attributes (RFC 5652 sections 11.1, 11.2) and
// reads signingTime (11.3) and SMIMECapabilities (RFC 8551 section 2.5.2).
func (r *Signed) readSignedAttrs(raw []byte, digest []byte) error {
	s := cryptobyte.String(raw)
	var attrs cryptobyte.String
	if !s.ReadASN1(&attrs, tagCtx0C) {
		return malformed("bad signed attributes")
	}
	var haveType, haveDigest bool
	for !attrs.Empty() {
		var attr, values cryptobyte.String
		var typ asn1.ObjectIdentifier
		if !attrs.ReadASN1(&attr, cbasn1.SEQUENCE) || !attr.ReadASN1ObjectIdentifier(&typ) ||
			!attr.ReadASN1(&values, cbasn1.SET) || !attr.Empty() {
			return malformed("bad signed attribute")
		}
		single := func() (cryptobyte.String, bool) {
			var v cryptobyte.String
			var tag cbasn1.Tag
			v2 := values
			if !v2.ReadAnyASN1Element(&v, &tag) || !v2.Empty() {
				return nil, false
			}
			return v, true
		}
		switch {
		case typ.Equal(oidAttrContentType):
			// Section 11.1: single-valued, and equal to eContentType.
			v, ok := single()
			var ct asn1.ObjectIdentifier
			if haveType || !ok || !v.ReadASN1ObjectIdentifier(&ct) {
				return malformed("bad content-type attribute")
			}
			haveType = true
			if !ct.Equal(r.ContentType) {
				return &VerifyError{Reason: BadSignature, Detail: "content-type attribute differs from the content type"}
			}
		case typ.Equal(oidAttrMessageDig):
			v, ok := single()
			var md cryptobyte.String
			if haveDigest || !ok || !v.ReadASN1(&md, cbasn1.OCTET_STRING) {
				return malformed("bad message-digest attribute")
			}
			haveDigest = true
			if !bytes.Equal(md, digest) {
				return &VerifyError{Reason: BadDigest, Detail: "message digest does not match the content"}
			}
		case typ.Equal(oidAttrSigningTime):
			v, ok := single()
			if !ok {
				return malformed("bad signing-time attribute")
			}
			var t time.Time
			switch {
			case v.PeekASN1Tag(cbasn1.UTCTime):
				ok = v.ReadASN1UTCTime(&t)
			case v.PeekASN1Tag(cbasn1.GeneralizedTime):
				ok = v.ReadASN1GeneralizedTime(&t)
			default:
				ok = false
			}
			if !ok {
				return malformed("bad signing-time attribute")
			}
			r.SigningTime = t
		case typ.Equal(oidAttrCapabilities):
			v, ok := single()
			if !ok {
				return malformed("bad smime-capabilities attribute")
			}
			caps, ok := parseCapabilities(v)
			if !ok {
				return malformed("bad smime-capabilities attribute")
			}
			r.Capabilities = caps
			r.CapabilitiesRaw = append([]byte(nil), v...)
		}
	}
	if !haveType || !haveDigest {
		// Section 5.3: both MUST be present when there are signed attributes.
		return &VerifyError{Reason: BadSignature, Detail: "signed attributes lack content-type or message-digest"}
	}
	return nil
}

// parseCapabilities parses SMIMECapabilities ::= SEQUENCE OF SMIMECapability (RFC 8551 section 2.5.2).
func parseCapabilities(v cryptobyte.String) ([]Capability, bool) {
	var seq cryptobyte.String
	if !v.ReadASN1(&seq, cbasn1.SEQUENCE) || !v.Empty() {
		return nil, false
	}
	caps := []Capability{}
	for !seq.Empty() {
		var c cryptobyte.String
		var cp Capability
		if !seq.ReadASN1(&c, cbasn1.SEQUENCE) || !c.ReadASN1ObjectIdentifier(&cp.ID) {
			return nil, false
		}
		if !c.Empty() {
			cp.Parameters = append([]byte(nil), c...)
		}
		caps = append(caps, cp)
	}
	return caps, true
}

// verifySignature checks the signature of si over msg with pub. It returns the algorithm name.
func verifySignature(pub crypto.PublicKey, si *signerInfo, h crypto.Hash, msg []byte) (string, error) {
	oid := si.sigAlg.oid
	digest := func() []byte {
		hh := h.New()
		hh.Write(msg)
		return hh.Sum(nil)
	}
	switch {
	case oid.Equal(oidRSAEncryption) || oid.Equal(oidSHA1WithRSA) || oid.Equal(oidSHA224WithRSA) ||
		oid.Equal(oidSHA256WithRSA) || oid.Equal(oidSHA384WithRSA) || oid.Equal(oidSHA512WithRSA):
		// RFC 3370 section 3.2, RFC 5754 section 3.2: the digest algorithm of the SignerInfo applies.
		k, ok := pub.(*rsa.PublicKey)
		if !ok {
			return "rsa-pkcs1v15", fmt.Errorf("%w: rsa signature with a %T key", ErrUnsupported, pub)
		}
		if err := rsa.VerifyPKCS1v15(k, h, digest(), si.signature); err != nil {
			return "rsa-pkcs1v15", errBadSig
		}
		return "rsa-pkcs1v15", nil
	case oid.Equal(oidRSASSAPSS):
		k, ok := pub.(*rsa.PublicKey)
		if !ok {
			return "rsa-pss", fmt.Errorf("%w: rsa-pss signature with a %T key", ErrUnsupported, pub)
		}
		ph, salt, err := pssParams(si.sigAlg.params)
		if err != nil {
			return "rsa-pss", err
		}
		if ph != h {
			return "rsa-pss", fmt.Errorf("%w: rsa-pss hash differs from the digest algorithm", ErrUnsupported)
		}
		if err := rsa.VerifyPSS(k, h, digest(), si.signature, &rsa.PSSOptions{SaltLength: salt, Hash: h}); err != nil {
			return "rsa-pss", errBadSig
		}
		return "rsa-pss", nil
	case oid.Equal(oidECPublicKey) || oid.Equal(oidECDSAWithSHA1) || oid.Equal(oidECDSAWithSHA224) ||
		oid.Equal(oidECDSAWithSHA256) || oid.Equal(oidECDSAWithSHA384) || oid.Equal(oidECDSAWithSHA512):
		k, ok := pub.(*ecdsa.PublicKey)
		if !ok {
			return "ecdsa", fmt.Errorf("%w: ecdsa signature with a %T key", ErrUnsupported, pub)
		}
		name := "ecdsa-" + curveName(k)
		if !ecdsa.VerifyASN1(k, digest(), si.signature) {
			return name, errBadSig
		}
		return name, nil
	case oid.Equal(oidEd25519):
		// RFC 8419 section 3: pure Ed25519 over the content or the DER signed attributes; with signed
		// attributes the message digest MUST be SHA-512.
		k, ok := pub.(ed25519.PublicKey)
		if !ok {
			return "ed25519", fmt.Errorf("%w: ed25519 signature with a %T key", ErrUnsupported, pub)
		}
		if si.signedAttrs != nil && h != crypto.SHA512 {
			return "ed25519", fmt.Errorf("%w: ed25519 with digest other than sha512", ErrUnsupported)
		}
		if !ed25519.Verify(k, msg, si.signature) {
			return "ed25519", errBadSig
		}
		return "ed25519", nil
	}
	return "", fmt.Errorf("%w: signature algorithm %v", ErrUnsupported, oid)
}

// pssParams parses RSASSA-PSS-params (RFC 4055 section 3.1): hash (default SHA-1), MGF1 with the same hash
// (other mask generation fails with ErrUnsupported), salt length (default 20), trailer field 1.
func pssParams(params []byte) (crypto.Hash, int, error) {
	h, salt := crypto.SHA1, 20
	if nullOrAbsent(params) {
		return h, salt, nil
	}
	bad := malformed("bad rsassa-pss parameters")
	s := cryptobyte.String(params)
	var seq cryptobyte.String
	if !s.ReadASN1(&seq, cbasn1.SEQUENCE) || !s.Empty() {
		return 0, 0, bad
	}
	mgfHash := crypto.SHA1
	if seq.PeekASN1Tag(tagCtx0C) {
		var e cryptobyte.String
		if !seq.ReadASN1(&e, tagCtx0C) {
			return 0, 0, bad
		}
		alg, ok := readAlgorithm(&e)
		if !ok || !e.Empty() {
			return 0, 0, bad
		}
		if h, _, ok = hashByOID(alg.oid); !ok {
			return 0, 0, fmt.Errorf("%w: rsa-pss hash %v", ErrUnsupported, alg.oid)
		}
	}
	if seq.PeekASN1Tag(tagCtx1C) {
		var e cryptobyte.String
		if !seq.ReadASN1(&e, tagCtx1C) {
			return 0, 0, bad
		}
		alg, ok := readAlgorithm(&e)
		if !ok || !e.Empty() {
			return 0, 0, bad
		}
		if !alg.oid.Equal(oidMGF1) {
			return 0, 0, fmt.Errorf("%w: rsa-pss mask generation %v", ErrUnsupported, alg.oid)
		}
		p := cryptobyte.String(alg.params)
		inner, ok := readAlgorithm(&p)
		if !ok || !p.Empty() {
			return 0, 0, bad
		}
		if mgfHash, _, ok = hashByOID(inner.oid); !ok {
			return 0, 0, fmt.Errorf("%w: rsa-pss mgf1 hash %v", ErrUnsupported, inner.oid)
		}
	}
	if seq.PeekASN1Tag(tagCtx2C) {
		var e cryptobyte.String
		var n int64
		if !seq.ReadASN1(&e, tagCtx2C) || !e.ReadASN1Integer(&n) || !e.Empty() || n < 0 || n > 1024 {
			return 0, 0, bad
		}
		salt = int(n)
	}
	if seq.PeekASN1Tag(tagCtx3C) {
		var e cryptobyte.String
		var n int64
		if !seq.ReadASN1(&e, tagCtx3C) || !e.ReadASN1Integer(&n) || !e.Empty() {
			return 0, 0, bad
		}
		if n != 1 {
			return 0, 0, fmt.Errorf("%w: rsa-pss trailer field %d", ErrUnsupported, n)
		}
	}
	if !seq.Empty() {
		return 0, 0, bad
	}
	if mgfHash != h {
		// Go's rsa.VerifyPSS uses MGF1 with the signature hash.
		return 0, 0, fmt.Errorf("%w: rsa-pss with mgf1 hash other than the signature hash", ErrUnsupported)
	}
	if salt == 0 {
		// crypto/rsa reads SaltLength 0 as "auto", which would accept any salt length.
		return 0, 0, fmt.Errorf("%w: rsa-pss with an empty salt", ErrUnsupported)
	}
	return h, salt, nil
}
