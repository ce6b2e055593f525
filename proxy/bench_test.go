package proxy_test

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/smimeproxy/smimeproxy/backend"
	"github.com/smimeproxy/smimeproxy/decrypt"
	"github.com/smimeproxy/smimeproxy/internal/testenv"
	"github.com/smimeproxy/smimeproxy/keystore"
	"github.com/smimeproxy/smimeproxy/proxy"
)

// plainMessage returns an LF-terminated (maildir) plain-text message of about size bytes.
func plainMessage(i, size int) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "From: sender%d@example.org\nTo: alice@example.org\nSubject: message %d with a subject of usual length\n"+
		"Date: Mon, 02 Mar 2026 10:%02d:00 +0000\nMessage-ID: <m%d@example.org>\nContent-Type: text/plain; charset=utf-8\n\n", i, i, i%60, i)
	line := strings.Repeat("0123456789abcdef", 4) + "\n"
	for b.Len() < size {
		b.WriteString(line)
	}
	return []byte(b.String())
}

// drain runs UID FETCH 1:* with options on c and consumes every item, streaming literals to io.Discard. It
// returns the literal bytes read and the number of messages.
func drain(tb testing.TB, c *imapclient.Client, o *imap.FetchOptions) (int64, int) {
	cmd := c.Fetch(imap.UIDSet{imap.UIDRange{Start: 1, Stop: 0}}, o)
	var n int64
	msgs := 0
	for m := cmd.Next(); m != nil; m = cmd.Next() {
		msgs++
		for item := m.Next(); item != nil; item = m.Next() {
			if bs, ok := item.(imapclient.FetchItemDataBodySection); ok && bs.Literal != nil {
				k, err := io.Copy(io.Discard, bs.Literal)
				if err != nil {
					tb.Fatal(err)
				}
				n += k
			}
		}
	}
	if err := cmd.Close(); err != nil {
		tb.Fatal(err)
	}
	return n, msgs
}

// benchPair runs op directly against Dovecot and through the proxy and reports, on the proxy run, ratio =
// proxy throughput ÷ direct throughput.
func benchPair(b *testing.B, d *testenv.Dovecot, setBytes int64, op func(b *testing.B, c *imapclient.Client)) {
	benchPairWith(b, d, nil, setBytes, op)
}

// benchPairWith is benchPair with rw as the proxy's Rewriter.
func benchPairWith(b *testing.B, d *testenv.Dovecot, rw proxy.Rewriter, setBytes int64, op func(b *testing.B, c *imapclient.Client)) {
	addr, _ := startProxy(b, d, rw)
	benchTargets(b, setBytes, op,
		func(b *testing.B) *imapclient.Client { return dial(b, d.Addr(), "alice", "alice-pw", nil) },
		func(b *testing.B) *imapclient.Client { return dial(b, addr, "alice", "alice-pw", nil) })
}

// benchTargets runs op alternately on a client from direct and on one from viaProxy (both logged in as alice,
// INBOX examined), so that both see the same machine load, and reports the time per op of each and ratio =
// proxy throughput ÷ direct throughput.
func benchTargets(b *testing.B, setBytes int64, op func(b *testing.B, c *imapclient.Client), direct, viaProxy func(b *testing.B) *imapclient.Client) {
	dc, pc := direct(b), viaProxy(b)
	for _, c := range []*imapclient.Client{dc, pc} {
		if _, err := c.Select("INBOX", &imap.SelectOptions{ReadOnly: true}).Wait(); err != nil {
			b.Fatal(err)
		}
		op(b, c) // warm Dovecot's index and caches, and the proxy's
	}
	b.SetBytes(setBytes)
	b.ReportAllocs()
	b.ResetTimer()
	var dt, pt time.Duration
	for i := 0; i < b.N; i++ {
		start := time.Now()
		op(b, dc)
		mid := time.Now()
		op(b, pc)
		dt += mid.Sub(start)
		pt += time.Since(mid)
	}
	b.StopTimer()
	b.ReportMetric(float64(dt.Microseconds())/1000/float64(b.N), "direct-ms/op")
	b.ReportMetric(float64(pt.Microseconds())/1000/float64(b.N), "proxy-ms/op")
	b.ReportMetric(float64(dt)/float64(pt), "ratio")
}

// seedLarge seeds three 20 MB plain messages into alice's INBOX and returns an op that streams their
// BODY.PEEK[] and checks it got them all, and their total size.
func seedLarge(d *testenv.Dovecot) (func(b *testing.B, c *imapclient.Client), int64) {
	var msgs [][]byte
	var total int64
	for i := 0; i < 3; i++ {
		m := plainMessage(i, 20<<20)
		msgs = append(msgs, m)
		total += int64(len(m))
	}
	d.SeedMaildir("alice", "INBOX", msgs)
	opts := &imap.FetchOptions{UID: true, BodySection: []*imap.FetchItemBodySection{{Peek: true}}}
	return func(b *testing.B, c *imapclient.Client) {
		if n, k := drain(b, c, opts); k != 3 || n < total {
			b.Fatalf("streamed %d bytes of %d messages", n, k)
		}
	}, total
}

// BenchmarkFetchLargeBody streams BODY.PEEK[] of three 20 MB plain messages.
func BenchmarkFetchLargeBody(b *testing.B) {
	d := testenv.StartDovecot(b, testenv.DovecotOptions{NoTLS: true})
	op, total := seedLarge(d)
	benchPair(b, d, total, op)
}

// BenchmarkFetchLargeBodyTLS is BenchmarkFetchLargeBody as deployed: the mail client reaches the upstream
// over TLS (direct), or reaches the proxy in plaintext on loopback while the proxy reaches the upstream over
// TLS (proxy). The ratio is what a user sees change when the proxy is put in between.
func BenchmarkFetchLargeBodyTLS(b *testing.B) {
	d := testenv.StartDovecot(b, testenv.DovecotOptions{})
	op, total := seedLarge(d)
	srv, err := proxy.New(proxy.Options{Upstream: backend.Options{URL: "imaps://" + d.TLSAddr(), CAFile: d.CAFile()}})
	if err != nil {
		b.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go srv.Serve(ln)
	b.Cleanup(func() { srv.Close() })
	benchTargets(b, total, op,
		func(b *testing.B) *imapclient.Client {
			c, err := imapclient.DialTLS(d.TLSAddr(), &imapclient.Options{TLSConfig: d.TLSConfig()})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { c.Close() })
			if err := c.Login("alice", "alice-pw").Wait(); err != nil {
				b.Fatal(err)
			}
			return c
		},
		func(b *testing.B) *imapclient.Client { return dial(b, ln.Addr().String(), "alice", "alice-pw", nil) })
}

// BenchmarkFetchHeaders10k is a client's header sync: UID FETCH 1:* (UID FLAGS RFC822.SIZE ENVELOPE) over
// 10,000 messages.
func BenchmarkFetchHeaders10k(b *testing.B) {
	d := testenv.StartDovecot(b, testenv.DovecotOptions{NoTLS: true})
	msgs := make([][]byte, 10000)
	for i := range msgs {
		msgs[i] = plainMessage(i, 600)
	}
	d.SeedMaildir("alice", "INBOX", msgs)
	opts := &imap.FetchOptions{UID: true, Flags: true, RFC822Size: true, Envelope: true}
	benchPair(b, d, 0, func(b *testing.B, c *imapclient.Client) {
		if _, k := drain(b, c, opts); k != 10000 {
			b.Fatalf("fetched %d messages", k)
		}
	})
}

// BenchmarkFetchHeaders10kDecrypting is BenchmarkFetchHeaders10k through a proxy that decrypts (a Decrypter
// with an empty memory key store): the cost of detection (pass 1: BODYSTRUCTURE and the status field) on
// plain mail.
func BenchmarkFetchHeaders10kDecrypting(b *testing.B) {
	d := testenv.StartDovecot(b, testenv.DovecotOptions{NoTLS: true})
	msgs := make([][]byte, 10000)
	for i := range msgs {
		msgs[i] = plainMessage(i, 600)
	}
	d.SeedMaildir("alice", "INBOX", msgs)
	dec, err := decrypt.New(decrypt.Options{Store: keystore.NewMemory()})
	if err != nil {
		b.Fatal(err)
	}
	opts := &imap.FetchOptions{UID: true, Flags: true, RFC822Size: true, Envelope: true}
	benchPairWith(b, d, dec, 0, func(b *testing.B, c *imapclient.Client) {
		if _, k := drain(b, c, opts); k != 10000 {
			b.Fatalf("fetched %d messages", k)
		}
	})
}

// TestFetchLargeStreamsMemory fetches a 50 MB message through the proxy (client and proxy in this process)
// and checks that the heap in use never grows by more than 16 MB: the body is streamed, not buffered.
func TestFetchLargeStreamsMemory(t *testing.T) {
	d := testenv.StartDovecot(t, testenv.DovecotOptions{NoTLS: true})
	m := plainMessage(0, 50<<20)
	d.SeedMaildir("alice", "INBOX", [][]byte{m})
	addr, _ := startProxy(t, d, nil)
	c := dial(t, addr, "alice", "alice-pw", nil)
	if _, err := c.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	m = nil
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.HeapInuse
	var peak uint64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			peak = max(peak, ms.HeapInuse)
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Millisecond):
			}
		}
	}()
	n, k := drain(t, c, &imap.FetchOptions{UID: true, RFC822Size: true, BodySection: []*imap.FetchItemBodySection{{Peek: true}}})
	close(stop)
	wg.Wait()
	if k != 1 || n < 50<<20 {
		t.Fatalf("streamed %d bytes of %d messages", n, k)
	}
	growth := int64(peak) - int64(base)
	t.Logf("50 MB message: heap in use grew by at most %.1f MB", float64(growth)/(1<<20))
	if growth > 16<<20 {
		t.Errorf("heap in use grew by %d bytes while streaming a 50 MB message; want < 16 MB", growth)
	}
}

// TestAppendLargeStreamsMemory appends a 50 MB message through the proxy: the heap in use grows far less than
// the message (the literal is streamed upstream) and Dovecot stores it byte for byte.
func TestAppendLargeStreamsMemory(t *testing.T) {
	d := testenv.StartDovecot(t, testenv.DovecotOptions{NoTLS: true})
	addr, _ := startProxy(t, d, nil)
	c := dial(t, addr, "alice", "alice-pw", nil)
	m := []byte(strings.ReplaceAll(string(plainMessage(1, 50<<20)), "\n", "\r\n"))
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.HeapInuse
	var peak uint64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			peak = max(peak, ms.HeapInuse)
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Millisecond):
			}
		}
	}()
	cmd := c.Append("INBOX", int64(len(m)), nil)
	for off := 0; off < len(m); off += 1 << 20 {
		if _, err := cmd.Write(m[off:min(off+1<<20, len(m))]); err != nil {
			t.Fatal(err)
		}
	}
	if err := cmd.Close(); err != nil {
		t.Fatal(err)
	}
	data, err := cmd.Wait()
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	growth := int64(peak) - int64(base)
	t.Logf("50 MB APPEND: heap in use grew by at most %.1f MB", float64(growth)/(1<<20))
	if growth > 16<<20 {
		t.Errorf("heap in use grew by %d bytes while appending a 50 MB message; want < 16 MB", growth)
	}
	if got := d.Raw("alice", "INBOX", data.UID); !bytes.Equal(got, m) {
		t.Errorf("stored %d bytes, appended %d", len(got), len(m))
	}
}
