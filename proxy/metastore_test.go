package proxy_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/smimeproxy/smimeproxy/decrypt"
	"github.com/smimeproxy/smimeproxy/internal/testenv"
	"github.com/smimeproxy/smimeproxy/keystore"
	"github.com/smimeproxy/smimeproxy/metastore"
	"github.com/smimeproxy/smimeproxy/proxy"
)

// metaIdentity is a user's key in a memory key store, the same across proxy restarts.
type metaIdentity struct {
	store  keystore.Store
	cert   *x509.Certificate
	marker []byte
}

func newMetaIdentity(t testing.TB, user string) *metaIdentity {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: user},
		EmailAddresses: []string{user + "@example.org"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageKeyEncipherment, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	store := keystore.NewMemory()
	if _, err := store.Put(context.Background(), user, []*x509.Certificate{cert}, key, keystore.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	marker := make([]byte, 32)
	rand.Read(marker)
	return &metaIdentity{store: store, cert: cert, marker: marker}
}

// countMetrics counts decryptions and memory-cache lookups.
type countMetrics struct{ decrypted, undecryptable, hits, misses atomic.Int64 }

func (m *countMetrics) Decrypted()           { m.decrypted.Add(1) }
func (m *countMetrics) Undecryptable(string) { m.undecryptable.Add(1) }
func (m *countMetrics) CacheHit()            { m.hits.Add(1) }
func (m *countMetrics) CacheMiss()           { m.misses.Add(1) }

// decrypterWith is a Decrypter over id's keys with the metadata store ms (nil: none), as after a restart.
func (id *metaIdentity) decrypterWith(t testing.TB, ms *metastore.Store, cacheBytes int64, m *countMetrics) *decrypt.Decrypter {
	t.Helper()
	d, err := decrypt.New(decrypt.Options{Store: id.store, MarkerKey: id.marker, MetaStore: ms, CacheBytes: cacheBytes, Metrics: m})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func openMetaStore(t testing.TB, dir string) *metastore.Store {
	t.Helper()
	ms, err := metastore.Open(metastore.Options{Dir: dir, Namespace: "test",
		Key: func(_ context.Context, user string) ([]byte, error) {
			k := sha256.Sum256([]byte("metastore key of " + user))
			return k[:], nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	return ms
}

// headerSyncFields are the fields Thunderbird asks for in its header sync.
var headerSyncFields = []string{"From", "To", "Cc", "Bcc", "Subject", "Date", "Message-ID", "Priority", "X-Priority",
	"References", "Newsgroups", "In-Reply-To", "Content-Type", "Reply-To"}

// headerSync is Thunderbird's header sync, plus ENVELOPE and BODYSTRUCTURE when full.
func headerSync(full bool) *imap.FetchOptions {
	o := &imap.FetchOptions{UID: true, Flags: true, RFC822Size: true, BodySection: []*imap.FetchItemBodySection{{
		Specifier: imap.PartSpecifierHeader, HeaderFields: headerSyncFields, Peek: true}}}
	if full {
		o.Envelope = true
		o.BodyStructure = &imap.FetchItemBodyStructure{Extended: true}
	}
	return o
}

// syncDump runs the header sync on c (INBOX selected) and returns a canonical dump and the message count.
func syncDump(t testing.TB, c *imapclient.Client, full bool) (string, int) {
	t.Helper()
	msgs, err := c.Fetch(imap.UIDSet{imap.UIDRange{Start: 1, Stop: 0}}, headerSync(full)).Collect()
	if err != nil {
		t.Fatal(err)
	}
	return dump(t, msgs), len(msgs)
}

// metaWords are words of the test mail's header and body that must never reach the disk.
var metaWords = []string{"Zanzibar", "quokka-invoice", "Marmalade", "treasurer@hidden.example", "Quetzal"}

// seedMetaMailbox seeds n encrypted messages (and two plain ones) for alice.
func seedMetaMailbox(t testing.TB, d *testenv.Dovecot, id *metaIdentity, n, bodySize int) {
	t.Helper()
	var msgs [][]byte
	for i := 0; i < n; i++ {
		var b strings.Builder
		fmt.Fprintf(&b, "From: Treasurer <treasurer@hidden.example>\r\nTo: alice@example.org\r\nSubject: Zanzibar quokka-invoice %d\r\n"+
			"Date: Mon, 02 Mar 2026 10:%02d:00 +0000\r\nMessage-ID: <meta-%d@example.org>\r\nMIME-Version: 1.0\r\n"+
			"Content-Type: text/plain; charset=us-ascii\r\n\r\nMarmalade Quetzal %d\r\n", i, i%60, i, i)
		for b.Len() < bodySize {
			b.WriteString("Marmalade and Quetzal are in the body of this message, line after line.\r\n")
		}
		enc, err := decrypt.EncryptToSelf([]byte(b.String()), []*x509.Certificate{id.cert})
		if err != nil {
			t.Fatal(err)
		}
		// EncryptToSelf keeps the header fields in the outer header too (as the proxy's encrypted APPEND
		// does): the served copy's header and envelope then carry the words.
		msgs = append(msgs, bytes.ReplaceAll(enc, []byte("\r\n"), []byte("\n")))
	}
	msgs = append(msgs, plainMessage(1, 300), plainMessage(2, 300))
	d.SeedMaildir("alice", "INBOX", msgs)
}

// TestMetaStoreHeaderSyncAfterRestart: a header sync after a restart (and with no memory cache) is answered
// from the metadata store with no decryption, byte for byte as before; BODY[] still decrypts; the store's
// files hold none of the mail's words.
func TestMetaStoreHeaderSyncAfterRestart(t *testing.T) {
	d := testenv.StartDovecot(t, testenv.DovecotOptions{NoTLS: true})
	id := newMetaIdentity(t, "alice")
	const n = 40
	seedMetaMailbox(t, d, id, n, 3000)
	dir := t.TempDir()

	// First run: decrypts everything and fills the store.
	ms := openMetaStore(t, dir)
	m1 := &countMetrics{}
	addr, _ := startProxy(t, d, id.decrypterWith(t, ms, 0, m1))
	c := dial(t, addr, "alice", "alice-pw", nil)
	if _, err := c.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	want, k := syncDump(t, c, true)
	if k != n+2 || m1.decrypted.Load() != n {
		t.Fatalf("first sync: %d messages, %d decrypted", k, m1.decrypted.Load())
	}
	if !strings.Contains(want, "Zanzibar quokka-invoice 7") {
		t.Fatalf("first sync does not show the decrypted subject:\n%.2000s", want)
	}
	ms.Flush()
	// Two entries a message: its metadata and its searchable text.
	if st, _ := ms.Stats(context.Background(), "alice"); st.Entries != 2*n {
		t.Fatalf("store holds %d entries, want %d", st.Entries, 2*n)
	}
	c.Logout().Wait()
	ms.Close()

	// Restart: a new Decrypter without memory cache, the store reopened.
	ms = openMetaStore(t, dir)
	defer ms.Close()
	m2 := &countMetrics{}
	addr, _ = startProxy(t, d, id.decrypterWith(t, ms, -1, m2))
	c = dial(t, addr, "alice", "alice-pw", nil)
	if _, err := c.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	for _, full := range []bool{false, true} {
		got, _ := syncDump(t, c, full)
		if full && got != want {
			t.Errorf("header sync after a restart differs:\n%s\nwant\n%s", got, want)
		}
	}
	// A UID FETCH of a few named messages (the relay leaves the body items out upstream).
	if msgs, err := c.Fetch(imap.UIDSetNum(3, 4, 5), headerSync(true)).Collect(); err != nil || len(msgs) != 3 {
		t.Fatalf("UID FETCH 3:5 = %d messages, %v", len(msgs), err)
	}
	if m2.decrypted.Load() != 0 || m2.misses.Load() != 0 {
		t.Fatalf("after a restart the header sync decrypted %d messages (%d cache lookups); want none",
			m2.decrypted.Load(), m2.misses.Load())
	}
	// BODY[] still decrypts, and the size served before matches it.
	msgs, err := c.Fetch(imap.UIDSetNum(3), &imap.FetchOptions{UID: true, RFC822Size: true,
		BodySection: []*imap.FetchItemBodySection{{Peek: true}}}).Collect()
	if err != nil || len(msgs) != 1 {
		t.Fatalf("FETCH BODY[] = %v", err)
	}
	var body []byte
	for _, b := range msgs[0].BodySection {
		body = b.Bytes
	}
	if m2.decrypted.Load() != 1 || !bytes.Contains(body, []byte("Marmalade Quetzal 2")) || int64(len(body)) != msgs[0].RFC822Size {
		t.Fatalf("BODY[]: %d decrypted, %d bytes, RFC822.SIZE %d", m2.decrypted.Load(), len(body), msgs[0].RFC822Size)
	}
	if !strings.Contains(want, "RFC822.SIZE "+strconv.Itoa(len(body))) && !strings.Contains(want, strconv.Itoa(len(body))) {
		t.Errorf("the stored RFC822.SIZE does not match the decrypted copy (%d bytes)", len(body))
	}
	ms.Flush()
	grepNoPlaintext(t, dir)
}

// grepNoPlaintext fails when a file under dir holds one of metaWords (any case).
func grepNoPlaintext(t testing.TB, dir string) {
	t.Helper()
	files := 0
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil || fi.IsDir() {
			return nil
		}
		files++
		b, err := os.ReadFile(p)
		if err != nil {
			t.Errorf("read %s: %v", p, err)
			return nil
		}
		// The words, and the header lines of the test mail (short names only with their values: a two-letter
		// string turns up in any file of random bytes).
		words := append(append([]string(nil), metaWords...), "To: alice@example.org", "Date: Mon, 02 Mar 2026",
			"Message-ID: <meta-", "MIME-Version:", "Content-Type: text/plain", "Subject:", "From: Treasurer", "alice@example.org")
		for _, w := range words {
			if bytes.Contains(bytes.ToLower(b), bytes.ToLower([]byte(w))) {
				t.Errorf("%s holds %q", p, w)
			}
		}
		return nil
	})
	if files == 0 {
		t.Fatalf("no files under %s", dir)
	}
}

// TestMetaStoreExpunge: a message expunged upstream is pruned from the store when the relay next lists the
// whole mailbox (its first classification, after a restart).
func TestMetaStoreExpunge(t *testing.T) {
	d := testenv.StartDovecot(t, testenv.DovecotOptions{NoTLS: true})
	id := newMetaIdentity(t, "alice")
	seedMetaMailbox(t, d, id, 4, 500)
	dir := t.TempDir()
	ms := openMetaStore(t, dir)
	defer ms.Close()
	addr, _ := startProxy(t, d, id.decrypterWith(t, ms, -1, &countMetrics{}))
	c := dial(t, addr, "alice", "alice-pw", nil)
	if _, err := c.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	syncDump(t, c, true)
	ms.Flush()
	if st, _ := ms.Stats(context.Background(), "alice"); st.Entries != 2*4 {
		t.Fatalf("%d entries, want 2×4 (metadata and text)", st.Entries)
	}
	// Expunge UID 2 directly upstream.
	dc := dial(t, d.Addr(), "alice", "alice-pw", nil)
	if _, err := dc.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	if err := dc.Store(imap.UIDSetNum(2), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Flags: []imap.Flag{imap.FlagDeleted}, Silent: true}, nil).Close(); err != nil {
		t.Fatal(err)
	}
	if err := dc.Expunge().Close(); err != nil {
		t.Fatal(err)
	}
	// A restarted proxy classifies the mailbox from UID 1 and prunes what is gone.
	m2 := &countMetrics{}
	addr, _ = startProxy(t, d, id.decrypterWith(t, ms, -1, m2))
	c = dial(t, addr, "alice", "alice-pw", nil)
	if _, err := c.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	syncDump(t, c, true)
	ms.Flush()
	if st, _ := ms.Stats(context.Background(), "alice"); st.Entries != 2*3 {
		t.Fatalf("%d entries after the expunge, want 2×3 (metadata and text)", st.Entries)
	}
	if m2.decrypted.Load() != 0 {
		t.Fatalf("%d decrypted after the restart", m2.decrypted.Load())
	}
}

// encryptedMessage is message i of seedMetaMailbox's kind (CRLF), encrypted to id.
func encryptedMessage(t testing.TB, id *metaIdentity, i int) []byte {
	t.Helper()
	msg := fmt.Sprintf("From: Treasurer <treasurer@hidden.example>\r\nTo: alice@example.org\r\nSubject: Zanzibar quokka-invoice %d\r\n"+
		"Date: Mon, 02 Mar 2026 10:%02d:00 +0000\r\nMessage-ID: <meta-%d@example.org>\r\nMIME-Version: 1.0\r\n"+
		"Content-Type: text/plain; charset=us-ascii\r\n\r\nMarmalade Quetzal %d\r\n", i, i%60, i, i)
	enc, err := decrypt.EncryptToSelf([]byte(msg), []*x509.Certificate{id.cert})
	if err != nil {
		t.Fatal(err)
	}
	return enc
}

// expungeDirect expunges uids of user's mailbox straight at Dovecot (a phone that does not use the proxy).
func expungeDirect(t testing.TB, d *testenv.Dovecot, mailbox string, uids ...imap.UID) {
	t.Helper()
	dc := dial(t, d.Addr(), "alice", "alice-pw", nil)
	defer func() { dc.Logout().Wait() }()
	if _, err := dc.Select(mailbox, nil).Wait(); err != nil {
		t.Fatal(err)
	}
	if err := dc.Store(imap.UIDSetNum(uids...), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Flags: []imap.Flag{imap.FlagDeleted}, Silent: true}, nil).Close(); err != nil {
		t.Fatal(err)
	}
	if err := dc.Expunge().Close(); err != nil {
		t.Fatal(err)
	}
}

// TestMetaStoreIndexChangesWhileDown: the relay's classification of a mailbox is kept in the store, and a
// restarted proxy uses it only for what it still describes. While the proxy is down another client (talking
// to Dovecot directly) expunges an encrypted and a plain message, appends an encrypted one, a plain one and a
// plain one with a forged status field, and replaces a folder (new UIDVALIDITY, the same UIDs now naming
// other messages). After the restart every sync equals that of a proxy that never stored anything, only the
// new encrypted messages are decrypted, and the stored classification drops the expunged message.
func TestMetaStoreIndexChangesWhileDown(t *testing.T) {
	d := testenv.StartDovecot(t, testenv.DovecotOptions{NoTLS: true})
	id := newMetaIdentity(t, "alice")
	seedMetaMailbox(t, d, id, 6, 800) // UIDs 1-6 encrypted, 7-8 plain
	d.Append("alice", "Work", encryptedMessage(t, id, 100), nil, time.Time{})
	d.Append("alice", "Work", bytes.ReplaceAll(plainMessage(101, 300), []byte("\n"), []byte("\r\n")), nil, time.Time{})
	dir := t.TempDir()
	ctx := context.Background()

	syncBoth := func(addr string) (inbox, work string) {
		c := dial(t, addr, "alice", "alice-pw", nil)
		defer func() { c.Logout().Wait() }()
		for _, mb := range []string{"INBOX", "Work"} {
			if _, err := c.Select(mb, nil).Wait(); err != nil {
				t.Fatal(err)
			}
			got, _ := syncDump(t, c, true)
			if mb == "INBOX" {
				inbox = got
			} else {
				work = got
			}
		}
		return inbox, work
	}

	// First run: classifies and decrypts everything, and stores both.
	ms := openMetaStore(t, dir)
	m1 := &countMetrics{}
	addr, srv := startProxy(t, d, id.decrypterWith(t, ms, -1, m1))
	syncBoth(addr)
	if m1.decrypted.Load() != 7 {
		t.Fatalf("first run decrypted %d messages, want 7", m1.decrypted.Load())
	}
	srv.Close()
	ms.Flush()
	ms.Close()

	// Meanwhile, at Dovecot directly.
	expungeDirect(t, d, "INBOX", 2, 7)
	newEnc := d.Append("alice", "INBOX", encryptedMessage(t, id, 9), nil, time.Time{})
	d.Append("alice", "INBOX", bytes.ReplaceAll(plainMessage(10, 300), []byte("\n"), []byte("\r\n")), nil, time.Time{})
	forged := d.Append("alice", "INBOX", []byte("From: mallory@example.org\r\nTo: alice@example.org\r\nSubject: forged\r\n"+
		"X-Smimeproxy-Status: decrypted; key=sha256:00\r\nContent-Type: text/plain\r\n\r\nhello\r\n"), nil, time.Time{})
	dc := dial(t, d.Addr(), "alice", "alice-pw", nil)
	if err := dc.Delete("Work").Wait(); err != nil {
		t.Fatal(err)
	}
	dc.Logout().Wait()
	d.Append("alice", "Work", bytes.ReplaceAll(plainMessage(102, 300), []byte("\n"), []byte("\r\n")), nil, time.Time{})
	d.Append("alice", "Work", encryptedMessage(t, id, 103), nil, time.Time{})

	// What a proxy that never stored anything serves now.
	addr, srv = startProxy(t, d, id.decrypterWith(t, nil, -1, &countMetrics{}))
	wantInbox, wantWork := syncBoth(addr)
	srv.Close()
	if !strings.Contains(wantWork, "Zanzibar quokka-invoice 103") || strings.Contains(wantInbox, "X-Smimeproxy-Status: decrypted; key=sha256:00") {
		t.Fatalf("the reference proxy does not serve the new mail rewritten:\n%s\n%s", wantInbox, wantWork)
	}

	// The restarted proxy with the store.
	ms = openMetaStore(t, dir)
	defer ms.Close()
	m2 := &countMetrics{}
	dec := id.decrypterWith(t, ms, -1, m2)
	addr, _ = startProxy(t, d, dec)
	gotInbox, gotWork := syncBoth(addr)
	if gotInbox != wantInbox {
		t.Errorf("INBOX after the restart:\n%s\nwant\n%s", gotInbox, wantInbox)
	}
	if gotWork != wantWork {
		t.Errorf("Work after the restart:\n%s\nwant\n%s", gotWork, wantWork)
	}
	if m2.decrypted.Load() != 2 {
		t.Errorf("after the restart %d messages were decrypted, want 2 (the new encrypted ones)", m2.decrypted.Load())
	}
	ms.Flush()
	st, ok := dec.LoadIndex(proxy.MessageRef{User: "alice", Mailbox: "INBOX", UIDValidity: uidValidityOf(t, d, "INBOX")})
	want := []uint32{1, 3, 4, 5, 6, uint32(newEnc), uint32(forged)}
	if !ok || st.Checked != uint32(forged) || !slices.Equal(st.Candidates, want) {
		t.Errorf("stored classification = %+v, %v; want checked %d, candidates %v", st, ok, forged, want)
	}
	// INBOX 1, 3-6, 9 and the forged one (served rewritten too); Work's new encrypted one, not the old; each
	// with its metadata and its searchable text.
	if st, _ := ms.Stats(ctx, "alice"); st.Entries != 2*8 {
		t.Errorf("store holds %d entries, want 2×8", st.Entries)
	}
	if _, ok := ms.Get(ctx, "alice", "INBOX", uidValidityOf(t, d, "INBOX"), uint32(forged)); !ok {
		t.Errorf("the forged message's served copy is not stored")
	}
}

// uidValidityOf returns the UIDVALIDITY of user alice's mailbox at Dovecot.
func uidValidityOf(t testing.TB, d *testenv.Dovecot, mailbox string) uint32 {
	t.Helper()
	c := dial(t, d.Addr(), "alice", "alice-pw", nil)
	defer func() { c.Logout().Wait() }()
	data, err := c.Select(mailbox, &imap.SelectOptions{ReadOnly: true}).Wait()
	if err != nil {
		t.Fatal(err)
	}
	return data.UIDValidity
}

// TestMetaStoreSearchAfterRestart: after a restart SEARCH BODY, TEXT and LARGER over encrypted messages are
// answered from the metadata store (their text and sizes) with no decryption, as a proxy that decrypts
// answers them.
func TestMetaStoreSearchAfterRestart(t *testing.T) {
	d := testenv.StartDovecot(t, testenv.DovecotOptions{NoTLS: true})
	id := newMetaIdentity(t, "alice")
	seedMetaMailbox(t, d, id, 5, 2000) // UID i+1 says "Marmalade Quetzal i" in its body
	dir := t.TempDir()
	searches := []*imap.SearchCriteria{
		{Body: []string{"quetzal 3"}},
		{Text: []string{"QUOKKA-invoice 1"}},
		{Body: []string{"marmalade"}, Larger: 2100},
		{Not: []imap.SearchCriteria{{Body: []string{"Quetzal 2"}}}},
		{Body: []string{"no such word"}},
	}
	searchAll := func(addr string) []string {
		c := dial(t, addr, "alice", "alice-pw", nil)
		defer func() { c.Logout().Wait() }()
		if _, err := c.Select("INBOX", nil).Wait(); err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, crit := range searches {
			data, err := c.UIDSearch(crit, nil).Wait()
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, data.All.String())
		}
		return out
	}
	// The answers of a proxy that decrypts, with no store.
	addr, srv := startProxy(t, d, id.decrypterWith(t, nil, -1, &countMetrics{}))
	want := searchAll(addr)
	srv.Close()
	if want[0] != "4" || want[1] != "2" {
		t.Fatalf("the reference proxy finds %v", want)
	}

	// A first run fills the store (the header sync decrypts everything).
	ms := openMetaStore(t, dir)
	addr, srv = startProxy(t, d, id.decrypterWith(t, ms, -1, &countMetrics{}))
	c := dial(t, addr, "alice", "alice-pw", nil)
	if _, err := c.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	syncDump(t, c, false)
	c.Logout().Wait()
	srv.Close()
	ms.Flush()
	ms.Close()

	ms = openMetaStore(t, dir)
	defer ms.Close()
	m := &countMetrics{}
	addr, _ = startProxy(t, d, id.decrypterWith(t, ms, -1, m))
	got := searchAll(addr)
	if !slices.Equal(got, want) {
		t.Errorf("searches after the restart = %v, want %v", got, want)
	}
	if n := m.decrypted.Load() + m.misses.Load(); n != 0 {
		t.Errorf("searches after the restart decrypted %d messages (%d cache lookups); want none", m.decrypted.Load(), m.misses.Load())
	}
	ms.Flush()
	grepNoPlaintext(t, dir)
}

// TestMetaStoreIndexIsUsed: a restarted proxy takes the stored classification as it is for the UIDs it covers
// (no search upstream for them) when it was made under the same rules, and classifies afresh otherwise. A
// stored state that calls an encrypted message plain shows which happened.
func TestMetaStoreIndexIsUsed(t *testing.T) {
	d := testenv.StartDovecot(t, testenv.DovecotOptions{NoTLS: true})
	id := newMetaIdentity(t, "alice")
	seedMetaMailbox(t, d, id, 3, 500) // UIDs 1-3 encrypted
	dir := t.TempDir()
	ms := openMetaStore(t, dir)
	defer ms.Close()
	ref := proxy.MessageRef{User: "alice", Mailbox: "INBOX", UIDValidity: uidValidityOf(t, d, "INBOX")}
	contentType := func(dec *decrypt.Decrypter) string {
		addr, srv := startProxy(t, d, dec)
		defer srv.Close()
		c := dial(t, addr, "alice", "alice-pw", nil)
		defer func() { c.Logout().Wait() }()
		if _, err := c.Select("INBOX", nil).Wait(); err != nil {
			t.Fatal(err)
		}
		sec := &imap.FetchItemBodySection{Specifier: imap.PartSpecifierHeader, HeaderFields: []string{"Content-Type"}, Peek: true}
		msgs, err := c.Fetch(imap.UIDSetNum(3), &imap.FetchOptions{UID: true, BodySection: []*imap.FetchItemBodySection{sec}}).Collect()
		if err != nil || len(msgs) != 1 {
			t.Fatalf("FETCH UID 3: %v, %d messages", err, len(msgs))
		}
		return string(msgs[0].FindBodySection(sec))
	}
	dec := id.decrypterWith(t, ms, -1, &countMetrics{})
	if got := contentType(dec); !strings.Contains(got, "text/plain") {
		t.Fatalf("first run serves UID 3 with %q", got)
	}
	ms.Flush()
	st, ok := dec.LoadIndex(ref)
	if !ok || st.Checked != 5 || !slices.Equal(st.Candidates, []uint32{1, 2, 3}) {
		t.Fatalf("stored classification = %+v, %v", st, ok)
	}

	// The same rules: UID 3 is taken as plain, as the state says, and served as stored (ciphertext).
	dec.SaveIndex(ref, proxy.IndexState{Classifier: st.Classifier, Checked: 5, Candidates: []uint32{1, 2}})
	ms.Flush()
	if got := contentType(id.decrypterWith(t, ms, -1, &countMetrics{})); !strings.Contains(got, "pkcs7-mime") {
		t.Errorf("a restart with the stored classification serves UID 3 with %q, want it as stored", got)
	}
	// Other rules: the state is not used, UID 3 is classified again and served decrypted.
	dec.SaveIndex(ref, proxy.IndexState{Classifier: st.Classifier + "-old", Checked: 5, Candidates: []uint32{1, 2}})
	ms.Flush()
	if got := contentType(id.decrypterWith(t, ms, -1, &countMetrics{})); !strings.Contains(got, "text/plain") {
		t.Errorf("a restart with a classification made under other rules serves UID 3 with %q", got)
	}
}
