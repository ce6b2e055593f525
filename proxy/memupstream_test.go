package proxy_test

import (
	"bytes"
	"context"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/smimeproxy/smimeproxy/demo"
	"github.com/smimeproxy/smimeproxy/internal/testenv"
)

// The tests in this file are the proxy's fast tier (internal/testenv): the upstream server is go-imap's
// in-memory imapmemserver as package demo runs it (corrected where it differs from Dovecot), the key is in a
// keystore.Memory, decryption is package decrypt, and the proxy is the one `serve` runs. No root, Dovecot or
// Vault. The demo INBOX holds demo.Samples in order: UID 1 and 2 encrypted to the demo key (2 signed inside),
// UID 3 plain, UID 4 encrypted to someone else.

// startMem starts the demo (in-memory upstream, memory key store, proxy) on free loopback ports.
func startMem(t *testing.T) *demo.Demo {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	d, err := demo.Start(ctx, demo.Options{Listen: "127.0.0.1:0", SubmissionListen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// dialMem logs in as the demo user at addr (the proxy or the in-memory upstream) and selects INBOX.
func dialMem(t *testing.T, addr string, opts *imapclient.Options) *imapclient.Client {
	t.Helper()
	c := dial(t, addr, demo.DefaultUser, demo.DefaultPassword, opts)
	if _, err := c.Select("INBOX", nil).Wait(); err != nil {
		t.Fatalf("select INBOX at %s: %v", addr, err)
	}
	return c
}

// bodies fetches (UID RFC822.SIZE BODY.PEEK[]) of set and returns the bodies by UID; it checks that
// RFC822.SIZE equals the length of BODY[] (RFC 9051 section 7.5.2: the size of the message as served).
func bodies(t *testing.T, c *imapclient.Client, set imap.NumSet) map[imap.UID][]byte {
	t.Helper()
	sec := &imap.FetchItemBodySection{Peek: true}
	msgs, err := c.Fetch(set, &imap.FetchOptions{UID: true, RFC822Size: true, BodySection: []*imap.FetchItemBodySection{sec}}).Collect()
	if err != nil {
		t.Fatalf("FETCH %v: %v", set, err)
	}
	out := map[imap.UID][]byte{}
	for _, m := range msgs {
		b := m.FindBodySection(sec)
		if m.RFC822Size != int64(len(b)) {
			t.Errorf("UID %d: RFC822.SIZE %d, BODY[] has %d bytes", m.UID, m.RFC822Size, len(b))
		}
		out[m.UID] = b
	}
	return out
}

// TestMemFetchDecrypted: a FETCH through the proxy serves the encrypted messages decrypted with the status
// field on top, the plain one and the undecryptable one as the demo documents them; the upstream keeps (and
// serves directly) only ciphertext.
func TestMemFetchDecrypted(t *testing.T) {
	d := startMem(t)
	served := bodies(t, dialMem(t, d.Addr(), nil), imap.UIDSetNum(1, 2, 3, 4))
	stored := bodies(t, dialMem(t, d.UpstreamAddr(), nil), imap.UIDSetNum(1, 2, 3, 4))
	if len(served) != len(demo.Samples) || len(stored) != len(demo.Samples) {
		t.Fatalf("served %d, stored %d messages; want %d", len(served), len(stored), len(demo.Samples))
	}
	for i, s := range demo.Samples {
		uid := imap.UID(i + 1)
		if got := demo.StatusOf(served[uid]); got != s.Status {
			t.Errorf("UID %d (%s): status %q, want %q", uid, s.Subject, got, s.Status)
		}
		if s.Plaintext != "" && !bytes.Contains(served[uid], []byte(s.Plaintext)) {
			t.Errorf("UID %d (%s): served copy lacks %q", uid, s.Subject, s.Plaintext)
		}
		if s.Status == "decrypted" && bytes.Contains(stored[uid], []byte(s.Plaintext)) {
			t.Errorf("UID %d (%s): the upstream holds the plaintext", uid, s.Subject)
		}
		if s.Status == "" && !bytes.Equal(served[uid], stored[uid]) {
			t.Errorf("UID %d (%s): a plain message was changed on the way", uid, s.Subject)
		}
	}
}

// TestMemSearchBody: SEARCH BODY finds words inside encrypted messages through the proxy (the relay evaluates
// BODY over the served copies), which the upstream alone cannot; other keys still reach the upstream.
func TestMemSearchBody(t *testing.T) {
	d := startMem(t)
	c := dialMem(t, d.Addr(), nil)
	up := dialMem(t, d.UpstreamAddr(), nil)
	search := func(c *imapclient.Client, crit *imap.SearchCriteria) []imap.UID {
		t.Helper()
		data, err := c.UIDSearch(crit, nil).Wait()
		if err != nil {
			t.Fatalf("UID SEARCH %+v: %v", crit, err)
		}
		return data.AllUIDs()
	}
	for _, tt := range []struct {
		crit          *imap.SearchCriteria
		proxy, direct []imap.UID
	}{
		{&imap.SearchCriteria{Body: []string{"encrypted upstream"}}, []imap.UID{1}, nil},
		{&imap.SearchCriteria{Body: []string{"inside the envelope"}}, []imap.UID{2}, nil},
		{&imap.SearchCriteria{Text: []string{"never encrypted"}}, []imap.UID{3}, []imap.UID{3}},
		{&imap.SearchCriteria{Not: []imap.SearchCriteria{{Body: []string{"encrypted upstream"}}}}, []imap.UID{2, 3, 4}, []imap.UID{1, 2, 3, 4}},
	} {
		if got := search(c, tt.crit); !slices.Equal(got, tt.proxy) {
			t.Errorf("through the proxy, UID SEARCH %+v = %v, want %v", tt.crit, got, tt.proxy)
		}
		if got := search(up, tt.crit); !slices.Equal(got, tt.direct) {
			t.Errorf("upstream directly, UID SEARCH %+v = %v, want %v", tt.crit, got, tt.direct)
		}
	}
}

// appendMsg appends msg to mailbox and returns the APPENDUID UID (RFC 4315).
func appendMsg(t *testing.T, c *imapclient.Client, mailbox string, msg []byte) imap.UID {
	t.Helper()
	data, err := testenv.AppendTo(c, mailbox, msg, nil)
	if err != nil {
		t.Fatalf("APPEND: %v", err)
	}
	if data.UID == 0 {
		t.Fatal("APPEND without APPENDUID")
	}
	return data.UID
}

// TestMemAppend: a decrypted copy appended through the proxy into another mailbox (a client saving a message
// it read) is stored as the original ciphertext (the APPEND guard turns it into an upstream copy), and reads
// back decrypted; a plain message is stored as written. (imapmemserver refuses a COPY into the source mailbox,
// which Dovecot allows, so the target is not INBOX.)
func TestMemAppend(t *testing.T) {
	d := startMem(t)
	c := dialMem(t, d.Addr(), nil)
	up := dialMem(t, d.UpstreamAddr(), nil)
	served := bodies(t, c, imap.UIDSetNum(1))[1]
	original := bodies(t, up, imap.UIDSetNum(1))[1]
	if err := c.Create("Saved", nil).Wait(); err != nil {
		t.Fatal(err)
	}

	uid := appendMsg(t, c, "Saved", served)
	if _, err := up.Select("Saved", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	stored := bodies(t, up, imap.UIDSetNum(uid))[uid]
	if !bytes.Equal(stored, original) {
		t.Errorf("the appended decrypted copy was stored as %.200q, want the original ciphertext", stored)
	}
	if bytes.Contains(stored, []byte(demo.Samples[0].Plaintext)) {
		t.Error("the plaintext reached the upstream")
	}
	if _, err := c.Select("Saved", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	if again := bodies(t, c, imap.UIDSetNum(uid))[uid]; demo.StatusOf(again) != "decrypted" ||
		!bytes.Contains(again, []byte(demo.Samples[0].Plaintext)) {
		t.Errorf("the stored copy reads back as %.200q", again)
	}

	plain := []byte("From: demo@example.com\r\nTo: demo@example.com\r\nSubject: draft\r\n\r\na plain draft\r\n")
	uid = appendMsg(t, c, "Saved", plain)
	if stored := bodies(t, up, imap.UIDSetNum(uid))[uid]; !bytes.Equal(stored, plain) {
		t.Errorf("a plain APPEND was stored as %q", stored)
	}
}

// TestMemExpungeOrder: after EXPUNGEs in one session, another session through the proxy gets them in an order
// that, applied one by one (RFC 9051 section 7.5.1: each EXPUNGE renumbers the following messages), leaves
// exactly the remaining messages; its sequence-number FETCHes then decrypt the right ones.
func TestMemExpungeOrder(t *testing.T) {
	d := startMem(t)
	var mu sync.Mutex
	var seen []uint32
	observer := dialMem(t, d.Addr(), &imapclient.Options{UnilateralDataHandler: &imapclient.UnilateralDataHandler{
		Expunge: func(seq uint32) {
			mu.Lock()
			seen = append(seen, seq)
			mu.Unlock()
		},
	}})
	c := dialMem(t, d.Addr(), nil)

	del := &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagDeleted}}
	if err := c.Store(imap.SeqSetNum(1, 3), del, nil).Close(); err != nil {
		t.Fatal(err)
	}
	own, err := c.Expunge().Collect()
	if err != nil {
		t.Fatal(err)
	}
	apply := func(model []imap.UID, seqs []uint32) []imap.UID {
		model = slices.Clone(model)
		for _, s := range seqs {
			if s == 0 || int(s) > len(model) {
				t.Fatalf("EXPUNGE %d out of range in %v (all: %v)", s, model, seqs)
			}
			model = slices.Delete(model, int(s-1), int(s))
		}
		return model
	}
	want := []imap.UID{2, 4}
	if got := apply([]imap.UID{1, 2, 3, 4}, own); !slices.Equal(got, want) {
		t.Errorf("EXPUNGE responses %v leave %v, want %v", own, got, want)
	}

	// The observer hears of the expunges at its next command (NOOP, RFC 9051 section 6.1.2).
	if err := observer.Noop().Wait(); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	got := apply([]imap.UID{1, 2, 3, 4}, seen)
	mu.Unlock()
	if !slices.Equal(got, want) {
		t.Errorf("observer's EXPUNGEs %v leave %v, want %v", seen, got, want)
	}
	for _, cl := range []*imapclient.Client{c, observer} {
		sec := &imap.FetchItemBodySection{Peek: true}
		msgs, err := cl.Fetch(imap.SeqSetNum(1, 2), &imap.FetchOptions{UID: true, BodySection: []*imap.FetchItemBodySection{sec}}).Collect()
		if err != nil || len(msgs) != 2 {
			t.Fatalf("FETCH 1:2 after EXPUNGE: %v, %d messages", err, len(msgs))
		}
		for i, m := range msgs {
			if m.SeqNum != uint32(i+1) || m.UID != want[i] {
				t.Errorf("FETCH %d: UID %d, want %d", m.SeqNum, m.UID, want[i])
			}
		}
		if b := msgs[0].FindBodySection(sec); demo.StatusOf(b) != "decrypted" || !strings.Contains(string(b), demo.Samples[1].Plaintext) {
			t.Errorf("FETCH 1 BODY[] after EXPUNGE is not UID 2 decrypted: %.200q", b)
		}
		if b := msgs[1].FindBodySection(sec); demo.StatusOf(b) != "undecryptable" {
			t.Errorf("FETCH 2 BODY[] after EXPUNGE is not UID 4 undecryptable: %.200q", b)
		}
	}
}
