package smime_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/smimeproxy/smimeproxy/crypto/cms"
	"github.com/smimeproxy/smimeproxy/crypto/smime"
	"github.com/smimeproxy/smimeproxy/keystore"
)

// corpusIdentity loads a Thunderbird corpus identity (PKCS#12, password nss).
func corpusIdentity(t testing.TB, name string) ([]*x509.Certificate, crypto.Signer) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(corpus, name+".p12"))
	if err != nil {
		t.Fatal(err)
	}
	chain, key, err := keystore.ParseKeyFile(data, []byte("nss"))
	if err != nil {
		t.Fatal(err)
	}
	return chain, key.(crypto.Signer)
}

func corpusRoots(t testing.TB) *x509.CertPool {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(corpus, "TestCA.pem"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		t.Fatal("TestCA.pem: no certificate")
	}
	return pool
}

// eightBitMessage is what an 8BITMIME/SMTPUTF8 client submits: LF line ends, UTF-8 text without a transfer
// encoding, and a part declared binary.
const eightBitMessage = "From: Alice <Alice@example.com>\nTo: Bob@example.com\nSubject: Grüße\nMIME-Version: 1.0\n" +
	"Content-Type: multipart/mixed; boundary=\"xx\"\n\npreamble\n--xx\nContent-Type: text/plain; charset=utf-8\n" +
	"Content-Transfer-Encoding: 8bit\n\nGrüße aus Köln.\nZeile zwei.  \n--xx\nContent-Type: application/octet-stream\n" +
	"Content-Transfer-Encoding: binary\n\n\x00\x01\xff\r\x0a\x0a\x80\n--xx--\nepilogue\n"

func TestComposeSignVerifies(t *testing.T) {
	chain, key := corpusIdentity(t, "Alice")
	signed, err := smime.Sign([]byte(eightBitMessage), key, chain, nil)
	if err != nil {
		t.Fatalf("Sign() = %v", err)
	}
	// RFC 8551 section 3.1.3: after canonicalization the message is 7-bit with CRLF line ends, so any
	// transport (7-bit hops included) leaves the signed bytes alone.
	hdrEnd := bytes.Index(signed, []byte("\r\n\r\n"))
	for i, c := range signed[hdrEnd:] {
		if c >= 0x80 || c == 0 || c == '\n' && signed[hdrEnd+i-1] != '\r' {
			t.Fatalf("signed body has byte %#x at %d: not 7-bit CRLF", c, hdrEnd+i)
		}
	}
	if !strings.Contains(string(signed[:hdrEnd]), "Subject: Grüße") {
		t.Errorf("outer header lost the subject: %q", signed[:hdrEnd])
	}
	sig := smime.Verify(signed, &smime.VerifyOptions{Roots: corpusRoots(t)})
	if sig == nil || !sig.Valid || sig.Signed.Digest != "sha256" {
		t.Fatalf("Verify(Sign()) = %+v", sig)
	}
	// The binary part's bytes survive exactly, the text's decoded content too.
	if !bytes.Contains(signed, []byte("AAH/DQoKgA==")) {
		t.Errorf("binary part not base64 of its exact bytes:\n%s", signed)
	}
	if !bytes.Contains(signed, []byte("Gr=C3=BC=C3=9Fe aus K=C3=B6ln.\r\nZeile zwei. =20\r\n")) {
		t.Errorf("8-bit text not quoted-printable:\n%s", signed)
	}
	if _, err := smime.Sign(signed, key, chain, nil); !errors.Is(err, smime.ErrAlreadyProtected) {
		t.Errorf("Sign(signed) = %v, want ErrAlreadyProtected", err)
	}
	// openssl cms -verify accepts the raw message.
	dir := t.TempDir()
	in := filepath.Join(dir, "signed.eml")
	os.WriteFile(in, signed, 0o600)
	run(t, nil, "openssl", "cms", "-verify", "-in", in, "-CAfile", filepath.Join(corpus, "TestCA.pem"), "-purpose", "any", "-out", os.DevNull)
}

func TestComposeSignThenEncrypt(t *testing.T) {
	chain, key := corpusIdentity(t, "Alice")
	b := bob(t)
	signed, err := smime.Sign([]byte(eightBitMessage), key, chain, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, auth := range []bool{false, true} {
		enc, err := smime.Encrypt(signed, []*x509.Certificate{b.Cert, chain[0]}, &cms.EncryptOptions{Authenticated: auth})
		if err != nil {
			t.Fatalf("Encrypt() = %v", err)
		}
		if bytes.Contains(enc, []byte("aus K")) || bytes.Contains(enc, []byte("Gr=C3")) {
			t.Fatal("plaintext visible in the encrypted message")
		}
		wantType := "smime-type=enveloped-data"
		if auth {
			wantType = "smime-type=authEnveloped-data"
		}
		if !bytes.Contains(enc, []byte(wantType)) || !bytes.Contains(enc, []byte("Subject: Grüße\r\n")) {
			t.Errorf("Encrypt(auth=%v) header: %q", auth, enc[:bytes.Index(enc, []byte("\r\n\r\n"))])
		}
		res := smime.Process(context.Background(), enc, &ring{keys: []smime.Key{b}}, nil)
		if res.Status != smime.Decrypted || res.Info.Authenticated != auth {
			t.Fatalf("Process(Encrypt(auth=%v)) = %v %s %+v", auth, res.Status, res.Reason, res.Info)
		}
		sig := smime.Verify(res.Served, &smime.VerifyOptions{Roots: corpusRoots(t)})
		if sig == nil || !sig.Valid {
			t.Errorf("signature of the decrypted message = %+v", sig)
		}
		if _, err := smime.Encrypt(enc, []*x509.Certificate{b.Cert}, nil); !errors.Is(err, smime.ErrAlreadyProtected) {
			t.Errorf("Encrypt(encrypted) = %v, want ErrAlreadyProtected", err)
		}
	}
	// The sender's own key opens it too.
	enc, _ := smime.Encrypt(signed, []*x509.Certificate{b.Cert, chain[0]}, nil)
	_, aliceKey := corpusIdentity(t, "Alice")
	if res := smime.Process(context.Background(), enc, &ring{keys: []smime.Key{{Cert: chain[0], Private: aliceKey}}}, nil); res.Status != smime.Decrypted {
		t.Errorf("Process with the sender's key = %v %s", res.Status, res.Reason)
	}
}

func TestCanonicalizeKeepsCanonical(t *testing.T) {
	// A 7-bit CRLF entity is already canonical: nothing changes, so a client's own canonical form is kept.
	in := []byte("Content-Type: text/plain\r\n\r\nline one\r\nline two\r\n")
	if got := smime.Canonicalize(in); !bytes.Equal(got, in) {
		t.Errorf("Canonicalize(canonical) = %q", got)
	}
	lf := []byte("Content-Type: text/plain\n\nline one\nline two\n")
	if got := smime.Canonicalize(lf); !bytes.Equal(got, in) {
		t.Errorf("Canonicalize(LF) = %q, want %q", got, in)
	}
}
