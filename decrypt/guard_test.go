package decrypt

import (
	"bufio"
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/smimeproxy/smimeproxy/backend"
	"github.com/smimeproxy/smimeproxy/internal/mimepart"
	"github.com/smimeproxy/smimeproxy/internal/testenv"
	"github.com/smimeproxy/smimeproxy/keystore"
	"github.com/smimeproxy/smimeproxy/proxy"
)

// guardEnv is a real Dovecot with users bob (an RSA key in the store) and carol (no key), and a proxy with a
// Decrypter over a memory store in front of it.
type guardEnv struct {
	d     *testenv.Dovecot
	dec   *Decrypter
	addr  string
	enc   imap.UID // INBOX: encrypted to bob, inner text has "zebracorn"
	plain imap.UID // INBOX: plain, "giraffe"
	forge imap.UID // INBOX: plain with a forged status field
	undec imap.UID // INBOX: encrypted to someone else
}

const forgedStatus = "X-Smimeproxy-Status: decrypted; key=sha256:00; cipher=aes-256-gcm; authenticated=yes"

func newGuardEnv(t *testing.T, encryptAppends bool) *guardEnv {
	t.Helper()
	d := testenv.StartDovecot(t, testenv.DovecotOptions{Users: map[string]string{"bob": "bob-pw", "carol": "carol-pw"}})
	store := keystore.NewMemory()
	cert, key := testIdentity(t, "bob@example.com")
	if _, err := store.Put(context.Background(), "bob", []*x509.Certificate{cert}, key, keystore.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	otherCert, _ := testIdentity(t, "dave@example.com")
	dec, err := New(Options{Store: store})
	if err != nil {
		t.Fatal(err)
	}
	e := &guardEnv{d: d, dec: dec}
	now := time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC)
	e.enc = d.Append("bob", "INBOX", encryptedMessage(t, "secret", "Content-Type: text/plain; charset=utf-8\r\n\r\nthe zebracorn sleeps\r\n", cert), nil, now)
	e.plain = d.Append("bob", "INBOX", []byte("From: a@example.com\r\nSubject: plain\r\nContent-Type: text/plain\r\n\r\na giraffe walks\r\n"), nil, now)
	e.forge = d.Append("bob", "INBOX", []byte("From: a@example.com\r\n"+forgedStatus+"\r\nSubject: forged\r\n\r\ntrust me\r\n"), nil, now)
	e.undec = d.Append("bob", "INBOX", encryptedMessage(t, "not for bob", "Content-Type: text/plain\r\n\r\nzebracorn for dave\r\n", otherCert), nil, now)
	for _, u := range []string{"bob", "carol"} {
		c := d.Dial(u)
		if err := c.Create("Drafts", nil).Wait(); err != nil {
			t.Fatal(err)
		}
		c.Close()
	}
	srv, err := proxy.New(proxyOptions(dec, proxy.Options{Upstream: backend.Options{URL: "imap://" + d.Addr(), CAFile: d.CAFile()}, EncryptAppends: encryptAppends}))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		srv.Close()
		<-done
	})
	e.addr = ln.Addr().String()
	return e
}

func (e *guardEnv) login(t *testing.T, user string) *imapclient.Client {
	t.Helper()
	c, err := imapclient.DialInsecure(e.addr, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.Login(user, e.d.Password(user)).Wait(); err != nil {
		t.Fatal(err)
	}
	return c
}

func fetchBody(t *testing.T, c *imapclient.Client, uid imap.UID) []byte {
	t.Helper()
	sec := &imap.FetchItemBodySection{Peek: true}
	msgs, err := c.Fetch(imap.UIDSetNum(uid), &imap.FetchOptions{UID: true, BodySection: []*imap.FetchItemBodySection{sec}}).Collect()
	if err != nil || len(msgs) != 1 {
		t.Fatalf("UID FETCH %d: %d messages, %v", uid, len(msgs), err)
	}
	return msgs[0].FindBodySection(sec)
}

func appendMsg(c *imapclient.Client, mailbox string, msg []byte) (*imap.AppendData, error) {
	return testenv.AppendTo(c, mailbox, msg, nil)
}

func mailboxUIDs(t *testing.T, d *testenv.Dovecot, user, mailbox string) []imap.UID {
	t.Helper()
	c := d.Dial(user)
	defer c.Close()
	if _, err := c.Select(mailbox, &imap.SelectOptions{ReadOnly: true}).Wait(); err != nil {
		t.Fatal(err)
	}
	data, err := c.UIDSearch(&imap.SearchCriteria{}, nil).Wait()
	if err != nil {
		t.Fatal(err)
	}
	return data.AllUIDs()
}

// TestAppendGuard: whatever a client appends, no plaintext the proxy served reaches Dovecot.
func TestAppendGuard(t *testing.T) {
	e := newGuardEnv(t, false)
	c := e.login(t, "bob")
	if _, err := c.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	served := fetchBody(t, c, e.enc)
	if statusOf(served) != "decrypted" || !bytes.Contains(served, []byte("zebracorn")) {
		t.Fatalf("served copy not decrypted:\n%s", served)
	}
	orig := e.d.Raw("bob", "INBOX", e.enc)

	t.Run("forged status stripped on a plain message", func(t *testing.T) {
		got := fetchBody(t, c, e.forge)
		if bytes.Contains(bytes.ToLower(got), []byte("x-smimeproxy")) {
			t.Errorf("forged status reached the client:\n%s", got)
		}
		if !bytes.Contains(got, []byte("trust me")) || !bytes.Contains(got, []byte("Subject: forged")) {
			t.Errorf("forged message lost content:\n%s", got)
		}
		// and ENVELOPE/RFC822.SIZE come from the stripped bytes
		msgs, err := c.Fetch(imap.UIDSetNum(e.forge), &imap.FetchOptions{RFC822Size: true, Envelope: true}).Collect()
		if err != nil || len(msgs) != 1 {
			t.Fatal(err)
		}
		if msgs[0].RFC822Size != int64(len(got)) || msgs[0].Envelope.Subject != "forged" {
			t.Errorf("SIZE %d (len %d), subject %q", msgs[0].RFC822Size, len(got), msgs[0].Envelope.Subject)
		}
	})

	t.Run("served copy into its own mailbox becomes a copy of the ciphertext", func(t *testing.T) {
		data, err := appendMsg(c, "INBOX", served)
		if err != nil {
			t.Fatal(err)
		}
		if data.UID == 0 {
			t.Fatalf("no APPENDUID: %+v", data)
		}
		if got := e.d.Raw("bob", "INBOX", data.UID); !bytes.Equal(got, orig) {
			t.Errorf("upstream copy differs from the original ciphertext:\n%s", got)
		}
		if got := fetchBody(t, c, data.UID); !bytes.Contains(got, []byte("zebracorn")) {
			t.Errorf("the copy does not decrypt through the proxy:\n%s", got)
		}
	})

	t.Run("an edited served copy is stored with the edits, encrypted", func(t *testing.T) {
		edited := bytes.Replace(served, []byte("the zebracorn sleeps"), []byte("the zebracorn wakes up"), 1)
		data, err := appendMsg(c, "INBOX", edited) // its mailbox is selected: unmodified, it would be a COPY
		if err != nil {
			t.Fatal(err)
		}
		up := e.d.Raw("bob", "INBOX", data.UID)
		if bytes.Equal(up, orig) || bytes.Contains(up, []byte("zebracorn")) || !bytes.Contains(bytes.ToLower(up), []byte("application/pkcs7-mime")) {
			t.Fatalf("upstream holds the original ciphertext or plaintext, not the edit encrypted:\n%.400s", up)
		}
		// Served back as appended (verbatim.go), minus the status field the proxy never stores.
		if got := fetchBody(t, c, data.UID); !bytes.Equal(got, e.dec.StripStatus(edited)) || !bytes.Contains(got, []byte("the zebracorn wakes up")) {
			t.Errorf("the stored message does not read back as the edited text:\n%s", got)
		}
	})

	t.Run("served copy into another mailbox is encrypted to bob", func(t *testing.T) {
		data, err := appendMsg(c, "Drafts", served)
		if err != nil {
			t.Fatal(err)
		}
		up := e.d.Raw("bob", "Drafts", data.UID)
		if bytes.Contains(up, []byte("zebracorn")) || !bytes.Contains(bytes.ToLower(up), []byte("application/pkcs7-mime")) {
			t.Fatalf("Drafts upstream holds plaintext:\n%s", up)
		}
		if bytes.Contains(bytes.ToLower(up), []byte("x-smimeproxy")) {
			t.Errorf("status field stored upstream")
		}
		c2 := e.login(t, "bob")
		if _, err := c2.Select("Drafts", nil).Wait(); err != nil {
			t.Fatal(err)
		}
		if got := fetchBody(t, c2, data.UID); statusOf(got) != "decrypted" || !bytes.Contains(got, []byte("zebracorn")) {
			t.Errorf("re-encrypted draft does not decrypt for bob:\n%s", got)
		}
	})

	t.Run("a decrypted copy carol cannot encrypt is refused", func(t *testing.T) {
		cc := e.login(t, "carol")
		before := mailboxUIDs(t, e.d, "carol", "INBOX")
		_, err := appendMsg(cc, "INBOX", served) // bob's marker: not carol's; carol has no certificate
		var ie *imap.Error
		if !errors.As(err, &ie) || ie.Type != imap.StatusResponseTypeNo || ie.Code != imap.ResponseCodeCannot {
			t.Fatalf("APPEND = %v, want NO [CANNOT]", err)
		}
		if after := mailboxUIDs(t, e.d, "carol", "INBOX"); len(after) != len(before) {
			t.Errorf("refused APPEND stored something: %v → %v", before, after)
		}
		// the session is still usable
		if _, err := cc.Select("INBOX", nil).Wait(); err != nil {
			t.Errorf("session after refusal: %v", err)
		}
	})

	t.Run("a MULTIAPPEND with a served copy carol cannot encrypt stores nothing", func(t *testing.T) {
		before := mailboxUIDs(t, e.d, "carol", "INBOX")
		nc, err := net.Dial("tcp", e.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		nc.SetDeadline(time.Now().Add(20 * time.Second))
		br := bufio.NewReader(nc)
		br.ReadString('\n')
		fmt.Fprintf(nc, "a LOGIN carol %s\r\n", e.d.Password("carol"))
		for l, _ := br.ReadString('\n'); !strings.HasPrefix(l, "a "); l, _ = br.ReadString('\n') {
		}
		plain := "Subject: first\r\n\r\nfirst of two\r\n"
		fmt.Fprintf(nc, "b APPEND INBOX {%d+}\r\n%s {%d+}\r\n%s\r\n", len(plain), plain, len(served), served)
		var resp string
		for {
			l, err := br.ReadString('\n')
			if err != nil {
				t.Fatalf("reading: %v (%q)", err, resp)
			}
			resp += l
			if strings.HasPrefix(l, "b ") {
				break
			}
		}
		if !strings.Contains(resp, "b NO [CANNOT]") {
			t.Errorf("MULTIAPPEND answered %q, want NO [CANNOT]", resp)
		}
		if after := mailboxUIDs(t, e.d, "carol", "INBOX"); len(after) != len(before) {
			t.Errorf("refused MULTIAPPEND stored something: %v → %v", before, after)
		}
		fmt.Fprintf(nc, "c NOOP\r\n")
		if l, _ := br.ReadString('\n'); !strings.HasPrefix(l, "c OK") && !strings.HasPrefix(l, "* ") {
			t.Errorf("session after refusal: %q", l)
		}
	})

	t.Run("an undecryptable copy goes back as the original bytes", func(t *testing.T) {
		got := fetchBody(t, c, e.undec)
		if statusOf(got) != "undecryptable" {
			t.Fatalf("status %q", statusOf(got))
		}
		data, err := appendMsg(c, "Drafts", got)
		if err != nil {
			t.Fatal(err)
		}
		if up, want := e.d.Raw("bob", "Drafts", data.UID), e.d.Raw("bob", "INBOX", e.undec); !bytes.Equal(up, want) {
			t.Errorf("stored %q, want the original", up)
		}
	})

	t.Run("plain append streams unchanged", func(t *testing.T) {
		msg := []byte("Subject: note\r\n\r\nplain draft\r\n")
		data, err := appendMsg(c, "Drafts", msg)
		if err != nil {
			t.Fatal(err)
		}
		if up := e.d.Raw("bob", "Drafts", data.UID); !bytes.Equal(up, msg) {
			t.Errorf("stored %q", up)
		}
	})
}

// TestEncryptAppends: with EncryptAppends every plain APPEND is stored encrypted to the user, S/MIME mail
// unchanged, and a user without a certificate gets NO.
func TestEncryptAppends(t *testing.T) {
	e := newGuardEnv(t, true)
	c := e.login(t, "bob")
	msg := []byte("From: bob@example.com\r\nSubject: sent copy\r\nContent-Type: text/plain\r\n\r\nokapi in the sent folder\r\n")
	data, err := appendMsg(c, "Drafts", msg)
	if err != nil {
		t.Fatal(err)
	}
	up := e.d.Raw("bob", "Drafts", data.UID)
	if bytes.Contains(up, []byte("okapi")) || !bytes.Contains(up, []byte("Subject: sent copy")) {
		t.Fatalf("stored:\n%s", up)
	}
	if _, err := c.Select("Drafts", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	if got := fetchBody(t, c, data.UID); !bytes.Contains(got, []byte("okapi")) {
		t.Errorf("does not decrypt back:\n%s", got)
	}
	enc := e.d.Raw("bob", "INBOX", e.enc)
	data, err = appendMsg(c, "Drafts", enc)
	if err != nil {
		t.Fatal(err)
	}
	if up := e.d.Raw("bob", "Drafts", data.UID); !bytes.Equal(up, enc) {
		t.Errorf("S/MIME message was changed on APPEND")
	}
	// Carol has no certificate: her new plain drafts still save (as sent), but a decrypted copy, also one
	// forwarded as an attachment, is refused.
	cc := e.login(t, "carol")
	data, err = appendMsg(cc, "Drafts", msg)
	if err != nil {
		t.Fatalf("carol (no certificate): plain APPEND = %v, want it stored as sent", err)
	}
	if up := e.d.Raw("carol", "Drafts", data.UID); !bytes.Equal(up, msg) {
		t.Errorf("carol's plain draft stored as %q", up)
	}
	c2 := e.login(t, "bob")
	if _, err := c2.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	served := fetchBody(t, c2, e.enc)
	for name, m := range map[string][]byte{"served copy": served, "forwarded as attachment": forwardAsAttachment(served)} {
		_, err := appendMsg(cc, "Drafts", m)
		var ie *imap.Error
		if !errors.As(err, &ie) || ie.Code != imap.ResponseCodeCannot {
			t.Errorf("carol: APPEND of bob's %s = %v, want NO [CANNOT]", name, err)
		}
	}
	if hits := len(mailboxUIDs(t, e.d, "carol", "Drafts")); hits != 1 {
		t.Errorf("carol's Drafts has %d messages, want her one plain draft", hits)
	}
}

// forwardAsAttachment is a new message forwarding msg as a message/rfc822 attachment (RFC 2046 section
// 5.2.1), as mail clients do.
func forwardAsAttachment(msg []byte) []byte {
	return []byte("From: bob@example.com\r\nTo: x@example.org\r\nSubject: Fwd: secret\r\nMIME-Version: 1.0\r\n" +
		"Content-Type: multipart/mixed; boundary=\"fw\"\r\n\r\n--fw\r\nContent-Type: text/plain\r\n\r\nsee below\r\n" +
		"--fw\r\nContent-Type: message/rfc822\r\nContent-Disposition: attachment; filename=\"secret.eml\"\r\n\r\n" +
		string(msg) + "\r\n--fw--\r\n")
}

// TestAppendDerivedPlaintext: what a client makes from a served decrypted copy without the status field on
// top (the field removed or renamed, the copy forwarded as an attachment, a reply quoting it) is stored
// encrypted when appends are encrypted (serve's default), and as sent when they are not.
func TestAppendDerivedPlaintext(t *testing.T) {
	for _, encrypt := range []bool{true, false} {
		t.Run(fmt.Sprintf("encrypt-appends=%v", encrypt), func(t *testing.T) {
			e := newGuardEnv(t, encrypt)
			c := e.login(t, "bob")
			if _, err := c.Select("INBOX", nil).Wait(); err != nil {
				t.Fatal(err)
			}
			served := fetchBody(t, c, e.enc)
			if !bytes.Contains(served, []byte("zebracorn")) {
				t.Fatalf("not decrypted:\n%s", served)
			}
			derived := map[string][]byte{
				"status removed":          e.dec.StripStatus(served),
				"status renamed":          bytes.Replace(served, []byte("X-Smimeproxy-Status:"), []byte("X-Was-Status:"), 1),
				"forwarded as attachment": forwardAsAttachment(served),
				"reply quoting it": []byte("From: bob@example.com\r\nTo: alice@example.com\r\nSubject: Re: secret\r\n" +
					"Content-Type: text/plain\r\n\r\nOn Monday Alice wrote:\r\n> the zebracorn sleeps\r\n\r\nLet it sleep.\r\n"),
			}
			if _, err := c.Select("Drafts", nil).Wait(); err != nil {
				t.Fatal(err)
			}
			for name, msg := range derived {
				data, err := appendMsg(c, "Drafts", msg)
				if err != nil {
					t.Fatalf("%s: APPEND: %v", name, err)
				}
				up := e.d.Raw("bob", "Drafts", data.UID)
				if !encrypt {
					if !bytes.Contains(up, []byte("zebracorn")) {
						t.Errorf("%s: with encrypt-appends off, stored %.300q, want it as sent", name, up)
					}
					continue
				}
				if bytes.Contains(up, []byte("zebracorn")) || !bytes.Contains(bytes.ToLower(up), []byte("application/pkcs7-mime")) {
					t.Errorf("%s: stored in clear upstream:\n%.400s", name, up)
				}
				if got := fetchBody(t, c, data.UID); !bytes.Equal(got, msg) {
					t.Errorf("%s: does not read back as appended through the proxy:\n%.400s", name, got)
				}
			}
		})
	}
}

// TestSearchInsideEncrypted: BODY/TEXT keys match inside decrypted copies, combined with other keys, for
// SEARCH and UID SEARCH; other users' mail stays unsearchable.
func TestSearchInsideEncrypted(t *testing.T) {
	e := newGuardEnv(t, false)
	c := e.login(t, "bob")
	if _, err := c.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	uidSearch := func(cr *imap.SearchCriteria) []imap.UID {
		t.Helper()
		d, err := c.UIDSearch(cr, nil).Wait()
		if err != nil {
			t.Fatal(err)
		}
		return d.AllUIDs()
	}
	not := func(cr imap.SearchCriteria) []imap.SearchCriteria { return []imap.SearchCriteria{cr} }
	for _, tt := range []struct {
		name string
		cr   imap.SearchCriteria
		want []imap.UID
	}{
		{"BODY inside encrypted", imap.SearchCriteria{Body: []string{"zebracorn"}}, []imap.UID{e.enc}},
		{"TEXT inside encrypted, case-insensitive", imap.SearchCriteria{Text: []string{"ZEBRACORN"}}, []imap.UID{e.enc}},
		{"BODY plain", imap.SearchCriteria{Body: []string{"giraffe"}}, []imap.UID{e.plain}},
		{"OR across both", imap.SearchCriteria{Or: [][2]imap.SearchCriteria{{{Body: []string{"giraffe"}}, {Body: []string{"zebracorn"}}}}}, []imap.UID{e.enc, e.plain}},
		{"NOT BODY", imap.SearchCriteria{Not: not(imap.SearchCriteria{Body: []string{"zebracorn"}})}, []imap.UID{e.plain, e.forge, e.undec}},
		{"BODY and a flag", imap.SearchCriteria{Body: []string{"zebracorn"}, Flag: []imap.Flag{imap.FlagSeen}}, nil},
		{"BODY and a header key", imap.SearchCriteria{Body: []string{"zebracorn"}, Header: []imap.SearchCriteriaHeaderField{{Key: "Subject", Value: "secret"}}}, []imap.UID{e.enc}},
		{"TEXT matches the decrypted header", imap.SearchCriteria{Text: []string{"charset=utf-8"}}, []imap.UID{e.enc}},
		{"no hit", imap.SearchCriteria{Body: []string{"nowhere-to-be-found"}}, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got := uidSearch(&tt.cr)
			slices.Sort(got)
			want := slices.Clone(tt.want)
			slices.Sort(want)
			if !slices.Equal(got, want) {
				t.Errorf("UID SEARCH = %v, want %v", got, want)
			}
		})
	}
	// sequence-number SEARCH: INBOX UIDs 1..4 are sequence numbers 1..4
	d, err := c.Search(&imap.SearchCriteria{Body: []string{"zebracorn"}}, nil).Wait()
	if err != nil {
		t.Fatal(err)
	}
	if got := d.AllSeqNums(); !slices.Equal(got, []uint32{uint32(e.enc)}) {
		t.Errorf("SEARCH BODY = %v, want [%d]", got, e.enc)
	}
	// carol (no keys) searching her own mailbox finds nothing encrypted; the undecryptable message's
	// ciphertext never matches either
	if got := uidSearch(&imap.SearchCriteria{Body: []string{"dave"}}); len(got) != 0 {
		t.Errorf("search matched inside an undecryptable message: %v", got)
	}
	if !strings.Contains(string(fetchBody(t, c, e.enc)), "zebracorn") {
		t.Error("fetch after search")
	}
}

// TestHeaderSyncMixed: a client's header sync (one FETCH of header-only items over plain, encrypted, forged and
// undecryptable messages; the proxy's one-pass path) answers each message from the right bytes.
func TestHeaderSyncMixed(t *testing.T) {
	e := newGuardEnv(t, false)
	c := e.login(t, "bob")
	if _, err := c.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	hdr := &imap.FetchItemBodySection{Specifier: imap.PartSpecifierHeader, HeaderFields: []string{"Subject", "X-Smimeproxy-Status", "Content-Type"}, Peek: true}
	full := &imap.FetchItemBodySection{Specifier: imap.PartSpecifierHeader}
	msgs, err := c.Fetch(imap.UIDSet{imap.UIDRange{Start: 1, Stop: 0}}, &imap.FetchOptions{UID: true, Flags: true, RFC822Size: true, Envelope: true,
		InternalDate: true, BodySection: []*imap.FetchItemBodySection{hdr, full}}).Collect()
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != 4 {
		t.Fatalf("%d messages", len(msgs))
	}
	for _, m := range msgs {
		served := fetchBody(t, c, m.UID)
		h, f := string(m.FindBodySection(hdr)), string(m.FindBodySection(full))
		if m.RFC822Size != int64(len(served)) {
			t.Errorf("UID %d: RFC822.SIZE %d, served %d bytes", m.UID, m.RFC822Size, len(served))
		}
		if m.InternalDate.IsZero() || m.Envelope == nil {
			t.Errorf("UID %d: missing INTERNALDATE or ENVELOPE", m.UID)
		}
		if !strings.HasPrefix(string(served), f) || !strings.HasSuffix(f, "\r\n\r\n") {
			t.Errorf("UID %d: BODY[HEADER] is not the served header:\n%q", m.UID, f)
		}
		if !slices.Contains(m.Flags, imap.FlagSeen) {
			t.Errorf("UID %d: non-PEEK BODY[HEADER] did not set \\Seen: %v", m.UID, m.Flags)
		}
		switch m.UID {
		case e.enc:
			if !strings.Contains(h, "X-Smimeproxy-Status: decrypted") || !strings.Contains(h, "text/plain") {
				t.Errorf("encrypted UID %d: header fields from the wrong bytes:\n%s", m.UID, h)
			}
		case e.undec:
			if !strings.Contains(h, "X-Smimeproxy-Status: undecryptable") {
				t.Errorf("undecryptable UID %d:\n%s", m.UID, h)
			}
		case e.forge:
			if strings.Contains(strings.ToLower(h+f), "x-smimeproxy") || m.Envelope.Subject != "forged" {
				t.Errorf("forged status reached the client in a header sync:\n%s", h)
			}
		case e.plain:
			if h != "Subject: plain\r\nContent-Type: text/plain\r\n\r\n" {
				t.Errorf("plain UID %d: %q", m.UID, h)
			}
		}
	}
}

// TestForgedStatusNewMail: the proxy learns which messages carry a status field by searching each message once;
// mail that arrives later in the same session, forged or not, is still checked, and so is another mailbox.
func TestForgedStatusNewMail(t *testing.T) {
	e := newGuardEnv(t, false)
	c := e.login(t, "bob")
	if _, err := c.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	sync := func() map[imap.UID]*imapclient.FetchMessageBuffer {
		t.Helper()
		hdr := &imap.FetchItemBodySection{Specifier: imap.PartSpecifierHeader, Peek: true}
		msgs, err := c.Fetch(imap.UIDSet{imap.UIDRange{Start: 1, Stop: 0}}, &imap.FetchOptions{UID: true, RFC822Size: true,
			BodySection: []*imap.FetchItemBodySection{hdr}}).Collect()
		if err != nil {
			t.Fatal(err)
		}
		out := map[imap.UID]*imapclient.FetchMessageBuffer{}
		for _, m := range msgs {
			if h := m.FindBodySection(hdr); bytes.Contains(h, []byte("X-Smimeproxy-Status: decrypted; key=sha256:00")) {
				t.Errorf("UID %d: a forged status field reached the client:\n%s", m.UID, h)
			}
			out[m.UID] = m
		}
		return out
	}
	sync()
	now := time.Date(2026, 3, 3, 10, 0, 0, 0, time.UTC)
	late := e.d.Append("bob", "INBOX", []byte("From: x@example.com\r\n"+forgedStatus+"\r\nSubject: late forgery\r\n\r\nlate\r\n"), nil, now)
	clean := e.d.Append("bob", "INBOX", []byte("From: x@example.com\r\nSubject: late and clean\r\n\r\nclean\r\n"), nil, now)
	if err := c.Noop().Wait(); err != nil {
		t.Fatal(err)
	}
	got := sync()
	if got[late] == nil || got[clean] == nil {
		t.Fatalf("new messages missing from the sync: %v", got)
	}
	if b := fetchBody(t, c, clean); !bytes.Equal(b, e.d.Raw("bob", "INBOX", clean)) {
		t.Errorf("a clean new message is not relayed byte for byte")
	}
	// Another mailbox has its own index.
	e.d.Append("bob", "Drafts", []byte("From: x@example.com\r\n"+forgedStatus+"\r\nSubject: draft forgery\r\n\r\nd\r\n"), nil, now)
	if _, err := c.Select("Drafts", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	sync()
}

// TestVerbatimThroughProxy: a draft bob appends through the proxy is ciphertext on Dovecot and reads back
// byte for byte (BODY[], RFC822.SIZE); the same ciphertext with a forged MAC reads back as any decrypted
// message; carol, without the key, gets it undecryptable; an APPEND over the size limit is refused with
// NO [TOOBIG] before it is read, and the session goes on.
func TestVerbatimThroughProxy(t *testing.T) {
	e := newGuardEnv(t, true)
	c := e.login(t, "bob")
	draft := []byte("From: bob@example.com\r\nTo: alice@example.com\r\nSubject: plan\r\nDate: Mon, 2 Mar 2026 10:00:00 +0000\r\n" +
		"Message-ID: <d1@example.com>\r\nX-Mozilla-Draft-Info: internal/draft; vcard=0\r\nContent-Type: text/plain; charset=utf-8; format=flowed\r\n\r\nthe quokka plan \r\n\r\n")
	data, err := appendMsg(c, "Drafts", draft)
	if err != nil {
		t.Fatal(err)
	}
	up := e.d.Raw("bob", "Drafts", data.UID)
	if bytes.Contains(up, []byte("quokka")) || len(mimepart.Values(up, VerbatimField)) != 1 || !bytes.Contains(up, []byte("application/pkcs7-mime")) {
		t.Fatalf("stored upstream:\n%.500s", up)
	}
	if _, err := c.Select("Drafts", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	sec := &imap.FetchItemBodySection{Peek: true}
	msgs, err := c.Fetch(imap.UIDSetNum(data.UID), &imap.FetchOptions{UID: true, RFC822Size: true, BodySection: []*imap.FetchItemBodySection{sec}}).Collect()
	if err != nil || len(msgs) != 1 {
		t.Fatalf("FETCH: %v", err)
	}
	if got := msgs[0].FindBodySection(sec); !bytes.Equal(got, draft) || msgs[0].RFC822Size != int64(len(draft)) {
		t.Errorf("read back %q (RFC822.SIZE %d), want %q (%d)", got, msgs[0].RFC822Size, draft, len(draft))
	}

	// A forged field: the stored ciphertext with a random MAC, put on Dovecot directly.
	forged := regexp.MustCompile(`mac=[A-Za-z0-9_-]+`).ReplaceAll(up, []byte("mac=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"))
	fu := e.d.Append("bob", "Drafts", forged, nil, time.Now())
	if err := c.Noop().Wait(); err != nil {
		t.Fatal(err)
	}
	if got := fetchBody(t, c, fu); statusOf(got) != "decrypted" || !bytes.Contains(got, []byte("quokka")) || bytes.Contains(got, []byte(VerbatimField)) {
		t.Errorf("forged MAC served as:\n%s", got)
	}
	// Carol has no key to it.
	cu := e.d.Append("carol", "Drafts", up, nil, time.Now())
	cc := e.login(t, "carol")
	if _, err := cc.Select("Drafts", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	if got := fetchBody(t, cc, cu); statusOf(got) != "undecryptable" || bytes.Contains(got, []byte("quokka")) {
		t.Errorf("carol served:\n%.400s", got)
	}

	// Too large to read whole: NO [TOOBIG], nothing stored, the session goes on.
	e.dec.maxSize = 4096
	before := len(mailboxUIDs(t, e.d, "bob", "Drafts"))
	big := append([]byte("Subject: big\r\n\r\n"), bytes.Repeat([]byte("x"), 5000)...)
	conn, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(20 * time.Second))
	br := bufio.NewReader(conn)
	expect := func(tag string) string {
		t.Helper()
		for {
			l, err := br.ReadString('\n')
			if err != nil {
				t.Fatalf("waiting for %s: %v", tag, err)
			}
			if strings.HasPrefix(l, tag+" ") || strings.HasPrefix(l, "+") && tag == "+" {
				return l
			}
		}
	}
	expect("*")
	fmt.Fprintf(conn, "a LOGIN bob %s\r\n", e.d.Password("bob"))
	expect("a")
	// A synchronizing literal gets no continuation; a non-synchronizing one (RFC 7888) is read and dropped.
	fmt.Fprintf(conn, "b APPEND Drafts {%d}\r\n", len(big))
	if l := expect("b"); !strings.HasPrefix(l, "b NO [TOOBIG] ") {
		t.Errorf("APPEND over the limit: %q, want NO [TOOBIG]", l)
	}
	fmt.Fprintf(conn, "c APPEND Drafts {%d+}\r\n%s\r\n", len(big), big)
	if l := expect("c"); !strings.HasPrefix(l, "c NO [TOOBIG] ") {
		t.Errorf("APPEND over the limit (LITERAL+): %q, want NO [TOOBIG]", l)
	}
	fmt.Fprintf(conn, "d NOOP\r\n")
	if l := expect("d"); !strings.HasPrefix(l, "d OK") {
		t.Errorf("session after TOOBIG: %q", l)
	}
	if after := len(mailboxUIDs(t, e.d, "bob", "Drafts")); after != before {
		t.Errorf("Drafts went from %d to %d messages", before, after)
	}
	if _, err := appendMsg(c, "Drafts", draft); err != nil {
		t.Errorf("APPEND under the limit after TOOBIG: %v", err)
	}
}
