package decrypt

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"sync/atomic"
	"testing"

	"github.com/smimeproxy/smimeproxy/crypto/cms"
	"github.com/smimeproxy/smimeproxy/proxy"
)

// The Decrypter implements the Rewriter and each of its helpers (proxy/hooks.go); this package does not import
// proxy, so the checks are here.
var (
	_ proxy.Rewriter          = (*Decrypter)(nil)
	_ proxy.CandidateFilter   = (*Decrypter)(nil)
	_ proxy.CacheProbe        = (*Decrypter)(nil)
	_ proxy.HeaderGuard       = (*Decrypter)(nil)
	_ proxy.AppendGuard       = (*Decrypter)(nil)
	_ proxy.TextMatcher       = (*Decrypter)(nil)
	_ proxy.HeaderMatcher     = (*Decrypter)(nil)
	_ proxy.DerivedCache      = (*Decrypter)(nil)
	_ proxy.MetaSource        = (*Decrypter)(nil)
	_ proxy.MetaPruner        = (*Decrypter)(nil)
	_ proxy.IndexStore        = (*Decrypter)(nil)
	_ proxy.StoredTextMatcher = (*Decrypter)(nil)
)

// proxyOptions is o with d as the Rewriter and every helper, as cmd/smimeproxy serve wires it.
func proxyOptions(d *Decrypter, o proxy.Options) proxy.Options {
	o.Rewriter, o.CandidateFilter, o.CacheProbe, o.HeaderGuard, o.AppendGuard = d, d, d, d, d
	o.TextMatcher, o.HeaderMatcher, o.DerivedCache, o.MetaSource, o.MetaPruner = d, d, d, d, d
	o.IndexStore, o.StoredText = d, d
	return o
}

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
	if err != nil || !bytes.Equal(served, plain) { // served as appended (verbatim.go)
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
	// No key: an error, never plaintext; the proxy recognises it (and may store plain mail as sent).
	if _, err := f.d.EncryptAppend(context.Background(), "nobody", plain); !errors.Is(err, ErrNoOwnCertificate) || !errors.Is(err, proxy.ErrNoCertificate) {
		t.Errorf("user without keys: error %v, want ErrNoOwnCertificate and proxy.ErrNoCertificate", err)
	}
	// Store down: an error that is not "no certificate", so the proxy refuses instead of storing in clear.
	f.store.fail.Store(true)
	if out, err := f.d.EncryptAppend(context.Background(), "alice", plain); err == nil || errors.Is(err, proxy.ErrNoCertificate) {
		t.Errorf("store down: error %v, got %d bytes; want an error other than proxy.ErrNoCertificate", err, len(out))
	}
}

func TestEmbedsServedPlaintext(t *testing.T) {
	d := newTestDecrypter(t, nil)
	for msg, want := range map[string]bool{
		"Subject: a\r\n\r\nplain\r\n":                                                                        false,
		"Subject: a\r\nX-Smimeproxy-Status: decrypted; key=x\r\n\r\nb\r\n":                                   true,
		"Subject: fwd\r\n\r\n--b\r\nContent-Type: message/rfc822\r\n\r\nx-smimeproxy-status:  DECRYPTED\r\n": true,
		"Subject: a\r\n\r\nX-Smimeproxy-Status: undecryptable; reason=x\r\n":                                 false,
		"Subject: a\r\n\r\n> X-Smimeproxy-Status: decrypted\r\n":                                             false,
	} {
		if got := d.EmbedsServedPlaintext([]byte(msg)); got != want {
			t.Errorf("EmbedsServedPlaintext(%q) = %v, want %v", msg, got, want)
		}
	}
}

func TestParseRecipientKey(t *testing.T) {
	cert, _ := testIdentity(t, "k@example.com")
	for _, e := range []string{"ski:0102", "iss:3000:ff"} {
		if _, ok := cms.ParseRecipientKey(e); !ok {
			t.Errorf("cms.ParseRecipientKey(%q) failed", e)
		}
	}
	for _, e := range []string{"", "ski:", "ski:zz", "iss:30", "iss:30:xyz", "other:1"} {
		if _, ok := cms.ParseRecipientKey(e); ok {
			t.Errorf("cms.ParseRecipientKey(%q) accepted", e)
		}
	}
	// Round trip through cms: the parsed ID names the certificate again.
	for _, id := range cmsIDs(cert) {
		got, ok := cms.ParseRecipientKey(id.Key())
		if !ok || !got.Matches(cert) {
			t.Errorf("round trip of %s failed", id.Key())
		}
	}
}

func cmsIDs(cert *x509.Certificate) []cms.RecipientID { return cms.RecipientIDsOf(cert) }
