package smime_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/smimeproxy/smimeproxy/crypto/cms"
	"github.com/smimeproxy/smimeproxy/crypto/smime"
)

const hpMessage = "From: Alice <alice@example.com>\nTo: Bob <bob@example.com>\nSubject: The merger is on\n" +
	"Keywords: confidential\nDate: Mon, 2 Jun 2025 10:00:00 +0000\nMessage-ID: <hp-1@example.com>\n" +
	"Content-Type: text/plain; charset=utf-8\n\nSigning on Friday.\n"

// headerOf returns the header fields of msg (up to the empty line).
func headerOf(msg []byte) string {
	if i := bytes.Index(msg, []byte("\r\n\r\n")); i >= 0 {
		return string(msg[:i+2])
	}
	return string(msg)
}

// TestComposeProtectedSubject: RFC 9788 header protection, signed then encrypted. What is stored upstream
// shows "Subject: [...]" only; the signed payload carries the real fields under hp="cipher"; the proxy's own
// decrypt path (Process, serve.go's hp= rule) serves the real Subject, and the signature still verifies.
func TestComposeProtectedSubject(t *testing.T) {
	chain, key := corpusIdentity(t, "Alice")
	b := bob(t)
	signed, err := smime.SignProtected([]byte(hpMessage), key, chain, nil, smime.HPCipher)
	if err != nil {
		t.Fatalf("SignProtected() = %v", err)
	}
	outer := headerOf(signed)
	if !strings.Contains(outer, "Subject: [...]\r\n") || strings.Contains(outer, "merger") || strings.Contains(outer, "Keywords") {
		t.Errorf("outer header not obscured (hcp_baseline):\n%s", outer)
	}
	for _, keep := range []string{"From: Alice <alice@example.com>\r\n", "To: Bob <bob@example.com>\r\n", "Message-ID: <hp-1@example.com>\r\n"} {
		if !strings.Contains(outer, keep) {
			t.Errorf("outer header lost %q:\n%s", keep, outer)
		}
	}
	// The Cryptographic Payload: the first part of the multipart/signed.
	for _, want := range []string{"Content-Type: text/plain; charset=utf-8; hp=\"cipher\"\r\n", "Subject: The merger is on\r\n",
		"Keywords: confidential\r\n", "HP-Outer: Subject: [...]\r\n", "HP-Outer: From: Alice <alice@example.com>\r\n"} {
		if !bytes.Contains(signed, []byte(want)) {
			t.Errorf("signed payload lacks %q:\n%s", want, signed)
		}
	}
	if bytes.Contains(signed, []byte("HP-Outer: Keywords")) {
		t.Error("HP-Outer records a field that is not outside")
	}
	if sig := smime.Verify(signed, &smime.VerifyOptions{Roots: corpusRoots(t)}); sig == nil || !sig.Valid {
		t.Fatalf("Verify(SignProtected()) = %+v", sig)
	}

	enc, err := smime.Encrypt(signed, []*x509.Certificate{b.Cert, chain[0]}, &cms.EncryptOptions{})
	if err != nil {
		t.Fatal(err)
	}
	stored := headerOf(enc)
	if !strings.Contains(stored, "Subject: [...]\r\n") || bytes.Contains(enc, []byte("merger")) {
		t.Fatalf("stored message shows the subject:\n%s", stored)
	}
	res := smime.Process(context.Background(), enc, &ring{keys: []smime.Key{b}}, nil)
	if res.Status != smime.Decrypted {
		t.Fatalf("Process() = %v %s", res.Status, res.Reason)
	}
	served := headerOf(res.Served)
	if !strings.Contains(served, "\r\nSubject: The merger is on\r\n") || strings.Contains(served, "[...]") {
		t.Errorf("served header does not show the real subject only:\n%s", served)
	}
	if n := strings.Count(served, "\r\nFrom: "); n != 1 {
		t.Errorf("served header has %d From fields:\n%s", n, served)
	}
	if sig := smime.Verify(res.Served, &smime.VerifyOptions{Roots: corpusRoots(t)}); sig == nil || !sig.Valid {
		t.Errorf("signature of the served message = %+v", sig)
	}
	// openssl decrypts and verifies the stored message; the verified content is the payload with the real subject.
	in := filepath.Join(t.TempDir(), "enc.eml")
	if err := os.WriteFile(in, enc, 0o600); err != nil {
		t.Fatal(err)
	}
	inner := run(t, nil, "openssl", "cms", "-decrypt", "-in", in, "-inkey", bobPEM(t))
	content := run(t, inner, "openssl", "cms", "-verify", "-CAfile", filepath.Join(corpus, "TestCA.pem"), "-purpose", "any")
	if !bytes.Contains(content, []byte("Subject: The merger is on")) || !bytes.Contains(content, []byte(`hp="cipher"`)) {
		t.Errorf("openssl's verified content is not the protected payload:\n%s", content)
	}
}

// TestComposeProtectedUnsigned: header protection without a signature (EncryptProtected): the encrypted
// entity is the payload.
func TestComposeProtectedUnsigned(t *testing.T) {
	b := bob(t)
	enc, err := smime.EncryptProtected([]byte(hpMessage), []*x509.Certificate{b.Cert}, &cms.EncryptOptions{Authenticated: true})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(headerOf(enc), "Subject: [...]\r\n") || bytes.Contains(enc, []byte("merger")) {
		t.Fatalf("stored header:\n%s", headerOf(enc))
	}
	res := smime.Process(context.Background(), enc, &ring{keys: []smime.Key{b}}, nil)
	if res.Status != smime.Decrypted || !bytes.Contains(res.Served, []byte("Signing on Friday.")) {
		t.Fatalf("Process() = %v %s", res.Status, res.Reason)
	}
	served := headerOf(res.Served)
	if !strings.Contains(served, "\r\nSubject: The merger is on\r\n") || strings.Contains(served, "\r\nSubject: [...]") {
		t.Errorf("served header:\n%s", served)
	}
	chain, key := corpusIdentity(t, "Alice")
	signed, _ := smime.Sign([]byte(hpMessage), key, chain, nil)
	if _, err := smime.EncryptProtected(signed, []*x509.Certificate{b.Cert}, nil); err == nil {
		t.Error("EncryptProtected(signed) = nil error")
	}
	if _, err := smime.SignProtected([]byte(hpMessage), key, chain, nil, "yes"); err == nil {
		t.Error(`SignProtected(hp="yes") = nil error`)
	}
}

// TestComposeProtectedClear: signed only (hp="clear"): the outer header is unchanged, the payload's copy signed.
func TestComposeProtectedClear(t *testing.T) {
	chain, key := corpusIdentity(t, "Alice")
	signed, err := smime.SignProtected([]byte(hpMessage), key, chain, nil, smime.HPClear)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(headerOf(signed), "Subject: The merger is on\r\n") || bytes.Contains(signed, []byte("HP-Outer")) {
		t.Errorf("hp=clear changed the outer header or wrote HP-Outer:\n%s", signed)
	}
	if !bytes.Contains(signed, []byte(`hp="clear"`)) {
		t.Error(`no hp="clear" on the payload`)
	}
	if sig := smime.Verify(signed, &smime.VerifyOptions{Roots: corpusRoots(t)}); sig == nil || !sig.Valid {
		t.Errorf("Verify() = %+v", sig)
	}
}
