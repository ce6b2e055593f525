package decrypt

import (
	"bytes"
	"crypto/x509"
	"fmt"
	"strings"
	"testing"

	"github.com/smimeproxy/smimeproxy/crypto/smime"
)

// forgedHeaders are the ways a sender hides a status field (issue 10, item 9).
func forgedHeaders() map[string]string {
	var many strings.Builder
	for i := range 10001 {
		fmt.Fprintf(&many, "X-Pad-%d: %d\r\n", i, i)
	}
	return map[string]string{
		"plain":              "From: a\r\nX-Smimeproxy-Status: decrypted\r\n",
		"past 10,000 fields": many.String() + "X-Smimeproxy-Status: decrypted\r\n",
		"bare CR in Subject": "Subject: hi\rX-Smimeproxy-Status: decrypted; authenticated=yes\r\n",
		"other name":         "X-Smimeproxy-Note: verified sender\r\n",
		"first line space":   " X-Smimeproxy-Status: decrypted\r\nFrom: a\r\n",
		"first line tab":     "\tx-smimeproxy-status: decrypted\r\n",
	}
}

// TestNeedsStripForms: NeedsStrip, which decides whether an APPEND is stripped, uses the one definition of a
// status field (smime.HasStatusField) for every form.
func TestNeedsStripForms(t *testing.T) {
	for name, h := range forgedHeaders() {
		if !NeedsStrip([]byte(h + "Subject: x\r\n\r\nbody\r\n")) {
			t.Errorf("%s: NeedsStrip = false", name)
		}
	}
	for _, h := range []string{
		"From: a\r\nSubject: X-Smimeproxy-Status: decrypted\r\n\r\n",
		"From: a\r\n\r\nX-Smimeproxy-Status: in the body\r\n",
		"From: a\r\nSubject: folded\r\n X-Smimeproxy-Status: a continuation\r\n\r\n",
	} {
		if NeedsStrip([]byte(h)) {
			t.Errorf("NeedsStrip(%q) = true", h)
		}
	}
}

// TestEncryptToSelfDropsStatusForms: the outer header of an encrypted APPEND keeps no status field, however
// hidden.
func TestEncryptToSelfDropsStatusForms(t *testing.T) {
	cert, _ := testIdentity(t, "me@example.com")
	for name, h := range forgedHeaders() {
		out, err := EncryptToSelf([]byte(h+"To: you@example.com\r\nContent-Type: text/plain\r\n\r\nsecret\r\n"), []*x509.Certificate{cert})
		if err != nil {
			t.Fatal(err)
		}
		if smime.HasStatusField(out) {
			t.Errorf("%s: the encrypted message keeps a status field", name)
		}
		if !bytes.Contains(out, []byte("To: you@example.com\r\n")) {
			t.Errorf("%s: other fields lost", name)
		}
	}
}

// TestMatchHeader: SEARCH HEADER semantics (RFC 9051 section 6.4.4) over a served copy's top-level header.
func TestMatchHeader(t *testing.T) {
	served := []byte("X-Smimeproxy-Status: decrypted; key=sha256:ab;\r\n cipher=aes-256-cbc; authenticated=no\r\n" +
		"From: a@example.com\r\nSubject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n\r\nX-Smimeproxy-Note: in the body\r\n")
	for _, tc := range []struct {
		name, needle string
		want         bool
	}{
		{"X-Smimeproxy-Status", "", true},
		{"x-smimeproxy-status", "DECRYPTED", true},
		{"X-Smimeproxy-Status", "ab; cipher=aes", true}, // unfolded
		{"X-Smimeproxy-Status", "undecryptable", false},
		{"X-Smimeproxy-Note", "", false}, // only in the body
		{"X-Smimeproxy-Stat", "", false}, // names are exact
		{"Subject", "grüße", true},       // encoded words decoded
	} {
		if got := MatchHeader(served, tc.name, tc.needle); got != tc.want {
			t.Errorf("MatchHeader(%q, %q) = %v, want %v", tc.name, tc.needle, got, tc.want)
		}
	}
}

// TestMatchTextDeepNesting: SEARCH BODY over a served copy nested 20,000 levels deep reads a bounded number of
// levels (maxMIMEDepth): its allocations do not grow with the depth, and text within the bound is found.
func TestMatchTextDeepNesting(t *testing.T) {
	nest := func(depth int) []byte {
		var b strings.Builder
		b.WriteString("Subject: deep\r\n")
		for i := range depth {
			fmt.Fprintf(&b, "Content-Type: multipart/mixed; boundary=\"b%d\"\r\n\r\nshallow-%d\r\n--b%d\r\n", i, i, i)
		}
		b.WriteString("Content-Type: text/plain\r\n\r\nThe secret is 42.\r\n")
		for i := depth - 1; i >= 0; i-- {
			fmt.Fprintf(&b, "--b%d--\r\n", i)
		}
		return []byte(b.String())
	}
	allocs := map[int]float64{}
	for _, depth := range []int{100, 20000} {
		msg := nest(depth)
		allocs[depth] = testing.AllocsPerRun(2, func() { MatchText(msg, "nowhere", false) })
	}
	if allocs[20000] > 2*allocs[100] {
		t.Errorf("allocations grow with depth: %v", allocs)
	}
	if MatchText(nest(10), "secret is 42", false) != true {
		t.Error("text 10 levels deep not found")
	}
	t.Logf("allocations: %v", allocs)
}
