package decrypt

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"sync/atomic"
	"testing"

	"github.com/smimeproxy/smimeproxy/crypto/cms"
)

func TestEncryptAppend(t *testing.T) {
	f := newFixture(t, 0)
	plain := []byte("From: alice@example.com\r\nSubject: my draft\r\nContent-Type: text/plain\r\n\r\nnot for the server\r\n")
	enc, err := f.d.EncryptAppend(context.Background(), "alice", plain)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(enc, []byte("not for the server")) || !bytes.Contains(enc, []byte("Subject: my draft")) {
		t.Fatalf("EncryptAppend output:\n%s", enc)
	}
	// Alice reads it back through Rewrite; Bob cannot.
	var calls atomic.Int32
	served, err := f.d.Rewrite(context.Background(), MessageRef{User: "alice", Mailbox: "Drafts", UIDValidity: 1, UID: 1}, rawOf(enc, &calls))
	if err != nil || statusOf(served) != "decrypted" || !bytes.Contains(served, []byte("not for the server")) {
		t.Fatalf("alice: %v, status %q", err, statusOf(served))
	}
	served, _ = f.d.Rewrite(context.Background(), MessageRef{User: "bob", Mailbox: "Drafts", UIDValidity: 1, UID: 1}, rawOf(enc, &calls))
	if statusOf(served) != "undecryptable" {
		t.Errorf("bob: status %q, want undecryptable", statusOf(served))
	}
	// Already S/MIME: unchanged.
	again, err := f.d.EncryptAppend(context.Background(), "alice", enc)
	if err != nil || !bytes.Equal(again, enc) {
		t.Errorf("re-encrypting an S/MIME message: %v, changed %v", err, !bytes.Equal(again, enc))
	}
	// No key: an error, never plaintext.
	if _, err := f.d.EncryptAppend(context.Background(), "nobody", plain); !errors.Is(err, ErrNoOwnCertificate) {
		t.Errorf("user without keys: error %v, want ErrNoOwnCertificate", err)
	}
	f.store.fail.Store(true)
	if out, err := f.d.EncryptAppend(context.Background(), "alice", plain); err == nil {
		t.Errorf("store down: no error, got %d bytes", len(out))
	}
}

func TestParseRecipientKey(t *testing.T) {
	cert, _ := testIdentity(t, "k@example.com")
	for _, e := range []string{"ski:0102", "iss:3000:ff"} {
		if _, ok := parseRecipientKey(e); !ok {
			t.Errorf("parseRecipientKey(%q) failed", e)
		}
	}
	for _, e := range []string{"", "ski:", "ski:zz", "iss:30", "iss:30:xyz", "other:1"} {
		if _, ok := parseRecipientKey(e); ok {
			t.Errorf("parseRecipientKey(%q) accepted", e)
		}
	}
	// Round trip through cms: the parsed ID names the certificate again.
	for _, id := range cmsIDs(cert) {
		got, ok := parseRecipientKey(id.Key())
		if !ok || !got.Matches(cert) {
			t.Errorf("round trip of %s failed", id.Key())
		}
	}
}

func cmsIDs(cert *x509.Certificate) []cms.RecipientID { return cms.RecipientIDsOf(cert) }
