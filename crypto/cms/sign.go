package cms

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"time"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// Signing: a detached SignedData (RFC 5652 section 5) as S/MIME's multipart/signed carries it (RFC 8551
// section 3.5.3), made the way Thunderbird and OpenSSL make theirs so that both verify it: SHA-256, signed
// attributes (contentType, signingTime, messageDigest, SMIMECapabilities), the signer named by issuer and
// serial number, and the signer's certificate chain.

// SignOptions tune Sign. A nil *SignOptions means the zero value.
type SignOptions struct {
	// SigningTime is the signingTime attribute (RFC 5652 section 11.3); zero means time.Now().
	SigningTime time.Time
	// Capabilities is the DER SMIMECapabilities value (RFC 8551 section 2.5.2) announced to the recipients;
	// nil means DefaultCapabilities().
	Capabilities []byte
}

// ErrSignerKey: the signing key is neither RSA nor ECDSA, or does not belong to the certificate.
var ErrSignerKey = errors.New("cms: unsupported signing key")

// DefaultCapabilities returns the DER SMIMECapabilities this package's Sign announces by default: the content
// ciphers the proxy decrypts, strongest first (AES-256-GCM, AES-128-GCM, AES-256-CBC, AES-128-CBC; RFC 8551
// section 2.7), and RSAES-OAEP beside rsaEncryption for key transport (RFC 4055 section 4.1).
func DefaultCapabilities() []byte {
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		for _, oid := range []asn1.ObjectIdentifier{oidAES256GCM, oidAES128GCM, oidAES256CBC, oidAES128CBC, oidRSAESOAEP, oidRSAEncryption} {
			b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) { b.AddASN1ObjectIdentifier(oid) })
		}
	})
	return b.BytesOrPanic()
}

// HasCapability reports whether the DER SMIMECapabilities caps (RFC 8551 section 2.5.2) lists oid.
func HasCapability(caps []byte, oid asn1.ObjectIdentifier) bool {
	list, ok := parseCapabilities(cryptobyte.String(caps))
	if !ok {
		return false
	}
	for _, c := range list {
		if c.ID.Equal(oid) {
			return true
		}
	}
	return false
}

// OIDAES256GCM is id-aes256-GCM (RFC 5084 section 3.2), for HasCapability.
var OIDAES256GCM = oidAES256GCM

// Sign returns the DER ContentInfo of a detached SignedData over content (the canonical MIME entity of a
// multipart/signed, RFC 8551 section 3.5.3) made with signer, whose certificate is chain[0]; the whole chain is
// included (section 3.5.2 lets a sender omit it, but a recipient without the intermediate cannot then build
// the path). The digest is SHA-256 (RFC 5754 section 2.2). An *rsa.PublicKey signs with RSA PKCS #1 v1.5
// (rsaEncryption, RFC 3370 section 3.2, as OpenSSL and NSS write it); an *ecdsa.PublicKey with ECDSA
// (ecdsa-with-SHA256, RFC 5753 section 2.1.1). signer may be remote (a Vault Transit key): its Sign is called
// once, with the SHA-256 digest of the DER signed attributes and crypto.SHA256 as opts.
func Sign(content []byte, signer crypto.Signer, chain []*x509.Certificate, opts *SignOptions) ([]byte, error) {
	var o SignOptions
	if opts != nil {
		o = *opts
	}
	if len(chain) == 0 || chain[0] == nil {
		return nil, errors.New("cms: sign: no signer certificate")
	}
	cert := chain[0]
	var sigAlg asn1.ObjectIdentifier
	switch pub := signer.Public().(type) {
	case *rsa.PublicKey:
		if cp, ok := cert.PublicKey.(*rsa.PublicKey); !ok || !cp.Equal(pub) {
			return nil, fmt.Errorf("%w: the key does not match the certificate", ErrSignerKey)
		}
		sigAlg = oidRSAEncryption
	case *ecdsa.PublicKey:
		if cp, ok := cert.PublicKey.(*ecdsa.PublicKey); !ok || !cp.Equal(pub) {
			return nil, fmt.Errorf("%w: the key does not match the certificate", ErrSignerKey)
		}
		sigAlg = oidECDSAWithSHA256
	default:
		return nil, fmt.Errorf("%w: %T", ErrSignerKey, pub)
	}
	if o.SigningTime.IsZero() {
		o.SigningTime = time.Now()
	}
	if o.Capabilities == nil {
		o.Capabilities = DefaultCapabilities()
	}
	digest := sha256.Sum256(content)
	attrs, err := signedAttributes(digest[:], o.SigningTime, o.Capabilities)
	if err != nil {
		return nil, err
	}
	// RFC 5652 section 5.4: the signature covers the DER of the attributes with an EXPLICIT SET OF tag.
	attrDigest := sha256.Sum256(attrs)
	sig, err := signer.Sign(rand.Reader, attrDigest[:], crypto.SHA256)
	if err != nil {
		return nil, fmt.Errorf("%w: sign: %w", ErrKeyOperation, err)
	}
	implicitAttrs := append([]byte(nil), attrs...)
	implicitAttrs[0] = 0xa0 // [0] IMPLICIT SET OF Attribute

	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) { // ContentInfo
		b.AddASN1ObjectIdentifier(OIDSignedData)
		b.AddASN1(tagCtx0C, func(b *cryptobyte.Builder) {
			b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) { // SignedData
				b.AddASN1Int64(1) // section 5.1: version 1 (issuerAndSerialNumber, id-data, no v2+ certificates)
				b.AddASN1(cbasn1.SET, func(b *cryptobyte.Builder) { addAlgorithm(b, oidSHA256, true) })
				b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) { // EncapsulatedContentInfo, detached
					b.AddASN1ObjectIdentifier(OIDData)
				})
				b.AddASN1(tagCtx0C, func(b *cryptobyte.Builder) {
					for _, c := range chain {
						b.AddBytes(c.Raw)
					}
				})
				b.AddASN1(cbasn1.SET, func(b *cryptobyte.Builder) {
					b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) { // SignerInfo
						b.AddASN1Int64(1)
						addIssuerAndSerial(b, cert)
						addAlgorithm(b, oidSHA256, true)
						b.AddBytes(implicitAttrs)
						addAlgorithm(b, sigAlg, sigAlg.Equal(oidRSAEncryption))
						b.AddASN1OctetString(sig)
					})
				})
			})
		})
	})
	return b.Bytes()
}

// signedAttributes returns the DER SET OF Attribute (tag 0x31) of a signature: contentType id-data,
// signingTime, messageDigest and SMIMECapabilities (RFC 5652 sections 11.1-11.3, RFC 8551 section 2.5.2), in
// DER order (X.690 section 11.6: a SET OF is sorted by the encodings of its elements).
func signedAttributes(digest []byte, t time.Time, caps []byte) ([]byte, error) {
	attr := func(oid asn1.ObjectIdentifier, value func(*cryptobyte.Builder)) []byte {
		var b cryptobyte.Builder
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			b.AddASN1ObjectIdentifier(oid)
			b.AddASN1(cbasn1.SET, value)
		})
		return b.BytesOrPanic()
	}
	t = t.UTC().Truncate(time.Second)
	// Section 11.3: UTCTime for dates from 1950 through 2049, GeneralizedTime otherwise.
	st, err := asn1.Marshal(t)
	if err != nil {
		return nil, fmt.Errorf("cms: sign: signing time: %w", err)
	}
	list := [][]byte{
		attr(oidAttrContentType, func(b *cryptobyte.Builder) { b.AddASN1ObjectIdentifier(OIDData) }),
		attr(oidAttrSigningTime, func(b *cryptobyte.Builder) { b.AddBytes(st) }),
		attr(oidAttrMessageDig, func(b *cryptobyte.Builder) { b.AddASN1OctetString(digest) }),
	}
	if len(caps) > 0 {
		list = append(list, attr(oidAttrCapabilities, func(b *cryptobyte.Builder) { b.AddBytes(caps) }))
	}
	sortDER(list)
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SET, func(b *cryptobyte.Builder) {
		for _, a := range list {
			b.AddBytes(a)
		}
	})
	return b.Bytes()
}

// sortDER sorts encodings as DER orders the elements of a SET OF: as octet strings, the shorter one padded
// with zeros at the end (X.690 section 11.6).
func sortDER(list [][]byte) {
	less := func(a, b []byte) bool {
		for i := 0; i < len(a) || i < len(b); i++ {
			var x, y byte
			if i < len(a) {
				x = a[i]
			}
			if i < len(b) {
				y = b[i]
			}
			if x != y {
				return x < y
			}
		}
		return false
	}
	for i := 1; i < len(list); i++ {
		for j := i; j > 0 && less(list[j], list[j-1]); j-- {
			list[j], list[j-1] = list[j-1], list[j]
		}
	}
}

// addAlgorithm adds an AlgorithmIdentifier with NULL parameters when null is set, else without parameters.
func addAlgorithm(b *cryptobyte.Builder, oid asn1.ObjectIdentifier, null bool) {
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1ObjectIdentifier(oid)
		if null {
			b.AddASN1NULL()
		}
	})
}

// addIssuerAndSerial adds the IssuerAndSerialNumber of cert (RFC 5652 section 10.2.4).
func addIssuerAndSerial(b *cryptobyte.Builder, cert *x509.Certificate) {
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddBytes(cert.RawIssuer)
		b.AddASN1BigInt(cert.SerialNumber)
	})
}
