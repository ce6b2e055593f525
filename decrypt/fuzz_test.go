package decrypt

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/smimeproxy/smimeproxy/crypto/smime"
)

// FuzzMatchText: any input is searched without panic; a needle copied from an ASCII text body is found.
func FuzzMatchText(f *testing.F) {
	f.Add([]byte(searchMsg), "pineapple")
	f.Add([]byte("Content-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\n\r\n--x--"), "a")
	if b, err := os.ReadFile(filepath.Join(thunderbirdDir, "alice.dsig.SHA256.multipart.eml")); err == nil {
		f.Add(b, "alice")
	}
	f.Fuzz(func(t *testing.T, msg []byte, needle string) {
		MatchText(msg, needle, true)
		MatchText(msg, needle, false)
		if len(needle) > 0 && len(needle) < 20 && isPrintableASCII(needle) &&
			!MatchText([]byte("Subject: s\r\n\r\nxx"+needle+"yy\r\n"), needle, false) {
			t.Errorf("needle %q not found in a plain body", needle)
		}
	})
}

func isPrintableASCII(s string) bool {
	for _, c := range []byte(s) {
		if c < 0x20 || c > 0x7e {
			return false
		}
	}
	return true
}

// FuzzOrigin: no message verifies for another user or after any change to a valid marker or to the message.
func FuzzOrigin(f *testing.F) {
	d := newTestDecrypter(f, []byte("fuzz key"))
	m := MessageRef{User: "alice", Mailbox: "INBOX", UIDValidity: 7, UID: 42}
	valid := servedCopy(d, m, servedRest)
	f.Add([]byte(valid))
	f.Add([]byte("X-Smimeproxy-Status: decrypted; ref=AAAABwAAACpJTkJPWA; mac=x\r\n\r\n"))
	f.Fuzz(func(t *testing.T, header []byte) {
		got, ok := d.Origin("alice", header)
		if ok && (got != m || !bytes.Equal(smime.StripStatusHeaders(header), []byte(servedRest))) {
			// Only markers made with the key verify, and only for the bytes they were made for.
			t.Errorf("Origin accepted a forged marker: %+v", got)
		}
		if _, ok := d.Origin("mallory", header); ok {
			t.Errorf("Origin accepted alice's marker for another user")
		}
	})
}

// FuzzSortKey: any header gives a sort string for every SORT key without panicking, the same one twice
// (SORT needs a total order, so a key must be a function of the header), and base subjects are idempotent
// (RFC 5256 section 2.1: extracting the base subject of a base subject changes nothing).
func FuzzSortKey(f *testing.F) {
	f.Add([]byte("Subject: Re: [tag] Fwd: hello (fwd)\r\nFrom: \"A\" <a@example.com>\r\nDate: Tue, 1 Dec 2026 07:00:00 +0100\r\n\r\n"))
	f.Add([]byte("Subject: =?utf-8?q?Caf=C3=A9?=\r\nTo: undisclosed-recipients:;\r\nCc: <>, b@\r\nDate: 99 Foo 2026\r\n\r\n"))
	f.Add([]byte("Subject: [Fwd: [Fwd: x]]\r\n\r\n"))
	f.Fuzz(func(t *testing.T, header []byte) {
		for _, key := range []string{"SUBJECT", "FROM", "TO", "CC", "DISPLAYFROM", "DISPLAYTO", "DATE"} {
			a, ok := SortKey(header, key)
			if !ok {
				t.Fatalf("SortKey(%s) not ok", key)
			}
			if b, _ := SortKey(header, key); a != b {
				t.Fatalf("SortKey(%s) not deterministic: %q then %q", key, a, b)
			}
		}
		sub, _ := SortKey(header, "SUBJECT")
		if again := BaseSubject(sub); again != sub {
			t.Fatalf("BaseSubject not idempotent: %q -> %q", sub, again)
		}
	})
}
