package proxy_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"testing"
	"time"

	"github.com/smimeproxy/smimeproxy/decrypt"
	"github.com/smimeproxy/smimeproxy/keystore"
)

// smimeRewriter returns the real decrypting Rewriter over an in-memory key store holding a fresh RSA key for
// user, and that key's certificate (PEM), to encrypt test mail to.
func smimeRewriter(t testing.TB, user string) (*decrypt.Decrypter, []byte) {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:   big.NewInt(time.Now().UnixNano()),
		Subject:        pkix.Name{CommonName: user},
		EmailAddresses: []string{user + "@example.org"},
		NotBefore:      time.Now().Add(-time.Hour),
		NotAfter:       time.Now().Add(24 * time.Hour),
		KeyUsage:       x509.KeyUsageKeyEncipherment | x509.KeyUsageDigitalSignature,
		ExtKeyUsage:    []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	store := keystore.NewMemory()
	if _, err := store.Put(context.Background(), user, []*x509.Certificate{cert}, key, keystore.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	rw, err := decrypt.New(decrypt.Options{Store: store})
	if err != nil {
		t.Fatal(err)
	}
	return rw, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}
