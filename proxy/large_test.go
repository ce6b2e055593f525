package proxy_test

import (
	"bytes"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/smimeproxy/smimeproxy/decrypt"
	"github.com/smimeproxy/smimeproxy/internal/testenv"
	"github.com/smimeproxy/smimeproxy/keystore"
)

// fakeSMIME is a message labelled S/MIME enveloped-data of about size bytes whose base64 body starts like an
// EnvelopedData ContentInfo and is garbage after: nobody can decrypt it.
func fakeSMIME(subject string, size int) []byte {
	var b strings.Builder
	b.WriteString("From: mallory@example.org\r\nTo: alice@example.org\r\nSubject: " + subject + "\r\nMIME-Version: 1.0\r\n" +
		"Content-Type: application/pkcs7-mime; smime-type=enveloped-data; name=smime.p7m\r\n" +
		"Content-Transfer-Encoding: base64\r\n\r\n")
	b.WriteString("MIAGCSqGSIb3DQEHA6CAMIACAQAxggEr\r\n") // 30 80 06 09 <id-envelopedData> a0 80 30 80 02 01 00 31 ...
	line := strings.Repeat("QUFB", 19) + "\r\n"
	for b.Len() < size {
		b.WriteString(line)
	}
	return []byte(b.String())
}

// heapPeak runs f and returns by how much the heap in use grew at most meanwhile (sampled every 2 ms).
func heapPeak(f func()) int64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.HeapInuse
	peak := base
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
	f()
	close(stop)
	wg.Wait()
	return int64(peak) - int64(base)
}

// TestLargeUndecryptableThroughRelay: big fake S/MIME messages through the real relay and Dovecot (issue 10,
// item 8). One over the size limit is served as undecryptable, reason too-large, built inside the buffer it
// was read into: the heap grows by about one message, not two or three, and the decrypt cache keeps nothing.
// One under the limit that does not decrypt is served undecryptable (corrupt) and not cached either. BODY[]
// of both is the status field and the message as stored.
func TestLargeUndecryptableThroughRelay(t *testing.T) {
	const limit = 4 << 20
	d := testenv.StartDovecot(t, testenv.DovecotOptions{NoTLS: true})
	big := fakeSMIME("too large", 24<<20)
	mid := fakeSMIME("corrupt", 3<<20)
	d.SeedMaildir("alice", "INBOX", [][]byte{big, mid})
	rw, err := decrypt.New(decrypt.Options{Store: keystore.NewMemory(), MaxMessageBytes: limit})
	if err != nil {
		t.Fatal(err)
	}
	addr, _ := startProxy(t, d, rw)
	c := dial(t, addr, "alice", "alice-pw", nil)
	if _, err := c.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	// Items computed from the served copy, which the relay reads over a side connection (fetchRaw).
	sizes := map[imap.UID]int64{}
	fetchSizes := func(uid imap.UID) {
		msgs, err := c.Fetch(imap.UIDSetNum(uid), &imap.FetchOptions{UID: true, RFC822Size: true, Envelope: true}).Collect()
		if err != nil || len(msgs) != 1 {
			t.Fatalf("fetch UID %d: %v", uid, err)
		}
		sizes[uid] = msgs[0].RFC822Size
	}
	growth := heapPeak(func() { fetchSizes(1) })
	fetchSizes(2)
	t.Logf("%d MB message over the limit: heap in use grew by at most %.1f MB", len(big)>>20, float64(growth)/(1<<20))
	if growth > int64(len(big))*3/2 {
		t.Errorf("heap in use grew by %d bytes for a %d-byte message over the limit; want < 1.5 x", growth, len(big))
	}
	if n, _ := rw.CacheStats(); n != 0 {
		t.Errorf("decrypt cache holds %d entries, want none (undecryptable copies of large messages)", n)
	}
	for uid, want := range map[imap.UID]struct {
		msg    []byte
		reason string
	}{1: {big, "too-large"}, 2: {mid, "corrupt"}} {
		body := fetchWhole(t, c, uid)
		status, rest, _ := bytes.Cut(body, []byte("\r\n"))
		if !strings.HasPrefix(string(status), "X-Smimeproxy-Status: undecryptable; reason="+want.reason+";") {
			t.Errorf("UID %d: status %q, want undecryptable, reason %s", uid, status, want.reason)
		}
		if !bytes.Equal(rest, want.msg) {
			t.Errorf("UID %d: BODY[] after the status field is not the message as stored", uid)
		}
		if sizes[uid] != int64(len(body)) {
			t.Errorf("UID %d: RFC822.SIZE %d, BODY[] %d bytes", uid, sizes[uid], len(body))
		}
	}
	if n, _ := rw.CacheStats(); n != 0 {
		t.Errorf("decrypt cache holds %d entries after BODY[], want none", n)
	}
}

// fetchWhole returns BODY.PEEK[] of uid.
func fetchWhole(t *testing.T, c *imapclient.Client, uid imap.UID) []byte {
	t.Helper()
	msgs, err := c.Fetch(imap.UIDSetNum(uid), &imap.FetchOptions{UID: true, BodySection: []*imap.FetchItemBodySection{{Peek: true}}}).Collect()
	if err != nil || len(msgs) != 1 || len(msgs[0].BodySection) != 1 {
		t.Fatalf("fetch UID %d: %v (%d messages)", uid, err, len(msgs))
	}
	return msgs[0].BodySection[0].Bytes
}
