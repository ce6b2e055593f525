package decrypt

import (
	"strings"
	"testing"

	"github.com/smimeproxy/smimeproxy/internal/mimepart"
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

// servedCopy is what Rewrite serves for m: a status field with m's marker on top of rest, sealed.
func servedCopy(d *Decrypter, m MessageRef, rest string) string {
	b := []byte("X-Smimeproxy-Status: decrypted; key=sha256:00; " + strings.Join(d.markerParams(m), "; ") + "\r\n" + rest)
	return string(d.seal(m, b))
}

const servedRest = "From: a@example.com\r\nSubject: hi\r\n\r\nbody\r\n"

// statusHeader is servedRest with a status field holding params among its header fields.
func statusHeader(params []string) string {
	return "From: a@example.com\r\nX-Smimeproxy-Status: decrypted; " + strings.Join(params, "; ") +
		"\r\nSubject: hi\r\n\r\nbody\r\n"
}

// sealedParams returns the ref and mac parameters of the sealed served copy of servedRest for m.
func sealedParams(d *Decrypter, m MessageRef) []string {
	v := mimepart.Values([]byte(servedCopy(d, m, servedRest)), StatusField)[0]
	parts := strings.Split(v, "; ")
	return parts[len(parts)-2:]
}

func TestOriginRoundTrip(t *testing.T) {
	d := newTestDecrypter(t, nil)
	for _, m := range []MessageRef{
		{User: "alice", Mailbox: "INBOX", UIDValidity: 1, UID: 7},
		{User: "bob@example.com", Mailbox: "Archiv/2024 ä;x=\"y\"", UIDValidity: 4294967295, UID: 4294967295},
		{User: "c", Mailbox: "", UIDValidity: 0, UID: 1},
	} {
		got, ok := d.Origin(m.User, []byte(statusHeader(sealedParams(d, m))))
		if !ok || got != m {
			t.Errorf("Origin(%q) = %+v, %v; want %+v, true", m.User, got, ok, m)
		}
	}
	// Folded field (RFC 5322 section 2.2.3), lower-case name.
	m := MessageRef{User: "alice", Mailbox: "INBOX", UIDValidity: 3, UID: 9}
	p := sealedParams(d, m)
	h := "x-smimeproxy-status: decrypted;\r\n " + p[0] + ";\r\n\t" + p[1] + "\r\n" + servedRest
	if got, ok := d.Origin("alice", []byte(h)); !ok || got != m {
		t.Errorf("Origin(folded) = %+v, %v; want %+v, true", got, ok, m)
	}
}

func TestOriginRejectsForgery(t *testing.T) {
	d := newTestDecrypter(t, []byte("key one"))
	other := newTestDecrypter(t, []byte("key two"))
	m := MessageRef{User: "alice", Mailbox: "INBOX", UIDValidity: 1, UID: 7}
	good := sealedParams(d, m)
	altered := sealedParams(d, MessageRef{User: "alice", Mailbox: "INBOX", UIDValidity: 1, UID: 8})
	cases := map[string]struct {
		user, header string
	}{
		"other user":      {"mallory", statusHeader(good)},
		"altered ref":     {"alice", statusHeader([]string{altered[0], good[1]})},
		"other key":       {"alice", statusHeader(sealedParams(other, m))},
		"placeholder mac": {"alice", statusHeader(d.markerParams(m))},
		"edited body":     {"alice", strings.Replace(statusHeader(good), "body", "bodY", 1)},
		"edited header":   {"alice", strings.Replace(statusHeader(good), "Subject: hi", "Subject: hI", 1)},
		"bare LF":         {"alice", strings.ReplaceAll(statusHeader(good), "\r\n", "\n")},
		"added field":     {"alice", "X-Mozilla-Draft-Info: 1\r\n" + statusHeader(good)},
		"no mac":          {"alice", statusHeader(good[:1])},
		"empty mac":       {"alice", statusHeader([]string{good[0], "mac="})},
		"no field":        {"alice", "From: a\r\n\r\nref=x; mac=y\r\n"},
		"header only":     {"alice", strings.SplitAfter(statusHeader(good), "\r\n\r\n")[0]},
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
