package decrypt

import (
	"bytes"
	"context"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/smimeproxy/smimeproxy/internal/mimepart"
)

// allocatedDuring returns the bytes allocated while f runs.
func allocatedDuring(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// largeInner is a MIME entity of about n bytes.
func largeInner(n int) string {
	return "Content-Type: text/plain\r\n\r\n" + strings.Repeat("a large secret line of text\r\n", n/29)
}

// TestRewriteLargeDecryptsInPlace: a large message whose recipients include the user's key is still decoded
// and decrypted inside its fetched buffer (holdsKeyFor says yes from its first bytes): the only message-sized
// allocation is the served copy, well under the 1.5 x message of decoding into a copy.
func TestRewriteLargeDecryptsInPlace(t *testing.T) {
	f := newFixture(t, -1)
	enc := encryptedMessage(t, "big", largeInner(4<<20), f.cert)
	ref := MessageRef{User: "alice", Mailbox: "INBOX", UIDValidity: 1, UID: 1}
	var served []byte
	var err error
	n := allocatedDuring(func() {
		served, err = f.d.Rewrite(context.Background(), ref, func() ([]byte, error) { return bytes.Clone(enc), nil })
	})
	if err != nil || statusOf(served) != "decrypted" {
		t.Fatalf("Rewrite: %v, status %q", err, statusOf(served))
	}
	// The clone (1 x), the served copy (0.75 x) and small change; a decoded copy would add 0.75 x.
	if limit := uint64(1.9 * float64(len(enc))); n > limit {
		t.Errorf("allocated %d bytes for a %d-byte message, want <= %d (decrypted in place)", n, len(enc), limit)
	}
	t.Logf("allocated %.2f x message", float64(n)/float64(len(enc)))
}

// TestRewriteLargeUndecryptableFetchedOnce: large messages that do not decrypt are fetched once (no buffer is
// spent on them), served as they are upstream under the status field, and not cached (issue 10, item 8): a
// fake (base64 that starts like enveloped-data and is garbage after), and one for another user.
func TestRewriteLargeUndecryptableFetchedOnce(t *testing.T) {
	f := newFixture(t, 0)
	real := encryptedMessage(t, "big", largeInner(2<<20), f.cert)
	garbage := bytes.Repeat([]byte("QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB\r\n"), 40000)
	hdr, body := mimepart.SplitBlock(real)
	fake := append(append(bytes.Clone(hdr), body[:24]...), garbage...) // the ContentInfo's type, then garbage
	// A fake whose RecipientInfo names Alice's certificate (public) is decoded in place, fails, and is
	// fetched again: the one case that still reads a message twice. It is not cached either.
	fakeForAlice := append(append(bytes.Clone(hdr), body[:200]...), garbage...)
	for _, c := range []struct {
		name, user string
		msg        []byte
		reason     string
		fetches    int32
	}{
		{"fake", "alice", fake, "corrupt", 2},
		{"other-user", "bob", real, "no-matching-key", 2},
		{"fake-naming-alice", "alice", fakeForAlice, "corrupt", 4},
	} {
		t.Run(c.name, func(t *testing.T) {
			ref := MessageRef{User: c.user, Mailbox: "INBOX", UIDValidity: 1, UID: 7}
			var calls atomic.Int32
			for i := 0; i < 2; i++ {
				served, err := f.d.Rewrite(context.Background(), ref, func() ([]byte, error) {
					calls.Add(1)
					return bytes.Clone(c.msg), nil
				})
				if err != nil || statusOf(served) != "undecryptable" || !bytes.Contains(served, []byte("reason="+c.reason)) {
					t.Fatalf("Rewrite: %v, status %q", err, mimepart.Values(served, StatusField))
				}
				if _, rest, _ := bytes.Cut(served, []byte("\r\n")); !bytes.Equal(rest, c.msg) {
					t.Fatal("not served as it is upstream")
				}
			}
			if n := calls.Load(); n != c.fetches {
				t.Errorf("%d fetches for two Rewrites, want %d (nothing cached)", n, c.fetches)
			}
			if f.d.Cached(ref) {
				t.Error("the undecryptable copy of a large message is cached")
			}
		})
	}
	// A small undecryptable message is still cached.
	small := encryptedMessage(t, "small", innerText, f.cert)
	ref := MessageRef{User: "bob", Mailbox: "INBOX", UIDValidity: 1, UID: 8}
	if _, err := f.d.Rewrite(context.Background(), ref, func() ([]byte, error) { return bytes.Clone(small), nil }); err != nil {
		t.Fatal(err)
	}
	if !f.d.Cached(ref) {
		t.Error("a small undecryptable copy is not cached")
	}
}

// TestRewriteTooLarge: a message over MaxMessageBytes is served as undecryptable (too-large) inside the buffer
// it was fetched into when that has room after it, as the proxy leaves: nothing message-sized is allocated
// and nothing is cached. A plain message over the limit still only loses its forged status field.
func TestRewriteTooLarge(t *testing.T) {
	f := newFixture(t, 0)
	d, err := New(Options{Store: f.store, MaxMessageBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	enc := encryptedMessage(t, "big", largeInner(3<<20), f.cert)
	buf := make([]byte, len(enc), len(enc)+4096)
	copy(buf, enc)
	ref := MessageRef{User: "alice", Mailbox: "INBOX", UIDValidity: 1, UID: 1}
	var served []byte
	n := allocatedDuring(func() {
		served, err = d.Rewrite(context.Background(), ref, func() ([]byte, error) { return buf, nil })
	})
	if err != nil || statusOf(served) != "undecryptable" || !bytes.Contains(served[:200], []byte("reason=too-large")) {
		t.Fatalf("Rewrite: %v, status %q", err, mimepart.Values(served, StatusField))
	}
	if _, rest, _ := bytes.Cut(served, []byte("\r\n")); !bytes.Equal(rest, enc) {
		t.Fatal("not served as it is upstream")
	}
	if &served[0] != &buf[0] {
		t.Error("the undecryptable copy was not built in the fetched buffer")
	}
	if n > 256<<10 {
		t.Errorf("allocated %d bytes for a %d-byte message over the limit, want < 256 KiB", n, len(enc))
	}
	if d.Cached(ref) {
		t.Error("the too-large copy is cached")
	}
	// Without room: the same bytes, in a copy.
	served2, err := d.Rewrite(context.Background(), MessageRef{User: "alice", Mailbox: "INBOX", UIDValidity: 1, UID: 2},
		func() ([]byte, error) { return bytes.Clone(enc), nil })
	if err != nil || statusOf(served2) != "undecryptable" || !bytes.Equal(served2[bytes.Index(served2, []byte("\r\n")):], served[bytes.Index(served, []byte("\r\n")):]) {
		t.Errorf("without room: %v, status %q", err, mimepart.Values(served2, StatusField))
	}
	// A plain message over the limit with a forged status field: served without it, not as too-large.
	plain := []byte("X-Smimeproxy-Status: decrypted; key=forged\r\nSubject: plain\r\nContent-Type: text/plain\r\n\r\n" +
		strings.Repeat("plain text line\r\n", (2<<20)/17))
	plainBuf := make([]byte, len(plain), len(plain)+4096)
	copy(plainBuf, plain)
	served3, err := d.Rewrite(context.Background(), MessageRef{User: "alice", Mailbox: "INBOX", UIDValidity: 1, UID: 3},
		func() ([]byte, error) { return plainBuf, nil })
	if err != nil || statusOf(served3) != "" || !bytes.Equal(served3, plain[bytes.Index(plain, []byte("\r\n"))+2:]) {
		t.Errorf("plain over the limit: %v, status %q", err, mimepart.Values(served3, StatusField))
	}
}
