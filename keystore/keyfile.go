package keystore

import (
	"bytes"
	"crypto"
	"crypto/ecdh"
	"crypto/x509"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"

	"github.com/smimeproxy/smimeproxy/crypto/cms"
	pkcs12 "software.sslmate.com/src/go-pkcs12"
)

// Errors from ParseKeyFile and MergeKeyFiles (wrapped with detail; compare with errors.Is).
var (
	ErrWrongPassword = errors.New("keystore: wrong password")
	ErrNoPrivateKey  = errors.New("keystore: no private key in file")
	ErrNoCertificate = errors.New("keystore: no certificate for the private key")
	ErrKeyMismatch   = errors.New("keystore: key does not match certificate")
	ErrKeyFile       = errors.New("keystore: unreadable key file")
)

// id-X25519 and id-X448 (RFC 8410 section 3); crypto/x509 parses neither in certificates, nor X448 keys.
var (
	oidX25519 = asn1.ObjectIdentifier{1, 3, 101, 110}
	oidX448   = asn1.ObjectIdentifier{1, 3, 101, 111}
)

// ParseKeyFile reads a private key and its certificate chain from one file: PEM (PRIVATE KEY = PKCS#8
// RFC 5208 including X25519/X448 (RFC 8410), RSA PRIVATE KEY = PKCS#1 RFC 8017 appendix A.1.2, EC PRIVATE
// KEY = SEC1 RFC 5915, CERTIFICATE blocks) or DER PKCS#12 (RFC 7292, including the PBES2/AES form NSS and
// OpenSSL 3 write). password is for PKCS#12; PEM keys must be unencrypted. The chain starts with the leaf,
// the certificate whose public key matches the private key, followed by the other certificates in file order.
// It fails with ErrWrongPassword, ErrNoPrivateKey, ErrNoCertificate, ErrKeyMismatch or ErrKeyFile.
func ParseKeyFile(data []byte, password []byte) (chain []*x509.Certificate, key crypto.PrivateKey, err error) {
	return MergeKeyFiles([][]byte{data}, password)
}

// MergeKeyFiles is ParseKeyFile for a key and its certificates spread over several files (e.g. key.pem and
// cert.pem). Exactly one private key must be present in all of them together; certificates that do not belong
// to it are kept in the chain after the leaf.
func MergeKeyFiles(files [][]byte, password []byte) (chain []*x509.Certificate, key crypto.PrivateKey, err error) {
	var certs []*x509.Certificate
	var keys []crypto.PrivateKey
	for i, data := range files {
		c, k, err := readKeyFile(data, password)
		if err != nil {
			if len(files) > 1 {
				return nil, nil, fmt.Errorf("file %d: %w", i+1, err)
			}
			return nil, nil, err
		}
		certs = append(certs, c...)
		keys = append(keys, k...)
	}
	switch {
	case len(keys) == 0:
		return nil, nil, ErrNoPrivateKey
	case len(keys) > 1:
		return nil, nil, fmt.Errorf("%w: %d private keys, want one", ErrKeyFile, len(keys))
	case len(certs) == 0:
		return nil, nil, ErrNoCertificate
	}
	key = keys[0]
	leaf := -1
	for i, c := range certs {
		if KeyMatches(c, key) {
			leaf = i
			break
		}
	}
	if leaf < 0 {
		return nil, nil, fmt.Errorf("%w: none of %d certificates holds its public key", ErrKeyMismatch, len(certs))
	}
	chain = append(chain, certs[leaf])
	for i, c := range certs {
		if i != leaf && !c.Equal(certs[leaf]) {
			chain = append(chain, c)
		}
	}
	return chain, key, nil
}

// KeyMatches reports whether cert's public key is the public half of key.
func KeyMatches(cert *x509.Certificate, key crypto.PrivateKey) bool {
	if cert == nil || key == nil {
		return false
	}
	var pub crypto.PublicKey
	switch k := key.(type) {
	case interface{ Public() crypto.PublicKey }:
		pub = k.Public()
	default:
		return false
	}
	// crypto/x509 leaves X25519 and X448 public keys unparsed: compare the subjectPublicKey bits (RFC 8410
	// section 4).
	if x, ok := pub.(cms.X448PublicKey); ok {
		return spkiIs(cert, oidX448, x)
	}
	if x, ok := pub.(*ecdh.PublicKey); ok && x.Curve() == ecdh.X25519() {
		return spkiIs(cert, oidX25519, x.Bytes())
	}
	if e, ok := pub.(interface{ Equal(crypto.PublicKey) bool }); ok && e.Equal(cert.PublicKey) {
		return true
	}
	// A P-256/384/521 key read as *ecdh.PrivateKey against an *ecdsa.PublicKey certificate.
	if epub, ok := pub.(*ecdh.PublicKey); ok {
		if cp, ok := cert.PublicKey.(interface {
			ECDH() (*ecdh.PublicKey, error)
		}); ok {
			if ce, err := cp.ECDH(); err == nil {
				return ce.Equal(epub)
			}
		}
	}
	return false
}

func spkiIs(cert *x509.Certificate, algo asn1.ObjectIdentifier, key []byte) bool {
	var spki struct {
		Algo struct{ Algorithm asn1.ObjectIdentifier }
		Key  asn1.BitString
	}
	if _, err := asn1.Unmarshal(cert.RawSubjectPublicKeyInfo, &spki); err != nil {
		return false
	}
	return spki.Algo.Algorithm.Equal(algo) && bytes.Equal(spki.Key.Bytes, key)
}

// readKeyFile returns the certificates and private keys in one file.
func readKeyFile(data []byte, password []byte) ([]*x509.Certificate, []crypto.PrivateKey, error) {
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) == 0 {
		return nil, nil, fmt.Errorf("%w: empty", ErrKeyFile)
	}
	if bytes.Contains(trimmed, []byte("-----BEGIN ")) {
		return readPEM(trimmed)
	}
	if trimmed[0] != 0x30 {
		return nil, nil, fmt.Errorf("%w: neither PEM nor DER PKCS#12", ErrKeyFile)
	}
	return readPKCS12(data, password)
}

func readPKCS12(data []byte, password []byte) ([]*x509.Certificate, []crypto.PrivateKey, error) {
	key, cert, cas, err := pkcs12.DecodeChain(data, string(password))
	switch {
	case err == nil:
		return append([]*x509.Certificate{cert}, cas...), []crypto.PrivateKey{key}, nil
	case errors.Is(err, pkcs12.ErrIncorrectPassword) || errors.Is(err, pkcs12.ErrDecryption):
		return nil, nil, ErrWrongPassword
	}
	// go-pkcs12 reads DER only and wants a certificate; NSS writes BER throughout (see pkcs12.go).
	return readBERPKCS12(data, password)
}

func readPEM(data []byte) ([]*x509.Certificate, []crypto.PrivateKey, error) {
	var certs []*x509.Certificate
	var keys []crypto.PrivateKey
	rest := data
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if _, enc := b.Headers["Proc-Type"]; enc {
			return nil, nil, fmt.Errorf("%w: encrypted PEM key (%s); decrypt it first, e.g. openssl pkey", ErrKeyFile, b.Type)
		}
		switch b.Type {
		case "CERTIFICATE":
			c, err := x509.ParseCertificate(b.Bytes)
			if err != nil {
				return nil, nil, fmt.Errorf("%w: certificate: %v", ErrKeyFile, err)
			}
			certs = append(certs, c)
		case "PRIVATE KEY":
			k, err := parsePKCS8(b.Bytes)
			if err != nil {
				return nil, nil, err
			}
			keys = append(keys, k)
		case "RSA PRIVATE KEY":
			k, err := x509.ParsePKCS1PrivateKey(b.Bytes)
			if err != nil {
				return nil, nil, fmt.Errorf("%w: pkcs#1 key: %v", ErrKeyFile, err)
			}
			keys = append(keys, k)
		case "EC PRIVATE KEY":
			k, err := x509.ParseECPrivateKey(b.Bytes)
			if err != nil {
				return nil, nil, fmt.Errorf("%w: sec1 key: %v", ErrKeyFile, err)
			}
			keys = append(keys, k)
		case "ENCRYPTED PRIVATE KEY":
			return nil, nil, fmt.Errorf("%w: encrypted PKCS#8 key; use PKCS#12 or decrypt it first, e.g. openssl pkey", ErrKeyFile)
		}
	}
	if len(certs) == 0 && len(keys) == 0 {
		return nil, nil, fmt.Errorf("%w: no CERTIFICATE or private key PEM block", ErrKeyFile)
	}
	return certs, keys, nil
}

// parsePKCS8 parses a PKCS#8 PrivateKeyInfo (RFC 5208 section 5), adding X448 (RFC 8410 section 7), which
// crypto/x509 does not know, as a cms.KeyAgreer.
func parsePKCS8(der []byte) (crypto.PrivateKey, error) {
	k, err := x509.ParsePKCS8PrivateKey(der)
	if err == nil {
		return k, nil
	}
	var info struct {
		Version int
		Algo    struct{ Algorithm asn1.ObjectIdentifier }
		Key     []byte
	}
	if rest, err2 := asn1.Unmarshal(der, &info); err2 == nil && len(rest) == 0 && info.Algo.Algorithm.Equal(oidX448) {
		// CurvePrivateKey ::= OCTET STRING inside the privateKey OCTET STRING (RFC 8410 section 7).
		var raw []byte
		if rest, err := asn1.Unmarshal(info.Key, &raw); err != nil || len(rest) != 0 {
			return nil, fmt.Errorf("%w: bad x448 private key", ErrKeyFile)
		}
		a, err := cms.NewX448KeyAgreer(raw)
		if err != nil {
			return nil, fmt.Errorf("%w: x448 key: %v", ErrKeyFile, err)
		}
		return a, nil
	}
	return nil, fmt.Errorf("%w: pkcs#8 key: %v", ErrKeyFile, err)
}
