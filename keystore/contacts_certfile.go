package keystore

import (
	"bytes"
	"crypto/x509"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// ErrCertFile is returned (wrapped with detail) when a certificate file does not parse.
var ErrCertFile = errors.New("keystore: unreadable certificate file")

// maxCertFileSize bounds a certificate file or bundle.
const maxCertFileSize = 16 << 20

var oidSignedData = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 2}

// ParseCertificates reads the public certificates in one file: PEM (CERTIFICATE, X509 CERTIFICATE and PKCS7
// blocks; other blocks are ignored), a DER certificate (.cer, .crt, .der), or a PKCS #7 / CMS SignedData in DER
// or BER, such as a certs-only bundle (.p7b, .p7c; RFC 8551 section 3.2.2: a degenerate SignedData without
// signers) or a detached signature (.p7s), whose certificates it returns without checking any signature. It
// fails with ErrCertFile when the file holds no certificate or does not parse.
func ParseCertificates(data []byte) ([]*x509.Certificate, error) {
	if len(data) > maxCertFileSize {
		return nil, fmt.Errorf("%w: larger than %d MiB", ErrCertFile, maxCertFileSize>>20)
	}
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) == 0 {
		return nil, fmt.Errorf("%w: empty", ErrCertFile)
	}
	var certs []*x509.Certificate
	if bytes.Contains(trimmed, []byte("-----BEGIN ")) {
		rest := trimmed
		for {
			var b *pem.Block
			b, rest = pem.Decode(rest)
			if b == nil {
				break
			}
			switch b.Type {
			case "CERTIFICATE", "X509 CERTIFICATE":
				c, err := x509.ParseCertificate(b.Bytes)
				if err != nil {
					return nil, fmt.Errorf("%w: certificate: %v", ErrCertFile, err)
				}
				certs = append(certs, c)
			case "PKCS7", "CMS":
				cs, err := parsePKCS7Certs(b.Bytes)
				if err != nil {
					return nil, err
				}
				certs = append(certs, cs...)
			}
		}
	} else {
		if trimmed[0] != 0x30 {
			return nil, fmt.Errorf("%w: neither PEM nor DER", ErrCertFile)
		}
		if c, err := x509.ParseCertificate(data); err == nil {
			certs = append(certs, c)
		} else {
			cs, err7 := parsePKCS7Certs(data)
			if err7 != nil {
				if errors.Is(err7, errNotSignedData) {
					return nil, fmt.Errorf("%w: neither a DER certificate (%v) nor PKCS #7", ErrCertFile, err)
				}
				return nil, err7
			}
			certs = cs
		}
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("%w: no certificate in it", ErrCertFile)
	}
	return certs, nil
}

var errNotSignedData = fmt.Errorf("%w: not a PKCS #7 signed-data", ErrCertFile)

// parsePKCS7Certs returns the X.509 certificates of a ContentInfo holding SignedData (RFC 5652 sections 3 and
// 5.1): the certificates field is a [0] IMPLICIT SET OF CertificateChoices; only the plain Certificate choice
// (a SEQUENCE) is taken, attribute and other certificate formats are skipped. BER (indefinite lengths, as some
// Windows and NSS exports have) is rewritten to DER first.
func parsePKCS7Certs(ber []byte) ([]*x509.Certificate, error) {
	der, _, err := berToDER(ber, 0)
	if err != nil {
		return nil, errNotSignedData
	}
	var ci, content, sd, set cryptobyte.String
	var oid asn1.ObjectIdentifier
	in := cryptobyte.String(der)
	if !in.ReadASN1(&ci, cbasn1.SEQUENCE) || !ci.ReadASN1ObjectIdentifier(&oid) || !oid.Equal(oidSignedData) {
		return nil, errNotSignedData
	}
	var version int64
	if !ci.ReadASN1(&content, cbasn1.Tag(0).Constructed().ContextSpecific()) ||
		!content.ReadASN1(&sd, cbasn1.SEQUENCE) ||
		!sd.ReadASN1Integer(&version) || !sd.SkipASN1(cbasn1.SET) || !sd.SkipASN1(cbasn1.SEQUENCE) {
		return nil, fmt.Errorf("%w: bad PKCS #7 signed-data", ErrCertFile)
	}
	var present bool
	if !sd.ReadOptionalASN1(&set, &present, cbasn1.Tag(0).Constructed().ContextSpecific()) {
		return nil, fmt.Errorf("%w: bad PKCS #7 certificates", ErrCertFile)
	}
	var certs []*x509.Certificate
	for !set.Empty() {
		var elem cryptobyte.String
		var tag cbasn1.Tag
		if !set.ReadAnyASN1Element(&elem, &tag) {
			return nil, fmt.Errorf("%w: bad PKCS #7 certificates", ErrCertFile)
		}
		if tag != cbasn1.SEQUENCE {
			continue // extendedCertificate, attribute certificates, other (RFC 5652 section 10.2.2)
		}
		c, err := x509.ParseCertificate(elem)
		if err != nil {
			return nil, fmt.Errorf("%w: PKCS #7 certificate: %v", ErrCertFile, err)
		}
		certs = append(certs, c)
	}
	return certs, nil
}
