package decrypt

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-imap/v2/imapserver"
	"github.com/emersion/go-imap/v2/imapserver/imapmemserver"

	"github.com/smimeproxy/smimeproxy/backend"
	"github.com/smimeproxy/smimeproxy/internal/mimepart"
	"github.com/smimeproxy/smimeproxy/internal/testenv"
	"github.com/smimeproxy/smimeproxy/keystore"
	"github.com/smimeproxy/smimeproxy/proxy"
	"github.com/smimeproxy/smimeproxy/vaultcfg"
)

// imaplibFetch is a Python imaplib client: it logs in, examines INBOX and prints, per message in UID order,
// "UID <n> SIZE <n>" and then the BODY.PEEK[] bytes and a separator.
const imaplibFetch = `
import imaplib, sys
m = imaplib.IMAP4(sys.argv[1], int(sys.argv[2]))
m.login(sys.argv[3], sys.argv[4])
typ, _ = m.select('INBOX', readonly=True)
assert typ == 'OK', typ
typ, data = m.uid('FETCH', '1:*', '(RFC822.SIZE BODY.PEEK[])')
assert typ == 'OK', (typ, data)
msgs = {}
for item in data:
    if isinstance(item, tuple):
        meta, body = item
        uid = int(meta.split(b'UID ')[1].split()[0].rstrip(b')'))
        size = int(meta.split(b'RFC822.SIZE ')[1].split()[0].rstrip(b')'))
        msgs[uid] = (size, body)
for uid in sorted(msgs):
    size, body = msgs[uid]
    sys.stdout.buffer.write(b'UID %d SIZE %d\n' % (uid, size) + body + b'\n=====\n')
m.logout()
`

type fetched struct {
	uid  int
	size int
	body []byte
}

func imaplibFetchAll(t *testing.T, addr, user, password string) map[int]fetched {
	t.Helper()
	host, port, _ := net.SplitHostPort(addr)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, testenv.LookPath(t, "python3"), "-c", imaplibFetch, host, port, user, password).CombinedOutput()
	if err != nil {
		t.Fatalf("python imaplib as %s: %v\n%s", user, err, out)
	}
	res := map[int]fetched{}
	for _, chunk := range bytes.Split(out, []byte("\n=====\n")) {
		line, body, ok := bytes.Cut(chunk, []byte("\n"))
		if !ok {
			continue
		}
		var f fetched
		f.body = body
		if _, err := fmtSscan(string(line), &f.uid, &f.size); err != nil {
			t.Fatalf("bad imaplib line %q", line)
		}
		res[f.uid] = f
	}
	return res
}

func fmtSscan(line string, uid, size *int) (int, error) {
	f := strings.Fields(line)
	if len(f) != 4 || f[0] != "UID" || f[2] != "SIZE" {
		return 0, errors.New("bad line")
	}
	var err1, err2 error
	*uid, err1 = atoi(f[1])
	*size, err2 = atoi(f[3])
	return 2, errors.Join(err1, err2)
}

func atoi(s string) (int, error) {
	n := 0
	for _, c := range s {
		if c < '0' || c > '9' {
			return 0, errors.New("not a number")
		}
		n = n*10 + int(c-'0')
	}
	return n, nil
}

// e2eFiles is the INBOX of the end-to-end tests (UID n is e2eFiles[n-1]): Thunderbird's mail to Bob, encrypted
// (alone, in and around signatures) and one only signed.
var e2eFiles = []string{"alice.env.eml", "alice.sig.SHA256.opaque.env.eml", "alice.dsig.SHA256.multipart.env.eml",
	"alice.env.dsig.SHA256.multipart.eml", "alice.dsig.SHA256.multipart.eml"}

// e2eCorpus reads e2eFiles.
func e2eCorpus(t *testing.T) [][]byte {
	t.Helper()
	var msgs [][]byte
	for _, f := range e2eFiles {
		b, err := os.ReadFile(filepath.Join(thunderbirdDir, f))
		if err != nil {
			t.Fatal(err)
		}
		msgs = append(msgs, b)
	}
	return msgs
}

// TestEndToEndVault: Python imaplib → proxy with this Decrypter → a go-imap server (imapmemserver; Dovecot
// under testenv cannot yet serve mailboxes when run as root), keys in a real Vault dev server. Bob reads the Thunderbird corpus decrypted; Alice's session sees the same mail undecrypted;
// with Vault cut, messages not yet decrypted come back undecryptable (key-unavailable) and the session stays
// up; once Vault returns they decrypt; Dovecot's bytes never change.
func TestEndToEndVault(t *testing.T) {
	v := testenv.StartVault(t)
	ctx := context.Background()
	store, err := vaultcfg.Open(ctx, vaultcfg.Config{Addr: v.Addr(), Token: v.RootToken(), CacheTTL: -1, Timeout: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(store.Close)
	putP12(t, store, "bob", "Bob.p12")
	putP12(t, store, "alice", "Alice.p12")

	msgs := e2eCorpus(t)
	up := startMemUpstream(t, map[string]string{"bob": "bob-pw", "alice": "alice-pw"}, msgs)
	var orig [][]byte
	for i := range msgs {
		orig = append(orig, up.raw(t, "bob", imap.UID(i+1)))
	}

	d, err := New(Options{Store: store})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := proxy.New(proxyOptions(d, proxy.Options{Upstream: backend.Options{URL: "imap://" + up.addr}}))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	// Vault cut before anything was decrypted: nothing decrypts, nothing fails, nothing is cached.
	v.Stop()
	down := imaplibFetchAll(t, ln.Addr().String(), "bob", "bob-pw")
	for uid := 1; uid <= 4; uid++ {
		got := down[uid]
		if st := statusOf(got.body); st != "undecryptable" || !strings.Contains(strings.Join(mimepart.Values(got.body, StatusField), ""), "reason="+ReasonKeyUnavailable) {
			t.Errorf("Vault down, UID %d: status %q", uid, mimepart.Values(got.body, StatusField))
		}
	}
	v.Restart()

	want := map[int]string{1: "This is a test message from Alice to Bob."}
	for pass := 0; pass < 2; pass++ { // second pass: from the cache
		bob := imaplibFetchAll(t, ln.Addr().String(), "bob", "bob-pw")
		if len(bob) != len(e2eFiles) {
			t.Fatalf("bob got %d messages, want %d", len(bob), len(e2eFiles))
		}
		for uid := 1; uid <= len(e2eFiles); uid++ {
			got := bob[uid]
			if got.size != len(got.body) {
				t.Errorf("UID %d: RFC822.SIZE %d != len(BODY[]) %d", uid, got.size, len(got.body))
			}
			wantSt := "decrypted"
			if uid == 5 {
				wantSt = "" // signed only
			}
			if st := statusOf(got.body); st != wantSt {
				t.Errorf("pass %d, bob UID %d (%s): status %q, want %q", pass, uid, e2eFiles[uid-1], mimepart.Values(got.body, StatusField), wantSt)
			}
			if w := want[uid]; w != "" && !bytes.Contains(got.body, []byte(w)) {
				t.Errorf("bob UID %d: plaintext %q missing", uid, w)
			}
			if st := statusOf(got.body); st == "decrypted" {
				if ref, ok := d.Origin("bob", got.body); !ok || ref.UID != uint32(uid) || ref.Mailbox != "INBOX" {
					t.Errorf("bob UID %d: Origin = %+v, %v", uid, ref, ok)
				}
			}
		}
	}

	alice := imaplibFetchAll(t, ln.Addr().String(), "alice", "alice-pw")
	for uid := 1; uid <= 4; uid++ {
		got := alice[uid]
		if st := statusOf(got.body); st != "undecryptable" {
			t.Errorf("alice UID %d: status %q, want undecryptable", uid, st)
		}
		if bytes.Contains(got.body, []byte("This is a test message from Alice to Bob.")) {
			t.Errorf("alice UID %d: got bob's plaintext", uid)
		}
		if _, ok := d.Origin("bob", got.body); ok {
			t.Errorf("alice UID %d: alice's served copy passes as bob's", uid)
		}
	}

	for i := range orig {
		if now := up.raw(t, "bob", imap.UID(i+1)); !bytes.Equal(now, orig[i]) || !bytes.Equal(now, msgs[i]) {
			t.Errorf("the upstream copy of UID %d changed", i+1)
		}
	}
}

// TestEndToEndMemory is the fast-tier twin of TestEndToEndVault: go-imap client → proxy with this Decrypter →
// imapmemserver, keys in a keystore.Memory. Bob reads the Thunderbird corpus decrypted (RFC822.SIZE the length
// of what is served, twice: the second time from the cache), Alice's session gets none of Bob's plaintext, and
// the upstream's bytes never change.
func TestEndToEndMemory(t *testing.T) {
	store := keystore.NewMemory()
	putP12(t, store, "bob", "Bob.p12")
	putP12(t, store, "alice", "Alice.p12")
	msgs := e2eCorpus(t)
	up := startMemUpstream(t, map[string]string{"bob": "bob-pw", "alice": "alice-pw"}, msgs)
	d, err := New(Options{Store: store})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := proxy.New(proxy.Options{Upstream: backend.Options{URL: "imap://" + up.addr}, Rewriter: d})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	fetchAll := func(user, password string) map[imap.UID][]byte {
		t.Helper()
		c, err := imapclient.DialInsecure(ln.Addr().String(), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := c.Login(user, password).Wait(); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Select("INBOX", &imap.SelectOptions{ReadOnly: true}).Wait(); err != nil {
			t.Fatal(err)
		}
		sec := &imap.FetchItemBodySection{Peek: true}
		got, err := c.Fetch(imap.UIDSetNum(1, 2, 3, 4, 5), &imap.FetchOptions{UID: true, RFC822Size: true,
			BodySection: []*imap.FetchItemBodySection{sec}}).Collect()
		if err != nil {
			t.Fatalf("%s: FETCH: %v", user, err)
		}
		out := map[imap.UID][]byte{}
		for _, m := range got {
			b := m.FindBodySection(sec)
			if m.RFC822Size != int64(len(b)) {
				t.Errorf("%s UID %d: RFC822.SIZE %d != len(BODY[]) %d", user, m.UID, m.RFC822Size, len(b))
			}
			out[m.UID] = b
		}
		return out
	}
	const secret = "This is a test message from Alice to Bob."
	for pass := 0; pass < 2; pass++ {
		bob := fetchAll("bob", "bob-pw")
		if len(bob) != len(e2eFiles) {
			t.Fatalf("bob got %d messages, want %d", len(bob), len(e2eFiles))
		}
		for uid := imap.UID(1); uid <= imap.UID(len(e2eFiles)); uid++ {
			want := "decrypted"
			if uid == 5 {
				want = "" // signed only
			}
			if st := statusOf(bob[uid]); st != want {
				t.Errorf("pass %d, bob UID %d (%s): status %q, want %q", pass, uid, e2eFiles[uid-1], mimepart.Values(bob[uid], StatusField), want)
			}
		}
		if !bytes.Contains(bob[1], []byte(secret)) {
			t.Errorf("bob UID 1: plaintext missing")
		}
	}
	alice := fetchAll("alice", "alice-pw")
	for uid := imap.UID(1); uid <= 4; uid++ {
		if st := statusOf(alice[uid]); st != "undecryptable" || bytes.Contains(alice[uid], []byte(secret)) {
			t.Errorf("alice UID %d: status %q (or bob's plaintext)", uid, st)
		}
	}
	for i, m := range msgs {
		if now := up.raw(t, "bob", imap.UID(i+1)); !bytes.Equal(now, m) {
			t.Errorf("the upstream copy of UID %d changed", i+1)
		}
	}
}

// memUpstream is an in-memory go-imap server on loopback, each user's INBOX holding the same messages.
type memUpstream struct {
	addr      string
	passwords map[string]string
}

func startMemUpstream(t *testing.T, users map[string]string, msgs [][]byte) *memUpstream {
	t.Helper()
	mem := imapmemserver.New()
	for name, pw := range users {
		u := imapmemserver.NewUser(name, pw)
		if err := u.Create("INBOX", nil); err != nil {
			t.Fatal(err)
		}
		for _, m := range msgs {
			if _, err := u.Append("INBOX", literal(m), &imap.AppendOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		mem.AddUser(u)
	}
	srv := imapserver.New(&imapserver.Options{
		NewSession: func(*imapserver.Conn) (imapserver.Session, *imapserver.GreetingData, error) {
			return mem.NewSession(), nil, nil
		},
		Caps:         imap.CapSet{imap.CapIMAP4rev1: {}, imap.CapIMAP4rev2: {}},
		InsecureAuth: true,
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return &memUpstream{addr: ln.Addr().String(), passwords: users}
}

// raw returns BODY.PEEK[] of uid in user's INBOX, read directly from the upstream server.
func (u *memUpstream) raw(t *testing.T, user string, uid imap.UID) []byte {
	t.Helper()
	c, err := imapclient.DialInsecure(u.addr, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Login(user, u.passwords[user]).Wait(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Select("INBOX", &imap.SelectOptions{ReadOnly: true}).Wait(); err != nil {
		t.Fatal(err)
	}
	sec := &imap.FetchItemBodySection{Peek: true}
	msgs, err := c.Fetch(imap.UIDSetNum(uid), &imap.FetchOptions{UID: true, BodySection: []*imap.FetchItemBodySection{sec}}).Collect()
	if err != nil || len(msgs) != 1 {
		t.Fatalf("upstream fetch UID %d: %v (%d messages)", uid, err, len(msgs))
	}
	return msgs[0].FindBodySection(sec)
}

type byteLiteral struct {
	*bytes.Reader
	size int64
}

func (l byteLiteral) Size() int64 { return l.size }

func literal(b []byte) imap.LiteralReader { return byteLiteral{bytes.NewReader(b), int64(len(b))} }
