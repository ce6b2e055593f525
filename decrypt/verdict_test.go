package decrypt

import (
	"bytes"
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"

	"github.com/smimeproxy/smimeproxy/crypto/smime"
	"github.com/smimeproxy/smimeproxy/internal/mimepart"
)

// adversarialHeader is a message whose header readers used to disagree about (issue 14): each path of the
// proxy read it its own way, so one stripped a status field another served.
type adversarialHeader struct {
	name, msg string
	// gap: a status field by the one rule (smime.HasStatusField) that the upstream server's SEARCH HEADER by
	// exact name does not find, so the index does not classify the message and it is relayed as stored
	// (crypto/smime/status.go, proxy/index.go).
	gap bool
}

func adversarialHeaders() []adversarialHeader {
	const forged = "X-Smimeproxy-Status: decrypted; key=sha256:00; authenticated=yes"
	return []adversarialHeader{
		{"clean", "From: a@example.com\r\nSubject: clean\r\n\r\nbody\r\n", false},
		{"plain forgery", "From: a@example.com\r\n" + forged + "\r\n\r\nbody\r\n", false},
		{"bare CR", "From: a@example.com\r\nSubject: x\r" + forged + "\r\n\r\nbody\r\n", true},
		{"bare LF", "From: a@example.com\n" + forged + "\nSubject: lf\n\nbody\n", false},
		{"indented first line", " " + forged + "\r\nFrom: a@example.com\r\n\r\nbody\r\n", true},
		{"obs-fold", "From: a@example.com\r\nSubject: x\r\n " + forged + "\r\n\r\nbody\r\n", false},
		{"space before colon", "From: a@example.com\r\nX-Smimeproxy-Status : decrypted\r\n\r\nbody\r\n", false},
		{"very long line", "From: a@example.com\r\nSubject: " + strings.Repeat("x", 20000) + "\r\n" + forged + "\r\n\r\nbody\r\n", false},
		{"missing blank line", "From: a@example.com\r\n" + forged + "\r\n", false},
		{"other name", "From: a@example.com\r\nX-Smimeproxy-Note: verified\r\n\r\nbody\r\n", true},
		{"CR CR LF is not a blank line", "From: a@example.com\r\n\r\r\n" + forged + "\r\n\r\nbody\r\n", false},
	}
}

// nulHeaders cannot be stored upstream (IMAP literals hold no NUL, RFC 9051 section 4.3) and are checked in
// memory only.
var nulHeaders = []adversarialHeader{
	{"NUL in name", "From: a@example.com\r\nX-Smimeproxy-Status\x00x: decrypted\r\n\r\nbody\r\n", false},
	{"NUL before", "Subject: a\x00\rX-Smimeproxy-Status: decrypted\r\n\r\nbody\r\n", true},
}

// peekLikeAppend reads msg in chunks of n bytes until mimepart.HeaderComplete, as the APPEND guard's
// peekHeader does.
func peekLikeAppend(msg []byte, n int) []byte {
	for end := n; ; end += n {
		if end >= len(msg) || mimepart.HeaderComplete(msg[:end]) {
			return msg[:min(end, len(msg))]
		}
	}
}

// TestAdversarialHeadersOneVerdict: for headers readers disagree about (bare CR, bare LF, an indented first
// line, obs-fold, NUL, very long lines, a missing blank line), every path of the proxy reaches the verdict of
// the one rule (smime.HasStatusField over mimepart.EachField): stripping, serving, searching the served copy
// and the APPEND guard's peek. The index asks the upstream server (TestAdversarialHeadersThroughProxy).
func TestAdversarialHeadersOneVerdict(t *testing.T) {
	for _, tc := range append(adversarialHeaders(), nulHeaders...) {
		t.Run(tc.name, func(t *testing.T) {
			msg := []byte(tc.msg)
			v := smime.HasStatusField(msg)
			wantV := tc.name != "clean" && tc.name != "obs-fold"
			if v != wantV {
				t.Fatalf("HasStatusField = %v, want %v", v, wantV)
			}
			// strip
			stripped := smime.StripStatusHeaders(msg)
			if (len(stripped) != len(msg)) != v || smime.HasStatusField(stripped) {
				t.Errorf("strip: %d of %d bytes kept, status field left: %v", len(stripped), len(msg), smime.HasStatusField(stripped))
			}
			// serve
			res := smime.Process(context.Background(), msg, nil, &smime.Options{})
			if res.Status != smime.NotEncrypted || !bytes.Equal(res.Served, stripped) {
				t.Errorf("serve: %v, served %q", res.Status, res.Served)
			}
			// search over the served copy
			for _, f := range smime.OwnedFields() {
				if MatchHeader(res.Served, f, "") {
					t.Errorf("search: HEADER %s found in the served copy", f)
				}
			}
			// the APPEND guard's peek, at several chunk sizes
			for _, n := range []int{1, 7, 4096} {
				if got := NeedsStrip(peekLikeAppend(msg, n)); got != v {
					t.Errorf("append guard (chunks of %d): NeedsStrip = %v, want %v", n, got, v)
				}
			}
			// The served copy's sections agree: nothing status-like in any header the tree sees.
			mimepart.Parse(res.Served).Walk(func(p *mimepart.Part) bool {
				if p.Raw != nil && len(p.Raw) == len(res.Served) && smime.HasStatusField(p.Header) {
					t.Errorf("served top-level header keeps a status field")
				}
				return true
			})
		})
	}
}

// statusBesidesAppendMAC reports whether msg has a status field other than the proxy's own
// X-Smimeproxy-Append, which it writes into the outer header of a message it encrypted on APPEND.
func statusBesidesAppendMAC(msg []byte) bool {
	found := false
	mimepart.EachField(msg, func(f mimepart.Field) {
		found = found || !f.Is(smime.AppendHeader) && smime.IsStatusField(f.Raw)
	})
	return found
}

// TestAdversarialHeadersThroughProxy stores the adversarial messages in real Dovecot and reads them through the
// proxy: each is served with its status fields removed (the index found it) or, in the documented gap only,
// relayed as stored; SEARCH HEADER on a status field finds none of them; and appended through the proxy, none
// reaches Dovecot with a status field (it is encrypted or stripped), while a message without one
// is stored byte for byte.
func TestAdversarialHeadersThroughProxy(t *testing.T) {
	e := newGuardEnv(t, false)
	now := time.Date(2026, 3, 4, 10, 0, 0, 0, time.UTC)
	cases := adversarialHeaders()
	uids := make([]imap.UID, len(cases))
	for i, tc := range cases {
		uids[i] = e.d.Append("bob", "INBOX", []byte(tc.msg), nil, now)
	}
	direct := e.d.Dial("bob")
	defer direct.Close()
	if _, err := direct.Select("INBOX", &imap.SelectOptions{ReadOnly: true}).Wait(); err != nil {
		t.Fatal(err)
	}
	upstream, err := direct.UIDSearch(&imap.SearchCriteria{Header: []imap.SearchCriteriaHeaderField{{Key: StatusField}}}, nil).Wait()
	if err != nil {
		t.Fatal(err)
	}
	c := e.login(t, "bob")
	if _, err := c.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	hdr := &imap.FetchItemBodySection{Peek: true, Specifier: imap.PartSpecifierHeader}
	fields := &imap.FetchItemBodySection{Peek: true, Specifier: imap.PartSpecifierHeader, HeaderFields: smime.OwnedFields()}
	for i, tc := range cases {
		stored := e.d.Raw("bob", "INBOX", uids[i])
		v := smime.HasStatusField(stored)
		served := fetchBody(t, c, uids[i])
		msgs, err := c.Fetch(imap.UIDSetNum(uids[i]), &imap.FetchOptions{UID: true, BodySection: []*imap.FetchItemBodySection{hdr, fields}}).Collect()
		if err != nil || len(msgs) != 1 {
			t.Fatalf("%s: FETCH: %v", tc.name, err)
		}
		switch {
		case tc.gap:
			if !v || !bytes.Equal(served, stored) || slices.Contains(upstream.AllUIDs(), uids[i]) {
				t.Errorf("%s: the documented gap changed: status field %v, relayed as stored %v, found upstream %v (update status.go, index.go and this test)",
					tc.name, v, bytes.Equal(served, stored), slices.Contains(upstream.AllUIDs(), uids[i]))
			}
			continue
		case v:
			if !bytes.Equal(served, smime.StripStatusHeaders(stored)) {
				t.Errorf("%s: served %q, want the stored copy without its status fields", tc.name, served)
			}
		default:
			if !bytes.Equal(served, stored) {
				t.Errorf("%s: a message without a status field is not relayed byte for byte", tc.name)
			}
		}
		if h := msgs[0].FindBodySection(hdr); smime.HasStatusField(h) || !bytes.HasPrefix(served, h) {
			t.Errorf("%s: BODY[HEADER] = %q", tc.name, h)
		}
		if f := msgs[0].FindBodySection(fields); smime.HasStatusField(f) {
			t.Errorf("%s: BODY[HEADER.FIELDS (%s)] = %q", tc.name, strings.Join(smime.OwnedFields(), " "), f)
		}
	}
	found, err := c.UIDSearch(&imap.SearchCriteria{Header: []imap.SearchCriteriaHeaderField{{Key: StatusField}}}, nil).Wait()
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range found.AllUIDs() {
		if slices.Contains(uids, u) {
			t.Errorf("SEARCH HEADER %s finds UID %d through the proxy", StatusField, u)
		}
	}
	// APPEND through the proxy.
	for _, tc := range cases {
		before := mailboxUIDs(t, e.d, "bob", "Drafts")
		_, err := appendMsg(c, "Drafts", []byte(tc.msg))
		after := mailboxUIDs(t, e.d, "bob", "Drafts")
		if len(after) > len(before)+1 {
			t.Fatalf("%s: %d messages stored by one APPEND", tc.name, len(after)-len(before))
		}
		if len(after) == len(before) {
			if !smime.HasStatusField([]byte(tc.msg)) || err == nil {
				t.Errorf("%s: APPEND stored nothing (%v)", tc.name, err)
			}
			continue
		}
		got := e.d.Raw("bob", "Drafts", after[len(after)-1])
		if statusBesidesAppendMAC(got) {
			t.Errorf("%s: appended through the proxy, Dovecot stores a status field:\n%q", tc.name, got)
		}
		if !smime.HasStatusField([]byte(tc.msg)) && !bytes.Equal(got, e.d.Raw("bob", "INBOX", uids[slices.IndexFunc(cases, func(a adversarialHeader) bool { return a.name == tc.name })])) {
			t.Errorf("%s: a message without a status field is not stored as appended", tc.name)
		}
	}
}
