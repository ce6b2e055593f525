package decrypt

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/smallstep/pkcs7"

	"github.com/smimeproxy/smimeproxy/crypto/cms"
	"github.com/smimeproxy/smimeproxy/internal/mimepart"
	"github.com/smimeproxy/smimeproxy/internal/testenv"
)

// testIdentity makes a self-signed RSA-2048 certificate for email.
func testIdentity(t testing.TB, email string) (*x509.Certificate, *rsa.PrivateKey) {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return certFor(t, email, key, &key.PublicKey), key
}

func certFor(t testing.TB, email string, signer any, pub any) *x509.Certificate {
	t.Helper()
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber:   serial,
		Subject:        pkix.Name{CommonName: email},
		EmailAddresses: []string{email},
		NotBefore:      time.Now().Add(-time.Hour),
		NotAfter:       time.Now().Add(24 * time.Hour),
		KeyUsage:       x509.KeyUsageKeyEncipherment | x509.KeyUsageDigitalSignature,
		ExtKeyUsage:    []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, signer)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

func TestEncryptToSelf(t *testing.T) {
	cert, key := testIdentity(t, "me@example.com")
	cert2, key2 := testIdentity(t, "me2@example.com")
	msg := "From: me@example.com\nTo: you@example.com\nSubject: Draft\n" +
		"X-Smimeproxy-Status: decrypted; ref=x; mac=y\n" +
		"Content-Type: text/plain;\n charset=utf-8\nContent-Transfer-Encoding: 8bit\nMIME-Version: 1.0\n\n" +
		"secret plaintext\nline two\n"
	out, err := EncryptToSelf([]byte(msg), []*x509.Certificate{cert, cert2})
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(out, []byte("secret plaintext")) {
		t.Fatal("plaintext in the encrypted message")
	}
	header, body := mimepart.Split(out)
	h := string(header)
	for _, want := range []string{"From: me@example.com\r\n", "Subject: Draft\r\n", "MIME-Version: 1.0\r\n",
		"Content-Type: application/pkcs7-mime; smime-type=enveloped-data; name=smime.p7m\r\n"} {
		if !strings.Contains(h, want) {
			t.Errorf("outer header lacks %q:\n%s", want, h)
		}
	}
	if strings.Contains(strings.ToLower(h), "x-smimeproxy") || strings.Contains(h, "charset") {
		t.Errorf("outer header keeps a status or inner content field:\n%s", h)
	}
	der, err := base64.StdEncoding.DecodeString(string(bytes.ReplaceAll(body, []byte("\r\n"), nil)))
	if err != nil {
		t.Fatal(err)
	}
	// Decrypt with an independent implementation, for each recipient.
	for i, id := range []struct {
		cert *x509.Certificate
		key  *rsa.PrivateKey
	}{{cert, key}, {cert2, key2}} {
		p7, err := pkcs7.Parse(der)
		if err != nil {
			t.Fatal(err)
		}
		inner, err := p7.Decrypt(id.cert, id.key)
		if err != nil {
			t.Fatalf("recipient %d: pkcs7 Decrypt: %v", i, err)
		}
		want := "Content-Type: text/plain;\r\n charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n" +
			"secret plaintext\r\nline two\r\n"
		if string(inner) != want {
			t.Errorf("recipient %d: inner entity = %q, want %q", i, inner, want)
		}
	}
}

func TestEncryptToSelfErrors(t *testing.T) {
	if _, err := EncryptToSelf([]byte("Subject: x\r\n\r\nbody"), nil); err == nil {
		t.Error("no certificate: no error")
	}
	// cms.Encrypt cannot encrypt to an Ed25519 key (a signing-only algorithm).
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := EncryptToSelf([]byte("Subject: x\r\n\r\nbody"), []*x509.Certificate{certFor(t, "ed@example.com", priv, pub)}); !errors.Is(err, cms.ErrRecipientKey) {
		t.Errorf("Ed25519 certificate: error %v, want cms.ErrRecipientKey", err)
	}
}

// TestEncryptToSelfOpenSSL checks the output with a real S/MIME client, openssl cms.
func TestEncryptToSelfOpenSSL(t *testing.T) {
	cert, key := testIdentity(t, "me@example.com")
	dir := t.TempDir()
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})
	out, err := EncryptToSelf([]byte("Subject: s\r\nContent-Type: text/plain\r\n\r\nhello openssl\r\n"), []*x509.Certificate{cert})
	if err != nil {
		t.Fatal(err)
	}
	for name, b := range map[string][]byte{"key.pem": keyPEM, "cert.pem": certPEM, "msg.eml": out} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(testenv.LookPath(t, "openssl"), "cms", "-decrypt", "-in", "msg.eml", "-recip", "cert.pem", "-inkey", "key.pem")
	cmd.Dir = dir
	got, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("openssl cms -decrypt: %v\n%s", err, got)
	}
	if want := "Content-Type: text/plain\r\n\r\nhello openssl\r\n"; string(got) != want {
		t.Errorf("openssl decrypted %q, want %q", got, want)
	}
}

func TestEncryptToSelfKeepsSMIME(t *testing.T) {
	cert, _ := testIdentity(t, "me@example.com")
	once, err := EncryptToSelf([]byte("Subject: s\r\n\r\nhello\r\n"), []*x509.Certificate{cert})
	if err != nil {
		t.Fatal(err)
	}
	twice, err := EncryptToSelf(once, []*x509.Certificate{cert})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(once, twice) {
		t.Error("an encrypted message was encrypted again")
	}
}

// TestEncryptToSelfSignedIsNotEncrypted: opaque signed-data (Outlook's signed-then-encrypted content, once
// decrypted) is signed, not encrypted, so it is encrypted before it can go upstream — whatever its smime-type
// parameter claims; only real EnvelopedData passes unchanged.
func TestEncryptToSelfSignedIsNotEncrypted(t *testing.T) {
	cert, _ := testIdentity(t, "me@example.com")
	// A DER ContentInfo of type signed-data (1.2.840.113549.1.7.2) with an empty content.
	signed, err := asn1.Marshal(struct {
		Type    asn1.ObjectIdentifier
		Content asn1.RawValue `asn1:"explicit,tag:0"`
	}{asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 2}, asn1.RawValue{FullBytes: []byte{0x30, 0x00}}})
	if err != nil {
		t.Fatal(err)
	}
	b64 := base64.StdEncoding.EncodeToString(signed)
	for _, ct := range []string{
		"application/pkcs7-mime; smime-type=signed-data; name=smime.p7m",
		"application/pkcs7-mime; name=smime.p7m",
		"application/x-pkcs7-mime; smime-type=enveloped-data", // a lying parameter
	} {
		msg := []byte("Subject: signed secret\r\nContent-Type: " + ct + "\r\nContent-Transfer-Encoding: base64\r\n\r\n" + b64 + "\r\n")
		out, err := EncryptToSelf(msg, []*x509.Certificate{cert})
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Equal(out, msg) || bytes.Contains(out, []byte(b64)) {
			t.Errorf("%s: signed-data passed unencrypted", ct)
		}
		if !alreadyEncrypted(out) {
			t.Errorf("%s: the result is not recognised as encrypted", ct)
		}
	}
}

// TestEncryptToSelfProtectsHeaders: re-encrypting the served copy of a message with protected header fields
// (RFC 9788 hp="cipher") never puts in clear a field value the original kept only inside the encryption, and
// the result serves the protected fields again.
func TestEncryptToSelfProtectsHeaders(t *testing.T) {
	const outer = "From: alice@example.com\r\nTo: bob@example.com\r\nSubject: [...]\r\nDate: Mon, 2 Mar 2026 10:00:00 +0000\r\n"
	const secrets = "Subject: Merger with Initech\r\nTo: bob@example.com, eve.secret@example.com\r\n" +
		"Cc: carol.secret@example.com\r\nMessage-ID: <merger-77@example.com>\r\nKeywords: initech-secret\r\n"
	const body = "The merger closes on Friday.\r\n"
	cases := map[string]struct {
		inner     string
		wantOuter []string // exact outer fields besides the MIME ones
	}{
		"hp=cipher, no HP-Outer": {
			"Content-Type: text/plain; charset=utf-8; hp=\"cipher\"\r\nFrom: alice@example.com\r\n" +
				"Date: Mon, 2 Mar 2026 10:00:00 +0000\r\n" + secrets + "\r\n" + body,
			[]string{"From: alice@example.com", "Date: Mon, 2 Mar 2026 10:00:00 +0000", "Subject: [...]"},
		},
		"hp=cipher with HP-Outer": {
			"Content-Type: text/plain; charset=utf-8; hp=\"cipher\"\r\nFrom: alice@example.com\r\n" +
				"Date: Mon, 2 Mar 2026 10:00:00 +0000\r\n" + secrets +
				"HP-Outer: From: alice@example.com\r\nHP-Outer: To: bob@example.com\r\nHP-Outer: Subject: [...]\r\n\r\n" + body,
			[]string{"From: alice@example.com", "To: bob@example.com", "Subject: [...]"},
		},
		"signed payload with hp": {
			"Content-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; micalg=sha-256; boundary=\"b1\"\r\n\r\n" +
				"--b1\r\nContent-Type: text/plain; charset=utf-8; hp=\"cipher\"\r\nFrom: alice@example.com\r\n" +
				"Date: Mon, 2 Mar 2026 10:00:00 +0000\r\n" + secrets + "\r\n" + body +
				"--b1\r\nContent-Type: application/pkcs7-signature; name=smime.p7s\r\nContent-Transfer-Encoding: base64\r\n\r\nAAAA\r\n--b1--\r\n",
			[]string{"From: alice@example.com", "Date: Mon, 2 Mar 2026 10:00:00 +0000", "Subject: [...]"},
		},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t, 0)
			orig := encryptedMessage(t, "[...]", c.inner, f.cert)
			orig = append([]byte(outer), orig[bytes.Index(orig, []byte("MIME-Version")):]...)
			var calls atomic.Int32
			served, err := f.d.Rewrite(context.Background(), MessageRef{User: "alice", Mailbox: "INBOX", UIDValidity: 1, UID: 1}, rawOf(orig, &calls))
			if err != nil {
				t.Fatal(err)
			}
			if statusOf(served) != "decrypted" {
				t.Fatalf("not decrypted:\n%s", served)
			}
			out, err := EncryptToSelf(served, []*x509.Certificate{f.cert})
			if err != nil {
				t.Fatal(err)
			}
			h, _ := mimepart.Split(out)
			for _, secret := range []string{"Merger", "eve.secret", "carol.secret", "merger-77", "initech-secret", "Received"} {
				if bytes.Contains(h, []byte(secret)) {
					t.Errorf("outer header shows %q, which the original kept inside:\n%s", secret, h)
				}
			}
			var got []string
			for _, fl := range headerFields(h) {
				if n := strings.ToLower(fl.name); !strings.HasPrefix(n, "content-") && n != "mime-version" {
					got = append(got, strings.TrimRight(string(fl.raw), "\r\n"))
				}
			}
			if strings.Join(got, "|") != strings.Join(c.wantOuter, "|") {
				t.Errorf("outer fields = %q, want %q", got, c.wantOuter)
			}
			// Served again, the protected fields are back.
			again, err := f.d.Rewrite(context.Background(), MessageRef{User: "alice", Mailbox: "Drafts", UIDValidity: 1, UID: 1}, rawOf(out, &calls))
			if err != nil {
				t.Fatal(err)
			}
			for _, want := range []string{"Subject: Merger with Initech", "Cc: carol.secret@example.com", body} {
				if !bytes.Contains(again, []byte(want)) {
					t.Errorf("re-encrypted copy served without %q:\n%s", want, again)
				}
			}
			if bytes.Contains(again, []byte("\nSubject: [...]")) {
				t.Errorf("re-encrypted copy served with the obscured Subject:\n%s", again)
			}
		})
	}
	// Without header protection the outer header keeps the fields, as before.
	cert, _ := testIdentity(t, "me@example.com")
	out, err := EncryptToSelf([]byte("From: me@example.com\r\nSubject: plain draft\r\nContent-Type: text/plain\r\n\r\nx\r\n"), []*x509.Certificate{cert})
	if err != nil {
		t.Fatal(err)
	}
	if h, _ := mimepart.Split(out); !bytes.Contains(h, []byte("Subject: plain draft\r\n")) {
		t.Errorf("unprotected message lost its outer Subject:\n%s", h)
	}
}
