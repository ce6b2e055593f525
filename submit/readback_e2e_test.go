package submit_test

import (
	"bytes"
	"net"
	"strings"
	"testing"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/smimeproxy/smimeproxy/backend"
	"github.com/smimeproxy/smimeproxy/decrypt"
	"github.com/smimeproxy/smimeproxy/proxy"
	"github.com/smimeproxy/smimeproxy/submit"
)

// startIMAPProxy runs the IMAP proxy in front of e's Dovecot with e's Vault as key store and address book; the
// Dovecot login "bob" is the key-store user "bob@example.com". Alice's signatures chain to the corpus TestCA.
func (e *e2e) startIMAPProxy() string {
	e.t.Helper()
	dec, err := decrypt.New(decrypt.Options{Store: e.store, Contacts: e.store.Contacts(), Roots: e.roots(), NoHarvest: true,
		KeyUser: func(login string) string { return login + "@example.com" }})
	if err != nil {
		e.t.Fatal(err)
	}
	srv, err := proxy.New(proxy.Options{Upstream: backend.Options{URL: "imap://" + e.d.Addr(), CAFile: e.d.CAFile()},
		Rewriter: dec, CandidateFilter: dec, CacheProbe: dec, HeaderGuard: dec, AppendGuard: dec, TextMatcher: dec,
		HeaderMatcher: dec, DerivedCache: dec, MetaSource: dec, MetaPruner: dec,
		IndexStore: dec, StoredText: dec})
	if err != nil {
		e.t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		e.t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	e.t.Cleanup(func() {
		srv.Close()
		<-done
	})
	return ln.Addr().String()
}

// fetchInbox logs in at addr as user and returns BODY.PEEK[] of every INBOX message.
func (e *e2e) fetchInbox(addr, user, password string) [][]byte {
	e.t.Helper()
	c, err := imapclient.DialInsecure(addr, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	defer c.Close()
	if err := c.Login(user, password).Wait(); err != nil {
		e.t.Fatal(err)
	}
	if _, err := c.Select("INBOX", &imap.SelectOptions{ReadOnly: true}).Wait(); err != nil {
		e.t.Fatal(err)
	}
	sec := &imap.FetchItemBodySection{Peek: true}
	msgs, err := c.Fetch(imap.SeqSet{{Start: 1, Stop: 0}}, &imap.FetchOptions{BodySection: []*imap.FetchItemBodySection{sec}}).Collect()
	if err != nil {
		e.t.Fatal(err)
	}
	var out [][]byte
	for _, m := range msgs {
		out = append(out, m.FindBodySection(sec))
	}
	return out
}

// field returns the unfolded value of the first header field called name in msg.
func field(msg []byte, name string) string {
	hdr, _, _ := bytes.Cut(msg, []byte("\r\n\r\n"))
	var val string
	in, found := false, false
	for _, line := range strings.Split(string(hdr), "\r\n") {
		if in && line != "" && (line[0] == ' ' || line[0] == '\t') {
			val += line
			continue
		}
		in = false
		if k, v, ok := strings.Cut(line, ":"); ok && !found && strings.EqualFold(k, name) {
			val, in, found = strings.TrimSpace(v), true, true
		}
	}
	return val
}

// TestSubmitReadBackThroughProxy: alice sends to bob through the submission front end (Python smtplib), Postfix
// delivers into Dovecot, and bob reads his INBOX through a running IMAP proxy (real Vault, real Dovecot): the
// message is served decrypted with a valid signature status by alice. With header protection
// (--protect-subject) the stored Subject is "[...]" and the proxy serves the real one.
func TestSubmitReadBackThroughProxy(t *testing.T) {
	e := startE2E(t, submit.Policy{})
	protected := e.startSubmit(submit.Options{ProtectSubject: true})
	imapAddr := e.startIMAPProxy()

	for i, c := range []struct {
		name, listen, subject, text string
		protect, unsigned           bool
	}{
		{"plain header", e.listen, "Read me through the proxy", "The otter swims at dawn.", false, false},
		{"protected subject", protected, "Acquisition of Otter Corp", "The beaver bites at dusk.", true, false},
		// [nosign]: the encrypted entity itself is the protected payload (smime.EncryptProtected).
		{"protected subject, unsigned", protected, "[nosign] Otter Corp, part two", "The heron waits at noon.", true, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			msg := "From: Alice <alice@example.com>\nTo: Bob <bob@example.com>\nSubject: " + c.subject + "\n" +
				"Message-ID: <readback-" + string(rune('a'+i)) + "@example.com>\n\n" + c.text + "\n"
			if r := e.pySendVia(c.listen, "alice-pw", []string{"bob@example.com"}, msg); r != "" {
				t.Fatalf("send: %s", r)
			}
			stored := e.waitInbox("bob", i+1)
			if bytes.Contains(stored, []byte(c.text)) || !bytes.Contains(stored, []byte("application/pkcs7-mime")) {
				t.Fatalf("bob's maildir copy is not ciphertext:\n%.600s", stored)
			}
			wantStored := c.subject
			if c.protect {
				wantStored = "[...]"
			}
			if got := field(stored, "Subject"); got != wantStored {
				t.Errorf("stored Subject %q, want %q", got, wantStored)
			}
			if c.protect && bytes.Contains(stored, []byte("Otter")) {
				t.Error("the protected subject is visible in the stored copy")
			}

			var served []byte
			for _, m := range e.fetchInbox(imapAddr, "bob", "bob-pw") {
				if bytes.Contains(m, []byte(c.text)) {
					served = m
				}
			}
			if served == nil {
				t.Fatal("bob does not see the plaintext through the proxy")
			}
			if st := field(served, decrypt.StatusField); !strings.HasPrefix(st, "decrypted") {
				t.Errorf("status %q, want decrypted", st)
			}
			sig := field(served, decrypt.SignatureField)
			switch {
			case c.unsigned && sig != "":
				t.Errorf("unsigned message: signature status %q", sig)
			case !c.unsigned && (!strings.HasPrefix(sig, "valid;") || !strings.Contains(sig, "signer=alice@example.com")):
				t.Errorf("signature status %q, want valid, signer alice@example.com", sig)
			}
			wantSubject := strings.TrimPrefix(c.subject, "[nosign] ")
			if got := field(served, "Subject"); got != wantSubject {
				t.Errorf("served Subject %q, want %q", got, wantSubject)
			}
		})
	}
}
