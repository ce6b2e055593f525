package smime_test

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/smimeproxy/smimeproxy/crypto/smime"
)

// statusLike matches a header field that is, or after a bare CR smuggles, an X-Smimeproxy-* field.
var statusLike = regexp.MustCompile(`(?i)^[ \t]*x-smimeproxy-|\r[ \t]*x-smimeproxy-`)

var reasons = map[string]bool{
	smime.ReasonNoMatchingKey: true, smime.ReasonCorrupt: true, smime.ReasonUnsupported: true,
	smime.ReasonKeyUnavailable: true, smime.ReasonTooLarge: true,
}

// FuzzProcess feeds arbitrary messages to Process with Bob's key. Seeds: the Thunderbird corpus (added below)
// and testdata/fuzz/FuzzProcess (constructed layer shapes). Oracle: no panic; the served bytes are what the
// status promises (unchanged minus status fields, or one status field on top of that, or a decrypted message
// with exactly one status field); deterministic.
func FuzzProcess(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join(corpus, "*.eml"))
	for _, name := range files {
		if strings.Contains(name, "SHA1") || strings.Contains(name, "SHA256") {
			if b, err := os.ReadFile(name); err == nil {
				f.Add(b)
			}
		}
	}
	key := bob(f)
	f.Fuzz(func(t *testing.T, msg []byte) {
		kr := &ring{keys: []smime.Key{key}}
		orig := append([]byte(nil), msg...)
		res := smime.Process(msg, kr, &smime.Options{MaxSize: 1 << 20})
		if !bytes.Equal(msg, orig) {
			t.Fatal("input modified")
		}
		// Owned mode serves the same, or reports Spent for an undecryptable message it decoded in place.
		owned := smime.Process(append([]byte(nil), msg...), kr, &smime.Options{MaxSize: 1 << 20, Owned: true})
		if owned.Spent {
			if res.Status == smime.Decrypted || owned.Served != nil || owned.Status != 0 {
				t.Fatalf("owned: spent (%v, %d bytes), copying gives %v", owned.Status, len(owned.Served), res.Status)
			}
		} else if owned.Status != res.Status || !bytes.Equal(owned.Served, res.Served) {
			t.Fatalf("owned: %v, copying %v: served bytes differ", owned.Status, res.Status)
		}
		stripped := smime.StripStatusHeaders(msg)
		switch res.Status {
		case smime.NotEncrypted:
			if !bytes.Equal(res.Served, stripped) {
				t.Fatal("NotEncrypted but served bytes differ from the stripped input")
			}
		case smime.Undecryptable:
			if !reasons[res.Reason] {
				t.Fatalf("unknown reason %q", res.Reason)
			}
			want := "X-Smimeproxy-Status: undecryptable; reason=" + res.Reason + "\r\n" + string(stripped)
			if string(res.Served) != want {
				t.Fatal("Undecryptable but served bytes are not status + input")
			}
		case smime.Decrypted:
			if !bytes.HasPrefix(res.Served, []byte("X-Smimeproxy-Status: decrypted; key=sha256:"+res.Fingerprint)) {
				t.Fatalf("Decrypted but served starts %q", head(res.Served))
			}
		default:
			t.Fatalf("status %d", res.Status)
		}
		// The served top-level header has exactly one status field (none when NotEncrypted).
		fields, _ := headerFields(res.Served)
		n := 0
		for _, fl := range fields {
			if statusLike.MatchString(fl) {
				n++
			}
		}
		if want := map[bool]int{true: 0, false: 1}[res.Status == smime.NotEncrypted]; n != want {
			t.Fatalf("%d X-Smimeproxy fields in the served header, want %d", n, want)
		}
		again := smime.Process(msg, kr, &smime.Options{MaxSize: 1 << 20})
		if !bytes.Equal(again.Served, res.Served) || again.Status != res.Status {
			t.Fatal("not deterministic")
		}
	})
}
