package main

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	mrand "math/rand/v2"
	"time"

	"github.com/smimeproxy/smimeproxy/decrypt"
	"github.com/smimeproxy/smimeproxy/internal/mimepart"
)

// identity is the benchmark user's generated RSA-2048 key and self-signed certificate.
type identity struct {
	key  *rsa.PrivateKey
	cert *x509.Certificate
}

func newIdentity(email string) (*identity, error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, fmt.Errorf("smimebench: generating the test key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:   big.NewInt(time.Now().UnixNano()),
		Subject:        pkix.Name{CommonName: "smimebench test key " + email},
		EmailAddresses: []string{email},
		NotBefore:      time.Now().Add(-time.Hour),
		NotAfter:       time.Now().Add(24 * time.Hour),
		KeyUsage:       x509.KeyUsageKeyEncipherment | x509.KeyUsageDigitalSignature,
		ExtKeyUsage:    []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("smimebench: certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("smimebench: certificate: %w", err)
	}
	return &identity{key: key, cert: cert}, nil
}

// keyPEM is the private key as PKCS#8 PEM (for openssl and `smimeproxy keys import`).
func (id *identity) keyPEM() []byte {
	der, _ := x509.MarshalPKCS8PrivateKey(id.key)
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

func (id *identity) certPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: id.cert.Raw})
}

// twin is one benchmark message: the plain message and its encryption.
type twin struct {
	plain []byte // the plain message with CRLF line ends, as Dovecot serves it (seeded with LF)
	body  []byte // plain's body: what the decrypted message must carry
	enc   []byte // the encrypted message, CRLF (as Dovecot serves it and openssl reads it)
}

// messageID is the Message-ID of twin i; it survives encryption in the outer header.
func messageID(i int) string { return fmt.Sprintf("<bench-%d@example.org>", i) }

// makeTwin builds message i: a text/plain message whose encryption is about encSize bytes (base64 with CRLF
// line breaks grows the DER by 78/57).
func makeTwin(i, encSize int, cert *x509.Certificate) (twin, error) {
	bodyLen := max(encSize*57/78-700, 64)
	var b bytes.Buffer
	b.Grow(bodyLen + 512)
	fmt.Fprintf(&b, "From: sender%d@example.org\nTo: bench@example.org\nSubject: smimebench message %d\n"+
		"Date: Mon, 02 Mar 2026 10:%02d:00 +0000\nMessage-ID: %s\nMIME-Version: 1.0\n"+
		"Content-Type: text/plain; charset=us-ascii\nContent-Transfer-Encoding: 7bit\n\n", i, i, i%60, messageID(i))
	hdrLen := b.Len()
	rng := mrand.New(mrand.NewChaCha8([32]byte{byte(i), byte(i >> 8), byte(i >> 16), byte(i >> 24)}))
	const alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,"
	line := make([]byte, 77)
	line[76] = '\n'
	for b.Len()-hdrLen < bodyLen {
		for j := range 76 {
			line[j] = alphabet[rng.IntN(len(alphabet))]
		}
		b.Write(line)
	}
	crlf := toCRLF(b.Bytes())
	enc, err := decrypt.EncryptToSelf(crlf, []*x509.Certificate{cert})
	if err != nil {
		return twin{}, fmt.Errorf("smimebench: encrypting message %d: %w", i, err)
	}
	_, body := mimepart.Split(crlf)
	return twin{plain: crlf, body: body, enc: enc}, nil
}

func toCRLF(b []byte) []byte { return bytes.ReplaceAll(b, []byte("\n"), []byte("\r\n")) }

func toLF(b []byte) []byte { return bytes.ReplaceAll(b, []byte("\r\n"), []byte("\n")) }
