package proxy_test

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/emersion/go-imap/v2"

	"github.com/smimeproxy/smimeproxy/internal/testenv"
)

// TestMbsyncPull: mbsync (isync), an independent client, pulls INBOX through the proxy into a local Maildir;
// every file equals what Dovecot serves for the message (mbsync stores CRLF as LF and adds an X-TUID header
// to new messages, both undone here).
func TestMbsyncPull(t *testing.T) {
	bin := testenv.LookPath(t, "mbsync")
	d := testenv.StartDovecot(t, testenv.DovecotOptions{})
	seed(t, d, "alice")
	addr, _ := startProxy(t, d, nil)
	host, port, _ := strings.Cut(addr, ":")
	dir := t.TempDir()
	cfg := filepath.Join(dir, "mbsyncrc")
	conf := fmt.Sprintf(`IMAPAccount proxy
Host %s
Port %s
User alice
Pass alice-pw
SSLType None
AuthMechs LOGIN

IMAPStore far
Account proxy

MaildirStore near
Path %[3]s/mail/
Inbox %[3]s/mail/INBOX

Channel pull
Far :far:
Near :near:
Patterns INBOX
Sync Pull
Create Near
SyncState *
`, host, port, dir)
	if err := os.MkdirAll(filepath.Join(dir, "mail"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin, "-c", cfg, "-a").CombinedOutput()
	t.Logf("mbsync:\n%s", out)
	if err != nil {
		t.Fatalf("mbsync: %v", err)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "mail", "INBOX", "*", "*"))
	if len(files) != 8 {
		t.Fatalf("mbsync stored %d files, want 8", len(files))
	}
	want := map[string]bool{}
	for uid := imap.UID(1); uid <= 8; uid++ {
		want[string(d.Raw("alice", "INBOX", uid))] = true
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		// Drop mbsync's X-TUID line and restore CRLF.
		if i := bytes.Index(b, []byte("X-TUID: ")); i >= 0 {
			j := bytes.IndexByte(b[i:], '\n')
			b = append(b[:i:i], b[i+j+1:]...)
		}
		b = bytes.ReplaceAll(b, []byte("\n"), []byte("\r\n"))
		if !want[string(b)] {
			t.Errorf("%s (%d bytes) matches no message Dovecot serves", filepath.Base(f), len(b))
		}
	}
}
