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
