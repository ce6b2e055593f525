package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/smimeproxy/smimeproxy/crypto/smime"
	"github.com/smimeproxy/smimeproxy/decrypt"
	"github.com/smimeproxy/smimeproxy/internal/testenv"
)

var appendUID = regexp.MustCompile(`APPENDUID (\d+) (\d+)`)

// appendedUID returns the UID of an APPEND's APPENDUID (RFC 4315 section 3), failing the test without one.
func appendedUID(t *testing.T, r pyResult) imap.UID {
	t.Helper()
	m := appendUID.FindStringSubmatch(r.text())
	if r.Typ != "OK" || m == nil {
		t.Fatalf("APPEND = %s %q %s, want OK [APPENDUID ...]", r.Typ, r.text(), r.Error)
	}
	n, _ := strconv.Atoi(m[2])
	return imap.UID(n)
}

// testE2EAppend: a decrypted copy appended while its mailbox is selected becomes a copy of the ciphertext;
// appended from elsewhere it is encrypted to the user's own certificates; a user without certificates is
// refused (NO); by default a plain APPEND is encrypted and reads back byte for byte as appended; with
// --encrypt-appends=false it is stored as sent.
func testE2EAppend(t *testing.T, w *e2eWorld, p *serveProc, msgs []e2eMsg, uids []imap.UID, served map[imap.UID][]byte, byName map[string]int) {
	tbUID := uids[byName["tb/alice.env.eml"]]
	fxName := "fixture/rsa-oaep-sha256-aes256-cbc"
	fxUID := uids[byName[fxName]]
	fxMarker := msgs[byName[fxName]].marker
	plain := []byte(e2eOuter + "Content-Type: text/plain\r\n\r\nDraft about a platypus-9.\r\n")

	res := runPy(t, p.addr, "bob", "bob-pw", []pyOp{
		opSelect("INBOX", false),
		opAppend("Drafts", served[tbUID]), // its mailbox is selected: a COPY upstream
		opSelect("Drafts", false),
		opAppend("Drafts", served[fxUID]), // INBOX not selected: encrypted to Bob's own certificates
	})
	if len(res) != 4 {
		t.Fatalf("imaplib: %+v", res[len(res)-1])
	}
	copyUID, encUID := appendedUID(t, res[1]), appendedUID(t, res[3])
	if got := w.d.Raw("bob", "Drafts", copyUID); !bytes.Equal(got, w.d.Raw("bob", "INBOX", tbUID)) {
		t.Errorf("APPEND of a served copy with its mailbox selected: upstream holds %.200q, want the original ciphertext", got)
	}
	enc := w.d.Raw("bob", "Drafts", encUID)
	if !bytes.Contains(enc, []byte("application/pkcs7-mime")) || bytes.Contains(enc, []byte(fxMarker)) || bytes.Contains(enc, []byte(decrypt.StatusField)) {
		t.Errorf("APPEND of a served copy from another mailbox: upstream holds %.300q, want it encrypted", enc)
	}
	// Both read back through the proxy: the copy decrypted, the re-encrypted one as it was appended (minus the
	// status field, which is never stored: decrypt/verbatim.go).
	res = runPy(t, p.addr, "bob", "bob-pw", []pyOp{opSelect("Drafts", true),
		opFetch(strconv.Itoa(int(copyUID)), "(BODY.PEEK[])"), opFetch(strconv.Itoa(int(encUID)), "(BODY.PEEK[])")})
	if b := res[1].literal(t); status(b) != "decrypted" || !bytes.Contains(b, []byte("This is a test message from Alice to Bob.")) {
		t.Errorf("the copied message through the proxy: %q", statusFields(b))
	}
	if b := res[2].literal(t); status(b) != "" || !bytes.Equal(b, smime.StripStatusHeaders(served[fxUID])) {
		t.Errorf("the re-encrypted message through the proxy: %q, %.300q", statusFields(b), b)
	}

	// Dave has no certificate: Bob's decrypted copy cannot be stored for him.
	res = runPy(t, p.addr, "dave", "dave-pw", []pyOp{opAppend("INBOX", served[fxUID])})
	if res[0].Typ != "NO" {
		t.Errorf("dave's APPEND of a decrypted copy = %s %q %s, want NO", res[0].Typ, res[0].text(), res[0].Error)
	}
	if hits := scanMaildirs(t, w.d, "dave", []string{fxMarker, "X-Smimeproxy"}); len(hits) > 0 {
		t.Errorf("dave's refused APPEND reached the upstream: %v", hits)
	}

	// By default a plain APPEND is stored encrypted; with --encrypt-appends=false, as sent.
	res = runPy(t, p.addr, "bob", "bob-pw", []pyOp{opAppend("Sent", plain), opSelect("Sent", true)})
	u := appendedUID(t, res[0])
	if up := w.d.Raw("bob", "Sent", u); bytes.Contains(up, []byte("platypus-9")) || !bytes.Contains(up, []byte("application/pkcs7-mime")) {
		t.Errorf("default serve: upstream holds %.300q, want it encrypted", up)
	}
	res = runPy(t, p.addr, "bob", "bob-pw", []pyOp{opSelect("Sent", true), opFetch(strconv.Itoa(int(u)), "(BODY.PEEK[])")})
	if b := res[1].literal(t); !bytes.Equal(b, plain) {
		t.Errorf("default serve: read back %q %.300q", statusFields(b), b)
	}
	q := w.serve("imaps://"+w.d.TLSAddr(), "--encrypt-appends=false")
	res = runPy(t, q.addr, "bob", "bob-pw", []pyOp{opAppend("Sent", bytes.ReplaceAll(plain, []byte("platypus-9"), []byte("echidna-8")))})
	if u := appendedUID(t, res[0]); !bytes.Contains(w.d.Raw("bob", "Sent", u), []byte("echidna-8")) {
		t.Errorf("plain APPEND with --encrypt-appends=false was not stored as sent")
	}
	// Another proxy process (a restart) shares the marker key kept in Vault: a copy the first one served is
	// still recognised and becomes a copy of the original ciphertext, not a re-encryption.
	res = runPy(t, q.addr, "bob", "bob-pw", []pyOp{opSelect("INBOX", false), opAppend("Drafts", served[tbUID])})
	if len(res) != 2 {
		t.Fatalf("imaplib: %+v", res[len(res)-1])
	}
	if got := w.d.Raw("bob", "Drafts", appendedUID(t, res[1])); !bytes.Equal(got, w.d.Raw("bob", "INBOX", tbUID)) {
		t.Errorf("APPEND through a restarted proxy of a copy served before: upstream holds %.200q, want the original ciphertext", got)
	}
	q.stop()
	w.checkSecrets("serve --encrypt-appends=false log", q.stderr.String())
}

// testE2EMbsync: mbsync pulls Bob's INBOX through the proxy into a local Maildir and gets what the proxy
// serves: plaintext for the encrypted mail.
func testE2EMbsync(t *testing.T, p *serveProc, msgs []e2eMsg, uids []imap.UID, served map[imap.UID][]byte) {
	bin := testenv.LookPath(t, "mbsync")
	host, port, _ := strings.Cut(p.addr, ":")
	dir := t.TempDir()
	conf := fmt.Sprintf("IMAPAccount proxy\nHost %s\nPort %s\nUser bob\nPass bob-pw\nSSLType None\nAuthMechs LOGIN\n\n"+
		"IMAPStore far\nAccount proxy\n\nMaildirStore near\nPath %[3]s/mail/\nInbox %[3]s/mail/INBOX\n\n"+
		"Channel pull\nFar :far:\nNear :near:\nPatterns INBOX\nSync Pull\nCreate Near\nSyncState *\n", host, port, dir)
	cfg := filepath.Join(dir, "mbsyncrc")
	if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(filepath.Join(dir, "mail"), 0o700)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "-c", cfg, "-a").CombinedOutput()
	if err != nil {
		t.Fatalf("mbsync: %v\n%s", err, out)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "mail", "INBOX", "*", "*"))
	if len(files) != len(msgs) {
		t.Fatalf("mbsync stored %d files, want %d", len(files), len(msgs))
	}
	want := map[string]int{}
	for i := range msgs {
		want[string(served[uids[i]])] = i
	}
	decrypted := 0
	for _, f := range files {
		b, _ := os.ReadFile(f)
		if i := bytes.Index(b, []byte("X-TUID: ")); i >= 0 { // mbsync's own header line
			j := bytes.IndexByte(b[i:], '\n')
			b = append(b[:i:i], b[i+j+1:]...)
		}
		b = crlfBytes(b)
		i, ok := want[string(b)]
		if !ok {
			t.Errorf("%s (%d bytes) matches nothing the proxy serves: %q", filepath.Base(f), len(b), statusFields(b))
			continue
		}
		if msgs[i].want == "decrypted" {
			decrypted++
			if msgs[i].marker != "" && !bytes.Contains(b, []byte(msgs[i].marker)) {
				t.Errorf("%s: plaintext missing in mbsync's copy", msgs[i].name)
			}
		}
	}
	if decrypted == 0 {
		t.Error("mbsync got no decrypted message")
	}
}

// testE2EConcurrent: 50 sessions at once (Bob and Alice) fetch the whole encrypted mailbox; every session gets
// what a single session got (byte for byte from the same process, else the same outcome per message: another
// process has another marker key).
func testE2EConcurrent(t *testing.T, p *serveProc, msgs []e2eMsg, uids []imap.UID, served map[imap.UID][]byte, otherProcess bool) {
	const sessions = 50
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	idx := map[imap.UID]int{}
	for i, u := range uids {
		idx[u] = i
	}
	var wg sync.WaitGroup
	errs := make(chan error, sessions)
	for i := range sessions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			user := "bob"
			if i%5 == 4 {
				user = "alice"
			}
			errs <- fetchAllGo(ctx, p.addr, user, func(uid imap.UID, body []byte) error {
				if user == "alice" {
					if status(body) == "decrypted" {
						return fmt.Errorf("alice UID %d decrypted", uid)
					}
					return nil
				}
				if !otherProcess {
					if !bytes.Equal(body, served[uid]) {
						return fmt.Errorf("bob UID %d: %d bytes differ from the single-session fetch", uid, len(body))
					}
					return nil
				}
				i, ok := idx[uid]
				if !ok {
					return nil // appended by another subtest
				}
				if want := status(served[uid]); status(body) != want || msgs[i].marker != "" && msgs[i].want == "decrypted" && !bytes.Contains(body, []byte(msgs[i].marker)) {
					return fmt.Errorf("bob UID %d (%s): status %q, want %q", uid, msgs[i].name, statusFields(body), want)
				}
				return nil
			}, len(msgs))
		}()
	}
	wg.Wait()
	close(errs)
	n := 0
	for err := range errs {
		if err != nil {
			n++
			if n <= 5 {
				t.Error(err)
			}
		}
	}
	if n > 0 {
		t.Errorf("%d of %d concurrent sessions failed", n, sessions)
	}
}

// fetchAllGo logs user in at addr with go-imap's client, fetches UID RFC822.SIZE BODY.PEEK[] of INBOX 1:* and
// calls check for each message; it also checks that want messages came and that SIZE matches.
func fetchAllGo(ctx context.Context, addr, user string, check func(imap.UID, []byte) error, want int) error {
	c, err := imapclient.DialInsecure(addr, nil)
	if err != nil {
		return err
	}
	defer c.Close()
	go func() { <-ctx.Done(); c.Close() }()
	if err := c.Login(user, e2eUsers[user]).Wait(); err != nil {
		return fmt.Errorf("%s login: %w", user, err)
	}
	if _, err := c.Select("INBOX", &imap.SelectOptions{ReadOnly: true}).Wait(); err != nil {
		return fmt.Errorf("%s select: %w", user, err)
	}
	sec := &imap.FetchItemBodySection{Peek: true}
	got, err := c.Fetch(imap.SeqSet{imap.SeqRange{Start: 1, Stop: 0}}, &imap.FetchOptions{UID: true, RFC822Size: true,
		BodySection: []*imap.FetchItemBodySection{sec}}).Collect()
	if err != nil {
		return fmt.Errorf("%s fetch: %w", user, err)
	}
	if len(got) < want {
		return fmt.Errorf("%s: %d messages, want %d", user, len(got), want)
	}
	for _, m := range got {
		b := m.FindBodySection(sec)
		if int64(len(b)) != m.RFC822Size {
			return fmt.Errorf("%s UID %d: RFC822.SIZE %d != %d", user, m.UID, m.RFC822Size, len(b))
		}
		if err := check(m.UID, b); err != nil {
			return err
		}
	}
	return c.Logout().Wait()
}

// testE2EVaultDown: with Vault cut mid-session, sessions stay up; Bob, whose keys are cached, still decrypts a
// message new to the proxy; Carol, whose keys were never read, gets undecryptable (key-unavailable); when
// Vault returns Carol's message decrypts.
func testE2EVaultDown(t *testing.T, w *e2eWorld, p *serveProc, carolMsg []byte) {
	newMsg := p7mMessage(e2eOuter, readFile(t, cmsFixtures+"rsa-oaep-sha1-aes128-cbc.der"), "enveloped-data")
	newUID := w.d.Append("bob", "INBOX", newMsg, nil, time.Time{})
	bob := goSession(t, p.addr, "bob")
	carol := goSession(t, p.addr, "carol")
	sec := &imap.FetchItemBodySection{Peek: true}
	fetch := func(c *imapclient.Client, uid imap.UID) []byte {
		t.Helper()
		m, err := c.Fetch(imap.UIDSetNum(uid), &imap.FetchOptions{UID: true, RFC822Size: true, BodySection: []*imap.FetchItemBodySection{sec}}).Collect()
		if err != nil || len(m) != 1 {
			t.Fatalf("FETCH UID %d: %v (%d messages)", uid, err, len(m))
		}
		if b := m[0].FindBodySection(sec); int64(len(b)) == m[0].RFC822Size {
			return b
		}
		t.Fatalf("UID %d: RFC822.SIZE %d != len(BODY[])", uid, m[0].RFC822Size)
		return nil
	}
	w.v.Stop()
	restarted := false
	defer func() {
		if !restarted {
			w.v.Restart()
		}
	}()
	if b := fetch(bob, newUID); status(b) != "decrypted" {
		t.Errorf("Vault down, Bob (keys cached), a message new to the proxy: %q, want decrypted", statusFields(b))
	}
	if b := fetch(carol, 1); !strings.Contains(strings.Join(statusFields(b), ""), "undecryptable; reason=key-unavailable") {
		t.Errorf("Vault down, Carol (keys never read): %q, want undecryptable; reason=key-unavailable", statusFields(b))
	}
	// A new session can still log in and read what needs no Vault.
	res := runPy(t, p.addr, "bob", "bob-pw", []pyOp{opSelect("INBOX", true), opFetch("1", "(BODY.PEEK[])")})
	if len(res) != 2 || res[1].Typ != "OK" {
		t.Errorf("new session with Vault down: %+v", res)
	}
	for _, c := range []*imapclient.Client{bob, carol} {
		if err := c.Noop().Wait(); err != nil {
			t.Errorf("session broke while Vault was down: %v", err)
		}
	}
	w.v.Restart()
	restarted = true
	if b := fetch(carol, 1); status(b) != "decrypted" || !bytes.Contains(b, []byte("Hello Bob, this is a CMS test message.")) {
		t.Errorf("Vault back, Carol: %q, want decrypted", statusFields(b))
	}
	body := httpGet(t, "http://"+p.metrics+"/metrics")
	if v := metricValue(t, body, "smimeproxy_vault_errors_total"); v < 1 {
		t.Errorf("smimeproxy_vault_errors_total = %v after a Vault outage, want > 0", v)
	}
}

// goSession is a go-imap client session logged in as user with INBOX examined, closed at cleanup.
func goSession(t *testing.T, addr, user string) *imapclient.Client {
	t.Helper()
	c, err := imapclient.DialInsecure(addr, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.Login(user, e2eUsers[user]).Wait(); err != nil {
		t.Fatalf("login %s: %v", user, err)
	}
	if _, err := c.Select("INBOX", &imap.SelectOptions{ReadOnly: true}).Wait(); err != nil {
		t.Fatalf("%s: select: %v", user, err)
	}
	return c
}
