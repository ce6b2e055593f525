package main

import (
	"bytes"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/smimeproxy/smimeproxy/internal/testenv"
)

// tbSecret is a line of the plaintext of the Thunderbird corpus message alice.env.eml (encrypted to Bob).
const tbSecret = "This is a test message from Alice to Bob."

// TestServeEncryptsAppendsByDefault runs 'smimeproxy serve' between a real Dovecot and a real Vault holding
// Bob's key: without any flag, what a client makes from a decrypted message without the status field on top
// (the field removed or renamed, forwarded as an attachment, a reply quoting it) and an ordinary draft are
// stored encrypted; with --encrypt-appends=false they are stored as sent; doctor reports the setting from the
// config file.
func TestServeEncryptsAppendsByDefault(t *testing.T) {
	d := testenv.StartDovecot(t, testenv.DovecotOptions{Users: map[string]string{"bob": "bob-pw"}})
	v := testenv.StartVault(t)
	vars := map[string]string{"VAULT_ADDR": v.Addr(), "VAULT_TOKEN": v.RootToken(), "P12PW": "nss", "HOME": t.TempDir()}
	importKey(t, vars, "bob")
	uid := d.Append("bob", "INBOX", crlfBytes(readFile(t, corpus+"alice.env.eml")), nil, time.Time{})
	c := d.Dial("bob")
	if err := c.Create("Drafts", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	c.Close()

	serve := func(extra ...string) *serveProc {
		env, _, stderr := demoEnv(vars)
		args := append([]string{"--listen", "127.0.0.1:0", "--upstream", "imaps://" + d.TLSAddr(), "--upstream-ca-file", d.CAFile(), "--log-level", "warn"}, extra...)
		return startServe(t, env, stderr, args...)
	}
	login := func(p *serveProc) *imapclient.Client {
		c, err := imapclient.DialInsecure(p.addr, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		if err := c.Login("bob", "bob-pw").Wait(); err != nil {
			t.Fatal(err)
		}
		return c
	}
	fetch := func(c *imapclient.Client, mailbox string, uid imap.UID) []byte {
		t.Helper()
		if _, err := c.Select(mailbox, nil).Wait(); err != nil {
			t.Fatal(err)
		}
		sec := &imap.FetchItemBodySection{Peek: true}
		msgs, err := c.Fetch(imap.UIDSetNum(uid), &imap.FetchOptions{UID: true, BodySection: []*imap.FetchItemBodySection{sec}}).Collect()
		if err != nil || len(msgs) != 1 {
			t.Fatalf("UID FETCH %d: %v", uid, err)
		}
		return msgs[0].FindBodySection(sec)
	}
	appendTo := func(c *imapclient.Client, msg []byte) imap.UID {
		t.Helper()
		cmd := c.Append("Drafts", int64(len(msg)), nil)
		cmd.Write(msg)
		cmd.Close()
		data, err := cmd.Wait()
		if err != nil || data.UID == 0 {
			t.Fatalf("APPEND: %+v, %v", data, err)
		}
		return data.UID
	}

	p := serve()
	c = login(p)
	served := fetch(c, "INBOX", uid)
	if status(served) != "decrypted" || !bytes.Contains(served, []byte(tbSecret)) {
		t.Fatalf("not decrypted: %q", statusFields(served))
	}
	_, servedBody, _ := bytes.Cut(served, []byte("\r\n\r\n"))
	derived := map[string][]byte{
		"status removed": served[bytes.Index(served, []byte("\r\n"))+2:], // the status field is the first line
		"status renamed": bytes.Replace(served, []byte("X-Smimeproxy-Status:"), []byte("X-Old-Status:"), 1),
		"forwarded as attachment": []byte("From: bob@example.com\r\nSubject: Fwd\r\nMIME-Version: 1.0\r\n" +
			"Content-Type: multipart/mixed; boundary=\"fw\"\r\n\r\n--fw\r\nContent-Type: message/rfc822\r\n\r\n" +
			string(served) + "\r\n--fw--\r\n"),
		"reply quoting it": []byte("From: bob@example.com\r\nSubject: Re: hi\r\nContent-Type: text/plain\r\n\r\n> " +
			string(bytes.TrimSpace(servedBody)) + "\r\n"),
		"new plain draft": []byte("From: bob@example.com\r\nSubject: note\r\nContent-Type: text/plain\r\n\r\n" + tbSecret + " (draft)\r\n"),
	}
	for name, msg := range derived {
		if bytes.Contains(bytes.ToLower(msg[:bytes.Index(msg, []byte("\r\n\r\n"))]), []byte("x-smimeproxy-status")) {
			t.Fatalf("%s: test message still has the status field on top", name)
		}
		u := appendTo(c, msg)
		up := d.Raw("bob", "Drafts", u)
		if bytes.Contains(up, []byte(tbSecret)) || !bytes.Contains(up, []byte("application/pkcs7-mime")) {
			t.Errorf("%s: default serve stored it in clear upstream: %.300q", name, up)
		}
		// Read back byte for byte as appended (decrypt/verbatim.go).
		if got := fetch(c, "Drafts", u); !bytes.Equal(got, msg) {
			t.Errorf("%s: does not read back as appended: %q", name, statusFields(got))
		}
	}
	p.stop()

	q := serve("--encrypt-appends=false")
	c = login(q)
	for name, msg := range derived {
		u := appendTo(c, msg)
		if up := d.Raw("bob", "Drafts", u); !bytes.Contains(up, []byte(tbSecret)) {
			t.Errorf("%s: --encrypt-appends=false stored %.300q, want it as sent", name, up)
		}
	}
	q.stop()

	// doctor reports the setting, read from the config file's [serve] section as serve reads it.
	for _, tc := range []struct{ cfg, line string }{
		{"", `ok    appends: encrypted to the user's own certificate before they go upstream \(encrypt-appends\)`},
		{"[serve]\nencrypt-appends = false\n", `warn  appends: encrypt-appends is off: drafts, sent copies, and decrypted messages that were edited, forwarded as attachments or quoted in replies are stored upstream in clear  → remove encrypt-appends = false .*`},
	} {
		cfg := writeFile(t, filepath.Join(t.TempDir(), "config.toml"), fmt.Sprintf("vault-addr = %q\n%s", v.Addr(), tc.cfg))
		_, out := doctorRun(t, map[string]string{"VAULT_TOKEN": v.RootToken(), "SMIMEPROXY_CONFIG": cfg},
			"--upstream", "imaps://"+d.TLSAddr(), "--upstream-ca-file", d.CAFile(), "--user", "bob")
		wantLines(t, out, tc.line)
	}
}
