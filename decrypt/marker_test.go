package decrypt

import (
	"strings"
	"testing"

	"github.com/smimeproxy/smimeproxy/keystore"
)

func newTestDecrypter(t testing.TB, key []byte) *Decrypter {
	t.Helper()
	d, err := New(Options{Store: keystore.NewMemory(), MarkerKey: key})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func statusHeader(params []string) string {
	return "From: a@example.com\r\nX-Smimeproxy-Status: decrypted; " + strings.Join(params, "; ") +
		"\r\nSubject: hi\r\n\r\nbody\r\n"
}

func TestOriginRoundTrip(t *testing.T) {
	d := newTestDecrypter(t, nil)
	for _, m := range []MessageRef{
		{User: "alice", Mailbox: "INBOX", UIDValidity: 1, UID: 7},
		{User: "bob@example.com", Mailbox: "Archiv/2024 ä;x=\"y\"", UIDValidity: 4294967295, UID: 4294967295},
		{User: "c", Mailbox: "", UIDValidity: 0, UID: 1},
	} {
		got, ok := d.Origin(m.User, []byte(statusHeader(d.markerParams(m))))
		if !ok || got != m {
			t.Errorf("Origin(%q) = %+v, %v; want %+v, true", m.User, got, ok, m)
		}
	}
	// Folded field (RFC 5322 section 2.2.3), lower-case name.
	m := MessageRef{User: "alice", Mailbox: "INBOX", UIDValidity: 3, UID: 9}
	p := d.markerParams(m)
	h := "x-smimeproxy-status: decrypted;\r\n " + p[0] + ";\r\n\t" + p[1] + "\r\n\r\n"
	if got, ok := d.Origin("alice", []byte(h)); !ok || got != m {
		t.Errorf("Origin(folded) = %+v, %v; want %+v, true", got, ok, m)
	}
}

func TestOriginRejectsForgery(t *testing.T) {
	d := newTestDecrypter(t, []byte("key one"))
	other := newTestDecrypter(t, []byte("key two"))
	m := MessageRef{User: "alice", Mailbox: "INBOX", UIDValidity: 1, UID: 7}
	good := d.markerParams(m)
	altered := d.markerParams(MessageRef{User: "alice", Mailbox: "INBOX", UIDValidity: 1, UID: 8})
	cases := map[string]struct {
		user, header string
	}{
		"other user":      {"mallory", statusHeader(good)},
		"altered ref":     {"alice", statusHeader([]string{altered[0], good[1]})},
		"other key":       {"alice", statusHeader(other.markerParams(m))},
		"no mac":          {"alice", statusHeader(good[:1])},
		"empty mac":       {"alice", statusHeader([]string{good[0], "mac="})},
		"no field":        {"alice", "From: a\r\n\r\nref=x; mac=y\r\n"},
		"field in body":   {"alice", "From: a\r\n\r\n" + statusHeader(good)},
		"duplicate field": {"alice", "X-Smimeproxy-Status: decrypted; " + strings.Join(good, "; ") + "\r\n" + statusHeader(good)},
		"truncated mac":   {"alice", statusHeader([]string{good[0], good[1][:len(good[1])-2]})},
	}
	for name, c := range cases {
		if got, ok := d.Origin(c.user, []byte(c.header)); ok {
			t.Errorf("%s: Origin = %+v, true; want false", name, got)
		}
	}
}

func TestNeedsStrip(t *testing.T) {
	cases := []struct {
		header string
		want   bool
	}{
		{"From: a\r\nSubject: b\r\n\r\n", false},
		{"From: a\r\nX-Smimeproxy-Status: decrypted\r\n\r\n", true},
		{"x-smimeproxy-signer: forged\n", true},
		{"X-SMIMEPROXY-STATUS: decrypted", true},
		{"Subject: X-Smimeproxy-Status: decrypted\r\n", false},
		{"", false},
	}
	for _, c := range cases {
		if got := NeedsStrip([]byte(c.header)); got != c.want {
			t.Errorf("NeedsStrip(%q) = %v, want %v", c.header, got, c.want)
		}
	}
}
