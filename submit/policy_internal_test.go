package submit

import (
	"strings"
	"testing"

	"github.com/smimeproxy/smimeproxy/crypto/smime"
)

// TestPrepareDropsStatusFields: what is signed and sent carries no status field by the one rule
// (smime.IsStatusField over mimepart.EachField), however hidden; a status-like text inside another field's
// folded value is that field's text and stays.
func TestPrepareDropsStatusFields(t *testing.T) {
	for _, tc := range []struct{ name, header, keep string }{
		{"by name", "X-Smimeproxy-Status: decrypted\r\n", ""},
		{"other name", "x-smimeproxy-note: hi\r\n", ""},
		{"bare CR", "Subject: hi\rX-Smimeproxy-Status: decrypted\r\n", ""},
		{"folded value", "Subject: hi\r\n X-Smimeproxy-Status: a continuation\r\n", "Subject: hi\r\n X-Smimeproxy-Status: a continuation\r\n"},
	} {
		msg := "From: a@example.com\r\nTo: b@example.org\r\n" + tc.header + "\r\nbody\r\n"
		p := prepare([]byte(msg), Policy{})
		if smime.HasStatusField(p.msg) {
			t.Errorf("%s: a status field is sent: %q", tc.name, p.msg)
		}
		if tc.keep != "" && !strings.Contains(string(p.msg), tc.keep) {
			t.Errorf("%s: %q lost", tc.name, tc.keep)
		}
		if p.from != "a@example.com" || len(p.visible) != 1 || !strings.HasSuffix(string(p.msg), "\r\n\r\nbody\r\n") {
			t.Errorf("%s: from %q, visible %v, message %q", tc.name, p.from, p.visible, p.msg)
		}
	}
}
