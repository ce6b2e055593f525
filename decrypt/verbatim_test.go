package decrypt

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/smimeproxy/smimeproxy/internal/mimepart"
	"github.com/smimeproxy/smimeproxy/internal/testenv"
	"github.com/smimeproxy/smimeproxy/keystore"
)

// TestVerbatimAppend: an APPEND EncryptAppend encrypted reads back through Rewrite byte for byte for the user
// who appended it (odd line ends, odd header, no status field); the stored copy keeps the plaintext out and
// the MAC field in; another user with the same key, a forged or moved MAC, and another marker key give the
// ordinary decrypted copy; a header-protected draft is not served verbatim.
func TestVerbatimAppend(t *testing.T) {
	ctx := context.Background()
	mem := keystore.NewMemory()
	cert, key := testIdentity(t, "alice@example.com")
	for _, u := range []string{"alice", "alice2"} { // alice2: another login holding the same key
		if _, err := mem.Put(ctx, u, []*x509.Certificate{cert}, key, keystore.PutOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	markerKey := bytes.Repeat([]byte{7}, 32)
	d, err := New(Options{Store: mem, MarkerKey: markerKey, CacheBytes: -1})
	if err != nil {
		t.Fatal(err)
	}
	ref := func(user string) MessageRef { return MessageRef{User: user, Mailbox: "Drafts", UIDValidity: 9, UID: 3} }
	raw := func(b []byte) func() ([]byte, error) { return func() ([]byte, error) { return b, nil } }

	drafts := map[string][]byte{
		"crlf":      []byte("From: alice@example.com\r\nTo: bob@example.com\r\nSubject: draft\r\nMIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\nthe okapi plan\r\n"),
		"bare lf":   []byte("Subject: lf\nX-Mailer: odd\n\nthe okapi plan\nno final line end"),
		"no header": []byte("\r\nthe okapi plan\r\n"),
	}
	for name, draft := range drafts {
		stored, err := d.EncryptAppend(ctx, "alice", draft)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if bytes.Contains(stored, []byte("okapi")) || len(mimepart.Values(stored, VerbatimField)) != 1 {
			t.Fatalf("%s: stored:\n%s", name, stored)
		}
		got, err := d.Rewrite(ctx, ref("alice"), raw(stored))
		if err != nil || !bytes.Equal(got, draft) {
			t.Errorf("%s: read back %q (%v), want %q", name, got, err, draft)
		}
		// Another login holding the same key: the ordinary decrypted copy.
		other, _ := d.Rewrite(ctx, ref("alice2"), raw(stored))
		if statusOf(other) != "decrypted" || !bytes.Contains(other, []byte("okapi")) || bytes.Contains(other, []byte(VerbatimField)) {
			t.Errorf("%s: alice2 got %q", name, other)
		}
	}

	draft := drafts["crlf"]
	stored, err := d.EncryptAppend(ctx, "alice", draft)
	if err != nil {
		t.Fatal(err)
	}
	// The outer header shows what EncryptToSelf shows, plus the field: no more.
	plainOuter, _ := EncryptToSelf(draft, []*x509.Certificate{cert})
	if h1, h2 := outerNames(stored), outerNames(plainOuter); h1 == h2 || strings.Replace(h1, "|"+VerbatimField, "", 1) != h2 {
		t.Errorf("outer fields %s, EncryptToSelf's %s", h1, h2)
	}
	macRE := regexp.MustCompile(`mac=[A-Za-z0-9_-]+`)
	random := make([]byte, 32)
	rand.Read(random)
	forged := macRE.ReplaceAll(stored, []byte("mac="+base64.RawURLEncoding.EncodeToString(random)))
	if bytes.Equal(forged, stored) {
		t.Fatal("no mac to forge")
	}
	otherKey, err := New(Options{Store: mem, MarkerKey: bytes.Repeat([]byte{8}, 32), CacheBytes: -1})
	if err != nil {
		t.Fatal(err)
	}
	second, _ := d.EncryptAppend(ctx, "alice", draft)
	moved := macRE.ReplaceAll(stored, macRE.Find(second)) // a valid mac of another append (other nonce)
	for name, tc := range map[string]struct {
		d   *Decrypter
		msg []byte
	}{"forged mac": {d, forged}, "mac of another append": {d, moved}, "other marker key": {otherKey, stored}} {
		got, _ := tc.d.Rewrite(ctx, ref("alice"), raw(tc.msg))
		if statusOf(got) != "decrypted" || !bytes.Contains(got, []byte("okapi")) || bytes.Contains(got, []byte(VerbatimField)) {
			t.Errorf("%s: served %q, want the ordinary decrypted copy", name, got)
		}
	}
	if bytes.Equal(macRE.Find(second), macRE.Find(stored)) {
		t.Error("two appends of the same draft have the same mac")
	}

	// A header-protected draft (RFC 9788) keeps the existing handling.
	hp := []byte("From: alice@example.com\r\nSubject: hidden\r\nContent-Type: text/plain; hp=\"cipher\"\r\n\r\nthe okapi plan\r\n")
	storedHP, err := d.EncryptAppend(ctx, "alice", hp)
	if err != nil {
		t.Fatal(err)
	}
	if len(mimepart.Values(storedHP, VerbatimField)) != 0 || bytes.Contains(storedHP, []byte("Subject: hidden")) {
		t.Errorf("header-protected draft stored as:\n%s", storedHP)
	}
	if got, _ := d.Rewrite(ctx, ref("alice"), raw(storedHP)); statusOf(got) != "decrypted" {
		t.Errorf("header-protected draft served with status %q", statusOf(got))
	}
}

// outerNames lists the header field names of msg, "|"-separated.
func outerNames(msg []byte) string {
	var names []string
	for _, f := range headerFields(func() []byte { h, _ := mimepart.Split(msg); return h }()) {
		names = append(names, f.name)
	}
	out := ""
	for i, n := range names {
		if i > 0 {
			out += "|"
		}
		out += n
	}
	return out
}

// TestVerbatimAppendOpenSSL: a phone (here openssl cms) with the key reads the stored draft: the decrypted
// entity is the draft itself.
func TestVerbatimAppendOpenSSL(t *testing.T) {
	mem := keystore.NewMemory()
	cert, key := testIdentity(t, "me@example.com")
	if _, err := mem.Put(context.Background(), "me", []*x509.Certificate{cert}, key, keystore.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	d, err := New(Options{Store: mem})
	if err != nil {
		t.Fatal(err)
	}
	draft := []byte("From: me@example.com\r\nSubject: s\r\nContent-Type: text/plain\r\n\r\nhello openssl\r\n")
	out, err := d.EncryptAppend(context.Background(), "me", draft)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for name, b := range map[string][]byte{
		"key.pem":  pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}),
		"cert.pem": pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}),
		"msg.eml":  out,
	} {
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
	if !bytes.Equal(got, draft) {
		t.Errorf("openssl decrypted %q, want %q", got, draft)
	}
}
