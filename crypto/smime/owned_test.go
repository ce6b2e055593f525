package smime_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/smimeproxy/smimeproxy/crypto/smime"
)

// TestOwnedMatchesCopying: with Options.Owned, Process serves exactly what it serves without, for the whole
// Thunderbird corpus; an undecryptable message it decoded in place is reported Spent (nothing served), and
// a message it left alone is not modified.
func TestOwnedMatchesCopying(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(corpus, "*.eml"))
	if err != nil || len(files) < 60 {
		t.Fatalf("corpus: %d files, %v", len(files), err)
	}
	var spent, decrypted int
	for _, keys := range [][]smime.Key{{bob(t)}, nil} { // with Bob's key, and with no key at all
		for _, f := range files {
			msg, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			want := smime.Process(context.Background(), msg, &ring{keys: keys}, nil)
			owned := append([]byte(nil), msg...)
			got := smime.Process(context.Background(), owned, &ring{keys: keys}, &smime.Options{Owned: true})
			name := filepath.Base(f)
			switch {
			case got.Spent:
				spent++
				if got.Served != nil || want.Status == smime.Decrypted {
					t.Errorf("%s: spent (served %d bytes); copying gives %v %q", name, len(got.Served), want.Status, want.Reason)
				}
				if want.Status == smime.Undecryptable {
					if again := smime.ServeUndecryptable(msg, want.Reason, nil); !bytes.Equal(again.Served, want.Served) {
						t.Errorf("%s: ServeUndecryptable differs from Process", name)
					}
				}
			case got.Status != want.Status || got.Reason != want.Reason || !bytes.Equal(got.Served, want.Served):
				t.Errorf("%s: owned %v %q, copying %v %q (served equal: %v)", name, got.Status, got.Reason, want.Status, want.Reason, bytes.Equal(got.Served, want.Served))
			case got.Status == smime.NotEncrypted && !bytes.Equal(owned, msg):
				t.Errorf("%s: a message left alone was modified", name)
			case got.Status == smime.Decrypted:
				decrypted++
			}
		}
	}
	if spent == 0 || decrypted == 0 {
		t.Errorf("spent %d, decrypted %d: the corpus should exercise both", spent, decrypted)
	}
}

// TestDecodeBase64InPlace agrees with encoding/base64 on random data with RFC 2045 line breaks, bare LFs,
// missing padding and stray white space, and rejects what it must.
func TestDecodeBase64InPlace(t *testing.T) {
	for _, n := range []int{0, 1, 2, 3, 4, 57, 58, 1000, 100003} {
		data := make([]byte, n)
		rand.Read(data)
		enc := base64.StdEncoding.EncodeToString(data)
		var lines []string
		for len(enc) > 76 {
			lines = append(lines, enc[:76])
			enc = enc[76:]
		}
		lines = append(lines, enc)
		for _, text := range []string{
			strings.Join(lines, "\r\n") + "\r\n",
			strings.Join(lines, "\n"),
			strings.TrimRight(strings.Join(lines, " \t\r\n"), "="),
		} {
			got, err := smime.DecodeBase64InPlace([]byte(text))
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("n=%d: %v, equal %v", n, err, bytes.Equal(got, data))
			}
		}
	}
	for _, bad := range []string{"QUJD*", "QUJDR", "QQ==QQ==", "QUJD\x00"} {
		if _, err := smime.DecodeBase64InPlace([]byte(bad)); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

// TestProcessMemoryOwned: an owned 50 MB message is decrypted with at most 1x its size allocated (the
// served copy), against about 1.5x when copying.
func TestProcessMemoryOwned(t *testing.T) {
	msg, k := benchMessage(t, 50<<20)
	kr := &ring{keys: []smime.Key{k}}
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	res := smime.Process(context.Background(), msg, kr, &smime.Options{MaxSize: 64 << 20, Owned: true})
	runtime.ReadMemStats(&after)
	if res.Status != smime.Decrypted {
		t.Fatalf("Process() = %v %q", res.Status, res.Reason)
	}
	ratio := float64(after.TotalAlloc-before.TotalAlloc) / float64(len(msg))
	t.Logf("owned: message %d bytes, served %d, allocated %.2fx", len(msg), len(res.Served), ratio)
	if ratio > 1.0 {
		t.Errorf("allocated %.2fx the message size, want <= 1x", ratio)
	}
}
