package main

import (
	"bytes"
	"context"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/smimeproxy/smimeproxy/crypto/smime"
	"github.com/smimeproxy/smimeproxy/internal/testenv"
)

// undecryptableWorld is Bob (key rsa) with one message encrypted to rsa2 only in Dovecot.
func undecryptableWorld(t *testing.T) (*e2eWorld, imap.UID, []byte) {
	t.Helper()
	w := &e2eWorld{t: t}
	w.d = testenv.StartDovecot(t, testenv.DovecotOptions{Users: map[string]string{"bob": "bob-pw"}})
	w.v = testenv.StartVault(t)
	w.vars = map[string]string{"VAULT_ADDR": w.v.Addr(), "VAULT_TOKEN": w.v.RootToken(), "HOME": t.TempDir()}
	w.secrets = []string{w.v.RootToken(), "PRIVATE KEY", "bob-pw", keyWindow(t, cmsKeys+"rsa.key")}
	w.keys("bob", cmsKeys+"rsa.key", cmsKeys+"rsa.pem")
	entity := []byte("Content-Type: text/plain\r\n\r\nfor rsa2's eyes only\r\n")
	msg := p7mMessage(strings.Replace(e2eOuter, "Subject: e2e test", "Subject: not for bob", 1),
		envelopeTo(t, entity, cmsKeys+"rsa2.pem", "aes-256-cbc"), "enveloped-data")
	uid := w.d.Append("bob", "INBOX", msg, nil, time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC))
	return w, uid, w.d.Raw("bob", "INBOX", uid)
}

// proxyLogin logs bob in at addr (plaintext: loopback) and selects INBOX.
func proxyLogin(t *testing.T, addr string) *imapclient.Client {
	t.Helper()
	c, err := imapclient.DialInsecure(addr, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.Login("bob", "bob-pw").Wait(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	return c
}

// fetchStructure fetches uid's whole message, BODYSTRUCTURE (extended), ENVELOPE and RFC822.SIZE, and the
// sections, from c's selected mailbox.
func fetchStructure(t *testing.T, c *imapclient.Client, uid imap.UID, secs ...*imap.FetchItemBodySection) *imapclient.FetchMessageBuffer {
	t.Helper()
	whole := &imap.FetchItemBodySection{Peek: true}
	msgs, err := c.Fetch(imap.UIDSetNum(uid), &imap.FetchOptions{UID: true, Envelope: true, RFC822Size: true,
		BodyStructure: &imap.FetchItemBodyStructure{Extended: true},
		BodySection:   append([]*imap.FetchItemBodySection{whole}, secs...)}).Collect()
	if err != nil || len(msgs) != 1 {
		t.Fatalf("fetch UID %d: %v (%d messages)", uid, err, len(msgs))
	}
	return msgs[0]
}

// appendVia appends msg to mailbox over c and returns the new UID.
func appendVia(t *testing.T, c *imapclient.Client, mailbox string, msg []byte) imap.UID {
	t.Helper()
	data, err := testenv.AppendTo(c, mailbox, msg, nil)
	if err != nil || data.UID == 0 {
		t.Fatalf("append to %s: %v (uid %v)", mailbox, err, data)
	}
	return data.UID
}

// TestServeUndecryptableExplain: 'serve' with its defaults serves a message it cannot decrypt as the
// explanation wrapper (status field, the message's own header, a text part saying why, the original attached);
// its BODYSTRUCTURE, ENVELOPE and RFC822.SIZE are those of the served bytes (Dovecot computes the same for the
// same bytes); appending it back, to another mailbox or to its own, stores the original byte for byte, and an
// edited copy is stored encrypted, not as the original and not in clear.
func TestServeUndecryptableExplain(t *testing.T) {
	w, uid, orig := undecryptableWorld(t)
	p := w.serve("imaps://" + w.d.TLSAddr())
	c := proxyLogin(t, p.addr)
	text := &imap.FetchItemBodySection{Peek: true, Part: []int{1}}
	attached := &imap.FetchItemBodySection{Peek: true, Part: []int{2}, Specifier: imap.PartSpecifierMIME}
	got := fetchStructure(t, c, uid, text, attached)
	served := got.FindBodySection(&imap.FetchItemBodySection{Peek: true})

	if !bytes.HasPrefix(served, []byte("X-Smimeproxy-Status: undecryptable; reason=no-matching-key; ref=")) {
		t.Fatalf("served copy starts %.120q, want the undecryptable status field", served)
	}
	if !bytes.Equal(smime.OriginalOf(served), orig) {
		t.Error("the served wrapper does not hold the stored message byte for byte")
	}
	if s := string(got.FindBodySection(text)); s != smime.Explanation(smime.ReasonNoMatchingKey) {
		t.Errorf("BODY[1] = %q, want the explanation", s)
	}
	if mime := got.FindBodySection(attached); !bytes.Contains(mime, []byte("Content-Type: application/pkcs7-mime")) {
		t.Errorf("BODY[2.MIME] = %.200q, want the original's header", mime)
	}
	if got.RFC822Size != int64(len(served)) {
		t.Errorf("RFC822.SIZE %d, served %d bytes", got.RFC822Size, len(served))
	}
	if got.Envelope == nil || got.Envelope.Subject != "not for bob" {
		t.Errorf("ENVELOPE %+v, want the message's own subject", got.Envelope)
	}
	mp, ok := got.BodyStructure.(*imap.BodyStructureMultiPart)
	if !ok || !strings.EqualFold(mp.Subtype, "mixed") || len(mp.Children) != 2 {
		t.Fatalf("BODYSTRUCTURE %#v, want multipart/mixed of two parts", got.BodyStructure)
	}
	if p2, ok := mp.Children[1].(*imap.BodyStructureSinglePart); !ok || p2.MediaType() != "application/pkcs7-mime" {
		t.Errorf("second part %#v, want application/pkcs7-mime", mp.Children[1])
	}

	// The same bytes stored in Dovecot directly: Dovecot's BODYSTRUCTURE and ENVELOPE are the proxy's.
	refUID := w.d.Append("bob", "Reference", served, nil, time.Time{})
	dc := w.d.Dial("bob")
	if _, err := dc.Select("Reference", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	ref := fetchStructure(t, dc, refUID)
	if !reflect.DeepEqual(ref.BodyStructure, got.BodyStructure) {
		t.Errorf("BODYSTRUCTURE differs from Dovecot's for the same bytes:\nproxy   %#v\ndovecot %#v", got.BodyStructure, ref.BodyStructure)
	}
	if !reflect.DeepEqual(ref.Envelope, got.Envelope) {
		t.Errorf("ENVELOPE differs from Dovecot's for the same bytes:\nproxy   %#v\ndovecot %#v", got.Envelope, ref.Envelope)
	}

	// Appended back with its mailbox selected: the marker verifies and the proxy copies the original upstream.
	if err := c.Create("Saved", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	if u := appendVia(t, c, "Saved", served); !bytes.Equal(w.d.Raw("bob", "Saved", u), orig) {
		t.Errorf("APPEND of the wrapper to Saved stored %.200q, want the original", w.d.Raw("bob", "Saved", u))
	}
	if u := appendVia(t, c, "INBOX", served); !bytes.Equal(w.d.Raw("bob", "INBOX", u), orig) {
		t.Errorf("APPEND of the wrapper to INBOX stored %.200q, want the original", w.d.Raw("bob", "INBOX", u))
	}
	// With another mailbox selected no copy is possible: the guard unwraps the original (smime.OriginalOf),
	// which is already encrypted and is stored as it is.
	if _, err := c.Select("Saved", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	if u := appendVia(t, c, "Saved", served); !bytes.Equal(w.d.Raw("bob", "Saved", u), orig) {
		t.Errorf("APPEND of the wrapper through the guard stored %.200q, want the original", w.d.Raw("bob", "Saved", u))
	}
	edited := bytes.Replace(served, []byte("could not decrypt"), []byte("could not decrypt (seen)"), 1)
	u := appendVia(t, c, "Saved", edited)
	stored := w.d.Raw("bob", "Saved", u)
	if bytes.Equal(stored, orig) || bytes.Contains(stored, []byte("(seen)")) || !bytes.Contains(stored, []byte("application/pkcs7-mime")) {
		t.Errorf("edited wrapper stored as %.300q, want it encrypted", stored)
	}
	w.checkSecrets("serve log", p.stderr.String())
}

// TestServeUndecryptableOriginal: --undecryptable=original serves the stored message under the status field;
// a bad value is refused.
func TestServeUndecryptableOriginal(t *testing.T) {
	w, uid, orig := undecryptableWorld(t)
	p := w.serve("imaps://"+w.d.TLSAddr(), "--undecryptable", "original")
	c := proxyLogin(t, p.addr)
	served := fetchStructure(t, c, uid).FindBodySection(&imap.FetchItemBodySection{Peek: true})
	status, rest, _ := bytes.Cut(served, []byte("\r\n"))
	if !bytes.HasPrefix(status, []byte("X-Smimeproxy-Status: undecryptable; reason=no-matching-key;")) || !bytes.Equal(rest, orig) {
		t.Errorf("served %.200q, want the original under the status field", served)
	}

	env, _, errb := demoEnv(map[string]string{"HOME": t.TempDir()})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	code := runMain(ctx, env, []string{"serve", "--upstream", "imaps://127.0.0.1:1", "--undecryptable", "hide"})
	if code != exitError || !strings.Contains(errb.String(), `--undecryptable "hide": want explain or original`) {
		t.Errorf("serve --undecryptable hide = %d, stderr %q", code, errb.String())
	}
}
