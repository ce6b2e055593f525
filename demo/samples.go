package demo

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"fmt"
	"math/big"
	"time"

	"github.com/smimeproxy/smimeproxy/crypto/cms"
	"github.com/smimeproxy/smimeproxy/decrypt"
)

// Sample is one message the demo puts upstream, in this order (UID = index + 1).
type Sample struct {
	Subject string
	// Status is the X-Smimeproxy-Status the proxy serves: "decrypted", "undecryptable", or "" (not encrypted).
	Status string
	// Plaintext is a line of the body a client sees through the proxy ("" when undecryptable).
	Plaintext string
}

// Samples lists the demo messages.
var Samples = []Sample{
	{Subject: "Welcome to smimeproxy", Status: "decrypted", Plaintext: "This message was S/MIME encrypted upstream."},
	{Subject: "Signed, then encrypted", Status: "decrypted", Plaintext: "Signed by the demo key inside the envelope."},
	{Subject: "A plain message", Status: "", Plaintext: "This one was never encrypted."},
	{Subject: "Not for you", Status: "undecryptable"},
}

// identity is a certificate with its RSA key.
type identity struct {
	cert *x509.Certificate
	key  *rsa.PrivateKey
}

// newIdentity makes a self-signed RSA-2048 S/MIME certificate for email, valid for a year (RFC 8550
// section 4.4: emailProtection, the address as an rfc822Name).
func newIdentity(email string) (identity, error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return identity{}, fmt.Errorf("demo: key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 63))
	if err != nil {
		return identity{}, fmt.Errorf("demo: serial: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "smimeproxy demo " + email, Organization: []string{"smimeproxy demo"}},
		EmailAddresses:        []string{email},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.AddDate(1, 0, 0),
		KeyUsage:              x509.KeyUsageKeyEncipherment | x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return identity{}, fmt.Errorf("demo: certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return identity{}, fmt.Errorf("demo: certificate: %w", err)
	}
	return identity{cert: cert, key: key}, nil
}

// buildSamples returns the raw messages of Samples: encrypted to me, except the plain one and the one encrypted
// to stranger.
func buildSamples(me, stranger identity, email string, date time.Time) ([][]byte, error) {
	header := func(i int, from string) string {
		return fmt.Sprintf("From: %s\r\nTo: %s\r\nSubject: %s\r\nDate: %s\r\nMessage-ID: <demo-%d@smimeproxy.invalid>\r\n",
			from, email, Samples[i].Subject, date.Add(time.Duration(i)*time.Minute).Format(time.RFC1123Z), i+1)
	}
	text := func(s string) string {
		return "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n" + s + "\r\n"
	}
	out := make([][]byte, len(Samples))
	var err error

	welcome := text(Samples[0].Plaintext + "\r\n\r\nYou are reading it through smimeproxy, which decrypted it with the demo key.\r\n" +
		"The upstream server still holds only ciphertext; see the X-Smimeproxy-Status header.")
	if out[0], err = decrypt.EncryptToSelf([]byte(header(0, "smimeproxy demo <"+email+">")+welcome), []*x509.Certificate{me.cert}); err != nil {
		return nil, err
	}

	signed, err := signedEntity(text(Samples[1].Plaintext), me)
	if err != nil {
		return nil, err
	}
	if out[1], err = decrypt.EncryptToSelf([]byte(header(1, "smimeproxy demo <"+email+">")+signed), []*x509.Certificate{me.cert}); err != nil {
		return nil, err
	}

	out[2] = []byte(header(2, "Plain Sender <plain@example.com>") + "MIME-Version: 1.0\r\n" + text(Samples[2].Plaintext))

	if out[3], err = decrypt.EncryptToSelf([]byte(header(3, "Someone Else <else@example.com>")+
		text("Encrypted to another certificate; the demo key cannot open it.")), []*x509.Certificate{stranger.cert}); err != nil {
		return nil, err
	}
	return out, nil
}

// signedEntity wraps the MIME entity content in multipart/signed with a detached SHA-256 signature by id
// (RFC 8551 section 3.5.3).
func signedEntity(content string, id identity) (string, error) {
	sig, err := cms.Sign([]byte(content), id.key, []*x509.Certificate{id.cert}, nil)
	if err != nil {
		return "", fmt.Errorf("demo: sign: %w", err)
	}
	const boundary = "smimeproxy-demo-signed"
	var b bytes.Buffer
	fmt.Fprintf(&b, "Content-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; micalg=sha-256; boundary=%q\r\n\r\n", boundary)
	fmt.Fprintf(&b, "--%s\r\n%s\r\n--%s\r\n", boundary, content, boundary)
	b.WriteString("Content-Type: application/pkcs7-signature; name=smime.p7s\r\nContent-Transfer-Encoding: base64\r\n" +
		"Content-Disposition: attachment; filename=smime.p7s\r\n\r\n")
	enc := base64.StdEncoding.EncodeToString(sig)
	for len(enc) > 76 {
		b.WriteString(enc[:76] + "\r\n")
		enc = enc[76:]
	}
	fmt.Fprintf(&b, "%s\r\n--%s--\r\n", enc, boundary)
	return b.String(), nil
}
